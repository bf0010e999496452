import { setMeshBudget, setPlanBudget } from '../crdt/ops.ts'
import { parseTaskId, type BoardSnapshot, type TaskId } from '../crdt/schema.ts'
import { budgetView, heldByBudget } from '../scheduler/budget.ts'
import { UsageError } from '../util/errors.ts'
import { confirmWrite, type Client } from './client.ts'

/** One plan's budget in `status --json` and `budget --json`. */
export interface PlanBudgetReport {
  /** The plan's id: its first task's id. */
  plan: string
  /** The cap in USD, or null when the plan has none. */
  usd: number | null
  spentUsd: number
  /** Ready tasks of the plan this budget holds back. */
  held: string[]
}

/**
 * The budgets of the mesh (`status --json` `budget`, `budget --json`): the
 * mesh's cap over all tasks' `costUsd`, and each plan that has a budget.
 */
export interface BudgetReport {
  /** The mesh's cap in USD, or null when none is set. */
  usd: number | null
  /** All tasks' `costUsd` together. */
  spentUsd: number
  /** Who set the mesh's cap, and when (epoch ms); null when never set. */
  setBy: string | null
  setAt: number | null
  /** Ready tasks the mesh's cap holds back. */
  held: string[]
  /** Plans with a budget. */
  plans: PlanBudgetReport[]
}

/** The budgets of a board and the tasks each holds back. */
export function budgetReport (snap: BoardSnapshot): BudgetReport {
  const view = budgetView(snap)
  const holds = heldByBudget(snap)
  const heldBy = (scope: string): string[] => [...holds].filter(([, h]) => (h.scope === 'mesh' ? 'mesh' : `plan:${h.plan}`) === scope).map(([id]) => id as string).sort()
  const plans: PlanBudgetReport[] = [...view.plans]
    .filter(([, l]) => l.usd !== null)
    .map(([plan, l]) => ({ plan, usd: l.usd, spentUsd: l.spentUsd, held: heldBy(`plan:${plan}`) }))
  const rec = snap.main.budget ?? null
  return { usd: view.mesh.usd, spentUsd: view.mesh.spentUsd, setBy: rec?.by ?? null, setAt: rec?.at ?? null, held: heldBy('mesh'), plans }
}

/** A spent budget that holds ready tasks back, as the TUI inbox lists it. */
export interface SpentBudget {
  /** `budget:mesh` or `budget:plan:<id>`. */
  key: string
  /** The tasks it holds (at least one). */
  held: string[]
  /** One line: which budget, what it is and what is spent, the tasks, the command that raises it. */
  text: string
}

/** The budgets of a report that hold ready tasks back, the mesh's first. */
export function spentBudgets (r: BudgetReport): SpentBudget[] {
  const usd = (n: number | null): string => `$${(n ?? 0).toFixed(2)}`
  const one = (key: string, what: string, cap: number | null, spent: number, held: string[], raise: string): SpentBudget => ({
    key,
    held,
    text: `${what} of ${usd(cap)} is spent (${usd(spent)}): ${held.length} ready task${held.length === 1 ? '' : 's'} held (${held.join(', ')}); \`${raise}\` raises it`
  })
  return [
    ...(r.held.length > 0 ? [one('budget:mesh', 'the mesh budget', r.usd, r.spentUsd, r.held, 'meshwork budget --usd X')] : []),
    ...r.plans.filter(p => p.held.length > 0).map(p => one(`budget:plan:${p.plan}`, `plan ${p.plan}'s budget`, p.usd, p.spentUsd, p.held, `meshwork budget --plan ${p.plan} --usd X`))
  ]
}

/** The plan `target` names: a plan id, or the id of any of its tasks. */
export function findPlan (snap: BoardSnapshot, target: string): TaskId {
  const t = snap.tasks.get(parseTaskId(target))
  if (t === undefined) throw new UsageError(`no task or plan "${target}" on the board. \`meshwork status --json\` gives each task's plan.`)
  if (t.plan == null) throw new UsageError(`task "${target}" was submitted before plans were recorded on the board, so it has no plan budget; use the mesh's (\`meshwork budget --usd X\`).`)
  return t.plan as TaskId
}

async function confirm (client: Client, what: string): Promise<void> {
  await confirmWrite(client, `the ${what}`)
}

/** Sets (null: removes) the mesh's spending cap; returns the report after the change. */
export async function setMeshCap (client: Client, usd: number | null, by: string): Promise<BudgetReport> {
  client.node.changeBoard(`budget:mesh ${usd ?? 'none'}`, d => { setMeshBudget(d, { usd, at: Date.now(), by }) })
  await confirm(client, 'budget')
  return budgetReport(client.node.board.snapshot())
}

/** Sets (null: removes) the budget of the plan `target` names (a plan id or any of its task ids); returns the plan id. */
export async function setPlanCap (client: Client, target: string, usd: number | null): Promise<TaskId> {
  const plan = findPlan(client.node.board.snapshot(), target)
  const set = { done: false }
  client.node.changeBoard(`budget:plan ${plan} ${usd ?? 'none'}`, d => { set.done = setPlanBudget(d, plan, usd) })
  if (!set.done) throw new UsageError(`the first task of plan "${plan}" is not on the board, so its budget cannot be changed.`)
  await confirm(client, 'budget')
  return plan
}
