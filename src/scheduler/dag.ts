import type { BoardSnapshot, Task, TaskId } from '../crdt/schema.ts'

/**
 * Pure functions over task graphs and board snapshots: cycles, readiness,
 * critical paths, scheduling order. No I/O.
 */

/** Minimal view of a task for graph algorithms. */
export interface GraphNode {
  id: string
  deps: readonly string[]
}

/**
 * Finds one dependency cycle, returned as a closed path `[a, b, c, a]`
 * (a depends on b, ... c depends on a), or null. Unknown deps are ignored.
 */
export function findCycle (nodes: readonly GraphNode[]): string[] | null {
  const byId = new Map(nodes.map(n => [n.id, n]))
  const state = new Map<string, 1 | 2>() // 1 = on the stack, 2 = done
  const stack: string[] = []
  const visit = (id: string): string[] | null => {
    state.set(id, 1)
    stack.push(id)
    for (const dep of byId.get(id)?.deps ?? []) {
      if (!byId.has(dep)) continue
      const s = state.get(dep)
      if (s === 1) return [...stack.slice(stack.indexOf(dep)), dep]
      if (s === undefined) {
        const found = visit(dep)
        if (found !== null) return found
      }
    }
    stack.pop()
    state.set(id, 2)
    return null
  }
  for (const n of nodes) {
    if (state.has(n.id)) continue
    const found = visit(n.id)
    if (found !== null) return found
  }
  return null
}

/** Ids in an order where every task comes after its dependencies (input order among equals). */
export function topoOrder (nodes: readonly GraphNode[]): string[] {
  const byId = new Map(nodes.map(n => [n.id, n]))
  const done = new Set<string>()
  const out: string[] = []
  const visit = (id: string): void => {
    if (done.has(id)) return
    done.add(id)
    for (const d of byId.get(id)?.deps ?? []) if (byId.has(d)) visit(d)
    out.push(id)
  }
  for (const n of nodes) visit(n.id)
  return out
}

/** Default duration estimate of a task for critical paths when nothing better is known. @default 60 s */
export const DEFAULT_ESTIMATE_MS = 60_000

/** Estimated run time of a task: its sim duration, else its timeout / 4, else the default. */
export function estimateMs (t: Pick<Task, 'sim' | 'timeoutMs'>): number {
  if (t.sim !== null) return Math.max(1, t.sim.durationMs)
  if (t.timeoutMs !== null) return Math.max(1, t.timeoutMs / 4)
  return DEFAULT_ESTIMATE_MS
}

/**
 * Longest remaining path from each task to the end of the graph (its own
 * estimate included), counting only tasks not yet finished: the classic
 * list-scheduling priority ("bottom level").
 */
export function remainingCriticalPath (tasks: ReadonlyMap<TaskId, Task>): Map<TaskId, number> {
  const dependents = new Map<string, string[]>()
  for (const t of tasks.values()) {
    for (const d of t.deps) {
      const list = dependents.get(d) ?? []
      list.push(t.id)
      dependents.set(d, list)
    }
  }
  const memo = new Map<TaskId, number>()
  const finished = (t: Task): boolean => t.state === 'merged' || t.state === 'cancelled'
  const level = (id: TaskId, guard: Set<string>): number => {
    const cached = memo.get(id)
    if (cached !== undefined) return cached
    const t = tasks.get(id)
    if (t === undefined || guard.has(id)) return 0
    guard.add(id)
    let below = 0
    for (const child of dependents.get(id) ?? []) below = Math.max(below, level(child as TaskId, guard))
    guard.delete(id)
    const own = finished(t) || t.state === 'done' || t.state === 'merging' ? 0 : estimateMs(t)
    const v = own + below
    memo.set(id, v)
    return v
  }
  for (const id of tasks.keys()) level(id, new Set())
  return memo
}

/** Whether every dependency of `t` is merged into main (a task is ready exactly when they all are). */
export function depsMerged (t: Task, snap: BoardSnapshot): boolean {
  return t.deps.every(d => snap.tasks.get(d)?.state === 'merged')
}

/**
 * A task's effective state: a stored `pending` whose dependencies are all merged
 * is `ready`. Readiness is derived, never written by every node at once.
 */
export function effectiveState (t: Task, snap: BoardSnapshot): Task['state'] {
  if (t.state === 'pending' && depsMerged(t, snap)) return 'ready'
  return t.state
}

/** States in which a task stays until a human acts: a dependent of one cannot become ready by itself. */
export const WAITING_ON_HUMAN: ReadonlySet<Task['state']> = new Set(['failed', 'cancelled', 'conflict'])

/**
 * The first dependency, direct or transitive, that keeps `t` from ever
 * becoming ready without a human decision (a failed, cancelled or conflicted
 * task), or null. Only for tasks that are not ready yet.
 */
export function blockedBy (t: Task, snap: BoardSnapshot): { id: TaskId, state: Task['state'] } | null {
  if (t.state !== 'pending') return null
  const seen = new Set<TaskId>()
  const stack = [...t.deps]
  while (stack.length > 0) {
    const id = stack.pop() as TaskId
    if (seen.has(id)) continue
    seen.add(id)
    const d = snap.tasks.get(id)
    if (d === undefined || d.state === 'merged') continue
    if (WAITING_ON_HUMAN.has(d.state)) return { id, state: d.state }
    stack.push(...d.deps)
  }
  return null
}

/** When `t` became ready: its own `readyAt`, or the merge of its last dependency. */
export function readySince (t: Task, snap: BoardSnapshot): number {
  let at = t.readyAt ?? t.createdAt
  for (const d of t.deps) at = Math.max(at, snap.tasks.get(d)?.mergedAt ?? 0)
  return at
}

/** Orders tasks for claiming: priority (higher first), then longest remaining critical path, then age, then id. */
export function claimOrder (tasks: Task[], cp: ReadonlyMap<TaskId, number>): Task[] {
  return [...tasks].sort((a, b) =>
    b.priority - a.priority ||
    (cp.get(b.id) ?? 0) - (cp.get(a.id) ?? 0) ||
    a.createdAt - b.createdAt ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

/** The literal part of a glob before its first wildcard. */
function staticPrefix (raw: string): string {
  const glob = raw.replace(/^(\.\/)+/, '').replace(/\/{2,}/g, '/')
  const i = glob.search(/[*?[{]/)
  return i === -1 ? glob : glob.slice(0, i)
}

/**
 * Whether two `files` scopes may touch the same path. Conservative: two globs
 * overlap when the literal prefix of one starts with the other's.
 * An empty scope overlaps nothing.
 */
export function scopesOverlap (a: readonly string[], b: readonly string[]): boolean {
  for (const x of a) {
    const px = staticPrefix(x)
    for (const y of b) {
      const py = staticPrefix(y)
      if (px.startsWith(py) || py.startsWith(px)) return true
    }
  }
  return false
}
