/**
 * Infrastructure failures that repeat end the task failed instead of cycling
 * for ever, and a node's back-off after one only keeps it from that task: it
 * goes on claiming the others.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { createLogger, type Logger } from '../src/util/logger.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'
import { INFRA_FAILURE_LIMIT, INFRA_FAILURE_NODES } from '../src/scheduler/run.ts'
import type { Task } from '../src/crdt/schema.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

const sim = (ms: number) => ({ durationMs: ms, write: {}, append: {}, fail: 0 })

function recordingLogger (): { logger: Logger, events: Array<{ event: string } & Record<string, unknown>> } {
  const events: Array<{ event: string } & Record<string, unknown>> = []
  const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
  return { logger, events }
}

/** A prepare step that cannot make a worktree for task `bad` (as git refuses a poison branch name), and works for the rest. */
const poisonPrepare = (counter: { n: number }) => async (task: Task): Promise<undefined> => {
  if (task.id === 'bad') {
    counter.n++
    throw new Error(`git worktree add: 'meshwork/${task.id}' is not a valid branch name (try ${counter.n})`)
  }
  return undefined
}

describe('infrastructure failures', () => {
  it('the limits are 3 failures in all or failures on 2 nodes', () => {
    expect(INFRA_FAILURE_LIMIT).toBe(3)
    expect(INFRA_FAILURE_NODES).toBe(2)
  })

  it('a node backing off from one task keeps claiming the others at once', async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const counter = { n: 0 }
    const { logger, events } = recordingLogger()
    // a back-off far longer than the test: if it blocked the node, `good` would never run
    scheds = [attachScheduler(node, new RunLog(), 1, { logger, infraBackoffMs: 10 * 60_000, prepare: poisonPrepare(counter) })]
    node.changeBoard('plan', addTasks([simpleTask('bad', { priority: 10, sim: sim(10) }), simpleTask('good', { sim: sim(10) })]))
    await waitFor(() => node.board.task('good')?.state === 'done', { timeoutMs: 20_000, message: () => `the healthy task waited behind the failing one: ${JSON.stringify([...node.board.snapshot().tasks.values()].map(t => [t.id, t.state, t.error]))}` })
    const bad = node.board.task('bad')!
    expect(counter.n).toBe(1)
    expect(bad.state).toBe('ready')
    // the back-off is this node's, for this task only; nobody else is held back
    expect(bad.notBefore).toBeNull()
    expect(bad.infraFailures[node.peerId]?.count).toBe(1)
    expect(bad.infraFailures[node.peerId]!.until).toBeGreaterThan(Date.now() + 4 * 60_000)
    expect(bad.attempts).toBe(0)
    const first = events.find(e => e.event === 'task:infra-failed')!
    expect(first.task).toBe('bad')
    expect(first.note).toMatch(/keeps claiming others/)
  })

  it(`a task whose infrastructure fails ${INFRA_FAILURE_LIMIT} times ends failed with the reason, not cycling for ever`, async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const counter = { n: 0 }
    const { logger, events } = recordingLogger()
    scheds = [attachScheduler(node, new RunLog(), 1, { logger, infraBackoffMs: 100, prepare: poisonPrepare(counter) })]
    node.changeBoard('plan', addTasks([simpleTask('bad', { sim: sim(10), maxAttempts: 5 })]))
    await waitFor(() => node.board.task('bad')?.state === 'failed', { timeoutMs: 20_000, message: () => JSON.stringify(node.board.task('bad')) })
    const bad = node.board.task('bad')!
    expect(counter.n).toBe(INFRA_FAILURE_LIMIT)
    expect(bad.error).toMatch(/^infrastructure failed 3 times on 1 node, so the task is not tried again \(fix the cause, then `meshwork retry bad`\); last: could not prepare the run .* \(try 3\)$/)
    expect(bad.attempts).toBe(0)
    expect(bad.failures).toBe(0)
    expect(events.filter(e => e.event === 'task:infra-failed')).toHaveLength(2)
    expect(events.filter(e => e.event === 'task:failed' && e.task === 'bad')).toHaveLength(1)
  })

  it(`a task whose infrastructure fails on ${INFRA_FAILURE_NODES} nodes ends failed, the second node taking it without waiting out the first's back-off`, async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const counters = [{ n: 0 }, { n: 0 }]
    scheds = mesh.nodes.map((node, i) => attachScheduler(node, new RunLog(), 1, { infraBackoffMs: 10 * 60_000, stealAfterMs: 300, prepare: poisonPrepare(counters[i]!) }))
    mesh.nodes[0]!.changeBoard('plan', addTasks([simpleTask('bad', { sim: sim(10) })]))
    await waitFor(() => mesh!.nodes.every(n => n.board.task('bad')?.state === 'failed'), { timeoutMs: 30_000, message: () => JSON.stringify(mesh!.nodes[0]!.board.task('bad')) })
    const bad = mesh.nodes[0]!.board.task('bad')!
    expect(counters.map(c => c.n)).toEqual([1, 1])
    expect(Object.keys(bad.infraFailures).sort()).toEqual(mesh.nodes.map(n => n.peerId).sort())
    expect(bad.error).toMatch(/^infrastructure failed 2 times on 2 nodes/)
  })
})
