import { FINAL_TASK_STATES, type BoardSnapshot, type Task, type TaskId } from '../crdt/schema.ts'

/**
 * Pure functions over task graphs and board snapshots: cycles, readiness,
 * critical paths, scheduling order. No I/O.
 */

/** `openTasks` of each snapshot seen (a snapshot is immutable; dropped with it). */
const open = new WeakMap<BoardSnapshot, readonly Task[]>()

/**
 * The tasks of `snap` not in a final state (merged, failed, cancelled), in
 * board order; computed once per snapshot (a board that does not change keeps
 * its snapshot). The periodic passes of the scheduler and the merge leader
 * look only at these, so their cost on an idle node follows the work in
 * flight, not the board's history (a board of 1,000 merged tasks was walked
 * whole six times a second).
 */
export function openTasks (snap: BoardSnapshot): readonly Task[] {
  const cached = open.get(snap)
  if (cached !== undefined) return cached
  const list: Task[] = []
  for (const t of snap.tasks.values()) if (!FINAL_TASK_STATES.has(t.state)) list.push(t)
  open.set(snap, list)
  return list
}

/** Minimal view of a task for graph algorithms. */
export interface GraphNode {
  id: string
  deps: readonly string[]
}

/**
 * Depth-first post-order walk, iterative (an explicit stack, never recursion,
 * so a 20,000-task chain is as safe as a short one). Starts from each root in
 * order, follows `next(id)` in order, and calls `onFinish(id)` once per node
 * reached, after every node reachable from it has finished, except those on
 * the current path (a cycle): the callback finds those not finished yet.
 * `visited` may be shared between calls to continue one walk.
 */
export function postOrder (roots: Iterable<string>, next: (id: string) => Iterable<string>, onFinish: (id: string) => void, visited: Set<string> = new Set()): void {
  const stack: Array<{ id: string, children: Iterator<string> }> = []
  for (const root of roots) {
    if (visited.has(root)) continue
    visited.add(root)
    stack.push({ id: root, children: next(root)[Symbol.iterator]() })
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as { id: string, children: Iterator<string> }
      const child = top.children.next()
      if (child.done === true) {
        stack.pop()
        onFinish(top.id)
      } else if (!visited.has(child.value)) {
        visited.add(child.value)
        stack.push({ id: child.value, children: next(child.value)[Symbol.iterator]() })
      }
    }
  }
}

/**
 * Finds one dependency cycle, returned as a closed path `[a, b, c, a]`
 * (a depends on b, ... c depends on a), or null. Unknown deps are ignored.
 * Iterative: any depth.
 */
export function findCycle (nodes: readonly GraphNode[]): string[] | null {
  const byId = new Map(nodes.map(n => [n.id, n]))
  const state = new Map<string, 1 | 2>() // 1 = on the path, 2 = done
  const path: string[] = []
  const frames: Array<{ id: string, i: number }> = []
  for (const n of nodes) {
    if (state.has(n.id)) continue
    state.set(n.id, 1)
    path.push(n.id)
    frames.push({ id: n.id, i: 0 })
    while (frames.length > 0) {
      const top = frames[frames.length - 1] as { id: string, i: number }
      const deps = byId.get(top.id)?.deps ?? []
      if (top.i >= deps.length) {
        frames.pop()
        path.pop()
        state.set(top.id, 2)
        continue
      }
      const dep = deps[top.i++] as string
      if (!byId.has(dep)) continue
      const s = state.get(dep)
      if (s === 1) return [...path.slice(path.indexOf(dep)), dep]
      if (s === undefined) {
        state.set(dep, 1)
        path.push(dep)
        frames.push({ id: dep, i: 0 })
      }
    }
  }
  return null
}

/** Ids in an order where every task comes after its dependencies (input order among equals). Iterative: any depth. */
export function topoOrder (nodes: readonly GraphNode[]): string[] {
  const byId = new Map(nodes.map(n => [n.id, n]))
  const out: string[] = []
  postOrder(nodes.map(n => n.id), id => (byId.get(id)?.deps ?? []).filter(d => byId.has(d)), id => { out.push(id) })
  return out
}

/** Who depends on each id: the reverse edges of a task graph. */
export function dependentsOf (nodes: Iterable<GraphNode>): Map<string, string[]> {
  const dependents = new Map<string, string[]>()
  for (const t of nodes) {
    for (const d of t.deps) {
      const list = dependents.get(d)
      if (list === undefined) dependents.set(d, [t.id])
      else list.push(t.id)
    }
  }
  return dependents
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
  const dependents = dependentsOf(tasks.values())
  const memo = new Map<TaskId, number>()
  const finished = (t: Task): boolean => t.state === 'merged' || t.state === 'cancelled'
  // post-order over the dependents: every dependent is valued before its dependency (one on the path, a cycle, counts 0)
  postOrder(tasks.keys(), id => (dependents.get(id) ?? []).filter(c => tasks.has(c as TaskId)), id => {
    const t = tasks.get(id as TaskId) as Task
    let below = 0
    for (const child of dependents.get(id) ?? []) below = Math.max(below, memo.get(child as TaskId) ?? 0)
    const own = finished(t) || t.state === 'done' || t.state === 'merging' ? 0 : estimateMs(t)
    memo.set(id as TaskId, own + below)
  })
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

/** A dependency that keeps a task from becoming ready without a human decision. */
export interface Blocker { id: TaskId, state: Task['state'] }

/**
 * The first dependency, direct or transitive, that keeps `t` from ever
 * becoming ready without a human decision (a failed, cancelled or conflicted
 * task), or null. Only for tasks that are not ready yet. For many tasks at
 * once use `blockedByAll` (memoized).
 */
export function blockedBy (t: Task, snap: BoardSnapshot): Blocker | null {
  if (t.state !== 'pending') return null
  return blockersFrom([t.id], snap).get(t.id) ?? null
}

/** `blockedBy` of every pending task of the board that has a blocker, in one memoized walk (linear in the graph). */
export function blockedByAll (snap: BoardSnapshot): Map<TaskId, Blocker> {
  const pending = [...snap.tasks.values()].filter(t => t.state === 'pending').map(t => t.id)
  const all = blockersFrom(pending, snap)
  const out = new Map<TaskId, Blocker>()
  for (const id of pending) {
    const b = all.get(id)
    if (b !== undefined && b !== null) out.set(id, b)
  }
  return out
}

/**
 * Blockers of the tasks reachable from `roots` through dependencies: a task's
 * blocker is the first of its dependencies, last listed first, that waits on a
 * human, or else that dependency's own blocker (merged and unknown
 * dependencies block nothing). Iterative and memoized.
 */
function blockersFrom (roots: TaskId[], snap: BoardSnapshot): Map<TaskId, Blocker | null> {
  const memo = new Map<TaskId, Blocker | null>()
  const live = (id: string): boolean => {
    const d = snap.tasks.get(id as TaskId)
    return d !== undefined && d.state !== 'merged'
  }
  postOrder(roots, id => [...(snap.tasks.get(id as TaskId)?.deps ?? [])].reverse().filter(live), id => {
    let found: Blocker | null = null
    for (const dep of [...(snap.tasks.get(id as TaskId)?.deps ?? [])].reverse()) {
      const d = snap.tasks.get(dep)
      if (d === undefined || d.state === 'merged') continue
      if (WAITING_ON_HUMAN.has(d.state)) { found = { id: dep, state: d.state }; break }
      const below = memo.get(dep) ?? null
      if (below !== null) { found = below; break }
    }
    memo.set(id as TaskId, found)
  })
  return memo
}

/** When `t` became ready: its own `readyAt`, or the merge of its last dependency. */
export function readySince (t: Task, snap: BoardSnapshot): number {
  let at = t.readyAt ?? t.createdAt
  for (const d of t.deps) at = Math.max(at, snap.tasks.get(d)?.mergedAt ?? 0)
  return at
}

/**
 * The part of `claimOrder` that ranks tasks as alike or apart (priority, then
 * remaining critical path); age and id only break its ties. Tasks with the
 * same rank are those the nodes may share out among themselves (`assignOwners`' ties).
 */
export function claimRank (t: Task, cp: ReadonlyMap<TaskId, number>): string {
  return `${t.priority}:${cp.get(t.id) ?? 0}`
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
