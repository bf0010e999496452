/**
 * A run's end that the node withholds (its own check says peers would refuse
 * the change, `board:write-withheld`) never leaves the task `running` on the
 * board for good while no run holds it: the scheduler learns the write was
 * withheld and writes it again without the holders it was handed to, or gives
 * the task back (ready, a new epoch, the reason on the board); and a watchdog
 * gives back any task the board says this node runs that no run here holds.
 * The withholding is forced through the node's `writeBoard` (the component
 * the scheduler writes through), as the board's own check would report it.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { createLogger } from '../src/util/logger.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { SchedulerNode } from '../src/node/components.ts'
import type { BoardWrite } from '../src/crdt/board.ts'
import type { PeerIdString, TaskId } from '../src/crdt/schema.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

/**
 * `node` as the scheduler sees it, except that `writeBoard` reports a change
 * withheld (and writes nothing) when `withhold` gives a reason for its message.
 */
function withholding (node: MeshNode, withhold: (message: string) => string | null): SchedulerNode {
  return new Proxy(node, {
    get (target, prop) {
      if (prop === 'writeBoard') {
        return (message: string, fn: Parameters<MeshNode['writeBoard']>[1]): BoardWrite => {
          const reason = withhold(message)
          return reason !== null ? { kind: 'withheld', reason } : target.writeBoard(message, fn)
        }
      }
      const v: unknown = Reflect.get(target, prop, target)
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  }) as unknown as SchedulerNode
}

/** Withholds the first `n` writes of each message in `messages`. */
function firstWrites (messages: Record<string, number>): (message: string) => string | null {
  const left = { ...messages }
  return message => {
    if ((left[message] ?? 0) <= 0) return null
    left[message] = (left[message] ?? 0) - 1
    return 'forced for the test (as a role rule would refuse it)'
  }
}

const sim = { durationMs: 50, write: {}, append: {}, fail: 0 }

/** Every state the task went through on `node`'s board, with its error, in order (from now on). */
function history (node: MeshNode, id: string): Array<{ state: string, error: string | null, epoch: number }> {
  const seen: Array<{ state: string, error: string | null, epoch: number }> = []
  node.board.subscribe(() => {
    const t = node.board.task(id as TaskId)
    if (t === undefined) return
    const last = seen.at(-1)
    if (last?.state !== t.state || last.epoch !== t.epoch) seen.push({ state: t.state, error: t.error, epoch: t.epoch })
  })
  return seen
}

async function oneNode (withhold: (message: string) => string | null, extra: Parameters<typeof attachScheduler>[3] = {}): Promise<{ node: MeshNode, log: RunLog, events: Array<Record<string, unknown>> }> {
  mesh = await createMesh(1)
  await waitAllAlive(mesh.nodes)
  const node = mesh.nodes[0]!
  const log = new RunLog()
  const events: Array<Record<string, unknown>> = []
  const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
  const s = attachScheduler(withholding(node, withhold) as MeshNode, log, 1, { logger, ...extra })
  scheds = [s]
  return { node, log, events }
}

describe('a withheld end of a run', () => {
  it('a withheld done is given back (ready, the reason on the board), runs again and ends done: never stuck running', async () => {
    const { node, log, events } = await oneNode(firstWrites({ 'task:success': 1 }))
    const seen = history(node, 'w1')
    node.changeBoard('plan', addTasks([simpleTask('w1', { sim })]))
    await waitFor(() => node.board.task('w1')?.state === 'done', { timeoutMs: 30_000, message: () => `w1 not done: ${JSON.stringify(seen)}` })
    // the first run's done was withheld: back to ready with a new epoch and why, then a second run
    const back = seen.find(s => s.state === 'ready' && s.epoch === 1)
    expect(back?.error).toMatch(/end of its run on n0 \(success\) was withheld, as peers would refuse it: forced for the test/)
    expect(log.runs.get('w1')?.map(r => r.epoch)).toEqual([0, 1])
    expect(events.some(e => e.event === 'task:released' && String(e.reason).startsWith('end withheld'))).toBe(true)
    expect(events.some(e => e.event === 'task:done' && e.epoch === 0)).toBe(false)
  })

  it('a done withheld with the leader as holder is written again with this node alone holding the branch', async () => {
    const { node, log, events } = await oneNode(firstWrites({ 'task:success': 1 }), {
      finish: async () => 'a'.repeat(40),
      handOff: async () => ['12D3KooWLeaderLeaderLeaderLeaderLeaderLeaderLeader' as PeerIdString]
    })
    node.changeBoard('plan', addTasks([simpleTask('w2', { sim })]))
    await waitFor(() => node.board.task('w2')?.state === 'done', { timeoutMs: 30_000, message: () => JSON.stringify(node.board.task('w2')) })
    const t = node.board.task('w2')!
    expect(t.epoch).toBe(0)
    expect(t.holders).toEqual([node.peerId])
    expect(t.head).toBe('a'.repeat(40))
    expect(log.runs.get('w2')).toHaveLength(1)
    expect(events.filter(e => e.event === 'task:end-withheld')).toHaveLength(1)
  })

  it('when the end and its release are both withheld, the watchdog gives the task back; it is never left running', async () => {
    const { node, log, events } = await oneNode(firstWrites({ 'task:success': 1, 'task:give-back': 1 }))
    const seen = history(node, 'w3')
    node.changeBoard('plan', addTasks([simpleTask('w3', { sim })]))
    await waitFor(() => node.board.task('w3')?.state === 'done', { timeoutMs: 30_000, message: () => `w3 not done: ${JSON.stringify(seen)}` })
    expect(events.some(e => e.event === 'task:end-unwritten')).toBe(true)
    const back = seen.find(s => s.state === 'ready' && s.epoch === 1)
    expect(back?.error).toMatch(/given back by its node: the board says this node runs it, but no run here holds it/)
    expect(events.some(e => e.event === 'task:released' && /no run here holds it/.test(String(e.reason)))).toBe(true)
    expect(log.runs.get('w3')?.map(r => r.epoch)).toEqual([0, 1])
  })

  it('a withheld start runs nothing: the claim is withdrawn and the task runs once the start can be written', async () => {
    const { node, log, events } = await oneNode(firstWrites({ 'task:start': 1 }))
    node.changeBoard('plan', addTasks([simpleTask('w4', { sim })]))
    await waitFor(() => node.board.task('w4')?.state === 'done', { timeoutMs: 30_000, message: () => JSON.stringify(node.board.task('w4')) })
    expect(log.runs.get('w4')).toHaveLength(1)
    expect(events.some(e => e.event === 'task:released' && /its start was withheld/.test(String(e.reason)))).toBe(true)
  })
})
