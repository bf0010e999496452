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
