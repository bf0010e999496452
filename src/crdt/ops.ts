import { str, type BoardDoc } from './board.ts'
import type { SimSpec, TaskId, Tokens } from './schema.ts'

/** What a plan contributes to a new task; the rest of the record starts empty. */
export interface NewTask {
  id: string
  title: string
  prompt: string
  deps: string[]
  files: string[]
  priority: number
  timeoutMs: number | null
  maxAttempts: number
  sim: SimSpec | null
}

/** Default `maxAttempts` of a task (SPEC). */
export const DEFAULT_MAX_ATTEMPTS = 3

/** The stored form of a new task (strings as Automerge scalars). */
export function newTaskRecord (t: NewTask, now: number): Record<string, unknown> {
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
export function simpleTask (id: string, extra: Partial<NewTask> = {}): NewTask {
  return { id: id as TaskId, title: id, prompt: `do ${id}`, deps: [], files: [], priority: 0, timeoutMs: null, maxAttempts: DEFAULT_MAX_ATTEMPTS, sim: null, ...extra }
}

/** Adds a run's cost and tokens to a task record inside a board change (SPEC: they sum every run of the task). */
export function addUsage (rec: Record<string, unknown>, usage: { costUsd: number, tokens: Tokens }): void {
  rec.costUsd = Number(rec.costUsd ?? 0) + usage.costUsd
  const tok = rec.tokens as Record<string, number> | undefined
  if (tok === undefined) return
  for (const k of ['input', 'output', 'cacheRead', 'cacheWrite'] as const) tok[k] = Number(tok[k] ?? 0) + usage.tokens[k]
}
