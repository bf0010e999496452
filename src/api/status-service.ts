import type { Connection, Stream } from '@libp2p/interface'
import type { MeshNode } from '../node/mesh-node.ts'
import { MAX_STREAM_FRAME_BYTES, STREAM_IDLE_MS } from '../node/constants.ts'
import { PeerStreamLimiter, serveBounded, type PeerLimits } from '../node/peer-limits.ts'
import { FramedStream, closeStream, encodeJson } from '../protocol/frame.ts'
import { STATUS_PROTOCOL } from '../protocol/status.ts'
import { toError } from '../util/errors.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { buildStatus } from './status.ts'

/** Status requests one connection may have open at once. @default 8 */
export const STATUS_STREAMS_PER_CONNECTION = 8

/**
 * What one peer may ask: 2 requests at once, 5 a second (bursts of 10). A
 * report is built from the whole board (tens of ms for thousands of tasks), a
 * `meshwork status` asks once per process, and `--watch` syncs the board
 * instead: a peer asking faster is refused, counted in `streamsRefused`
 * (`status:too-fast`, `status:too-many-streams`) and logged once.
 */
export const STATUS_LIMITS: PeerLimits = { maxConcurrent: 2, perSecond: 5, burst: 10 }

export interface ServeStatusOptions {
  idleMs?: number
  limits?: PeerLimits
  logger?: Logger
}

/**
 * Serves `/meshwork/status/1` on `node`: each request is answered with the
 * status report as this node sees the mesh (its board and its membership
 * view, what a light client would build after a board sync), then the stream
 * is closed. Call once the node has started.
 */
export async function serveStatus (node: MeshNode, opts: ServeStatusOptions = {}): Promise<void> {
  const idleMs = opts.idleMs ?? STREAM_IDLE_MS
  const log = opts.logger ?? silentLogger
  const limiter = new PeerStreamLimiter(opts.limits ?? STATUS_LIMITS)
  await node.handle(STATUS_PROTOCOL, (stream: Stream, conn: Connection) => {
    serveBounded(limiter, stream, conn.remotePeer.toString(), { name: 'status', what: 'status requests', counts: node.stats.streamsRefused, logger: log }, async () => { await answer(node, stream, idleMs) })
  }, { maxInboundStreams: STATUS_STREAMS_PER_CONNECTION })
}

async function answer (node: MeshNode, stream: Stream, idleMs: number): Promise<void> {
  try {
    const report = buildStatus(node.board.snapshot(), node.membersView())
    const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
    await lp.writeRaw(encodeJson(report), { signal: AbortSignal.timeout(idleMs) })
    // the asker reads the answer and goes; one that holds the stream open is aborted
    await closeStream(stream, idleMs)
  } catch (err) {
    stream.abort(toError(err))
  }
}
