import type { Stream } from '@libp2p/interface'
import type { MeshNode } from '../node/mesh-node.ts'
import { MAX_STREAM_FRAME_BYTES, STREAM_IDLE_MS } from '../node/constants.ts'
import { FramedStream, closeStream, encodeJson } from '../protocol/frame.ts'
import { STATUS_PROTOCOL } from '../protocol/status.ts'
import { toError } from '../util/errors.ts'
import { buildStatus } from './status.ts'

/** Status requests one connection may have open at once. @default 8 */
export const STATUS_STREAMS_PER_CONNECTION = 8

/**
 * Serves `/meshwork/status/1` on `node`: each request is answered with the
 * status report as this node sees the mesh (its board and its membership
 * view, what a light client would build after a board sync), then the stream
 * is closed. Call once the node has started.
 */
export async function serveStatus (node: MeshNode, idleMs = STREAM_IDLE_MS): Promise<void> {
  await node.handle(STATUS_PROTOCOL, stream => { void answer(node, stream, idleMs) }, { maxInboundStreams: STATUS_STREAMS_PER_CONNECTION })
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
