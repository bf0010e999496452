import type { BoardSnapshot, Task, TaskId } from '../crdt/schema.ts'
import type { Logger } from '../util/logger.ts'
import { effectiveState, postOrder } from './dag.ts'

/*
 * Budgets: the breaker outside the model. Pure functions over a board
 * snapshot; the scheduler asks them before it claims a task and again before
 * it starts the run, and gives each run what is left as its cap.
 *
 * Two budgets apply to a task: the mesh's cap (`main.budget`, all tasks'
 * `costUsd` together) and its plan's (`budgetUsd` on the plan's first task,
 * the cost of that plan's tasks together). The rule: a run starts only while
 * what is spent is below every budget that applies; what is spent is the cost
 * of the runs that have ended (a run's cost reaches the board when it ends).
 * Runs already going are never stopped by a budget, so several runs started
 * near a cap may overshoot it: each is capped (`--max-budget-usd`) at what was
 * left when it started, so the overshoot is at most what was left times the
 * runs in flight less one, plus what the agent spends past its own cap in its
 * last turn.
 */

/** One budget: its cap (null: none) and what the tasks it covers have spent. */
export interface BudgetLine {
  usd: number | null
  spentUsd: number
}

/** Every budget of a board, and what each has spent. */
export interface BudgetView {
  mesh: BudgetLine
  /** Plan id → its budget (plans without one have `usd` null). */
  plans: ReadonlyMap<string, BudgetLine>
}

/** Which budget holds a task back. */
export type BudgetHold =
  | { scope: 'mesh', usd: number, spentUsd: number }
  | { scope: 'plan', plan: string, usd: number, spentUsd: number }

/**
 * Smallest cap a run is started with (USD): what is left is rounded to
 * millionths of a dollar, and a budget with less than this left counts as
 * reached. @default 0.000001
 */
export const MIN_RUN_BUDGET_USD = 0.000001

const views = new WeakMap<BoardSnapshot, BudgetView>()

/** The budgets of a snapshot (computed once per snapshot: a snapshot is the same object until the board changes). */
export function budgetView (snap: BoardSnapshot): BudgetView {
  const cached = views.get(snap)
  if (cached !== undefined) return cached
  let spent = 0
  const plans = new Map<string, BudgetLine>()
  for (const t of snap.tasks.values()) {
    spent += t.costUsd
    if (t.plan == null) continue
    const line = plans.get(t.plan) ?? { usd: null, spentUsd: 0 }
    line.spentUsd += t.costUsd
    plans.set(t.plan, line)
  }
  for (const [plan, line] of plans) {
    const first = snap.tasks.get(plan as TaskId)
    if (first !== undefined && first.plan === plan) line.usd = first.budgetUsd ?? null
  }
  const view: BudgetView = { mesh: { usd: snap.main.budget?.usd ?? null, spentUsd: spent }, plans }
  views.set(snap, view)
  return view
}

/**
 * `view` with the costs of runs whose end is not on the board yet counted as
 * spent: a node's runs whose agent is done and whose `done` (with its cost)
 * waits for the commit and the hand-off. Their slots take the next task
 * meanwhile, and a budget that run spent must hold it.
 */
export function withUnwritten (view: BudgetView, runs: Iterable<{ plan: string | null, costUsd: number }>): BudgetView {
  let mesh = view.mesh.spentUsd
  let plans: Map<string, BudgetLine> | null = null
  for (const r of runs) {
    if (!(r.costUsd > 0)) continue
    mesh += r.costUsd
    if (r.plan === null) continue
    plans ??= new Map(view.plans)
    const line = plans.get(r.plan) ?? { usd: null, spentUsd: 0 }
    plans.set(r.plan, { usd: line.usd, spentUsd: line.spentUsd + r.costUsd })
  }
  return mesh === view.mesh.spentUsd ? view : { mesh: { usd: view.mesh.usd, spentUsd: mesh }, plans: plans ?? view.plans }
}

function reached (line: BudgetLine): boolean {
  return line.usd !== null && line.usd - line.spentUsd < MIN_RUN_BUDGET_USD
}

/** The budget that keeps `t` from starting a run (the mesh's first), or null when none does. */
export function budgetHold (t: Pick<Task, 'plan'>, view: BudgetView): BudgetHold | null {
  const m = view.mesh
  if (reached(m) && m.usd !== null) return { scope: 'mesh', usd: m.usd, spentUsd: m.spentUsd }
  const p = t.plan == null ? undefined : view.plans.get(t.plan)
  if (p !== undefined && reached(p) && p.usd !== null) return { scope: 'plan', plan: t.plan as string, usd: p.usd, spentUsd: p.spentUsd }
  return null
}

/**
 * What is left of the tightest budget that applies to `t` (USD, rounded to
 * `MIN_RUN_BUDGET_USD`, at least that), or null when no budget applies: the
 * cap a run of `t` is started with.
 */
export function budgetLeft (t: Pick<Task, 'plan'>, view: BudgetView): number | null {
  const lines = [view.mesh, ...(t.plan == null ? [] : [view.plans.get(t.plan)])]
  let left: number | null = null
  for (const l of lines) {
    if (l === undefined || l.usd === null) continue
    const rest = l.usd - l.spentUsd
    left = left === null ? rest : Math.min(left, rest)
  }
  if (left === null) return null
  // divided by a whole number, so a round amount stays exact (0.75, not 0.7500000000000001)
  return Math.max(MIN_RUN_BUDGET_USD, Math.round(left * 1e6) / 1e6)
}

/**
 * Tasks that would start a run now but for a budget: ready tasks whose mesh
 * or plan budget is reached. Running tasks are not held (nor stopped).
 */
export function heldByBudget (snap: BoardSnapshot): Map<TaskId, BudgetHold> {
  const view = budgetView(snap)
  const out = new Map<TaskId, BudgetHold>()
  if (view.mesh.usd === null && ![...view.plans.values()].some(p => p.usd !== null)) return out
  for (const t of snap.tasks.values()) {
    if (effectiveState(t, snap) !== 'ready') continue
    const hold = budgetHold(t, view)
    if (hold !== null) out.set(t.id, hold)
  }
  return out
}

/**
 * Tasks that cannot start until someone raises a budget: the held ones, and
 * pending ones whose every unmerged dependency is such a task (`submit --wait`
 * counts them as waiting on a human).
 */
export function waitingOnBudget (snap: BoardSnapshot): Set<TaskId> {
  const out = new Set<TaskId>(heldByBudget(snap).keys())
  if (out.size === 0) return out
  const unmerged = (id: string): TaskId[] => (snap.tasks.get(id as TaskId)?.deps ?? []).filter(d => { const s = snap.tasks.get(d)?.state; return s !== undefined && s !== 'merged' })
  const pending = [...snap.tasks.values()].filter(t => t.state === 'pending').map(t => t.id)
  postOrder(pending, unmerged, id => {
    const t = snap.tasks.get(id as TaskId)
    const deps = unmerged(id)
    if (t?.state === 'pending' && deps.length > 0 && deps.every(d => out.has(d))) out.add(t.id)
  })
  return out
}

/** A budget hold in words, for logs, status and the TUI. */
export function describeHold (h: BudgetHold): string {
  const what = h.scope === 'mesh' ? 'the mesh budget' : `the budget of plan ${h.plan}`
  const raise = h.scope === 'mesh' ? 'meshwork budget --usd X' : `meshwork budget --plan ${h.plan} --usd X`
  return `${what} of $${h.usd.toFixed(2)} is spent ($${h.spentUsd.toFixed(2)}): no new run starts until \`${raise}\` raises it`
}

/**
 * A function to call on every scheduler pass with why a budget holds tasks
 * back (null: none does): logs `budget:reached` when holding starts and
 * `budget:resumed` when it ends, once each.
 */
export function holdLogger (log: Logger): (held: string | null) => void {
  let last: string | null = null
  return held => {
    if ((held === null) === (last === null)) return
    if (held !== null) log.warn('budget:reached', { reason: held, note: 'ready tasks wait; running ones go on' })
    else log.info('budget:resumed', { note: 'no budget holds a ready task back any more' })
    last = held
  }
}
