/**
 * How a client's dial to one bootstrap address ended, and the messages that
 * name it: shared by the light client (`client.ts`) and the one-request status
 * read (`status-request.ts`). Loads nothing of the node itself.
 */
import { HANDSHAKE_FAILED } from '../node/pnet.ts'

/** What a refusal by a node's `--allow` says. */
export const NOT_ADMITTED = 'it does not admit this client'

/** How a dial to one bootstrap address ended: `final` failures are not retried. */
export interface DialOutcome { final: boolean, error: string }

/** The outcome of a connection a bootstrap node hung up on right after the handshake: its `--allow` does not list `peerId`. */
export function notAdmitted (peerId: string): DialOutcome {
  return { final: true, error: `the node closed the connection right after the handshake: ${NOT_ADMITTED} (peer id ${peerId}). Add that id to the node's --allow file (\`meshwork whoami\` prints it) and reload it (kill -HUP), or use an --identity the node lists` }
}

/** `addr: error` for each address, `; ` between them. */
export function describeOutcomes (addrs: readonly string[], outcomes: ReadonlyMap<string, DialOutcome>): string {
  return addrs.map(a => `${a}: ${outcomes.get(a)?.error ?? 'no answer'}`).join('; ')
}

/** The message when every bootstrap address failed for good (refused, wrong key, not admitted). */
export function unreachableMessage (addrs: readonly string[], outcomes: ReadonlyMap<string, DialOutcome>): string {
  // refused by every node's --allow: the fix is in the message already
  const refusedOnly = addrs.every(a => outcomes.get(a)?.error.includes(NOT_ADMITTED) === true)
  return `could not reach the mesh: ${describeOutcomes(addrs, outcomes)}.${refusedOnly ? '' : ' Check that a node is running at that address and that you use the mesh\'s swarm key (or its join token).'}`
}

/** The message when no bootstrap node answered within the client's timeout. */
export function noAnswerMessage (addrs: readonly string[], outcomes: ReadonlyMap<string, DialOutcome>, timeoutMs: number): string {
  const seen = outcomes.size > 0 ? ` (${describeOutcomes(addrs, outcomes)})` : ''
  return `no mesh node answered within ${Math.round(timeoutMs / 1000)} s at ${addrs.join(', ')}${seen}. Check that a node is running there, that the address is reachable from here, and that you use the mesh's swarm key.`
}

/**
 * Sorts a failed dial: a refused connection and a failed handshake (the peer
 * hung up or answered with bytes that are not a libp2p handshake under this
 * key) are final; a timeout or an unreachable network may still change.
 */
export function classifyDialError (err: unknown): DialOutcome {
  const chain = errorChain(err)
  const codes = chain.map(e => (e as { code?: unknown }).code).filter((c): c is string => typeof c === 'string')
  const names = chain.map(e => e.name)
  const text = chain.map(e => e.message).join(' ')
  if (codes.includes('ECONNREFUSED') || /ECONNREFUSED/.test(text)) return { final: true, error: 'connection refused' }
  if (names.includes('TimeoutError') || names.includes('AbortError')) return { final: false, error: 'no answer' }
  if (names.includes('MuxerUnavailableError')) return { final: true, error: 'the node closed the connection after the handshake (its --allow list may not name this client: `meshwork whoami` prints the id to add)' }
  if (names.includes('UnexpectedPeerError')) return { final: true, error: 'handshake failed: the node there has another peer id than the address says' }
  const connectCode = codes.find(c => /^E[A-Z]+$/.test(c) && c !== 'ECONNRESET' && c !== 'EPIPE')
  if (connectCode !== undefined) return { final: false, error: chain[0]?.message ?? connectCode }
  return { final: true, error: HANDSHAKE_FAILED }
}

/** The error, its causes and its inner errors (AggregateError), a few levels deep. */
export function errorChain (err: unknown): Error[] {
  const out: Error[] = []
  const visit = (e: unknown, depth: number): void => {
    if (!(e instanceof Error) || depth > 4) return
    out.push(e)
    visit((e as { cause?: unknown }).cause, depth + 1)
    for (const inner of (e as { errors?: unknown[] }).errors ?? []) visit(inner, depth + 1)
  }
  visit(err, 0)
  return out
}
