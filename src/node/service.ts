/**
 * How a node's services are started and stopped (after js-libp2p's
 * `Startable`). The node calls, in order: `start` on every service (register
 * protocol handlers, gossip validators and listeners; the host is not started
 * yet), then `afterStart` once the host runs (timers, subscriptions, the first
 * messages). On the way down: `beforeStop` while the host still runs (last
 * messages), then `stop` after it stopped. Every step is idempotent.
 */
export interface Startable {
  start: () => void | Promise<void>
  afterStart?: () => void | Promise<void>
  beforeStop?: () => void | Promise<void>
  stop: () => void | Promise<void>
}

/** Runs `fn` every `ms`; a throw is logged, never ends the timer. Returns a function that stops it. */
export function every (ms: number, fn: () => void, onError: (err: unknown) => void): () => void {
  const timer = setInterval(() => {
    try { fn() } catch (err) { onError(err) }
  }, ms)
  return () => { clearInterval(timer) }
}

/**
 * A periodic timer whose period may change while it runs: `pace(ms)` runs
 * `fn` every `ms` from now on (nothing changes when it already does), `stop()`
 * ends it. The scheduler and the merge leader's loop tick fast while work is
 * in flight and slowly while the mesh is settled.
 */
export class Ticker {
  readonly #fn: () => void
  #timer: NodeJS.Timeout | null = null
  #every = 0

  constructor (fn: () => void) {
    this.#fn = fn
  }

  /** Whether it runs (paced and not stopped since). */
  get running (): boolean {
    return this.#timer !== null
  }

  pace (ms: number): void {
    if (this.#timer !== null && ms === this.#every) return
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#every = ms
    this.#timer = setInterval(this.#fn, ms)
  }

  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    this.#every = 0
  }
}

/** Resolves with `p`, or with undefined once `ms` passed. */
export async function withTimeout<T> (p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, ms) })
  try {
    return await Promise.race([p, t])
  } finally {
    clearTimeout(timer)
  }
}
