/**
 * Per-peer bounds on inbound streams of one protocol: how many a peer may have
 * open at once and how fast it may open them (a token bucket). Entries of peers
 * that hold no stream and whose bucket is full again carry no information and
 * are pruned, so the map holds only peers active in the last few seconds.
 */

import type { Stream } from '@libp2p/interface'
import { StreamRefusedError } from '../protocol/frame.ts'
import type { Logger } from '../util/logger.ts'

export interface PeerLimits {
  /** Streams one peer may hold at once. */
  maxConcurrent: number
  /** Streams one peer may open per second, sustained. */
  perSecond: number
  /** Streams one peer may open at once after a quiet while. */
  burst: number
}

/** Why a stream was refused: the peer holds `maxConcurrent` already, or opened them faster than the bucket refills. */
export type Refusal = 'too-many-streams' | 'too-fast'

export type Admission =
  | { ok: true, release: () => void }
  | { ok: false, reason: Refusal, /** the first refusal of this peer (log it; later ones are only counted) */ first: boolean }

interface Entry {
  active: number
  tokens: number
  /** Clock reading of the last refill. */
  at: number
}

/** Peers whose first refusal was logged, remembered at most (oldest forgotten first). */
const MAX_LOGGED = 1024

/** Above this many entries, `admit` prunes before adding one. */
const PRUNE_ABOVE = 1024

export class PeerStreamLimiter {
  readonly limits: PeerLimits
  readonly #now: () => number
  readonly #entries = new Map<string, Entry>()
  readonly #logged = new Set<string>()

  /** `now`: a monotonic clock in ms (tests inject one). */
  constructor (limits: PeerLimits, now: () => number = () => performance.now()) {
    this.limits = limits
    this.#now = now
  }

  /** Peers with an entry (holding streams or with a bucket not yet full). */
  get size (): number {
    return this.#entries.size
  }

  /** Streams `peer` holds now. */
  active (peer: string): number {
    return this.#entries.get(peer)?.active ?? 0
  }

  /**
   * Asks for one stream of `peer`. Admitted: call `release` once when the
   * stream ends. Every attempt, refused or not, takes a token while there is
   * one, so a peer in a loop stays refused until it slows down.
   */
  admit (peer: string): Admission {
    const now = this.#now()
    let e = this.#entries.get(peer)
    if (e === undefined) {
      if (this.#entries.size >= PRUNE_ABOVE) this.prune()
      e = { active: 0, tokens: this.limits.burst, at: now }
      this.#entries.set(peer, e)
    } else {
      this.#refill(e, now)
    }
    let reason: Refusal | null = null
    if (e.tokens < 1) reason = 'too-fast'
    else {
      e.tokens -= 1
      if (e.active >= this.limits.maxConcurrent) reason = 'too-many-streams'
    }
    if (reason !== null) {
      const first = !this.#logged.has(peer)
      if (first) {
        this.#logged.add(peer)
        if (this.#logged.size > MAX_LOGGED) this.#logged.delete(this.#logged.values().next().value as string)
      }
      return { ok: false, reason, first }
    }
    e.active++
    const entry = e
    let released = false
    return {
      ok: true,
      release: () => {
        if (released) return
        released = true
        entry.active--
      }
    }
  }

  /** Drops entries of peers that hold no stream and whose bucket is full again; returns how many. */
  prune (): number {
    const now = this.#now()
    let dropped = 0
    for (const [peer, e] of this.#entries) {
      this.#refill(e, now)
      if (e.active > 0 || e.tokens < this.limits.burst) continue
      this.#entries.delete(peer)
      dropped++
    }
    return dropped
  }

  #refill (e: Entry, now: number): void {
    const elapsed = Math.max(0, now - e.at)
    e.tokens = Math.min(this.limits.burst, e.tokens + elapsed * this.limits.perSecond / 1000)
    e.at = now
  }
}

/** Where `serveBounded` reports a refused stream. */
export interface BoundedProtocol {
  /** Short protocol name: the counter key's and the log event's prefix (`sync`: `sync:too-fast`, `sync:refused`). */
  name: string
  /** What a peer opens, for the log line ("board syncs", "status requests"). */
  what: string
  /** The node's counts of refused streams (`NodeStats.streamsRefused`). */
  counts: Record<string, number>
  logger: Logger
}

/**
 * Serves an inbound `stream` of `peer` with `serve` if `limiter` admits it,
 * the peer's slot held until the stream is gone (a session that ended but
 * whose stream the peer holds half-open counts until it is closed); a refused
 * stream is reset at once, counted under `<name>:<reason>` and logged once
 * per peer.
 */
export function serveBounded (limiter: PeerStreamLimiter, stream: Stream, peer: string, p: BoundedProtocol, serve: () => Promise<void>): void {
  const admission = limiter.admit(peer)
  if (!admission.ok) {
    const key = `${p.name}:${admission.reason}`
    p.counts[key] = (p.counts[key] ?? 0) + 1
    if (admission.first) {
      const l = limiter.limits
      p.logger.warn(`${p.name}:refused`, {
        peer,
        reason: admission.reason,
        note: `a peer may have ${l.maxConcurrent} ${p.what} with this node at once and start ${l.perSecond} a second (bursts of ${l.burst}); more are refused (logged once per peer, counted in streamsRefused)`
      })
    }
    stream.abort(new StreamRefusedError(`${p.name} refused: ${admission.reason}`))
    return
  }
  void serve().finally(() => {
    if (stream.status === 'open' || stream.status === 'closing') stream.addEventListener('close', admission.release, { once: true })
    else admission.release()
  })
}
