import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import type { Startable } from './service.ts'
import type { StreamHost } from './board-replication.ts'
import { MAX_STREAM_FRAME_BYTES, STREAM_IDLE_MS } from './constants.ts'
import { FramedStream, closeStream, encodeJson } from '../protocol/frame.ts'
import { MEMBERS_PROTOCOL, decodeMembersView, type MembersView } from '../protocol/members.ts'
import { toError } from '../util/errors.ts'

export interface MembersProtocolComponents {
  streams: StreamHost
  /** Whether to answer peers (nodes do; light clients only ask). */
  serve: boolean
  /** This node's view, as answered. */
  view: () => MembersView
  /** How long the asker may keep the stream open after the answer. @default STREAM_IDLE_MS */
  idleMs?: number
}

/** `/meshwork/members/1`: answers a peer's question for this node's membership view, and asks others. */
export class MembersProtocol implements Startable {
  readonly #c: MembersProtocolComponents
  #started = false

  constructor (components: MembersProtocolComponents) {
    this.#c = components
  }

  async start (): Promise<void> {
    if (this.#started || !this.#c.serve) return
    this.#started = true
    await this.#c.streams.handle(MEMBERS_PROTOCOL, (stream) => { void this.#serve(stream) }, { maxInboundStreams: 32 })
  }

  stop (): void {}

  /** Asks `peer` for its membership view. */
  async fetch (peer: string): Promise<MembersView> {
    const stream = await this.#c.streams.dialProtocol(peerIdFromString(peer), MEMBERS_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
    try {
      const data = await lp.readRaw({ signal: AbortSignal.timeout(5000) })
      await closeStream(stream, this.#c.idleMs ?? STREAM_IDLE_MS)
      return decodeMembersView(data, peer)
    } catch (err) {
      stream.abort(toError(err))
      throw err
    }
  }

  async #serve (stream: Stream): Promise<void> {
    try {
      const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
      await lp.writeRaw(encodeJson(this.#c.view()), { signal: AbortSignal.timeout(5000) })
      // the asker closes its side once it has read the answer; one that never does is aborted
      await closeStream(stream, this.#c.idleMs ?? STREAM_IDLE_MS)
    } catch (err) {
      stream.abort(toError(err))
    }
  }
}
