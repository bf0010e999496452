/**
 * Work a component starts and does not await where it starts it (a fetch, a
 * merge round, a main sync): kept here so that stopping the component aborts
 * it and waits for it to end. A stopped component that returned while a git
 * process of its was still writing into the repository would race whoever
 * removes or reuses that repository next.
 */
export class Background {
  #running = new Set<Promise<unknown>>()
  #abort = new AbortController()

  /** Aborted by `stop`: pass it to what the work runs (fetches, git processes). */
  get signal (): AbortSignal {
    return this.#abort.signal
  }

  /** Whether `stop` was called. */
  get stopped (): boolean {
    return this.#abort.signal.aborted
  }

  /** Tracks `p` until it settles; returns it, so the caller goes on handling its result and its errors. */
  track<T>(p: Promise<T>): Promise<T> {
    this.#running.add(p)
    const done = (): void => { this.#running.delete(p) }
    p.then(done, done)
    return p
  }

  /** Aborts the signal, then waits until all tracked work (and any it started meanwhile) has settled. */
  async stop (reason = 'stopping'): Promise<void> {
    if (!this.#abort.signal.aborted) this.#abort.abort(new Error(reason))
    while (this.#running.size > 0) await Promise.allSettled([...this.#running])
  }
}
