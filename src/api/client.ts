import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../node/mesh-node.ts'
import { SYNC_SESSION_MS } from '../node/constants.ts'
import { MEMBERS_PROTOCOL } from '../protocol/members.ts'
import { classifyDialError, notAdmitted, noAnswerMessage, unreachableMessage, type DialOutcome } from './dial-outcome.ts'
import type { SwarmKey } from '../node/swarm-key.ts'
import { MeshUnreachableError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import type { PrivateKey } from '@libp2p/interface'

export { classifyDialError } from './dial-outcome.ts'

export interface ClientInit {
  key: SwarmKey
  bootstrap: string[]
  timeoutMs: number
  logger?: Logger
  /** The client's identity (`--identity`): its peer id is what allowlists name and decisions record. @default a new key */
  privateKey?: PrivateKey
}

/** A light peer connected to a mesh node, with the board synced from it. */
export interface Client {
  node: MeshNode
  /** The mesh node this client reads through. */
  peer: string
  /** The command's `--timeout`: how long it waits for the mesh to answer. */
  timeoutMs: number
  close: () => Promise<void>
}

/**
 * Waits until the node the client reads through has the client's latest board
 * changes (one sync session with it), for a sync session's usual minute or the
 * client's `--timeout` when that is longer: a plan of thousands of tasks is
 * one change of megabytes, which a node on a busy host takes a while to check.
 * Throws when it did not confirm: `what` names the change, `then` what to do.
 */
export async function confirmWrite (client: Client, what: string, then = 'run the command again'): Promise<void> {
  const waitMs = Math.max(client.timeoutMs, SYNC_SESSION_MS)
  const started = Date.now()
  if (!await client.node.requestSync(client.peer, { timeoutMs: waitMs })) {
    // a sync that failed early (the node closed the connection) is not a slow node
    const why = Date.now() - started < waitMs - 1000
      ? 'the sync with it failed (it closed the connection or stopped)'
      : `it did not confirm it within ${Math.round(waitMs / 1000)} s (a longer --timeout waits longer)`
    throw new Error(`${what} is recorded locally but not confirmed by ${client.peer}: ${why}; ${then}`)
  }
}

/**
 * How often a connected client pulls the board from its node besides gossip:
 * gossipsub keeps one stream per peer id, so of two runs of one client identity
 * at once only one hears the gossip. @default 1 s
 */
export const CLIENT_RESYNC_MS = 1000

/**
 * Joins the mesh as a light peer (never takes work, never appears among the
 * nodes), and syncs the board from the first mesh node that answers (every
 * bootstrap address is dialled at once).
 *
 * Fails at once, with a `MeshUnreachableError` naming each address and its
 * error, when every address refuses the connection or fails the handshake (a
 * wrong swarm key, or not a meshwork node): waiting would not change the answer.
 * Otherwise gives up after `timeoutMs` without an answer.
 */
export async function connectClient (init: ClientInit): Promise<Client> {
  const node = new MeshNode({
    role: 'client',
    swarmKey: init.key,
    listen: [],
    bootstrap: init.bootstrap,
    ...(init.privateKey !== undefined ? { privateKey: init.privateKey } : {}),
    ...(init.logger !== undefined ? { logger: init.logger } : {})
  })
  await node.start()
  const deadline = Date.now() + init.timeoutMs
  const outcomes = new Map<string, DialOutcome>()
  const stopWatching = watchRefusals(node, init.bootstrap, outcomes)
  for (const addr of init.bootstrap) {
    void node.host.dial(multiaddr(addr), { signal: AbortSignal.timeout(init.timeoutMs) })
      .then(conn => { if (conn.status === 'open' && outcomes.get(addr)?.final !== true) outcomes.delete(addr) }, (err: unknown) => { outcomes.set(addr, classifyDialError(err)) })
  }
  // the first peer whose sync succeeds wins; a sync per peer at a time, retried if it fails
  let synced: string | null = null
  const syncing = new Set<string>()
  try {
    for (;;) {
      for (const peerId of node.connectedPeers()) {
        const id = peerId.toString()
        if (syncing.has(id)) continue
        if (!(await node.peerProtocols(peerId)).includes(MEMBERS_PROTOCOL)) continue
        syncing.add(id)
        void node.requestSync(id).then(ok => {
          if (ok && synced === null) synced = id
          else syncing.delete(id)
        }, () => { syncing.delete(id) })
      }
      if (synced !== null) {
        stopWatching()
        node.followBoard()
        const client: Client = { node, peer: synced, timeoutMs: init.timeoutMs, close: async () => { clearInterval(resync); await node.stop() } }
        // gossip reaches one process per peer id: a second run of the same --identity (a `resolve` beside a
        // `tui`) takes the node's gossip stream over, so the board is also pulled by a sync every second
        const resync = setInterval(() => { void node.requestSync(client.peer) }, CLIENT_RESYNC_MS)
        resync.unref()
        return client
      }
      const failed = init.bootstrap.filter(a => outcomes.get(a)?.final === true)
      if (init.bootstrap.length > 0 && failed.length === init.bootstrap.length && node.connectedPeers().length === 0) {
        throw new MeshUnreachableError(unreachableMessage(init.bootstrap, outcomes))
      }
      if (Date.now() >= deadline) {
        throw new MeshUnreachableError(noAnswerMessage(init.bootstrap, outcomes, init.timeoutMs))
      }
      await new Promise(resolve => setTimeout(resolve, 25))
    }
  } catch (err) {
    stopWatching()
    await node.stop()
    throw err
  }
}

/**
 * A node with `--allow` that does not list this client completes the
 * encrypted handshake (the client's peer id is only proven then) and hangs up
 * at once: the dial itself succeeds. A bootstrap peer that closes the
 * connection before identify finished is recorded as refusing this client, so
 * the client fails at once with the fix instead of waiting for its timeout.
 */
function watchRefusals (node: MeshNode, bootstrap: readonly string[], outcomes: Map<string, DialOutcome>): () => void {
  const identified = new Set<string>()
  const onIdentify = (evt: CustomEvent<{ peerId: { toString: () => string } }>): void => { identified.add(evt.detail.peerId.toString()) }
  const onClose = (evt: CustomEvent<{ remotePeer: { toString: () => string } }>): void => {
    const peer = evt.detail.remotePeer.toString()
    if (identified.has(peer)) return
    for (const addr of bootstrap) {
      if (!addr.endsWith(`/p2p/${peer}`)) continue
      outcomes.set(addr, notAdmitted(node.peerId))
    }
  }
  node.host.addEventListener('peer:identify', onIdentify)
  node.host.addEventListener('connection:close', onClose)
  return () => {
    node.host.removeEventListener('peer:identify', onIdentify)
    node.host.removeEventListener('connection:close', onClose)
  }
}

/** A mesh node a client may read through instead: its peer id and where it listens. */
export interface PeerCandidate {
  peerId: string
  addrs: readonly string[]
}

/** Bound of one attempt to read through another node (dial and board sync). @default 4 s */
export const SWITCH_PEER_TIMEOUT_MS = 4000

/**
 * Moves the client to the first candidate that answers (a dial, then a board
 * sync), for when the node it read through stopped answering. Returns the new
 * peer id, or null when none answered; `client.peer` changes only on success.
 */
export async function switchPeer (client: Client, candidates: readonly PeerCandidate[], timeoutMs = SWITCH_PEER_TIMEOUT_MS): Promise<string | null> {
  for (const c of candidates) {
    if (c.peerId === client.peer) continue
    const addrs = c.addrs.flatMap(a => { try { return [multiaddr(a)] } catch { return [] } })
    if (addrs.length === 0) continue
    try {
      await client.node.host.dial(addrs, { signal: AbortSignal.timeout(timeoutMs) })
      if (await client.node.requestSync(c.peerId)) {
        client.peer = c.peerId
        return c.peerId
      }
    } catch {
      // this one is gone too: try the next
    }
  }
  return null
}
