/**
 * Whether this node can run agents at all: `ok`, or `paused` for a cause that
 * is the node's, not a task's (credentials refused, a full disk, a usage limit
 * until a reset time). A paused node claims nothing until `until`; then it may
 * start one run to find out whether the cause is gone (a run that gets past the
 * cause clears the pause; one that hits it again pauses the node anew, for
 * longer). Published in presence, shown in status and the TUI.
 */

export interface HealthState {
  state: 'ok' | 'paused'
  /** Why the node is paused (null when ok). */
  reason: string | null
  /** Epoch ms when the node tries again (null when ok, or paused with no end in sight). */
  until: number | null
  /** What paused it (`usage-limit`, `credentials`, `disk`...), when paused. */
  cause?: string
  /** With a usage limit: the fingerprint of the credentials it was hit with (never the secret). */
  credential?: string
}

export const HEALTH_OK: HealthState = { state: 'ok', reason: null, until: null }

/** First pause after a cause (doubles on each repeat, up to `MAX_PAUSE_MS`). @default 30 s */
export const PAUSE_BASE_MS = 30_000
/** Longest pause between two tries. @default 15 min */
export const MAX_PAUSE_MS = 15 * 60_000

/** Longest reason kept (it is sent with every heartbeat). @default 300 */
export const MAX_REASON_CHARS = 300

export class NodeHealth extends EventTarget {
  #state: HealthState = HEALTH_OK
  #streak = 0
  /** Which cause paused the node (e.g. 'credentials', 'disk'): only that cause's clear ends the pause. */
  #cause: string | null = null
  /** The pause ends by itself at `until` (a usage limit's reset time), without a trial run. */
  #selfEnding = false
  readonly baseMs: number
  readonly maxMs: number

  constructor (opts: { baseMs?: number, maxMs?: number } = {}) {
    super()
    this.baseMs = opts.baseMs ?? PAUSE_BASE_MS
    this.maxMs = Math.max(this.baseMs, opts.maxMs ?? MAX_PAUSE_MS)
  }

  get state (): HealthState {
    this.#expire(Date.now())
    return { ...this.#state }
  }

  get paused (): boolean {
    this.#expire(Date.now())
    return this.#state.state === 'paused'
  }

  #expire (now: number): void {
    if (this.#selfEnding && this.#state.until !== null && now >= this.#state.until) this.clear()
  }

  /**
   * Pauses the node for `reason` until `until` (epoch ms; null: until `clear`).
   * `cause` names the kind of trouble; with `endsByItself` the pause is over at
   * `until` (a usage limit's reset time), else only a run that gets past the
   * cause (or `clear`) ends it.
   */
  setPaused (reason: string, until: number | null, cause = 'other', endsByItself = false, credential?: string): void {
    this.#cause = cause
    this.#selfEnding = endsByItself && until !== null
    // the reason travels in every heartbeat: keep it short (receivers refuse longer ones)
    this.#state = { state: 'paused', reason: reason.length > MAX_REASON_CHARS ? reason.slice(0, MAX_REASON_CHARS - 1) + '…' : reason, until, cause, ...(credential !== undefined ? { credential } : {}) }
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }))
  }

  /**
   * Pauses the node for a cause that a later run may find gone: the pause
   * doubles on each repeat without a `clear` in between. Returns the pause's end.
   */
  pauseWithBackoff (reason: string, cause: string, now = Date.now()): number {
    this.#streak++
    const wait = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(20, this.#streak - 1))
    const until = now + wait
    this.setPaused(reason, until, cause)
    return until
  }

  /** The node is healthy again (for `cause`, when given: another cause's pause stays). */
  clear (cause?: string): void {
    if (this.#state.state === 'ok') {
      this.#streak = 0
      return
    }
    if (cause !== undefined && this.#cause !== cause) return
    this.#streak = 0
    this.#cause = null
    this.#selfEnding = false
    this.#state = HEALTH_OK
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }))
  }

  /** Whether the node may start a run now: when ok, or when a pause with an end is over (a trial run). */
  mayRun (now = Date.now()): boolean {
    this.#expire(now)
    return this.#state.state === 'ok' || (this.#state.until !== null && now >= this.#state.until)
  }
}
