import { str, type BoardDoc, type TaskRecord } from './board.ts'
import type { SimSpec, TaskId } from './schema.ts'

/** What a plan contributes to a new task; the rest of the record starts empty. */
export interface NewTask {
  id: TaskId
  title: string
  prompt: string
  deps: TaskId[]
  files: string[]
  priority: number
  timeoutMs: number | null
  maxAttempts: number
  sim: SimSpec | null
}

/** Default `maxAttempts` of a task (a plan may set its own). */
export const DEFAULT_MAX_ATTEMPTS = 3

/** The stored form of a new task (strings as Automerge scalars). */
export function newTaskRecord (t: NewTask, now: number): TaskRecord {
  return {
    id: str(t.id),
    title: str(t.title),
    prompt: str(t.prompt),
    deps: t.deps.map(str),
    files: t.files.map(str),
    priority: t.priority,
    timeoutMs: t.timeoutMs,
    maxAttempts: t.maxAttempts,
    sim: t.sim === null
      ? null
      : {
          durationMs: t.sim.durationMs,
          write: Object.fromEntries(Object.entries(t.sim.write).map(([k, v]) => [k, str(v)])),
          append: Object.fromEntries(Object.entries(t.sim.append).map(([k, v]) => [k, str(v)])),
          fail: t.sim.fail,
          ...(t.sim.until !== undefined ? { until: str(t.sim.until) } : {})
        },
    state: str(t.deps.length === 0 ? 'ready' : 'pending'),
    epoch: 0,
    attempts: 0,
    failures: 0,
    node: null,
    branch: str(`meshwork/${t.id}`),
    head: null,
    mergeCommit: null,
    costUsd: 0,
    tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
    createdAt: now,
    startedAt: null,
    doneAt: null,
    mergedAt: null,
    error: null,
    summary: null,
    readyAt: t.deps.length === 0 ? now : null,
    notBefore: null,
    infraFailures: {},
    holders: [],
    claims: {}
  }
}

/** A board mutation adding tasks (one change for the whole batch). */
export function addTasks (tasks: NewTask[], now = Date.now()): (d: BoardDoc) => void {
  return d => {
    for (const t of tasks) d.tasks[t.id] = newTaskRecord(t, now)
  }
}

/** A minimal task for tests and benchmarks. */
export function simpleTask (id: string, extra: Partial<Omit<NewTask, 'deps'>> & { deps?: readonly string[] } = {}): NewTask {
  // unchecked on purpose: tests build boards with whatever ids they need, the schema judges them on read
  const { deps, ...rest } = extra
  return { id: id as TaskId, title: id, prompt: `do ${id}`, deps: (deps ?? []).map(d => d as TaskId), files: [], priority: 0, timeoutMs: null, maxAttempts: DEFAULT_MAX_ATTEMPTS, sim: null, ...rest }
}
