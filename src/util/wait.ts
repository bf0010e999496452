import { TimeoutError } from './errors.ts'

export { TimeoutError }

export interface WaitForOptions {
  timeoutMs: number
  intervalMs?: number
  message: string | (() => string)
  signal?: AbortSignal
}

/**
 * Polls `condition` until it returns a truthy value and resolves with it; rejects
 * with a `TimeoutError` carrying `message` once `timeoutMs` has passed.
 */
export async function waitFor<T> (condition: () => T | Promise<T>, opts: WaitForOptions): Promise<NonNullable<T>> {
  const deadline = Date.now() + opts.timeoutMs
  const interval = opts.intervalMs ?? 50
  for (;;) {
    opts.signal?.throwIfAborted()
    const value = await condition()
    if (value !== null && value !== undefined && value !== false) return value as NonNullable<T>
    if (Date.now() >= deadline) {
      const msg = typeof opts.message === 'function' ? opts.message() : opts.message
      throw new TimeoutError(`${msg} (waited ${opts.timeoutMs} ms)`)
    }
    await new Promise(resolve => setTimeout(resolve, interval))
  }
}

/** Parses `1.5s`, `20m`, `2h`, `500ms` (or a bare number of seconds) into milliseconds; null if malformed. */
export function parseDuration (text: string | number): number | null {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text * 1000 : null
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (m === null) return null
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000
  return Math.round(n * factor)
}

/** Waits `ms`, or less when `signal` aborts first. Never throws. */
export async function pause (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>(resolve => {
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}
