/**
 * Both sides of `/meshwork/git-handoff/1` (frames in
 * src/protocol/git-handoff.ts): `handOff` asks a peer to take a branch from
 * this node; `serveHandoffs` answers such requests by fetching the commit
 * from the requester with `fetchFromPeer`, so a handed-off branch goes
 * through exactly the checks of any fetch (quarantine, `--strict` indexing,
 * connectivity, size and time limits). Which requests are taken is the
 * caller's `accept` (the merge leader takes only the task branches the board
 * says the requester ran). Kept apart from the `/meshwork/git/2` server: its
 * own handler, its own bound on transfers at once.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId, Stream } from '@libp2p/interface'
import { FramedStream, encodeJsonFrame, parseJson } from '../../protocol/frame.ts'
import {
  GIT_HANDOFF_PROTOCOL, HandoffFrame, MAX_HANDOFF_FRAME_BYTES, handoffRequestSchema, handoffResultSchema, type HandoffRequest, type HandoffResult
} from '../../protocol/git-handoff.ts'
import { toError } from '../../util/errors.ts'
import { silentLogger, type Logger } from '../../util/logger.ts'
import { isWellFormedRefName } from '../repo.ts'
import { fetchFromPeer, type FetchResult } from './fetch.ts'
import { GitTransferError, readFrame, type GitStreams } from './wire.ts'

export { GIT_HANDOFF_PROTOCOL, type HandoffRequest } from '../../protocol/git-handoff.ts'

/** Hand-offs a node fetches at once; more wait their turn (bounded by the requester's timeout). @default 4 */
export const DEFAULT_MAX_CONCURRENT_HANDOFFS = 4
/** Hand-offs waiting for a turn beyond which a request is answered `busy`. @default 64 */
export const MAX_WAITING_HANDOFFS = 64
/** Time bound of one hand-off, either side. @default 60 s */
export const DEFAULT_HANDOFF_TIMEOUT_MS = 60_000

/** Why a hand-off was not taken: the peer refused it, or it failed. */
export class HandoffError extends Error {
  override name = 'HandoffError'
  /** `unsupported`: the peer does not serve the protocol (an older meshwork); `unreachable`, `refused`, `busy`, `failed`, `timeout`, `protocol`. */
  readonly code: string
  constructor (code: string, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined)
    this.code = code
  }
}

/**
 * Asks `peer` to take `req.ref` at `req.oid` from this node: resolves once
 * the peer has the commit on that branch; throws a `HandoffError` otherwise.
 * This node must serve `/meshwork/git/2` (the peer fetches from it).
 */
export async function handOff (node: GitStreams, peer: string | PeerId, req: HandoffRequest, opts: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<void> {
  const peerText = peer.toString()
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDOFF_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = opts.signal !== undefined ? AbortSignal.any([opts.signal, timeout]) : timeout
  let stream: Stream
  try {
    stream = await node.dialProtocol(typeof peer === 'string' ? peerIdFromString(peer) : peer, GIT_HANDOFF_PROTOCOL, { signal })
  } catch (err) {
    if (timeout.aborted) throw new HandoffError('timeout', `opening ${GIT_HANDOFF_PROTOCOL} to ${peerText} took longer than ${timeoutMs} ms`, { cause: err })
    const e = toError(err)
    // multistream-select: the peer answered, but does not speak the protocol
    if (e.name === 'UnsupportedProtocolError' || /protocol selection failed|not supported/i.test(e.message)) throw new HandoffError('unsupported', `${peerText} does not take hand-offs (${GIT_HANDOFF_PROTOCOL}): ${e.message}`, { cause: err })
    throw new HandoffError('unreachable', `cannot open ${GIT_HANDOFF_PROTOCOL} to ${peerText}: ${e.message}`, { cause: err })
  }
  try {
    const lp = new FramedStream(stream, { maxDataLength: MAX_HANDOFF_FRAME_BYTES })
    await lp.writeRaw(encodeJsonFrame(HandoffFrame.REQUEST, req), { signal })
    const frame = await readFrame(lp, signal)
    if (frame.tag !== HandoffFrame.RESULT) throw new HandoffError('protocol', `${peerText}: expected a RESULT frame, got tag ${frame.tag}`)
    const r = parseJson(handoffResultSchema, frame.body)
    if (!r.ok) throw new HandoffError('protocol', `${peerText}: malformed RESULT frame: ${r.reason.slice(0, 300)}`)
    await stream.close({ signal }).catch(() => {})
    if (!r.value.ok) throw new HandoffError(r.value.code, `${peerText} did not take ${req.ref}: ${r.value.message}`)
    if (r.value.oid !== req.oid) throw new HandoffError('protocol', `${peerText} took ${r.value.oid}, not ${req.oid}`)
  } catch (err) {
    stream.abort(toError(err))
    if (err instanceof HandoffError) throw err
    if (timeout.aborted) throw new HandoffError('timeout', `hand-off of ${req.ref} to ${peerText} took longer than ${timeoutMs} ms`, { cause: err })
    throw new HandoffError('protocol', `hand-off of ${req.ref} to ${peerText}: ${toError(err).message}`, { cause: err })
  }
}

export interface ServeHandoffsOptions {
  /**
   * Whether to take `req` from `peer`: null to take it, else the reason it is
   * refused. May wait (for the board to catch up, say) within `signal`.
   */
  accept: (peer: string, req: HandoffRequest, signal: AbortSignal) => Promise<string | null>
  /** Called once a hand-off is in this repository (the requester is told right after). */
  onTaken?: (peer: string, req: HandoffRequest, res: FetchResult, ms: number) => void
  /** Called when the fetch of an accepted hand-off starts, and when it ends (taken or not). */
  onFetch?: (req: HandoffRequest, fetching: boolean) => void
  /**
   * Commits this repository surely has, announced as haves for the fetch (the
   * recent mains); absent or empty: read from the repository (two git processes).
   */
  haves?: () => string[]
  /** Fetches at once. @default DEFAULT_MAX_CONCURRENT_HANDOFFS */
  maxConcurrent?: number
  /** Time bound of one hand-off. @default DEFAULT_HANDOFF_TIMEOUT_MS */
  timeoutMs?: number
  logger?: Logger
}

export interface HandoffServer {
  close: () => Promise<void>
}

/** Takes hand-offs into `repoDir`: see `ServeHandoffsOptions`. */
export async function serveHandoffs (node: GitStreams, repoDir: string, opts: ServeHandoffsOptions): Promise<HandoffServer> {
  const log = opts.logger ?? silentLogger
  const maxConcurrent = Math.max(1, opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT_HANDOFFS)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDOFF_TIMEOUT_MS
  const controllers = new Set<AbortController>()
  let active = 0
  const waiting: Array<() => void> = []
  let closed = false

  /** A turn among `maxConcurrent` fetches; resolves to a release function. */
  const turn = async (signal: AbortSignal): Promise<() => void> => {
    if (active >= maxConcurrent) {
      if (waiting.length >= MAX_WAITING_HANDOFFS) throw new HandoffError('busy', `taking ${active} hand-offs with ${waiting.length} waiting`)
      await new Promise<void>((resolve, reject) => {
        const go = (): void => { signal.removeEventListener('abort', stop); resolve() }
        const stop = (): void => { const i = waiting.indexOf(go); if (i >= 0) waiting.splice(i, 1); reject(toError(signal.reason)) }
        signal.addEventListener('abort', stop, { once: true })
        waiting.push(go)
      })
    } else {
      active++
    }
    let released = false
    return () => {
      if (released) return
      released = true
      const next = waiting.shift()
      // the turn passes on as it is (active unchanged), or is given back
      if (next !== undefined) next()
      else active--
    }
  }

  const serveOne = async (stream: Stream, peer: string): Promise<void> => {
    const ac = new AbortController()
    controllers.add(ac)
    const signal = AbortSignal.any([ac.signal, AbortSignal.timeout(timeoutMs)])
    const lp = new FramedStream(stream, { maxDataLength: MAX_HANDOFF_FRAME_BYTES })
    let release: (() => void) | null = null
    const answer = async (r: HandoffResult): Promise<void> => {
      await lp.writeRaw(encodeJsonFrame(HandoffFrame.RESULT, r), { signal })
      await stream.close({ signal })
    }
    let req: HandoffRequest | null = null
    try {
      const frame = await readFrame(lp, signal)
      if (frame.tag !== HandoffFrame.REQUEST) throw new HandoffError('refused', `expected a REQUEST frame, got tag ${frame.tag}`)
      const parsed = parseJson(handoffRequestSchema, frame.body)
      if (!parsed.ok) throw new HandoffError('refused', `malformed REQUEST: ${parsed.reason.slice(0, 300)}`)
      req = parsed.value
      if (!req.ref.startsWith('refs/heads/') || !isWellFormedRefName(req.ref)) throw new HandoffError('refused', `not a branch: ${JSON.stringify(req.ref)}`)
      const refusal = await opts.accept(peer, req, signal)
      if (refusal !== null) throw new HandoffError('refused', refusal)
      release = await turn(signal)
      const started = Date.now()
      let res: FetchResult
      opts.onFetch?.(req, true)
      try {
        // by oid: exactly the commit asked about (the requester serves it only if a branch of its reaches it)
        const haves = opts.haves?.() ?? []
        res = await fetchFromPeer(node, peer, repoDir, req.oid, { intoRef: req.ref, timeoutMs, signal, logger: log, ...(haves.length > 0 ? { haves } : {}) })
      } catch (err) {
        throw new HandoffError(err instanceof GitTransferError && err.code === 'timeout' ? 'timeout' : 'failed', `fetching ${req.oid} from ${peer}: ${toError(err).message}`, { cause: err })
      } finally {
        opts.onFetch?.(req, false)
      }
      if (res.oid !== req.oid) throw new HandoffError('failed', `${peer}'s ${req.ref} is at ${res.oid}, not ${req.oid}`)
      opts.onTaken?.(peer, req, res, Date.now() - started)
      await answer({ ok: true, oid: res.oid })
    } catch (err) {
      const e = toError(err)
      const code = e instanceof HandoffError ? e.code : signal.aborted ? 'timeout' : 'failed'
      log.debug('git:handoff-refused', { peer, task: req?.task, code, error: e.message })
      try {
        await answer({ ok: false, code, message: e.message.slice(0, 1000) })
      } catch {
        stream.abort(e)
      }
    } finally {
      release?.()
      controllers.delete(ac)
    }
  }

  await node.handle(GIT_HANDOFF_PROTOCOL, (stream, connection) => {
    if (closed) { stream.abort(new Error('hand-off server closed')); return }
    void serveOne(stream, connection.remotePeer.toString()).catch(() => {})
  }, { maxInboundStreams: maxConcurrent + MAX_WAITING_HANDOFFS })

  return {
    close: async () => {
      if (closed) return
      closed = true
      await node.unhandle(GIT_HANDOFF_PROTOCOL).catch(() => {})
      for (const ac of controllers) ac.abort(new Error('hand-off server closed'))
    }
  }
}
