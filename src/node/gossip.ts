import { TopicValidatorResult, type GossipSub, type Message, type SignedMessage } from '@libp2p/gossipsub'
import type { Startable } from './service.ts'
import { MAX_GOSSIP_BYTES } from './constants.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** What of gossipsub the node's topics use. */
export type GossipPubsub = Pick<GossipSub, 'publish' | 'subscribe' | 'getTopics' | 'topicValidators' | 'addEventListener' | 'removeEventListener'>

export interface GossipComponents {
  pubsub: GossipPubsub
  /** Whether the host runs (publishing before or after is a no-op). */
  hostStarted: () => boolean
  logger: Logger
  /** Counts of rejected messages by reason (the node's `stats.gossipRejected`). */
  rejected: Record<string, number>
  /** Gossip this node published, all topics (the node's `stats.gossipSent`). */
  sent: { messages: number, bytes: number }
  /** Test and benchmark knob: hold every inbound message this long before handling it. */
  delayMs: number
  /** Whether a message's author may be heard (`--allow`); absent: everyone. */
  admits?: (peerId: string) => boolean
}

/** One gossip topic's validation (before gossipsub forwards a message) and handling (after). */
export interface TopicHandler {
  /**
   * Checks a signed message; use `Gossip.reject` to refuse it with a counted
   * reason. `direct`: this copy came from its author itself, not forwarded by
   * another peer (gossipsub validates only the first copy of a message).
   */
  validate: (msg: SignedMessage, from: string, direct: boolean) => TopicValidatorResult
  /** Handles an accepted message; a throw counts as an `apply-failed` rejection. */
  handle: (msg: SignedMessage, from: string) => void
}

/**
 * The node's gossip: routes each topic's messages to its handler, counts and
 * logs rejections, and publishes within the size cap. Unsigned messages are
 * refused on every topic.
 */
export class Gossip implements Startable {
  readonly #c: GossipComponents
  readonly #log: Logger
  readonly #handlers = new Map<string, TopicHandler>()
  #started = false
  #stopping = false
  #stopped = false
  readonly #onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (this.#c.delayMs > 0) setTimeout(() => { if (!this.#stopping) this.#deliver(msg) }, this.#c.delayMs)
    else this.#deliver(msg)
  }

  constructor (components: GossipComponents) {
    this.#c = components
    this.#log = components.logger
  }

  /** Validates and handles `topic`'s messages with `handler` (call before `start`). */
  route (topic: string, handler: TopicHandler): void {
    this.#handlers.set(topic, handler)
    this.#c.pubsub.topicValidators.set(topic, (peer, msg) => {
      if (msg.type !== 'signed') return this.reject('unsigned', '?')
      const from = msg.from.toString()
      // a listed peer may forward what an unlisted one wrote: the author decides, not the forwarder.
      // Ignored rather than rejected, so gossipsub does not penalise the forwarder (a node whose list differs)
      if (this.#c.admits !== undefined && !this.#c.admits(from)) {
        this.reject('not-allowed', from)
        return TopicValidatorResult.Ignore
      }
      return handler.validate(msg, from, peer.equals(msg.from))
    })
  }

  start (): void {
    if (this.#started) return
    this.#started = true
    this.#c.pubsub.addEventListener('message', this.#onMessage)
  }

  /** Drops messages still held back by `delayMs`. */
  beforeStop (): void {
    this.#stopping = true
  }

  /** Stops handling inbound messages (publishing still works while the host runs). */
  stop (): void {
    this.beforeStop()
    if (this.#stopped) return
    this.#stopped = true
    this.#c.pubsub.removeEventListener('message', this.#onMessage)
  }

  /** Subscribes to `topic` unless already subscribed. */
  subscribe (topic: string): void {
    if (!this.#c.pubsub.getTopics().includes(topic)) this.#c.pubsub.subscribe(topic)
  }

  /** Counts and logs a refused message; returns the validator result that drops it. */
  reject (reason: string, from: string): TopicValidatorResult {
    this.#c.rejected[reason] = (this.#c.rejected[reason] ?? 0) + 1
    this.#log.warn('gossip:rejected', { reason, from })
    return TopicValidatorResult.Reject
  }

  /**
   * Counts a message dropped without blaming the peer that forwarded it (it is
   * not forwarded either); logged at debug level only, since a flood of them
   * (fake peers) must not flood the log.
   */
  ignore (reason: string, from: string): TopicValidatorResult {
    this.#c.rejected[reason] = (this.#c.rejected[reason] ?? 0) + 1
    this.#log.debug('gossip:ignored', { reason, from })
    return TopicValidatorResult.Ignore
  }

  /** Publishes `data` on `topic`; throws above the size cap, logs (never throws) a failed publish. */
  async publish (topic: string, data: Uint8Array): Promise<void> {
    if (data.length > MAX_GOSSIP_BYTES) throw new Error(`refusing to publish ${data.length} bytes on ${topic}: the cap is ${MAX_GOSSIP_BYTES}`)
    if (!this.#c.hostStarted()) return
    try {
      await this.#c.pubsub.publish(topic, data)
      this.#c.sent.messages++
      this.#c.sent.bytes += data.length
    } catch (err) {
      this.#log.debug('gossip:publish-failed', { topic, error: toError(err).message })
    }
  }

  #deliver (msg: Message): void {
    if (msg.type !== 'signed') return
    const handler = this.#handlers.get(msg.topic)
    if (handler === undefined) return
    const from = msg.from.toString()
    try {
      handler.handle(msg, from)
    } catch (err) {
      this.reject('apply-failed', from)
      this.#log.warn('gossip:apply-failed', { from, error: toError(err).message })
    }
  }
}
