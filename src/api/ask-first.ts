/**
 * One question to the first mesh node that answers it, on a bare client host
 * (../node/client-host.ts): shared by `status` (`/meshwork/status/1`) and
 * `submit --wait` (`/meshwork/follow/1`). Every bootstrap address is dialled
 * at once; the first exchange that completes wins.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { MeshUnreachableError, toError } from '../util/errors.ts'
import { pause } from '../util/wait.ts'
import { classifyDialError, notAdmitted, noAnswerMessage, unreachableMessage, type DialOutcome } from './dial-outcome.ts'

/** Pause before an address whose failure may still change is tried again. @default 250 ms */
export const ASK_RETRY_MS = 250

export interface AskFirstInit<T> {
  host: Libp2p
  bootstrap: readonly string[]
  timeoutMs: number
  protocol: string
  /** The question and its answer on one stream; `signal` aborts once another address answered or the time is up. */
  exchange: (stream: Stream, peer: string, signal: AbortSignal) => Promise<T>
  /** An error of `exchange` that asking this address again would not change (a malformed answer). */
  isFinal?: (err: Error) => boolean
  /** Called with an answer that came after the winner's (its stream is the caller's to close). */
  discard?: (value: T) => void
}

/**
 * What came of asking: the first answer and the node that gave it, or
 * `unsupported` when no node answered and at least one does not serve the
 * protocol (a node of an earlier release; the caller asks the old way, in the
 * time left).
 */
export type AskAnswer<T> =
  | { kind: 'answer', value: T, peer: string }
  | { kind: 'unsupported', remainingMs: number }

/**
 * Asks every bootstrap address at once, returns the first answer. Fails like a
 * light client (`connectClient`): at once, with a `MeshUnreachableError`
 * naming each address and its error, when every address refuses the
 * connection, fails the handshake (a wrong swarm key, or not a meshwork node)
 * or hangs up right after it (a node whose `--allow` does not list this
 * client); after `timeoutMs` when no node answered. The host stays up: the
 * caller stops it.
 */
export async function askFirst<T> (init: AskFirstInit<T>): Promise<AskAnswer<T>> {
  const started = Date.now()
  const self = init.host.peerId.toString()
  const outcomes = new Map<string, DialOutcome>()
  const finished = new AbortController()
  const signal = AbortSignal.any([finished.signal, AbortSignal.timeout(init.timeoutMs)])
  let unsupported = false
  let won = false

  const ask = async (addr: string): Promise<{ value: T, peer: string } | null> => {
    const ma = multiaddr(addr)
    while (!signal.aborted) {
      let conn: Connection
      try {
        conn = await init.host.dial(ma, { signal })
      } catch (err) {
        if (signal.aborted) return null
        const outcome = classifyDialError(err)
        outcomes.set(addr, outcome)
        if (outcome.final) return null
        await pause(ASK_RETRY_MS, signal)
        continue
      }
      const peer = conn.remotePeer.toString()
      try {
        const stream = await conn.newStream(init.protocol, { signal })
        const value = await init.exchange(stream, peer, signal)
        outcomes.delete(addr)
        if (won) { init.discard?.(value); return null }
        won = true
        return { value, peer }
      } catch (err) {
        if (signal.aborted) return null
        const e = toError(err)
        if (e.name === 'UnsupportedProtocolError') {
          unsupported = true
          outcomes.set(addr, { final: true, error: `the node does not serve ${init.protocol}` })
          return null
        }
        if (init.isFinal?.(e) === true) {
          outcomes.set(addr, { final: true, error: e.message })
          return null
        }
        // a node whose --allow does not list this client completes the handshake (the peer id is only
        // proven then) and hangs up at once: the connection is gone before any stream could open
        if (conn.status !== 'open') {
          outcomes.set(addr, notAdmitted(self))
          return null
        }
        outcomes.set(addr, { final: false, error: e.message })
        await pause(ASK_RETRY_MS, signal)
      }
    }
    return null
  }

  try {
    const answer = await firstOf(init.bootstrap.map(ask))
    if (answer !== null) return { kind: 'answer', ...answer }
    if (unsupported) return { kind: 'unsupported', remainingMs: Math.max(0, init.timeoutMs - (Date.now() - started)) }
    const final = init.bootstrap.every(a => outcomes.get(a)?.final === true)
    throw new MeshUnreachableError(final ? unreachableMessage(init.bootstrap, outcomes) : noAnswerMessage(init.bootstrap, outcomes, init.timeoutMs))
  } finally {
    finished.abort()
  }
}

/** The first non-null value of `attempts`, or null once all of them ended with null. */
async function firstOf<T> (attempts: Array<Promise<T | null>>): Promise<T | null> {
  return await new Promise<T | null>((resolve, reject) => {
    let left = attempts.length
    if (left === 0) { resolve(null); return }
    for (const a of attempts) {
      a.then(v => {
        left--
        if (v !== null) resolve(v)
        else if (left === 0) resolve(null)
      }, reject)
    }
  })
}
