import { hostname, userInfo } from 'node:os'
import { budgetReport, findPlan, setMeshCap, setPlanCap, type BudgetReport } from '../api/budget.ts'
import { UsageError } from '../util/errors.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'

/** `--usd`: a number of US dollars, 0 or more, or `none` to remove the cap; undefined when absent. */
export function parseUsd (v: string | undefined, name: string): number | null | undefined {
  if (v === undefined) return undefined
  if (v.trim().toLowerCase() === 'none') return null
  const n = Number(v.trim().replace(/^\$/, ''))
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number of US dollars, 0 or more (e.g. 25 or 2.5), or "none" to remove the cap; got "${v}".`)
  return n
}

const usd = (n: number): string => `$${n.toFixed(2)}`

function line (label: string, cap: number | null, spent: number, held: readonly string[]): string {
  if (cap === null) return `${label}: no cap; spent ${usd(spent)}`
  const left = cap - spent
  const state = left > 0 ? `${usd(left)} left` : 'reached: no new run starts'
  const waiting = held.length > 0 ? `; ${held.length} ready task${held.length === 1 ? '' : 's'} held (${held.slice(0, 8).join(', ')}${held.length > 8 ? ', …' : ''})` : ''
  return `${label}: ${usd(cap)}, spent ${usd(spent)} (${state})${waiting}`
}

/** The budgets in words: the mesh's, then each plan's (only `plan` with one). */
export function renderBudget (r: BudgetReport, plan?: string): string {
  const plans = r.plans.filter(p => plan === undefined || p.plan === plan)
  const out = plan === undefined ? [line('mesh budget', r.usd, r.spentUsd, r.held)] : []
  for (const p of plans) out.push(line(`plan ${p.plan}`, p.usd, p.spentUsd, p.held))
  if (plan !== undefined && plans.length === 0) out.push(`plan ${plan}: no budget`)
  return out.join('\n')
}

export const budgetCommand = defineCommand({
  name: 'budget',
  summary: summaryOf('budget'),
  usage: 'meshwork budget [--usd X|none] [--plan PLAN] [--json] (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'Without --usd, prints the mesh\'s cap and what all tasks\' runs have spent, and each plan\'s budget.',
    'With --usd X, sets the mesh\'s total spending cap (all tasks\' costUsd together); `none` removes it. Once what is',
    'spent reaches a cap no new run starts (ready tasks wait, shown as held by budget; running ones go on); raising',
    'it resumes the work by itself. With --plan, the same for one plan\'s budget (`budgetUsd` of its plan file): PLAN',
    'is the plan\'s id (its first task\'s id) or the id of any of its tasks.'
  ].join('\n'),
  options: {
    usd: opt.custom<number | null | undefined>({ arg: 'X', description: 'Set the cap in US dollars (0 or more), or "none" to remove it.', parse: parseUsd }),
    plan: opt.string({ arg: 'PLAN', description: 'A plan (its first task\'s id, or any of its task ids) instead of the whole mesh.' }),
    json: opt.boolean({ description: 'Print the budgets as JSON: {usd, spentUsd, setBy, setAt, held, plans: [{plan, usd, spentUsd, held}]}.' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts) => {
    const client = await clientFromOptions(opts)
    try {
      let plan: string | undefined
      if (opts.plan !== undefined) {
        plan = opts.usd !== undefined ? await setPlanCap(client, opts.plan, opts.usd) : findPlan(client.node.board.snapshot(), opts.plan)
      } else if (opts.usd !== undefined) {
        await setMeshCap(client, opts.usd, `${userInfo().username}@${hostname()}`)
      }
      const report = budgetReport(client.node.board.snapshot())
      if (opts.json) {
        const shown = plan === undefined ? report : { ...report, plans: report.plans.filter(p => p.plan === plan) }
        process.stdout.write(JSON.stringify(shown) + '\n')
      } else {
        process.stdout.write(renderBudget(report, plan) + '\n')
      }
      return 0
    } finally {
      await client.close()
    }
  }
})
