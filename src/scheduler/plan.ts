import { isAbsolute } from 'node:path'
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { CONTROL_CHARS, TASK_ID_PATTERN, isValidTaskId, isValidTitle, type TaskId } from '../crdt/schema.ts'
import { DEFAULT_MAX_ATTEMPTS, type NewTask } from '../crdt/ops.ts'
import { UsageError } from '../util/errors.ts'
import { parseDuration } from '../util/wait.ts'
import { findCycle } from './dag.ts'

/** A plan that failed validation; `problems` lists every one found. */
export class PlanError extends UsageError {
  override name = 'PlanError'
  readonly problems: string[]
  /** `note`: what could not be checked yet (printed after the problems). */
  constructor (source: string, problems: string[], note: string | null = null) {
    super(`${source} is not a valid plan (${problems.length} problem${problems.length === 1 ? '' : 's'}); nothing was submitted:\n${problems.map(p => `  - ${p}`).join('\n')}${note !== null ? `\n${note}` : ''}`)
    this.problems = problems
  }
}

const duration = z.union([z.string(), z.number()])

/** The plan file format (YAML or JSON), before semantic checks. */
export const planFileSchema = z.object({
  tasks: z.array(z.object({
    id: z.string(),
    title: z.string().optional(),
    prompt: z.string(),
    deps: z.array(z.string()).optional(),
    files: z.array(z.string()).optional(),
    priority: z.number().optional(),
    timeout: duration.optional(),
    maxAttempts: z.number().int().positive().optional(),
    sim: z.object({
      duration: duration.optional(),
      write: z.record(z.string(), z.string()).optional(),
      append: z.record(z.string(), z.string()).optional(),
      fail: z.number().int().nonnegative().optional(),
      until: z.string().optional(),
      cost: z.number().nonnegative().optional()
    }).strict().optional()
  }).strict()).min(1, 'a plan needs at least one task'),
  // checked by parsePlanFile, so a bad value is one clear problem among the others
  budgetUsd: z.unknown().optional()
}).strict()

/** A validated plan: its tasks, and its budget in USD (null: none). */
export interface Plan {
  tasks: NewTask[]
  budgetUsd: number | null
}

/** `budgetUsd` of a plan file: a number of US dollars, 0 or more; else the problem. */
export function parseBudgetUsd (raw: unknown): { usd: number | null, problem: string | null } {
  if (raw === undefined || raw === null) return { usd: null, problem: null }
  if (typeof raw === 'number' && Number.isFinite(raw) && raw >= 0) return { usd: raw, problem: null }
  return { usd: null, problem: `budgetUsd: must be a number of US dollars, 0 or more (e.g. 25 or 2.5), got ${typeof raw === 'number' ? String(raw) : JSON.stringify(raw) ?? String(raw)}` }
}

function issuePath (path: PropertyKey[], raw: unknown): string {
  const [first, index, ...rest] = path
  if (first === 'tasks' && typeof index === 'number') {
    const id = ((raw as { tasks?: Array<{ id?: unknown }> }).tasks?.[index]?.id)
    const label = typeof id === 'string' ? `task "${id}"` : `tasks[${index}]`
    return rest.length > 0 ? `${label}.${rest.map(String).join('.')}` : label
  }
  return path.map(String).join('.') || '(plan)'
}

/**
 * Parses and validates plan text (YAML or JSON). `existing` holds the ids
 * already on the board: a dependency may name one, a new task may not reuse one.
 * Returns the tasks or throws a `PlanError` listing every problem.
 */
/**
 * The task ids on the board: a set, or a map from id to a note on that task
 * (its state and what to run instead of resubmitting it) quoted when a plan
 * reuses the id; `'unchecked'` to validate without a board.
 */
export type ExistingTasks = ReadonlySet<string> | ReadonlyMap<string, string> | 'unchecked'

/**
 * Validates a plan and returns its tasks, or throws `PlanError` listing every
 * problem. `existing` is the set of task ids on the board (dependencies may
 * name them; plan ids must not), or `'unchecked'` to validate without a board:
 * then neither unknown dependencies nor ids already taken are reported (the
 * check with the board follows once connected).
 */
export function parsePlan (text: string, existing: ExistingTasks, source = 'plan'): NewTask[] {
  return parsePlanFile(text, existing, source).tasks
}

/** Like `parsePlan`, with the plan's own fields (`budgetUsd`) besides its tasks. */
export function parsePlanFile (text: string, existing: ExistingTasks, source = 'plan'): Plan {
  const unchecked = existing === 'unchecked'
  const onBoard = (id: string): boolean => existing !== 'unchecked' && existing.has(id)
  let raw: unknown
  try {
    raw = parsePlanText(text)
  } catch (err) {
    throw new PlanError(source, [`cannot parse YAML/JSON: ${(err as Error).message.split('\n')[0] ?? ''}`])
  }
  const parsed = planFileSchema.safeParse(raw)
  const problems: string[] = []
  type PlanTask = z.infer<typeof planFileSchema>['tasks'][number]
  let planTasks: PlanTask[]
  const badShapeIds = new Set<string>()
  if (parsed.success) {
    planTasks = parsed.data.tasks
  } else {
    // Shape problems do not hide the others (an invalid plan lists every problem): the
    // tasks whose only shape problem is an unknown field are still checked, and
    // the ids of the rest still count as known dependencies.
    problems.push(...parsed.error.issues.map(i => `${issuePath(i.path, raw)}: ${i.message}`))
    // the fields of each task that are of the wrong shape
    const badShape = new Map<number, Set<string>>()
    for (const i of parsed.error.issues) {
      if (i.path[0] !== 'tasks' || typeof i.path[1] !== 'number' || i.code === 'unrecognized_keys') continue
      const fields = badShape.get(i.path[1]) ?? new Set<string>()
      fields.add(String(i.path[2] ?? ''))
      badShape.set(i.path[1], fields)
    }
    const rawTasks: unknown[] = raw !== null && typeof raw === 'object' && Array.isArray((raw as { tasks?: unknown }).tasks) ? (raw as { tasks: unknown[] }).tasks : []
    planTasks = []
    rawTasks.forEach((t, index) => {
      if (t === null || typeof t !== 'object' || Array.isArray(t)) return
      const bad = badShape.get(index)
      if (bad === undefined) { planTasks.push(t as PlanTask); return }
      if (typeof (t as { id?: unknown }).id === 'string') badShapeIds.add((t as { id: string }).id)
      // a task with a field of the wrong shape: its other fields are still checked (a wrong priority does not
      // hide a bad timeout beside it); a bad id or a task that is no object leaves nothing to check by
      if (bad.has('id') || bad.has('')) return
      const rest: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(t)) if (!bad.has(k)) rest[k] = v
      // a prompt of the wrong shape was reported: a stand-in keeps the checks below from reporting it again
      if (bad.has('prompt')) rest.prompt = '(reported above)'
      // (an unknown field beside it was reported too, and is left out here)
      const again = planFileSchema.shape.tasks.element.strip().safeParse(rest)
      if (again.success) planTasks.push(again.data)
    })
  }
  const budget = parseBudgetUsd(raw !== null && typeof raw === 'object' ? (raw as { budgetUsd?: unknown }).budgetUsd : undefined)
  if (budget.problem !== null) problems.push(budget.problem)
  const seen = new Set<string>()
  const tasks: NewTask[] = []
  for (const t of planTasks) {
    const label = `task "${t.id}"`
    if (!TASK_ID_PATTERN.test(t.id)) problems.push(`${label}: malformed id (use lowercase letters, digits, ".", "_", "-", starting with a letter or digit, at most 64 characters)`)
    else if (!isValidTaskId(t.id)) problems.push(`${label}: malformed id: not a valid git branch name part (no "..", not ending in "." or ".lock"; the task's branch is meshwork/<id>)`)
    if (t.title !== undefined && !isValidTitle(t.title)) problems.push(`${label}: control characters in the title (${JSON.stringify(t.title)}); use plain text on one line`)
    if (seen.has(t.id)) problems.push(`${label}: duplicate id in the plan`)
    seen.add(t.id)
    if (onBoard(t.id)) {
      const about = existing instanceof Map ? existing.get(t.id) : undefined
      problems.push(`${label}: a task with this id is already on the board${about !== undefined ? ` (${about})` : ''}; choose another id`)
    }
    if (t.prompt.trim() === '') problems.push(`${label}: empty prompt`)
    if (t.prompt.includes('\0')) problems.push(`${label}: a NUL character in the prompt (no program can be given it)`)
    let timeoutMs: number | null = null
    if (t.timeout !== undefined) {
      timeoutMs = parseDuration(t.timeout)
      if (timeoutMs === null || timeoutMs <= 0) problems.push(`${label}: bad timeout "${String(t.timeout)}" (use e.g. 90s, 20m, 1.5h)`)
    }
    let sim: NewTask['sim'] = null
    if (t.sim !== undefined) {
      const d = t.sim.duration === undefined ? 1000 : parseDuration(t.sim.duration)
      if (d === null) problems.push(`${label}: bad sim.duration "${String(t.sim.duration)}" (use e.g. 500ms, 2s)`)
      for (const file of [...Object.keys(t.sim.write ?? {}), ...Object.keys(t.sim.append ?? {})]) {
        if (file.startsWith('/') || file.split('/').includes('..') || file === '') problems.push(`${label}: sim file "${file}" must be a relative path inside the repository`)
      }
      if (t.sim.until !== undefined && !isAbsolute(t.sim.until)) problems.push(`${label}: sim.until "${t.sim.until}" must be an absolute path (the run waits until that file exists)`)
      sim = { durationMs: d ?? 0, write: t.sim.write ?? {}, append: t.sim.append ?? {}, fail: t.sim.fail ?? 0, ...(t.sim.until !== undefined ? { until: t.sim.until } : {}), ...(t.sim.cost !== undefined ? { costUsd: t.sim.cost } : {}) }
    }
    tasks.push({
      // a malformed id or an unknown dependency rejects the whole plan below: what is returned holds only task ids
      id: t.id as TaskId,
      // a title taken from the prompt loses its control characters (a tab, a stray escape) rather than failing the plan
      title: t.title ?? (t.prompt.trim().split('\n')[0]?.replace(new RegExp(CONTROL_CHARS.source, 'g'), ' ').slice(0, 80) ?? t.id),
      prompt: t.prompt,
      deps: (t.deps ?? []).map(d => d as TaskId),
      files: t.files ?? [],
      priority: t.priority ?? 0,
      timeoutMs,
      maxAttempts: t.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      sim
    })
  }
  for (const t of tasks) {
    for (const d of t.deps) {
      if (!unchecked && !seen.has(d) && !badShapeIds.has(d) && !onBoard(d)) problems.push(`task "${t.id}": unknown dependency "${d}" (not in this plan and not on the board)`)
    }
    if (new Set(t.deps).size !== t.deps.length) problems.push(`task "${t.id}": a dependency is listed twice`)
    if (t.deps.includes(t.id)) problems.push(`task "${t.id}": depends on itself`)
  }
  // every cycle, not just the first: report one, drop its tasks, look again (a duplicate id counts with the
  // dependencies of each of its tasks: it was reported, and must not hide a cycle through it)
  const depsOf = new Map<string, Set<string>>()
  for (const t of tasks) {
    const deps = depsOf.get(t.id) ?? new Set<string>()
    for (const d of t.deps) if (d !== t.id) deps.add(d)
    depsOf.set(t.id, deps)
  }
  let graph = [...depsOf].map(([id, deps]) => ({ id, deps: [...deps] }))
  for (let cycle = findCycle(graph); cycle !== null; cycle = findCycle(graph)) {
    problems.push(`dependency cycle: ${cycle.join(' -> ')}`)
    const inCycle = new Set(cycle)
    graph = graph.filter(n => !inCycle.has(n.id))
  }
  if (problems.length > 0) {
    // checked without the board (before connecting): say which dependencies it will be asked about
    const outside = unchecked ? [...new Set(tasks.flatMap(t => t.deps).filter(d => !seen.has(d) && !badShapeIds.has(d)))] : []
    const note = outside.length === 0 ? null : `Not checked yet: ${outside.map(d => `"${d}"`).join(', ')}, not in this plan, must be on the board; that is checked once the problems above are fixed.`
    throw new PlanError(source, problems, note)
  }
  return { tasks, budgetUsd: budget.usd }
}

/**
 * Plan text as data: JSON when it is JSON (a generated plan of 20,000 tasks
 * parses in milliseconds instead of seconds), else YAML (a superset of JSON,
 * so the answer is the same).
 */
function parsePlanText (text: string): unknown {
  if (/^\s*[{[]/.test(text)) {
    try {
      return JSON.parse(text)
    } catch {
      // not strict JSON (comments, trailing commas, flow-style YAML): YAML reads it
    }
  }
  return parseYaml(text, { prettyErrors: true })
}

/** Reads and validates a plan file (see `parsePlanFile`). */
export async function readPlan (file: string, existing: ExistingTasks): Promise<Plan> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(`cannot read the plan ${file} (${code === 'ENOENT' ? 'no such file' : code ?? String(err)}); check the path, or write a plan as README.md's "Plans" section shows.`)
  }
  return parsePlanFile(text, existing, file)
}
