import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, PrivateKey } from '@libp2p/interface'
import { createClientHost } from '../node/client-host.ts'
import { MAX_STREAM_FRAME_BYTES } from '../node/constants.ts'
import type { SwarmKey } from '../node/swarm-key.ts'
import { FramedStream } from '../protocol/frame.ts'
import { BadStatusReportError, STATUS_PROTOCOL, decodeStatusReport } from '../protocol/status.ts'
import { MeshUnreachableError, toError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { classifyDialError, notAdmitted, noAnswerMessage, unreachableMessage, type DialOutcome } from './dial-outcome.ts'
import type { StatusReport } from './status.ts'

export interface StatusRequestInit {
  key: SwarmKey
  bootstrap: string[]
  timeoutMs: number
  /** The client's identity (`--identity`): a node's `--allow` admits or refuses it. */
  privateKey: PrivateKey
  logger?: Logger
}

/**
 * What came of asking the bootstrap nodes for the status: the report and the
 * node that sent it, or `unsupported` when no node answered and at least one
 * does not serve `/meshwork/status/1` (a node of an earlier release; the caller
 * reads the status through a light mesh client instead, in the time left).
 */
export type StatusAnswer =
  | { kind: 'report', report: StatusReport, peer: string }
  | { kind: 'unsupported', remainingMs: number }

/** Pause before an address whose failure may still change is tried again. @default 250 ms */
export const STATUS_RETRY_MS = 250

/**
 * Asks a mesh node for its status report over `/meshwork/status/1`: every
 * bootstrap address is dialled at once by a bare libp2p host (./client-host.ts),
 * the first report that arrives wins, and the host is stopped before this
 * returns.
 *
 * Fails like a light client (`connectClient`): at once, with a
 * `MeshUnreachableError` naming each address and its error, when every address
 * refuses the connection, fails the handshake (a wrong swarm key, or not a
 * meshwork node) or hangs up right after it (a node whose `--allow` does not
 * list this client); after `timeoutMs` when no node answered.
 */
export async function requestStatus (init: StatusRequestInit): Promise<StatusAnswer> {
  const started = Date.now()
  const host = await createClientHost({ privateKey: init.privateKey, swarmKey: init.key, ...(init.logger !== undefined ? { logger: init.logger } : {}) })
  const self = host.peerId.toString()
  const outcomes = new Map<string, DialOutcome>()
  const finished = new AbortController()
  const signal = AbortSignal.any([finished.signal, AbortSignal.timeout(init.timeoutMs)])
  let unsupported = false

  const ask = async (addr: string): Promise<{ report: StatusReport, peer: string } | null> => {
    const ma = multiaddr(addr)
    while (!signal.aborted) {
      let conn: Connection
      try {
        conn = await host.dial(ma, { signal })
      } catch (err) {
        if (signal.aborted) return null
        const outcome = classifyDialError(err)
        outcomes.set(addr, outcome)
        if (outcome.final) return null
        await pause(STATUS_RETRY_MS, signal)
        continue
      }
      const peer = conn.remotePeer.toString()
      try {
        const stream = await conn.newStream(STATUS_PROTOCOL, { signal })
        const data = await new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES }).readRaw({ signal })
        const report = decodeStatusReport(data, peer)
        outcomes.delete(addr)
        return { report, peer }
      } catch (err) {
        if (signal.aborted) return null
        const e = toError(err)
        if (e.name === 'UnsupportedProtocolError') {
          unsupported = true
          outcomes.set(addr, { final: true, error: `the node does not serve ${STATUS_PROTOCOL}` })
          return null
        }
        if (e instanceof BadStatusReportError) {
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
        await pause(STATUS_RETRY_MS, signal)
      }
    }
    return null
  }

  try {
    const answer = await firstOf(init.bootstrap.map(ask))
    if (answer !== null) return { kind: 'report', ...answer }
    if (unsupported) return { kind: 'unsupported', remainingMs: Math.max(0, init.timeoutMs - (Date.now() - started)) }
    const final = init.bootstrap.every(a => outcomes.get(a)?.final === true)
    throw new MeshUnreachableError(final ? unreachableMessage(init.bootstrap, outcomes) : noAnswerMessage(init.bootstrap, outcomes, init.timeoutMs))
  } finally {
    finished.abort()
    await host.stop()
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

/** Waits `ms`, or less when `signal` aborts first. */
async function pause (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>(resolve => {
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}
