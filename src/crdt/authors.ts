import * as A from '@automerge/automerge'
import { createHash, randomBytes } from 'node:crypto'

/*
 * Who wrote a board change. Every peer writes with an Automerge actor derived
 * from its peer id, so a change names its author: gossip checks the actor
 * against the message's signer, and a node with `--allow` admits changes only
 * from the actors of listed peers. Peers of this version write with *signing*
 * actors (the peer's tag followed by SIGNING_MARK) and sign every change
 * (signing.ts): a change under a signing actor without its peer's signature is
 * refused on every path. Older versions wrote unsigned changes under the bare
 * tag (32 hex digits; a client session: tag + 16); those are an older peer's
 * history and are judged by the board (board.ts).
 */

/** The tag of a peer: the first 32 hex digits of every actor it writes with; derived from its peer id. */
export function actorForPeer (peerId: string): string {
  return createHash('sha256').update('meshwork/actor/1:' + peerId).digest('hex').slice(0, 32)
}

/** Hex digits of the random part of a client session's actor. */
const SESSION_SUFFIX_HEX = 16

/** What follows the tag in a signing actor: its changes must carry the peer's signature. */
export const SIGNING_MARK = '5167ed01'

/** The actor a node writes with: its tag and SIGNING_MARK (a signing actor). */
export function nodeActorForPeer (peerId: string): string {
  return actorForPeer(peerId) + SIGNING_MARK
}

/**
 * The actor of one client session: the peer's signing actor followed by 8
 * random bytes. A client keeps its peer id across runs (`--identity`), but two
 * runs of it (a `status --watch` beside a `resolve`, or a run that reaches a
 * node the last run's changes have not reached yet) must never write the same
 * actor's same sequence number: peers would refuse the second change as a
 * duplicate and park everything that actor writes after it. The prefix still
 * ties every change to the peer that signed it.
 */
export function sessionActorForPeer (peerId: string): string {
  return nodeActorForPeer(peerId) + randomBytes(SESSION_SUFFIX_HEX / 2).toString('hex')
}

/** Whether changes under `actor` must carry its peer's signature (what this version writes with). */
export function isSigningActor (actor: string): boolean {
  return (actor.length === 32 + SIGNING_MARK.length || actor.length === 32 + SIGNING_MARK.length + SESSION_SUFFIX_HEX) &&
    actor.slice(32, 32 + SIGNING_MARK.length) === SIGNING_MARK
}

/** Whether `actor` is one `peerId` writes with: its node actor or one of its client sessions' actors. */
export function actorBelongsTo (actor: string, peerId: string): boolean {
  const own = actorForPeer(peerId)
  if (!actor.startsWith(own)) return false
  // an older version's node and session actors, and this version's signing ones
  return actor.length === own.length || actor.length === own.length + SESSION_SUFFIX_HEX || isSigningActor(actor)
}

/** The peer part of an actor (what `actorForPeer` derives), for allowlists. */
export function peerTagOfActor (actor: string): string {
  return actor.slice(0, 32)
}

/**
 * The changes `after` has beyond `before` whose author `admits` refuses and
 * that no admitted change among them builds on. A change of another author
 * that an admitted peer built on (its history from before the allowlist, say)
 * is vouched for by that peer and kept; one that arrives on its own is not.
 */
export function unvouchedChanges<T> (before: A.Doc<T>, after: A.Doc<T>, admits: (actor: string) => boolean): A.ChangeMetadata[] {
  const added = A.getChangesMetaSince(after, A.getHeads(before))
  if (added.every(c => admits(c.actor))) return []
  const byHash = new Map(added.map(c => [c.hash, c]))
  const vouched = new Set<string>()
  const stack = added.filter(c => admits(c.actor)).map(c => c.hash)
  while (stack.length > 0) {
    const h = stack.pop() as string
    if (vouched.has(h)) continue
    vouched.add(h)
    for (const d of byHash.get(h)?.deps ?? []) if (byHash.has(d) && !vouched.has(d)) stack.push(d)
  }
  return added.filter(c => !admits(c.actor) && !vouched.has(c.hash))
}

/** Whether `actor` is a client session's (a peer's actor plus a random part), not a node's. */
export function isSessionActor (actor: string): boolean {
  return actor.length === 32 + SESSION_SUFFIX_HEX || (isSigningActor(actor) && actor.length === 32 + SIGNING_MARK.length + SESSION_SUFFIX_HEX)
}

/** A peer id in its usual text form (Ed25519, base58btc): how board keys name peers (`nodes[P]`, `claims[P]`). */
const PEER_KEY = /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/

/** The keys of `main` a client may write: the mesh's budget (`meshwork budget --usd`). */
const CLIENT_MAIN_KEYS = new Set(['budget'])

/**
 * What `change` writes that its author's role does not allow, or null. Every
 * node checks this on every change it receives, gossiped or synced:
 * - an entry keyed by a peer id (a node's registration `nodes[P]`, a claim
 *   `tasks[*].claims[P]`) is made only by that peer: no claim in another
 *   node's name, no registration for it;
 * - a client never writes `main` (head, leader, term, push, quorum): main is
 *   the nodes' (the leader's) to move; except `main.budget`, the mesh's
 *   spending cap that `meshwork budget --usd` sets.
 * `mainId` is the object id of the board's `main` map.
 */
export function forbiddenWrite (change: A.DecodedChange, mainId: string | null): string | null {
  const tag = peerTagOfActor(change.actor)
  const client = isSessionActor(change.actor)
  for (const op of change.ops) {
    if (op.action === 'del') continue
    const key = typeof op.key === 'string' ? op.key : ''
    if (client && mainId !== null && op.obj === mainId && !CLIENT_MAIN_KEYS.has(key)) return `a client wrote main.${key}`
    if (PEER_KEY.test(key) && actorForPeer(key) !== tag) return `wrote an entry of another peer (${key})`
  }
  return null
}
