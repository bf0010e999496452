/**
 * Pure parts of the scheduling benchmark: a seeded PRNG, the layered random
 * DAG, the ideal centralized list scheduler and small statistics helpers.
 */
import type { BenchTask } from './schedule-protocol.ts'

/** mulberry32: a small deterministic PRNG; returns floats in [0, 1). */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Parameters of the generated DAG. */
export interface DagParams {
  seed: number
  tasks: number
  layers: number
  /** Bounded Pareto duration distribution: shape, lower and upper bound (ms). */
  paretoAlpha: number
  minMs: number
  maxMs: number
  /** Each task of a layer > 0 depends on minDeps..maxDeps tasks of earlier layers. */
  minDeps: number
  maxDeps: number
}

/** Mean of the bounded Pareto distribution (alpha != 1). */
export function boundedParetoMean (alpha: number, lo: number, hi: number): number {
  const la = lo ** alpha
  return (la / (1 - (lo / hi) ** alpha)) * (alpha / (alpha - 1)) * (1 / lo ** (alpha - 1) - 1 / hi ** (alpha - 1))
}

/** Inverse-CDF sample of the bounded Pareto distribution on [lo, hi]. */
export function boundedPareto (u: number, alpha: number, lo: number, hi: number): number {
  return lo / (1 - u * (1 - (lo / hi) ** alpha)) ** (1 / alpha)
}

/**
 * A layered random DAG: `tasks` split evenly over `layers`; every task of layer
 * k > 0 depends on one task of layer k - 1 (so the depth is exactly `layers`)
 * plus up to `maxDeps - 1` more from any earlier layer.
 */
export function generateDag (p: DagParams): BenchTask[] {
  const rand = prng(p.seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)] as T
  const byLayer: BenchTask[][] = []
  const out: BenchTask[] = []
  for (let layer = 0; layer < p.layers; layer++) {
    const size = Math.floor(p.tasks / p.layers) + (layer < p.tasks % p.layers ? 1 : 0)
    const earlier = byLayer.flat()
    const prev = byLayer[layer - 1] ?? []
    const list: BenchTask[] = []
    for (let i = 0; i < size; i++) {
      const deps = new Set<string>()
      if (layer > 0) {
        const want = p.minDeps + Math.floor(rand() * (p.maxDeps - p.minDeps + 1))
        deps.add(pick(prev).id)
        for (let tries = 0; deps.size < want && tries < 20; tries++) deps.add(pick(earlier).id)
      }
      const durationMs = Math.round(boundedPareto(rand(), p.paretoAlpha, p.minMs, p.maxMs))
      const t: BenchTask = { id: `l${String(layer).padStart(2, '0')}-t${String(i).padStart(3, '0')}`, deps: [...deps].sort(), durationMs, layer }
      list.push(t)
      out.push(t)
    }
    byLayer.push(list)
  }
  return out
}

/** Bottom level of every task: its duration plus the longest chain of dependents after it. */
export function bottomLevels (tasks: readonly BenchTask[]): Map<string, number> {
  const dependents = new Map<string, string[]>()
  for (const t of tasks) for (const d of t.deps) dependents.set(d, [...(dependents.get(d) ?? []), t.id])
  const byId = new Map(tasks.map(t => [t.id, t]))
  const memo = new Map<string, number>()
  const level = (id: string): number => {
    const hit = memo.get(id)
    if (hit !== undefined) return hit
    let below = 0
    for (const c of dependents.get(id) ?? []) below = Math.max(below, level(c))
    const v = (byId.get(id)?.durationMs ?? 0) + below
    memo.set(id, v)
    return v
  }
  for (const t of tasks) level(t.id)
  return memo
}

/** Result of the ideal schedule. */
export interface IdealSchedule {
  makespanMs: number
  /** Per task: when it became ready (last dep finished), started and finished, in ms from 0. */
  ready: Map<string, number>
  start: Map<string, number>
  finish: Map<string, number>
  /** Runs restarted because their slots were lost (loss variant only). */
  restarted: number
}

/**
 * The ideal: a centralized, zero-overhead, non-preemptive list scheduler
 * (event-driven simulation) over `slots` identical slots, highest bottom level
 * (remaining critical path) first, ties by id, as meshwork's `claimOrder` does.
 * Optional `loss`: at `loss.atMs` the last `loss.slots` slots vanish and their
 * runs start over elsewhere (a node lost with zero detection delay).
 */
export function listSchedule (tasks: readonly BenchTask[], slots: number, loss?: { atMs: number, slots: number }): IdealSchedule {
  const prio = bottomLevels(tasks)
  const byId = new Map(tasks.map(t => [t.id, t]))
  const missing = new Map(tasks.map(t => [t.id, t.deps.length]))
  const dependents = new Map<string, string[]>()
  for (const t of tasks) for (const d of t.deps) dependents.set(d, [...(dependents.get(d) ?? []), t.id])
  const ready = new Map<string, number>()
  const start = new Map<string, number>()
  const finish = new Map<string, number>()
  let queue: string[] = tasks.filter(t => t.deps.length === 0).map(t => t.id)
  for (const id of queue) ready.set(id, 0)
  // free slots, least recently used first
  let free: Array<{ slot: number, since: number }> = Array.from({ length: slots }, (_, slot) => ({ slot, since: 0 }))
  let running: Array<{ id: string, slot: number, end: number }> = []
  let now = 0
  let lossPending = loss !== undefined && loss.slots > 0
  let restarted = 0
  const order = (a: string, b: string): number => (prio.get(b) ?? 0) - (prio.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0)
  for (;;) {
    queue.sort(order)
    free.sort((a, b) => a.since - b.since || a.slot - b.slot)
    while (free.length > 0 && queue.length > 0) {
      const id = queue.shift() as string
      const s = free.shift() as { slot: number, since: number }
      start.set(id, now)
      running.push({ id, slot: s.slot, end: now + (byId.get(id)?.durationMs ?? 0) })
    }
    if (running.length === 0) break
    const nextEnd = Math.min(...running.map(r => r.end))
    if (lossPending && loss !== undefined && loss.atMs < nextEnd) {
      lossPending = false
      now = Math.max(now, loss.atMs)
      const gone = (slot: number): boolean => slot >= slots - loss.slots
      for (const r of running.filter(r => gone(r.slot))) {
        queue.push(r.id)
        restarted++
      }
      running = running.filter(r => !gone(r.slot))
      free = free.filter(f => !gone(f.slot))
      continue
    }
    now = nextEnd
    for (const r of running.filter(r => r.end === now)) {
      finish.set(r.id, now)
      free.push({ slot: r.slot, since: now })
      for (const c of dependents.get(r.id) ?? []) {
        const left = (missing.get(c) ?? 1) - 1
        missing.set(c, left)
        if (left === 0) {
          queue.push(c)
          ready.set(c, now)
        }
      }
    }
    running = running.filter(r => r.end !== now)
  }
  if (finish.size !== tasks.length) throw new Error(`ideal schedule finished ${finish.size} of ${tasks.length} tasks`)
  return { makespanMs: Math.max(0, ...finish.values()), ready, start, finish, restarted }
}

/** Longest chain of durations (the makespan with unlimited slots). */
export function criticalPathMs (tasks: readonly BenchTask[]): number {
  return Math.max(0, ...bottomLevels(tasks).values())
}

/** Nearest-rank percentile (p in 0..100) of unsorted values; NaN when empty. */
export function percentile (values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const s = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * s.length))
  return s[Math.min(s.length, rank) - 1] as number
}

export function mean (values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length
}
