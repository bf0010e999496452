/**
 * Deep and wide plans: every DAG walk is iterative and memoized, so a
 * 20,000-task chain and a 10,000-task wide plan are handled like small ones
 * (correctness only here; times belong in a benchmark).
 */
import { describe, it, expect } from 'vitest'
import {
  findCycle, topoOrder, remainingCriticalPath, blockedBy, blockedByAll, claimOrder, estimateMs, type GraphNode
} from '../src/scheduler/dag.ts'
import { parsePlan } from '../src/scheduler/plan.ts'
import { criticalPath, taskRows } from '../src/tui/model.ts'
import { fixtureData, task as tuiTask, NOW } from './helpers/tui.ts'
import type { BoardSnapshot, Task, TaskId } from '../src/crdt/schema.ts'

const CHAIN = 20_000
const WIDE = 10_000
const EST = 1000

const id = (i: number): string => `t${i}`
const sim = { durationMs: EST, write: {}, append: {}, fail: 0 }

/** A task for the pure functions: `tuiTask` fills every field. */
function task (tid: string, deps: string[], over: Partial<Task> = {}): Task {
  return tuiTask(tid, { deps: deps as TaskId[], sim, state: deps.length === 0 ? 'ready' : 'pending', ...over })
}

/** t0 <- t1 <- ... <- t(n-1): each depends on the one before. */
function chain (n: number, over: (i: number) => Partial<Task> = () => ({})): Task[] {
  return Array.from({ length: n }, (_, i) => task(id(i), i === 0 ? [] : [id(i - 1)], over(i)))
}

/** root <- w0..w(n-1) <- sink. */
function wide (n: number): Task[] {
  const mids = Array.from({ length: n }, (_, i) => task(`w${i}`, ['root']))
  return [task('root', []), ...mids, task('sink', mids.map(t => t.id))]
}

function snap (tasks: Task[]): BoardSnapshot {
  return { meshId: 'm', tasks: new Map(tasks.map(t => [t.id, t])), nodes: new Map(), conflicts: new Map(), main: { head: null, leader: null, term: 0 }, invalid: [] }
}

describe(`a ${CHAIN}-task chain`, () => {
  const tasks = chain(CHAIN)
  const nodes: GraphNode[] = tasks

  it('has no cycle; a cycle closing it is found whole', () => {
    expect(findCycle(nodes)).toBeNull()
    const closed = nodes.map((n, i) => i === 0 ? { id: n.id, deps: [id(CHAIN - 1)] } : n)
    const cycle = findCycle(closed)
    expect(cycle).toHaveLength(CHAIN + 1)
    expect(cycle![0]).toBe(cycle!.at(-1))
    expect(new Set(cycle).size).toBe(CHAIN)
  })

  it('is ordered dependencies first, from any input order', () => {
    expect(topoOrder([...nodes].reverse())).toEqual(tasks.map(t => t.id))
  })

  it('has the remaining critical path of each task: its estimate times the tasks from it to the end', () => {
    expect(estimateMs(tasks[0]!)).toBe(EST)
    const cp = remainingCriticalPath(new Map(tasks.map(t => [t.id, t])))
    expect(cp.size).toBe(CHAIN)
    for (let i = 0; i < CHAIN; i += 997) expect(cp.get(id(i) as TaskId)).toBe((CHAIN - i) * EST)
    expect(cp.get(id(0) as TaskId)).toBe(CHAIN * EST)
    expect(cp.get(id(CHAIN - 1) as TaskId)).toBe(EST)
    // cancelled and merged tasks count nothing but are still walked through
    const cancelled = chain(CHAIN, i => i < CHAIN / 2 ? { state: 'merged' } : i === CHAIN - 1 ? { state: 'cancelled' } : {})
    const cp2 = remainingCriticalPath(new Map(cancelled.map(t => [t.id, t])))
    expect(cp2.get(id(0) as TaskId)).toBe((CHAIN / 2 - 1) * EST)
    expect(claimOrder(tasks.slice(0, 3), cp).map(t => t.id)).toEqual([id(0), id(1), id(2)])
  })

  it('every pending task is blocked by the failed head of the chain', () => {
    const failedHead = chain(CHAIN, i => i === 0 ? { state: 'failed' } : {})
    const s = snap(failedHead)
    const all = blockedByAll(s)
    expect(all.size).toBe(CHAIN - 1)
    for (const [, b] of all) expect(b).toEqual({ id: id(0), state: 'failed' })
    expect(blockedBy(failedHead.at(-1)!, s)).toEqual({ id: id(0), state: 'failed' })
    expect(blockedByAll(snap(tasks)).size).toBe(0)
  })

  it('passes plan validation, and a plan closing the chain into a cycle is reported', () => {
    const plan = { tasks: tasks.map(t => ({ id: t.id, prompt: 'p', deps: t.deps.map(String) })) }
    expect(parsePlan(JSON.stringify(plan), new Set())).toHaveLength(CHAIN)
    plan.tasks[0]!.deps = [id(CHAIN - 1)]
    expect(() => parsePlan(JSON.stringify(plan), new Set())).toThrow(/dependency cycle: t\d+ -> /)
  })

  it('the TUI finds the whole chain as the critical path and indents it', () => {
    const data = fixtureData({ extraTasks: chain(CHAIN, () => ({ createdAt: NOW - 1000 })) })
    const cp = criticalPath(data)
    expect(cp.ids).toHaveLength(CHAIN)
    expect(cp.ids[0]).toBe(id(0))
    expect(cp.ids.at(-1)).toBe(id(CHAIN - 1))
    const rows = taskRows(data)
    expect(rows.find(r => r.id === id(CHAIN - 1))?.depth).toBe(CHAIN - 1)
  })
})

describe(`a ${WIDE}-task wide plan`, () => {
  const tasks = wide(WIDE)

  it('is acyclic and ordered root, middles, sink', () => {
    expect(findCycle(tasks)).toBeNull()
    const order = topoOrder([...tasks].reverse())
    expect(order[0]).toBe('root')
    expect(order.at(-1)).toBe('sink')
    expect(new Set(order).size).toBe(WIDE + 2)
  })

  it('has a critical path of three tasks from the root, two from each middle task', () => {
    const cp = remainingCriticalPath(new Map(tasks.map(t => [t.id, t])))
    expect(cp.get('root' as TaskId)).toBe(3 * EST)
    for (let i = 0; i < WIDE; i += 101) expect(cp.get(`w${i}` as TaskId)).toBe(2 * EST)
    expect(cp.get('sink' as TaskId)).toBe(EST)
  })

  it('blocks everything behind a cancelled root, and passes plan validation', () => {
    const s = snap(tasks.map(t => t.id === 'root' ? { ...t, state: 'cancelled' as const } : t))
    const all = blockedByAll(s)
    expect(all.size).toBe(WIDE + 1)
    expect(all.get('sink' as TaskId)).toEqual({ id: 'root', state: 'cancelled' })
    const plan = { tasks: tasks.map(t => ({ id: t.id, prompt: 'p', deps: t.deps.map(String) })) }
    expect(parsePlan(JSON.stringify(plan), new Set())).toHaveLength(WIDE + 2)
  })
})
