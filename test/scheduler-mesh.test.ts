import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

const sim = (ms: number, fail = 0) => ({ durationMs: ms, write: {}, append: {}, fail })

function states (n: MeshNode): Record<string, number> {
  const out: Record<string, number> = {}
  for (const t of n.board.snapshot().tasks.values()) out[t.state] = (out[t.state] ?? 0) + 1
  return out
}

async function waitAllDone (n: MeshNode, count: number, timeoutMs: number): Promise<void> {
  await waitFor(() => [...n.board.snapshot().tasks.values()].filter(t => t.state === 'done').length === count, {
    timeoutMs, message: () => `not all ${count} tasks done: ${JSON.stringify(states(n))}`
  })
}

describe('scheduling on a real mesh', () => {
  it('4 nodes x 2 slots run 40 independent sim tasks, each exactly once, spread over the nodes', async () => {
    mesh = await createMesh(4)
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 2))
    mesh.nodes[0]!.changeBoard('plan', addTasks(Array.from({ length: 40 }, (_, i) => simpleTask(`t${i}`, { sim: sim(300) }))))
    await waitAllDone(mesh.nodes[0]!, 40, 60_000)
    await new Promise(resolve => setTimeout(resolve, 0))
    expect(log.duplicates()).toEqual([])
    expect(log.runs.size).toBe(40)
    const perNode = new Map<string, number>()
    for (const l of log.runs.values()) perNode.set(l[0]!.node, (perNode.get(l[0]!.node) ?? 0) + 1)
    expect(perNode.size).toBe(4)
    for (const t of mesh.nodes[0]!.board.snapshot().tasks.values()) expect(t.attempts).toBe(1)
  })

  it('failed attempts retry with back-off, then fail with the error on the board', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 1))
    mesh.nodes[0]!.changeBoard('plan', addTasks([
      simpleTask('flaky', { sim: sim(50, 1), maxAttempts: 3 }),
      simpleTask('broken', { sim: sim(50, 5), maxAttempts: 2 })
    ]))
    const n0 = mesh.nodes[0]!
    await waitFor(() => n0.board.task('flaky')?.state === 'done' && n0.board.task('broken')?.state === 'failed', { timeoutMs: 30_000, message: () => JSON.stringify(states(n0)) })
    expect(n0.board.task('flaky')!.attempts).toBe(2)
    expect(n0.board.task('broken')!.attempts).toBe(2)
    expect(n0.board.task('broken')!.error).toMatch(/fails as configured/)
  })
})
