import { describe, it, expect, afterEach } from 'vitest'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMesh, tempDir, waitAllAlive, waitConverged, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { Board } from '../src/crdt/board.ts'
import { addTasks, asPlan, setMeshBudget, setPlanBudget, simpleTask, type NewTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { asPeerId, type Task, type TaskId } from '../src/crdt/schema.ts'
import { budgetHold, budgetLeft, budgetView, heldByBudget } from '../src/scheduler/budget.ts'
import { parsePlanFile, PlanError } from '../src/scheduler/plan.ts'
import { buildStatus } from '../src/api/status.ts'
import { budgetReport, spentBudgets } from '../src/api/budget.ts'
import { inbox, taskRows, tuiData } from '../src/tui/model.ts'
import { inboxLines } from '../src/tui/views/inbox.ts'
import { lineText } from '../src/tui/lines.ts'
import { renderStatus } from '../src/cli/render.ts'
import { simAgent } from '../src/agent/sim.ts'
import { claudeAgent, runBudget } from '../src/agent/claude.ts'
import type { Agent } from '../src/agent/types.ts'
import { createLogger, type Logger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'

const FAKE = fileURLToPath(new URL('./fixtures/fake-claude.mjs', import.meta.url))

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
const dirs: string[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
  await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
})

/** A sim task costing `costUsd` per run; `priority` orders the runs (higher first). */
const costly = (id: string, costUsd: number, priority: number, extra: Partial<NewTask> = {}): NewTask =>
  simpleTask(id, { priority, sim: { durationMs: 10, write: {}, append: {}, fail: 0, costUsd }, ...extra })

function recordingLogger (): { logger: Logger, events: Array<{ event: string } & Record<string, unknown>> } {
  const events: Array<{ event: string } & Record<string, unknown>> = []
  const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
  return { logger, events }
}

/** The sim agent, noting the budget left that each run was given. */
function watchedSim (given: Map<string, Array<number | undefined>>): Agent {
  const sim = simAgent()
  return {
    kind: 'sim',
    run: async init => {
      given.set(init.task.id, [...(given.get(init.task.id) ?? []), init.maxBudgetUsd])
      return await sim.run(init)
    }
  }
}

describe('budgets on a board (pure)', () => {
  it('a plan budget and the mesh cap: spent from every run, held at the cap, what is left is the tightest', () => {
    const board = Board.create('m', 'aa')
    board.change('plan', addTasks(asPlan([simpleTask('p1'), simpleTask('p2')], 1), 1))
    board.change('other', addTasks(asPlan([simpleTask('o1')], null), 2))
    const snap0 = board.snapshot()
    expect(snap0.tasks.get('p2' as TaskId)?.plan).toBe('p1')
    expect(snap0.tasks.get('p1' as TaskId)?.budgetUsd).toBe(1)
    expect(snap0.tasks.get('p2' as TaskId)?.budgetUsd).toBeNull()
    // no spend yet: nothing held, a run of the plan may spend the whole plan budget, the other plan has no cap
    expect(budgetLeft(snap0.tasks.get('p2' as TaskId)!, budgetView(snap0))).toBe(1)
    expect(budgetLeft(snap0.tasks.get('o1' as TaskId)!, budgetView(snap0))).toBeNull()
    board.change('spend', d => { lifecycle.addUsage(d, 'p1' as TaskId, { costUsd: 0.75, tokens: { input: 1, output: 1, cacheRead: 0, cacheWrite: 0 } }) })
    board.change('cap', d => { setMeshBudget(d, { usd: 2, at: 1, by: 'me@host' }) })
    const snap1 = board.snapshot()
    const v1 = budgetView(snap1)
    expect(v1.mesh).toEqual({ usd: 2, spentUsd: 0.75 })
    expect(budgetLeft(snap1.tasks.get('p2' as TaskId)!, v1)).toBe(0.25)
    expect(budgetLeft(snap1.tasks.get('o1' as TaskId)!, v1)).toBe(1.25)
    expect(heldByBudget(snap1).size).toBe(0)
    // the plan's budget is spent: its ready tasks are held (the plan's first task too), the other plan's are not
    board.change('spend', d => { lifecycle.addUsage(d, 'p2' as TaskId, { costUsd: 0.25, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 } }) })
    const snap2 = board.snapshot()
    expect(budgetHold(snap2.tasks.get('p1' as TaskId)!, budgetView(snap2))).toEqual({ scope: 'plan', plan: 'p1', usd: 1, spentUsd: 1 })
    expect([...heldByBudget(snap2).keys()].sort()).toEqual(['p1', 'p2'])
    const status = buildStatus(snap2, null)
    expect(status.tasks.map(t => [t.id, t.held, t.plan])).toEqual([['p1', 'budget', 'p1'], ['p2', 'budget', 'p1'], ['o1', null, 'o1']])
    expect(status.budget).toEqual({ usd: 2, spentUsd: 1, setBy: 'me@host', setAt: 1, held: [], plans: [{ plan: 'p1', usd: 1, spentUsd: 1, held: ['p1', 'p2'] }] })
    // the TUI inbox has one BUDGET item for the spent plan budget
    const items = inbox(status).filter(i => i.kind === 'budget')
    expect(items.map(i => [i.key, i.taskId])).toEqual([['budget:plan:p1', 'p1']])
    expect(items[0]?.summary).toContain('meshwork budget --plan p1 --usd X')
    // drawn: the inbox item says BUDGET and how to raise it; the task rows and the status table say held
    const data = tuiData(status, snap2, null, new Map(), 'via', 10)
    const drawn = inboxLines(data, items, 'budget:plan:p1', 0, 160, 20).map(lineText).join('\n')
    expect(drawn).toContain('BUDGET')
    expect(drawn).toContain('plan p1\'s budget of $1.00 is spent ($1.00): 2 ready tasks held (p1, p2)')
    expect(taskRows(data).filter(r => r.note.startsWith('held')).map(r => r.id).sort()).toEqual(['p1', 'p2'])
    const text = renderStatus(status, 'via')
    expect(text).toContain('budget: mesh $2.00; plan p1 $1.00 (spent $1.00) REACHED; 2 ready tasks held')
    expect(text).toMatch(/p2 +ready .*held: plan p1's budget is spent \(`meshwork budget --plan p1 --usd X`\)/)
    // the mesh cap reached holds every ready task, the mesh's hold first; running tasks are not held
    board.change('cap', d => { setMeshBudget(d, { usd: 1, at: 2, by: 'me@host' }) })
    board.change('run', d => { lifecycle.start(d, 'o1' as TaskId, asPeerId('peer'), 1, 3) })
    const snap3 = board.snapshot()
    expect([...heldByBudget(snap3)].map(([id, h]) => [id, h.scope]).sort()).toEqual([['p1', 'mesh'], ['p2', 'mesh']])
    // one item per budget that holds something: the mesh's holds them first, so the plan's holds none
    expect(spentBudgets(budgetReport(snap3)).map(b => [b.key, b.held])).toEqual([['budget:mesh', ['p1', 'p2']]])
    // raised: nothing held
    board.change('raise', d => { setMeshBudget(d, { usd: null, at: 4, by: 'me@host' }); setPlanBudget(d, 'p1' as TaskId, 5) })
    expect(heldByBudget(board.snapshot()).size).toBe(0)
    expect(budgetLeft(board.snapshot().tasks.get('p2' as TaskId)!, budgetView(board.snapshot()))).toBe(4)
  })

  it('budgetUsd of a plan file is validated with the plan\'s other problems', () => {
    const ok = parsePlanFile('budgetUsd: 2.5\ntasks:\n  - id: a\n    prompt: p\n    sim: { cost: 0.5 }\n', 'unchecked')
    expect(ok.budgetUsd).toBe(2.5)
    expect(ok.tasks[0]?.sim?.costUsd).toBe(0.5)
    expect(parsePlanFile('tasks:\n  - id: a\n    prompt: p\n', 'unchecked').budgetUsd).toBeNull()
    for (const bad of ['"lots"', '-1', '[1]']) {
      let caught: unknown
      try { parsePlanFile(`budgetUsd: ${bad}\ntasks:\n  - id: a\n    prompt: ""\n`, 'unchecked', 'plan.yaml') } catch (err) { caught = err }
      expect(caught).toBeInstanceOf(PlanError)
      const problems = (caught as PlanError).problems
      expect(problems.some(p => p.startsWith('budgetUsd: must be a number of US dollars'))).toBe(true)
      expect(problems).toContain('task "a": empty prompt')
    }
  })

  it('each claude run gets --max-budget-usd of what is left, or the node\'s own cap when that is less', async () => {
    expect(runBudget(undefined, undefined)).toBeUndefined()
    expect(runBudget(0.5, undefined)).toEqual({ usd: 0.5, from: 'node' })
    expect(runBudget(5, 0.75)).toEqual({ usd: 0.75, from: 'budget' })
    expect(runBudget(0.5, 0.75)).toEqual({ usd: 0.5, from: 'node' })
    const dir = await tempDir('meshwork-budget-claude-')
    dirs.push(dir)
    const cwd = join(dir, 'wt')
    await mkdir(cwd)
    const board = Board.create('m', 'aa')
    board.change('plan', addTasks([simpleTask('t')]))
    const task = board.task('t') as Task
    const run = async (nodeCap: number | undefined, left: number | undefined, mode: string): Promise<{ argv: string[], outcome: string, error: string | null }> => {
      const record = join(dir, `record-${mode}-${String(nodeCap)}-${String(left)}.json`)
      const agent = claudeAgent({ bin: FAKE, dataDir: join(dir, 'data'), nodeName: 'n', ...(nodeCap !== undefined ? { maxBudgetUsd: nodeCap } : {}), env: { FAKE_CLAUDE_RECORD: record, FAKE_CLAUDE_MODE: mode, FAKE_CLAUDE_COST: '0.8', FAKE_CLAUDE_DELAY_MS: '1' } })
      const r = await agent.run({ task, attempt: 1, node: asPeerId('peer'), cwd, signal: new AbortController().signal, ...(left !== undefined ? { maxBudgetUsd: left } : {}) })
      const rec = JSON.parse(await readFile(record, 'utf8')) as { argv: string[] }
      return { argv: rec.argv, outcome: r.outcome, error: r.error }
    }
    const flag = (argv: string[]): string | undefined => { const i = argv.indexOf('--max-budget-usd'); return i < 0 ? undefined : argv[i + 1] }
    expect(flag((await run(5, 0.75, 'success')).argv)).toBe('0.75')
    expect(flag((await run(0.5, 0.75, 'success')).argv)).toBe('0.5')
    expect(flag((await run(undefined, 0.25, 'success')).argv)).toBe('0.25')
    expect(flag((await run(undefined, undefined, 'success')).argv)).toBeUndefined()
    // stopped at what was left of the budget: the task waits (outcome budget); at the node's own cap: a final failure
    const atBudget = await run(5, 0.75, 'max_budget')
    expect(atBudget.outcome).toBe('budget')
    expect(atBudget.error).toContain('what was left of the budget ($0.75')
    const atOwnCap = await run(0.5, 0.75, 'max_budget')
    expect(atOwnCap.outcome).toBe('failure')
    expect(atOwnCap.error).toContain('per-run budget of $0.5 exceeded')
  })
})

describe('budgets across a mesh (real nodes, the sim agent)', () => {
  it('a plan stops starting runs at its budgetUsd, its tasks wait ready with no attempt used, and raising the budget from another node resumes them', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const [worker, client] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0]]
    const { logger, events } = recordingLogger()
    const given = new Map<string, Array<number | undefined>>()
    const log = new RunLog()
    // the client node runs no scheduler: the worker takes every task at once, in claim order (priority first)
    scheds = [attachScheduler(worker, log, 1, { logger, agent: watchedSim(given), stealAfterMs: 0 })]
    // four tasks of $0.50 each under a plan budget of $1: two runs fit
    const tasks = [costly('pa', 0.5, 4), costly('pb', 0.5, 3), costly('pc', 0.5, 2), costly('pd', 0.5, 1)]
    client.changeBoard('plan', addTasks(asPlan(tasks, 1)))
    await waitFor(() => events.some(e => e.event === 'budget:reached'), { timeoutMs: 30_000, message: () => `no budget:reached; board: ${JSON.stringify([...worker.board.snapshot().tasks.values()].map(t => [t.id, t.state, t.costUsd]))}` })
    const snap = worker.board.snapshot()
    const state = (id: string): Task => snap.tasks.get(id as TaskId) as Task
    expect(['pa', 'pb'].map(id => state(id).state)).toEqual(['done', 'done'])
    // held: still ready, no attempt, no error, no claim; the scheduler had its pass over them
    for (const id of ['pc', 'pd']) {
      expect(state(id).state).toBe('ready')
      expect(state(id).attempts).toBe(0)
      expect(Object.keys(state(id).claims)).toEqual([])
    }
    expect(buildStatus(snap, null).tasks.filter(t => t.held === 'budget').map(t => t.id)).toEqual(['pc', 'pd'])
    expect(log.runs.has('pc') || log.runs.has('pd')).toBe(false)
    // each run was given what was left of the plan's budget
    expect(given.get('pa')).toEqual([1])
    expect(given.get('pb')).toEqual([0.5])
    // raised on the other node: the change reaches the worker by gossip and the held tasks run
    client.changeBoard('budget', d => { setPlanBudget(d, 'pa' as TaskId, 3) })
    await waitFor(() => ['pc', 'pd'].every(id => worker.board.task(id)?.state === 'done'), { timeoutMs: 30_000, message: () => `not resumed: ${JSON.stringify([...worker.board.snapshot().tasks.values()].map(t => [t.id, t.state]))}` })
    expect(events.some(e => e.event === 'budget:resumed')).toBe(true)
    expect(given.get('pc')).toEqual([2])
    expect(given.get('pd')).toEqual([1.5])
    expect(log.duplicates()).toEqual([])
    await waitConverged(mesh.nodes)
    expect(budgetReport(client.board.snapshot()).plans).toEqual([{ plan: 'pa', usd: 3, spentUsd: 2, held: [] }])
  })

  it('the mesh cap: a run given less than it would spend stops at the cap and its task waits held (no failure); a running run is not stopped; raising the cap resumes', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const [worker, client] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0]]
    const { logger, events } = recordingLogger()
    const given = new Map<string, Array<number | undefined>>()
    const log = new RunLog()
    const dir = await tempDir('meshwork-budget-until-')
    dirs.push(dir)
    const go = join(dir, 'go')
    scheds = [attachScheduler(worker, log, 1, { logger, agent: watchedSim(given), stealAfterMs: 0 })]
    client.changeBoard('cap', d => { setMeshBudget(d, { usd: 0.75, at: Date.now(), by: 'test' }) })
    // ma fits; mb is given the $0.25 left and stops there; mc waits
    client.changeBoard('plan', addTasks(asPlan([costly('ma', 0.5, 3)], null)))
    await waitFor(() => worker.board.task('ma')?.state === 'done', { timeoutMs: 30_000, message: () => JSON.stringify(worker.board.task('ma')) })
    client.changeBoard('plan', addTasks(asPlan([costly('mb', 0.5, 2), costly('mc', 0.5, 1)], null)))
    await waitFor(() => events.some(e => e.event === 'budget:reached') && worker.board.task('mb')?.attempts === 1 && worker.board.task('mb')?.state === 'ready', { timeoutMs: 30_000, message: () => `mb not held: ${JSON.stringify(worker.board.task('mb'))}` })
    const mb = worker.board.task('mb') as Task
    expect(mb.failures).toBe(0)
    expect(mb.costUsd).toBe(0.25)
    expect(mb.error).toContain('stopped at what was left of the budget')
    expect(given.get('mb')).toEqual([0.25])
    expect(worker.board.task('mc')?.attempts).toBe(0)
    expect(budgetReport(worker.board.snapshot())).toMatchObject({ usd: 0.75, spentUsd: 0.75, held: ['mb', 'mc'] })
    // a run going on when the cap is lowered is not stopped: raise, start a run held at a point (the one
    // slot is then taken, so mb and mc wait for it), lower the cap to 0 under it, let it finish
    client.changeBoard('plan', addTasks(asPlan([simpleTask('long', { priority: 9, sim: { durationMs: 10, write: {}, append: {}, fail: 0, costUsd: 0.5, until: go } })], null)))
    client.changeBoard('cap', d => { setMeshBudget(d, { usd: 10, at: Date.now(), by: 'test' }) })
    await waitFor(() => worker.board.task('long')?.state === 'running', { timeoutMs: 30_000, message: () => JSON.stringify(worker.board.task('long')) })
    client.changeBoard('cap', d => { setMeshBudget(d, { usd: 0, at: Date.now(), by: 'test' }) })
    await waitFor(() => worker.board.snapshot().main.budget?.usd === 0, { timeoutMs: 30_000, message: 'the lowered cap did not reach the worker' })
    await writeFile(go, '')
    await waitFor(() => worker.board.task('long')?.state === 'done', { timeoutMs: 30_000, message: () => JSON.stringify(worker.board.task('long')) })
    expect(worker.board.task('long')?.costUsd).toBe(0.5)
    expect([...heldByBudget(worker.board.snapshot())].map(([id, h]) => [id, h.scope]).sort()).toEqual([['mb', 'mesh'], ['mc', 'mesh']])
    expect([worker.board.task('mb')?.attempts, worker.board.task('mc')?.attempts]).toEqual([1, 0])
    // raised: everything left runs to done
    client.changeBoard('cap', d => { setMeshBudget(d, { usd: 100, at: Date.now(), by: 'test' }) })
    await waitFor(() => ['ma', 'mb', 'mc', 'long'].every(id => worker.board.task(id)?.state === 'done'), { timeoutMs: 30_000, message: () => `not resumed: ${JSON.stringify([...worker.board.snapshot().tasks.values()].map(t => [t.id, t.state, t.attempts]))}` })
    expect(worker.board.task('mb')?.failures).toBe(0)
    expect(log.runs.get('mb')).toHaveLength(2)
    expect(log.duplicates()).toEqual(['mb'])
  })
})
