import type { Connection, Stream } from '@libp2p/interface'
import type { MeshNode } from '../node/mesh-node.ts'
import { MAX_STREAM_FRAME_BYTES, STREAM_IDLE_MS } from '../node/constants.ts'
import { PeerStreamLimiter, serveBounded, type PeerLimits } from '../node/peer-limits.ts'
import { FramedStream, closeStream, encodeJson, parseJson } from '../protocol/frame.ts'
import { FOLLOW_KEEPALIVE_MS, FOLLOW_PROTOCOL, followRequestSchema, type FollowEntry } from '../protocol/follow.ts'
import { toError } from '../util/errors.ts'
import { pause } from '../util/wait.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { followEntries } from './follow.ts'

/** Plans one connection may follow at once. @default 8 */
export const FOLLOW_STREAMS_PER_CONNECTION = 8

/**
 * What one peer may ask: 8 plans followed at once (one client identity is
 * shared by every command a user runs), 2 new ones a second (bursts of 8).
 * More are refused, counted in `streamsRefused` (`follow:too-fast`,
 * `follow:too-many-streams`) and logged once.
 */
export const FOLLOW_LIMITS: PeerLimits = { maxConcurrent: 8, perSecond: 2, burst: 8 }

/**
 * Messages to one client are at least this far apart, and at least 10 times
 * as far as building the last one took (a plan of thousands of tasks on a
 * large board): a busy mesh changes the board many times a second. @default 200 ms
 */
export const FOLLOW_PASS_MS = 200

export interface ServeFollowOptions {
  idleMs?: number
  limits?: PeerLimits
  passMs?: number
  keepaliveMs?: number
  logger?: Logger
}

/**
 * Serves `/meshwork/follow/1` on `node` (../protocol/follow.ts): a client
 * names the tasks it follows and is sent what changes of them, as this node's
 * board shows them, after each board update (at most one message a
 * `FOLLOW_PASS_MS`), until it closes the stream. Call once the node has started.
 */
export async function serveFollow (node: MeshNode, opts: ServeFollowOptions = {}): Promise<void> {
  const log = opts.logger ?? silentLogger
  const limiter = new PeerStreamLimiter(opts.limits ?? FOLLOW_LIMITS)
  await node.handle(FOLLOW_PROTOCOL, (stream: Stream, conn: Connection) => {
    serveBounded(limiter, stream, conn.remotePeer.toString(), { name: 'follow', what: 'plans followed', counts: node.stats.streamsRefused, logger: log }, async () => {
      await follow(node, stream, { idleMs: opts.idleMs ?? STREAM_IDLE_MS, passMs: opts.passMs ?? FOLLOW_PASS_MS, keepaliveMs: opts.keepaliveMs ?? FOLLOW_KEEPALIVE_MS, log, peer: conn.remotePeer.toString() })
    })
  }, { maxInboundStreams: FOLLOW_STREAMS_PER_CONNECTION })
}

async function follow (node: MeshNode, stream: Stream, o: { idleMs: number, passMs: number, keepaliveMs: number, log: Logger, peer: string }): Promise<void> {
  const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
  let ids: string[]
  try {
    const r = parseJson(followRequestSchema, await lp.readRaw({ signal: AbortSignal.timeout(o.idleMs) }))
    if (!r.ok) { stream.abort(new Error(`malformed follow request: ${r.reason.slice(0, 200)}`)); return }
    ids = r.value.ids
    o.log.debug('follow:start', { peer: o.peer, tasks: ids.length })
  } catch (err) {
    stream.abort(toError(err))
    return
  }
  // the client closes its side when it is done (or goes away): this read ends then
  const ended = new AbortController()
  lp.readRaw({ signal: ended.signal }).then(() => { ended.abort() }, () => { ended.abort() })
  let dirty = true
  let wake = (): void => {}
  const onUpdate = (): void => { dirty = true; wake() }
  const onEnd = (): void => { wake() }
  node.addEventListener('board:update', onUpdate)
  ended.signal.addEventListener('abort', onEnd, { once: true })
  const sent = new Map<string, string>()
  let lastSent = 0
  try {
    while (!ended.signal.aborted) {
      const now = Date.now()
      if (dirty || lastSent === 0 || now - lastSent >= o.keepaliveMs) {
        const builtFrom = performance.now()
        const changed: FollowEntry[] = []
        if (dirty || lastSent === 0) {
          dirty = false
          for (const e of followEntries(node.board.snapshot(), ids)) {
            const line = JSON.stringify(e)
            if (sent.get(e.id) === line) continue
            sent.set(e.id, line)
            changed.push(e)
          }
        }
        const spacing = Math.max(o.passMs, 10 * (performance.now() - builtFrom))
        if (changed.length > 0 || lastSent === 0 || now - lastSent >= o.keepaliveMs) {
          await lp.writeRaw(encodeJson({ tasks: changed }), { signal: AbortSignal.any([ended.signal, AbortSignal.timeout(o.idleMs)]) })
          lastSent = Date.now()
        }
        await pause(spacing, ended.signal)
        continue
      }
      // nothing new: until the board changes, the client leaves, or a keepalive is due
      await new Promise<void>(resolve => {
        const timer = setTimeout(done, Math.max(0, o.keepaliveMs - (now - lastSent)))
        wake = done
        function done (): void { clearTimeout(timer); wake = () => {}; resolve() }
        if (dirty || ended.signal.aborted) done()
      })
    }
    await closeStream(stream, o.idleMs)
    o.log.debug('follow:end', { peer: o.peer })
  } catch (err) {
    o.log.debug('follow:end', { peer: o.peer, error: toError(err).message })
    stream.abort(toError(err))
  } finally {
    node.removeEventListener('board:update', onUpdate)
    ended.signal.removeEventListener('abort', onEnd)
    ended.abort()
  }
}
