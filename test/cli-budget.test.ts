import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startCliMesh, killAllChildren, removeDir, describeResult, watchStatusJson, type CliNode, type StatusWatch } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

interface TaskJson { id: string, state: string, attempts: number, costUsd: number, held: string | null, plan: string | null }
interface BudgetJson { usd: number | null, spentUsd: number, held: string[], plans: Array<{ plan: string, usd: number | null, spentUsd: number, held: string[] }> }

let dir = ''
const nodes: CliNode[] = []
let conn: string[] = []
let watch: StatusWatch | null = null

async function tasks (): Promise<TaskJson[]> {
  return ((await watch!.fresh()) as { tasks: TaskJson[] }).tasks
}

async function cli (args: string[], code = 0): Promise<string> {
  const r = await runCli([...args, ...conn], { timeoutMs: 90_000 })
  expect(r.code, describeResult(args, r)).toBe(code)
  return r.code === 0 ? r.stdout : r.stderr
}

/** Waits until `check` holds for the tasks of a fresh status report. */
async function until (what: string, check: (ts: TaskJson[]) => boolean): Promise<TaskJson[]> {
  let last: TaskJson[] = []
  await waitFor(async () => { last = await tasks(); return check(last) }, {
    timeoutMs: 90_000,
    message: () => `${what}: ${JSON.stringify(last.map(t => [t.id, t.state, t.attempts, t.costUsd, t.held]))}\n${nodes.map(n => n.describe()).join('\n')}`
  })
  return last
}

const byId = (ts: TaskJson[], id: string): TaskJson | undefined => ts.find(t => t.id === id)

beforeAll(async () => {
  const mesh = await startCliMesh('meshwork-budget-', ['--agent', 'sim', '--slots', '1'], { names: ['a'] })
  dir = mesh.dir
  nodes.push(...mesh.nodes)
  conn = mesh.conn
  watch = await watchStatusJson(conn)
})

afterAll(async () => {
  await watch?.close()
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
})

describe('meshwork budget', { timeout: 300_000 }, () => {
  it('sets the mesh cap and a plan\'s, prints them, holds ready tasks at them and resumes when raised; bad values exit 2', async () => {
    // nothing set yet: no cap, nothing spent
    expect(JSON.parse(await cli(['budget', '--json']))).toMatchObject({ usd: null, spentUsd: 0, held: [], plans: [] })
    expect(await cli(['budget', '--usd', 'lots'], 2)).toContain('--usd must be a number of US dollars')
    const bad = join(dir, 'bad.yaml')
    await writeFile(bad, 'budgetUsd: -3\ntasks:\n  - id: x\n    prompt: ""\n')
    const badOut = await cli(['submit', bad], 2)
    expect(badOut).toContain('budgetUsd: must be a number of US dollars, 0 or more')
    expect(badOut).toContain('task "x": empty prompt')

    // a mesh cap of $0.50 and two tasks of $0.50: the first fits, the second waits held
    expect(await cli(['budget', '--usd', '0.5'])).toContain('mesh budget: $0.50, spent $0.00 ($0.50 left)')
    const plan1 = join(dir, 'plan1.yaml')
    await writeFile(plan1, [
      'tasks:',
      '  - { id: first, prompt: do first, priority: 2, sim: { duration: 0s, cost: 0.5 } }',
      '  - { id: second, prompt: do second, priority: 1, sim: { duration: 0s, cost: 0.5 } }',
      ''
    ].join('\n'))
    expect((await cli(['submit', plan1])).trim().split('\n')).toEqual(['first', 'second'])
    await until('first did not run and second is not held', ts => ['done', 'merging', 'merged'].includes(byId(ts, 'first')?.state ?? '') && byId(ts, 'second')?.held === 'budget')
    const held = byId(await tasks(), 'second')!
    expect([held.state, held.attempts, held.costUsd, held.plan]).toEqual(['ready', 0, 0, 'first'])
    const text = await cli(['budget'])
    expect(text).toContain('mesh budget: $0.50, spent $0.50 (reached: no new run starts); 1 ready task held (second)')
    expect(JSON.parse(await cli(['budget', '--json']))).toMatchObject({ usd: 0.5, spentUsd: 0.5, held: ['second'] })
    expect(await cli(['status'])).toContain('held: the mesh budget is spent')

    // raising the cap resumes the held task by itself
    await cli(['budget', '--usd', '2'])
    await until('second did not run after the cap was raised', ts => ['done', 'merging', 'merged'].includes(byId(ts, 'second')?.state ?? ''))

    // a plan with a budget of 0 waits on its own budget; raised by naming any of its tasks
    const plan2 = join(dir, 'plan2.yaml')
    await writeFile(plan2, 'budgetUsd: 0\ntasks:\n  - { id: p-one, prompt: do it, sim: { duration: 0s, cost: 0.25 } }\n  - { id: p-two, prompt: do it, sim: { duration: 0s, cost: 0.25 } }\n')
    // submit --wait counts a spent budget as waiting on a human: it stops at once and exits 1
    const waited = await runCli(['submit', plan2, '--wait', ...conn], { timeoutMs: 90_000 })
    expect(waited.code, describeResult(['submit', '--wait'], waited)).toBe(1)
    expect(waited.stdout).toContain('p-one held: a budget is spent')
    expect(waited.stdout).toContain('2 held by a spent budget')
    await until('the plan\'s tasks are not held', ts => byId(ts, 'p-one')?.held === 'budget' && byId(ts, 'p-two')?.held === 'budget')
    const planJson = JSON.parse(await cli(['budget', '--plan', 'p-two', '--json'])) as BudgetJson
    expect(planJson.plans).toEqual([{ plan: 'p-one', usd: 0, spentUsd: 0, held: ['p-one', 'p-two'] }])
    expect(await cli(['budget', '--plan', 'nosuchtask'], 2)).toContain('no task or plan "nosuchtask"')
    expect(await cli(['budget', '--plan', 'p-two', '--usd', '0.25'])).toContain('plan p-one: $0.25, spent $0.00 ($0.25 left)')
    // $0.25 lets one of the two run, then the plan's budget holds the other
    const after = await until('one task of the plan did not run', ts => ['p-one', 'p-two'].filter(id => byId(ts, id)?.held === 'budget').length === 1 && ['p-one', 'p-two'].some(id => ['done', 'merging', 'merged'].includes(byId(ts, id)?.state ?? '')))
    expect(after.filter(t => t.plan === 'p-one').reduce((s, t) => s + t.costUsd, 0)).toBe(0.25)
    await cli(['budget', '--plan', 'p-one', '--usd', 'none'])
    await until('the plan did not finish once its budget was removed', ts => ['p-one', 'p-two'].every(id => ['done', 'merging', 'merged'].includes(byId(ts, id)?.state ?? '')))
    const final = JSON.parse(await cli(['budget', '--json'])) as BudgetJson
    expect(final).toMatchObject({ usd: 2, spentUsd: 1.5, held: [], plans: [] })
  })
})
