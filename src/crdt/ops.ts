import { str, type BoardDoc, type TaskRecord } from './board.ts'
import { TASK_DEFAULTS, type NodeRecord, type SimSpec, type TaskId } from './schema.ts'

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
  /** The plan it comes with (the id of the plan's first task); omitted: none (see `asPlan`). */
  plan?: TaskId | null
  /** On the plan's first task: the plan's budget in USD; omitted: none. */
  budgetUsd?: number | null
}

/** Default `maxAttempts` of a task (a plan may set its own). */
export const DEFAULT_MAX_ATTEMPTS = 3

/** The stored form of a new task (strings as Automerge scalars). */
export function newTaskRecord (t: NewTask, now: number, compact = false): TaskRecord {
  const rec: TaskRecord = {
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
          ...(t.sim.until !== undefined ? { until: str(t.sim.until) } : {}),
          ...(t.sim.costUsd !== undefined ? { costUsd: t.sim.costUsd } : {})
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
    plan: t.plan === undefined || t.plan === null ? null : str(t.plan),
    budgetUsd: t.budgetUsd ?? null,
    holders: [],
    claims: {}
  }
  if (compact) {
    // the fields still at their default are left out (the schema reads them so); maps and lists stay, since two
    // peers that both made one later (a claim each) would keep only one of them
    for (const [key, value] of Object.entries(TASK_DEFAULTS)) {
      if ((rec as Record<string, unknown>)[key] === value) delete (rec as Record<string, unknown>)[key]
    }
  }
  return rec
}

/**
 * Whether every node registered on the board that has not left (or been
 * forgotten) reads compact task records (`readsCompactTasks`, set by this
 * version and later): then a plan is written compact (`addTasks`). A node of
 * an earlier version would refuse such a record as invalid and never see the
 * task, so a mesh upgraded one node at a time gets full records until its
 * last older node is gone. False for a board with no node.
 */
export function compactTasksRead (nodes: ReadonlyMap<string, NodeRecord>): boolean {
  return compactHoldouts(nodes).length === 0 && [...nodes.values()].some(live)
}

const live = (n: NodeRecord): boolean => n.leftAt === null && (n.forgottenAt ?? null) === null

/** The nodes registered on the board, not left or forgotten, that do not say they read compact task records (`compactTasksRead`). */
export function compactHoldouts (nodes: ReadonlyMap<string, NodeRecord>): Array<{ peerId: string, name: string }> {
  return [...nodes].filter(([, n]) => live(n) && n.readsCompactTasks !== true).map(([peerId, n]) => ({ peerId, name: n.name }))
}

/** Plans at least this large get `wholeRecordsNote` from `submit`. @default 1000 */
export const WHOLE_RECORDS_NOTE_TASKS = 1000

/**
 * What `submit` says (on stderr) when it writes a plan of `tasks` tasks as whole
 * records because of `compactHoldouts`, or null (a small plan, or written compact):
 * a user whose large plans stay large sees which node holds them back and why.
 */
export function wholeRecordsNote (nodes: ReadonlyMap<string, NodeRecord>, tasks: number): string | null {
  const holdouts = compactHoldouts(nodes)
  if (tasks < WHOLE_RECORDS_NOTE_TASKS || holdouts.length === 0) return null
  const named = holdouts.slice(0, 5).map(h => `${h.name} (${h.peerId.slice(-8)})`).join(', ') + (holdouts.length > 5 ? ` and ${holdouts.length - 5} more` : '')
  return `note: the plan was written as whole task records (about 1.6x the size of compact ones) because ${holdouts.length === 1 ? 'node' : 'nodes'} ${named} ${holdouts.length === 1 ? 'does' : 'do'} not read compact records: ${holdouts.length === 1 ? 'it runs' : 'they run'} a version before them, or stopped without leaving. Upgrade ${holdouts.length === 1 ? 'it' : 'them'}, or \`meshwork forget\` a node that is gone for good.`
}

/** A board mutation adding tasks (one change for the whole batch). */
export function addTasks (tasks: NewTask[], now = Date.now(), compact = false): (d: BoardDoc) => void {
  return d => {
    for (const t of tasks) d.tasks[t.id] = newTaskRecord(t, now, compact)
  }
}

/**
 * The tasks of one submitted plan, marked as one: each carries the plan's id
 * (its first task's id, unique in the mesh like every task id), and the first
 * task carries the plan's budget (`budgetUsd` of the plan file; null: none).
 */
export function asPlan (tasks: readonly NewTask[], budgetUsd: number | null): NewTask[] {
  const plan = tasks[0]?.id ?? null
  return tasks.map((t, i) => ({ ...t, plan, budgetUsd: i === 0 ? budgetUsd : null }))
}

/** Sets (or with null removes) the mesh's spending cap: all tasks' `costUsd` together. */
export function setMeshBudget (d: BoardDoc, budget: { usd: number | null, at: number, by: string }): void {
  d.main.budget = { usd: budget.usd, at: budget.at, by: str(budget.by) }
}

/** Sets (or with null removes) the budget of plan `plan` (on its first task); false when that task is not on the board. */
export function setPlanBudget (d: BoardDoc, plan: TaskId, usd: number | null): boolean {
  const rec = d.tasks[plan]
  if (rec === undefined) return false
  rec.budgetUsd = usd
  return true
}

/** A minimal task for tests and benchmarks. */
export function simpleTask (id: string, extra: Partial<Omit<NewTask, 'deps'>> & { deps?: readonly string[] } = {}): NewTask {
  // unchecked on purpose: tests build boards with whatever ids they need, the schema judges them on read
  const { deps, ...rest } = extra
  return { id: id as TaskId, title: id, prompt: `do ${id}`, deps: (deps ?? []).map(d => d as TaskId), files: [], priority: 0, timeoutMs: null, maxAttempts: DEFAULT_MAX_ATTEMPTS, sim: null, ...rest }
}
