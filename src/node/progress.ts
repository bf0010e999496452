import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Startable } from './service.ts'
import type { Gossip } from './gossip.ts'
import { MAX_PROGRESS_BYTES, decodeProgress, encodeProgress, type ProgressEvent } from '../protocol/presence.ts'

/** Per task, at most one progress event goes out per this many ms; the rest are kept locally only. */
const PROGRESS_MIN_INTERVAL_MS = 250

/** Progress events of tasks kept (the oldest is dropped first). */
const MAX_TASKS_KEPT = 1000

export interface ProgressComponents {
  gossip: Gossip
  /** The progress gossip topic. */
  topic: string
  /** Whether to receive everyone's progress from the start (nodes; clients call `follow`). */
  follow: boolean
  peerId: () => string
  /** A progress event, local or from a peer. */
  onProgress: (p: ProgressEvent) => void
}

/**
 * Agent progress: shared with the mesh on its own gossip topic (never on the
 * board), throttled per task, and the latest event of each task kept for
 * status and the TUI.
 */
export class Progress implements Startable {
  readonly #c: ProgressComponents
  readonly #latest = new Map<string, ProgressEvent>()
  readonly #sent = new Map<string, number>()

  constructor (components: ProgressComponents) {
    this.#c = components
    components.gossip.route(components.topic, {
      validate: (msg, from) => {
        if (msg.data.length > MAX_PROGRESS_BYTES) return components.gossip.reject('oversized', from)
        const p = decodeProgress(msg.data)
        if (p === null) return components.gossip.reject('bad-progress', from)
        if (p.peerId !== from) return components.gossip.reject('progress-spoofed', from)
        return TopicValidatorResult.Accept
      },
      handle: (msg) => {
        const p = decodeProgress(msg.data)
        if (p !== null) this.#note(p)
      }
    })
  }

  start (): void {}

  afterStart (): void {
    if (this.#c.follow) this.follow()
  }

  stop (): void {}

  /** Starts receiving the mesh's progress events. */
  follow (): void {
    this.#c.gossip.subscribe(this.#c.topic)
  }

  /** The latest progress event of each task heard of. */
  latest (): ReadonlyMap<string, ProgressEvent> {
    return this.#latest
  }

  /**
   * Drops what is no longer needed: the send times older than the throttle
   * interval (they no longer hold anything back), and the latest event of each
   * task `finished` says is over (merged, failed or cancelled).
   */
  prune (finished: (taskId: string) => boolean, now = Date.now()): void {
    for (const [id, at] of this.#sent) if (now - at >= PROGRESS_MIN_INTERVAL_MS) this.#sent.delete(id)
    for (const id of this.#latest.keys()) if (finished(id)) this.#latest.delete(id)
  }

  /** Tasks with a send time kept (for tests of `prune`). */
  get throttled (): number {
    return this.#sent.size
  }

  /** Notes a local agent's progress and shares it (at most four events a second per task). */
  publish (taskId: string, kind: ProgressEvent['kind'], text: string): void {
    const p: ProgressEvent = { v: 1, peerId: this.#c.peerId(), taskId, kind, text: text.slice(0, 1000), at: Date.now() }
    this.#note(p)
    const last = this.#sent.get(taskId) ?? 0
    if (p.at - last < PROGRESS_MIN_INTERVAL_MS) return
    this.#sent.set(taskId, p.at)
    void this.#c.gossip.publish(this.#c.topic, encodeProgress(p))
  }

  #note (p: ProgressEvent): void {
    this.#latest.set(p.taskId, p)
    if (this.#latest.size > MAX_TASKS_KEPT) this.#latest.delete(this.#latest.keys().next().value as string)
    this.#c.onProgress(p)
  }
}
