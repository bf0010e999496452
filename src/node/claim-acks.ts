import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import type { Startable } from './service.ts'
import type { StreamHost } from './board-replication.ts'
import { FramedStream, encodeJson, parseJson } from '../protocol/frame.ts'
import { toError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'

/**
 * `/meshwork/ack/1`: a claim's acknowledgements sent to the claimant alone.
 *
 * A claimant starts its run once every live peer's heads contain its claim
 * (src/scheduler/scheduler.ts, `#settle`). Peers used to say so by bringing
 * their next heartbeat forward: a presence message gossiped to every node, so
 * each claim cost every node a message from every other (at 8 nodes, most of
 * the presence messages a node received in a run). Now a peer whose claimant
 * announces this protocol (`Presence.acks`) writes its heads on disk to that
 * claimant only, over one long-lived stream per claimant; the heartbeat keeps
 * its period. A claimant that does not announce it (an older version) gets
 * the brought-forward heartbeat as before, and a claimant reads both.
 *
 * The sender is the connection's authenticated peer (Noise), so the frame
 * needs no signature; an acknowledgement that names heads this node lacks
 * counts for nothing (`Board.seenBy`), as in a heartbeat.
 */
export const ACK_PROTOCOL = '/meshwork/ack/1'

/** Largest acknowledgement frame: 64 heads of 64 hex digits, in JSON. @default 8 KiB */
const MAX_ACK_FRAME_BYTES = 8 * 1024

/** Inbound acknowledgement streams a peer may hold open on one connection. */
const MAX_INBOUND_ACK_STREAMS = 2

/**
 * Acknowledgements one inbound stream may bring in a second; a peer that sends
 * more (a node acknowledges at most once per remote claim, writes to one
 * claimant one at a time) has its stream closed. @default 200
 */
export const MAX_ACKS_PER_SECOND = 200

/** How long one acknowledgement may take to write before its stream is given up (the next one opens another). @default 5000 ms */
const ACK_WRITE_TIMEOUT_MS = 5000

const ackSchema = z.object({
  heads: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(64)
})

export interface ClaimAcksComponents {
  streams: StreamHost
  /** Whether this node has a connection to `peer` now (an acknowledgement never dials). */
  connected: (peer: string) => boolean
  /** The heads this node may acknowledge (those on disk). */
  heads: () => string[]
  /** An acknowledgement arrived from `peer`. */
  onAck: (peer: string, heads: string[]) => void
  /** An acknowledgement to `peer` could not be written (twice): the caller acknowledges by heartbeat instead. */
  onFailed?: (peer: string) => void
  /** Counts acknowledgements sent, received, and sends that failed (the node's `stats.claimAcks`). */
  stats: { sent: number, received: number, failed: number }
  logger: Logger
}

export class ClaimAcks implements Startable {
  readonly #c: ClaimAcksComponents
  readonly #out = new Map<string, { stream: Stream, lp: FramedStream }>()
  /** Peers a write is in flight to: one at a time each; `#again`, those asked meanwhile get one more with the latest heads. */
  readonly #sending = new Set<string>()
  readonly #again = new Set<string>()
  #started = false

  constructor (components: ClaimAcksComponents) {
    this.#c = components
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.#c.streams.handle(ACK_PROTOCOL, (stream, conn) => { void this.#receive(stream, conn.remotePeer.toString()) }, { maxInboundStreams: MAX_INBOUND_ACK_STREAMS })
  }

  stop (): void {
    this.#started = false
    for (const { stream } of this.#out.values()) stream.abort(new Error('node stopping'))
    this.#out.clear()
  }

  /**
   * Sends this node's heads on disk to `peer` now (or right after the write in
   * flight to it); false when it cannot (not started, or no connection to the
   * peer: in a large mesh not every node is connected to every other, and an
   * acknowledgement does not open connections), and the caller acknowledges
   * by heartbeat instead.
   */
  send (peer: string): boolean {
    if (!this.#started || !this.#c.connected(peer)) return false
    if (this.#sending.has(peer)) { this.#again.add(peer); return true }
    this.#sending.add(peer)
    void this.#write(peer).catch(err => { this.#c.logger.debug('ack:failed', { peer, error: toError(err).message }) }).finally(() => {
      this.#sending.delete(peer)
      if (this.#again.delete(peer)) this.send(peer)
    })
    return true
  }

  async #write (peer: string): Promise<void> {
    const frame = encodeJson({ heads: this.#c.heads().slice(0, 64) })
    for (let attempt = 0; attempt < 2; attempt++) {
      let out = this.#out.get(peer)
      try {
        if (out === undefined || out.stream.status !== 'open') {
          const stream = await this.#c.streams.dialProtocol(peerIdFromString(peer), ACK_PROTOCOL, { signal: AbortSignal.timeout(ACK_WRITE_TIMEOUT_MS) })
          out = { stream, lp: new FramedStream(stream, { maxDataLength: MAX_ACK_FRAME_BYTES }) }
          this.#out.set(peer, out)
          stream.addEventListener('close', () => { if (this.#out.get(peer)?.stream === stream) this.#out.delete(peer) }, { once: true })
        }
        await out.lp.writeRaw(frame, { signal: AbortSignal.timeout(ACK_WRITE_TIMEOUT_MS) })
        this.#c.stats.sent++
        return
      } catch (err) {
        if (out !== undefined) {
          out.stream.abort(toError(err))
          if (this.#out.get(peer) === out) this.#out.delete(peer)
        }
        if (attempt === 1) {
          this.#c.stats.failed++
          this.#c.logger.debug('ack:failed', { peer, error: toError(err).message })
          this.#c.onFailed?.(peer)
        }
      }
    }
  }

  async #receive (stream: Stream, peer: string): Promise<void> {
    const lp = new FramedStream(stream, { maxDataLength: MAX_ACK_FRAME_BYTES })
    let second = 0
    let inSecond = 0
    try {
      for (;;) {
        const data = await lp.readRaw()
        const now = Math.floor(Date.now() / 1000)
        if (now !== second) { second = now; inSecond = 0 }
        if (++inSecond > MAX_ACKS_PER_SECOND) throw new Error(`more than ${MAX_ACKS_PER_SECOND} acknowledgements in a second`)
        const parsed = parseJson(ackSchema, data)
        if (!parsed.ok) throw new Error(`malformed acknowledgement: ${parsed.reason.slice(0, 200)}`)
        this.#c.stats.received++
        this.#c.onAck(peer, parsed.value.heads)
      }
    } catch (err) {
      // the peer closed its side (its node stopping, an idle stream) or sent something else: this stream is done
      if (stream.status === 'open') {
        this.#c.logger.debug('ack:stream-ended', { peer, error: toError(err).message })
        stream.abort(toError(err))
      }
    }
  }
}
