import { describe, it, expect } from 'vitest'
import {
  findCycle, topoOrder, estimateMs, remainingCriticalPath, depsMerged, effectiveState, readySince,
  claimOrder, scopesOverlap, blockedBy, openTasks, DEFAULT_ESTIMATE_MS, type GraphNode
} from '../src/scheduler/dag.ts'
import { Board, plain, str } from '../src/crdt/board.ts'
import { addTasks, newTaskRecord, simpleTask, type NewTask } from '../src/crdt/ops.ts'
import { taskSchema, type BoardSnapshot, type Task, type TaskId } from '../src/crdt/schema.ts'

/** A small deterministic pseudo-random generator (LCG, 32-bit state). */
function lcg (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** A validated Task: a new task record with `over` applied. */
function task (id: string, over: Partial<Task> & { simMs?: number } = {}, extra: Partial<NewTask> = {}): Task {
  const { simMs, ...rest } = over
  const sim = simMs === undefined ? null : { durationMs: simMs, write: {}, append: {}, fail: 0 }
  const base = plain(newTaskRecord(simpleTask(id, { sim, ...extra, deps: (over.deps ?? extra.deps ?? []) as string[] }), 1000)) as Record<string, unknown>
  return taskSchema.parse({ ...base, ...rest })
}

function snapshotOf (tasks: Task[]): BoardSnapshot {
  return {
    meshId: 'm',
    tasks: new Map(tasks.map(t => [t.id, t])),
    nodes: new Map(),
    conflicts: new Map(),
    main: { head: null, leader: null, term: 0 },
    invalid: []
  }
}

function mapOf (tasks: Task[]): Map<TaskId, Task> {
  return new Map(tasks.map(t => [t.id, t]))
}

const deps = (...ids: string[]): TaskId[] => ids as TaskId[]

/** Independent acyclicity check (Kahn's algorithm), ignoring deps on unknown ids. */
function isAcyclic (nodes: readonly GraphNode[]): boolean {
  const ids = new Set(nodes.map(n => n.id))
  const indeg = new Map(nodes.map(n => [n.id, n.deps.filter(d => ids.has(d)).length]))
  const dependents = new Map<string, string[]>()
  for (const n of nodes) for (const d of n.deps) if (ids.has(d)) dependents.set(d, [...(dependents.get(d) ?? []), n.id])
  const queue = [...indeg].filter(([, k]) => k === 0).map(([id]) => id)
  let seen = 0
  while (queue.length > 0) {
    const id = queue.pop() as string
    seen++
    for (const c of dependents.get(id) ?? []) {
      const k = (indeg.get(c) ?? 0) - 1
      indeg.set(c, k)
      if (k === 0) queue.push(c)
    }
  }
  return seen === nodes.length
}

/** Asserts `cycle` is a closed path along real dependency edges of `nodes`. */
function expectRealCycle (nodes: readonly GraphNode[], cycle: string[] | null): void {
  expect(cycle).not.toBeNull()
  const c = cycle as string[]
  expect(c.length).toBeGreaterThanOrEqual(2)
  expect(c[0]).toBe(c[c.length - 1])
  // no node twice except the closing one
  expect(new Set(c.slice(0, -1)).size).toBe(c.length - 1)
  const byId = new Map(nodes.map(n => [n.id, n]))
  for (let i = 0; i + 1 < c.length; i++) {
    const from = c[i] as string
    const to = c[i + 1] as string
    expect(byId.get(from)?.deps, `${from} -> ${to} is a dependency edge`).toContain(to)
  }
}

/** A random graph of `n` nodes; `back` is the chance of an edge to a later node (which may close a cycle). */
function randomGraph (rand: () => number, n: number, density: number, back: number): GraphNode[] {
  const nodes: GraphNode[] = []
  for (let i = 0; i < n; i++) {
    const d: string[] = []
    for (let j = 0; j < n; j++) {
      if (j < i && rand() < density) d.push(`n${j}`)
      if (j >= i && rand() < back) d.push(`n${j}`)
    }
    if (rand() < 0.1) d.push('ghost')
    nodes.push({ id: `n${i}`, deps: d })
  }
  // shuffle the input order
  for (let i = nodes.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    const tmp = nodes[i] as GraphNode
    nodes[i] = nodes[j] as GraphNode
    nodes[j] = tmp
  }
  return nodes
}

describe('findCycle', () => {
  it('returns null on acyclic graphs', () => {
    expect(findCycle([])).toBeNull()
    expect(findCycle([{ id: 'a', deps: [] }])).toBeNull()
    expect(findCycle([{ id: 'a', deps: ['b'] }, { id: 'b', deps: ['c'] }, { id: 'c', deps: [] }])).toBeNull()
    // diamond: two paths to one node is not a cycle
    expect(findCycle([
      { id: 'd', deps: ['b', 'c'] }, { id: 'b', deps: ['a'] }, { id: 'c', deps: ['a'] }, { id: 'a', deps: [] }
    ])).toBeNull()
    // unknown dependencies are ignored
    expect(findCycle([{ id: 'a', deps: ['x'] }, { id: 'b', deps: ['a', 'y'] }])).toBeNull()
  })

  it('finds a self-dependency, a 2-cycle and a 3-cycle as closed paths', () => {
    const self = [{ id: 'a', deps: ['a'] }]
    expect(findCycle(self)).toEqual(['a', 'a'])
    const two = [{ id: 'a', deps: ['b'] }, { id: 'b', deps: ['a'] }]
    expectRealCycle(two, findCycle(two))
    const three = [{ id: 'a', deps: ['b'] }, { id: 'b', deps: ['c'] }, { id: 'c', deps: ['a'] }]
    const c3 = findCycle(three)
    expectRealCycle(three, c3)
    expect(c3).toHaveLength(4)
    expect(['a -> b -> c -> a', 'b -> c -> a -> b', 'c -> a -> b -> c']).toContain((c3 as string[]).join(' -> '))
  })

  it('reports only the cycle, not the path that led into it', () => {
    const nodes = [
      { id: 'entry', deps: ['mid'] }, { id: 'mid', deps: ['x'] },
      { id: 'x', deps: ['y'] }, { id: 'y', deps: ['z'] }, { id: 'z', deps: ['x', 'leaf'] }, { id: 'leaf', deps: [] }
    ]
    const c = findCycle(nodes)
    expectRealCycle(nodes, c)
    expect(new Set(c)).toEqual(new Set(['x', 'y', 'z']))
  })

  it('agrees with an independent acyclicity check on random graphs, and every cycle is real', () => {
    const rand = lcg(42)
    let cyclic = 0
    let acyclic = 0
    for (let round = 0; round < 400; round++) {
      const n = 1 + Math.floor(rand() * 12)
      const nodes = randomGraph(rand, n, 0.3, rand() < 0.5 ? 0 : 0.08)
      const c = findCycle(nodes)
      if (isAcyclic(nodes)) {
        acyclic++
        expect(c).toBeNull()
      } else {
        cyclic++
        expectRealCycle(nodes, c)
      }
    }
    // the generator exercised both cases
    expect(cyclic).toBeGreaterThan(50)
    expect(acyclic).toBeGreaterThan(50)
  })
})

describe('topoOrder', () => {
  it('puts dependencies before their dependents', () => {
    const nodes = [
      { id: 'd', deps: ['b', 'c'] }, { id: 'c', deps: ['a'] }, { id: 'b', deps: ['a'] }, { id: 'a', deps: [] }, { id: 'e', deps: ['ghost'] }
    ]
    const order = topoOrder(nodes)
    expect(order).toEqual(['a', 'b', 'c', 'd', 'e'])
  })

  it('keeps the input order among independent tasks', () => {
    expect(topoOrder([{ id: 'z', deps: [] }, { id: 'y', deps: [] }, { id: 'x', deps: [] }])).toEqual(['z', 'y', 'x'])
    expect(topoOrder([{ id: 'z', deps: ['x'] }, { id: 'y', deps: [] }, { id: 'x', deps: [] }])).toEqual(['x', 'z', 'y'])
  })

  it('orders random DAGs so that every dependency comes first, each id once', () => {
    const rand = lcg(7)
    for (let round = 0; round < 300; round++) {
      const nodes = randomGraph(rand, 1 + Math.floor(rand() * 15), 0.35, 0)
      const order = topoOrder(nodes)
      expect([...order].sort()).toEqual(nodes.map(n => n.id).sort())
      const pos = new Map(order.map((id, i) => [id, i]))
      for (const n of nodes) {
        for (const d of n.deps) {
          if (!pos.has(d)) continue
          expect(pos.get(d) as number, `${d} before ${n.id}`).toBeLessThan(pos.get(n.id) as number)
        }
      }
    }
  })

  it('terminates on cyclic input and lists each id once', () => {
    const order = topoOrder([{ id: 'a', deps: ['b'] }, { id: 'b', deps: ['a'] }, { id: 'c', deps: ['c'] }])
    expect([...order].sort()).toEqual(['a', 'b', 'c'])
  })
})

describe('estimateMs', () => {
  it('uses the sim duration, else a quarter of the timeout, else the default', () => {
    expect(estimateMs({ sim: { durationMs: 1234, write: {}, append: {}, fail: 0 }, timeoutMs: 4000 })).toBe(1234)
    expect(estimateMs({ sim: { durationMs: 0, write: {}, append: {}, fail: 0 }, timeoutMs: null })).toBe(1)
    expect(estimateMs({ sim: null, timeoutMs: 1_200_000 })).toBe(300_000)
    expect(estimateMs({ sim: null, timeoutMs: null })).toBe(DEFAULT_ESTIMATE_MS)
    expect(DEFAULT_ESTIMATE_MS).toBe(60_000)
  })
})

describe('remainingCriticalPath', () => {
  // diamond: b and c depend on a, d depends on b and c
  const diamond = (states: Partial<Record<string, Task['state']>> = {}): Task[] => [
    task('a', { simMs: 1000, state: states.a ?? 'ready' }),
    task('b', { simMs: 2000, deps: deps('a'), state: states.b ?? 'pending' }),
    task('c', { simMs: 5000, deps: deps('a'), state: states.c ?? 'pending' }),
    task('d', { simMs: 500, deps: deps('b', 'c'), state: states.d ?? 'pending' })
  ]

  it('is the longest path to the end of a diamond, own estimate included', () => {
    const cp = remainingCriticalPath(mapOf(diamond()))
    expect(Object.fromEntries(cp)).toEqual({ a: 6500, b: 2500, c: 5500, d: 500 })
  })

  it('counts merged, done, merging and cancelled tasks as 0', () => {
    expect(Object.fromEntries(remainingCriticalPath(mapOf(diamond({ a: 'merged' }))))).toEqual({ a: 5500, b: 2500, c: 5500, d: 500 })
    expect(Object.fromEntries(remainingCriticalPath(mapOf(diamond({ a: 'merged', c: 'done' }))))).toEqual({ a: 2500, b: 2500, c: 500, d: 500 })
    expect(Object.fromEntries(remainingCriticalPath(mapOf(diamond({ a: 'merged', b: 'merging', c: 'merged', d: 'running' }))))).toEqual({ a: 500, b: 500, c: 500, d: 500 })
    expect(Object.fromEntries(remainingCriticalPath(mapOf(diamond({ a: 'merged', b: 'merged', c: 'merged', d: 'merged' }))))).toEqual({ a: 0, b: 0, c: 0, d: 0 })
    expect(remainingCriticalPath(mapOf(diamond({ d: 'cancelled' }))).get('a' as TaskId)).toBe(6000)
  })

  it('sums a chain, with timeout and default estimates', () => {
    const chain = [
      task('one', { simMs: 100 }),
      task('two', { deps: deps('one'), state: 'pending', timeoutMs: 40_000 }),
      task('three', { deps: deps('two'), state: 'pending' }),
      task('four', { deps: deps('three'), state: 'pending', simMs: 7 })
    ]
    expect(Object.fromEntries(remainingCriticalPath(mapOf(chain)))).toEqual({
      four: 7, three: 60_007, two: 70_007, one: 70_107
    })
    chain[0] = task('one', { simMs: 100, state: 'done' })
    expect(remainingCriticalPath(mapOf(chain)).get('one' as TaskId)).toBe(70_007)
  })

  it('matches a brute-force longest path on random DAGs', () => {
    const rand = lcg(99)
    const states: Task['state'][] = ['ready', 'pending', 'running', 'done', 'merged', 'failed']
    for (let round = 0; round < 100; round++) {
      const graph = randomGraph(rand, 1 + Math.floor(rand() * 10), 0.3, 0)
      const tasks = graph.map(n => task(n.id, {
        deps: n.deps.filter(d => d !== 'ghost') as TaskId[],
        simMs: Math.floor(rand() * 1000),
        state: states[Math.floor(rand() * states.length)] as Task['state']
      }))
      const byId = mapOf(tasks)
      const own = (t: Task): number => ['merged', 'cancelled', 'done', 'merging'].includes(t.state) ? 0 : Math.max(1, t.sim?.durationMs ?? 0)
      const brute = (id: string): number => {
        const t = byId.get(id as TaskId) as Task
        const children = tasks.filter(c => c.deps.includes(id as TaskId))
        return own(t) + Math.max(0, ...children.map(c => brute(c.id)))
      }
      const cp = remainingCriticalPath(byId)
      for (const t of tasks) expect(cp.get(t.id), t.id).toBe(brute(t.id))
    }
  })
})

describe('depsMerged, effectiveState, readySince', () => {
  it('a stored pending task reads as ready once every dependency is merged', () => {
    const a = task('a', { state: 'merged', mergedAt: 5000 })
    const b = task('b', { state: 'done' })
    const p1 = task('p1', { deps: deps('a'), state: 'pending' })
    const p2 = task('p2', { deps: deps('a', 'b'), state: 'pending' })
    const p3 = task('p3', { deps: deps('a', 'missing'), state: 'pending' })
    const claimed = task('claimed', { deps: deps('a'), state: 'claimed' })
    const snap = snapshotOf([a, b, p1, p2, p3, claimed])
    expect(depsMerged(p1, snap)).toBe(true)
    expect(effectiveState(p1, snap)).toBe('ready')
    expect(depsMerged(p2, snap)).toBe(false)
    expect(effectiveState(p2, snap)).toBe('pending')
    expect(depsMerged(p3, snap)).toBe(false)
    expect(effectiveState(p3, snap)).toBe('pending')
    // other states are not rewritten
    expect(effectiveState(claimed, snap)).toBe('claimed')
    expect(effectiveState(b, snap)).toBe('done')
    expect(effectiveState(a, snap)).toBe('merged')
  })

  it('works on a real board as dependencies get merged', () => {
    const board = Board.create('m', 'aa'.repeat(16))
    board.change('add', addTasks([simpleTask('a'), simpleTask('b'), simpleTask('c', { deps: ['a', 'b'] })], 1000))
    const stateOf = (id: string): Task['state'] => effectiveState(board.task(id) as Task, board.snapshot())
    expect(board.task('c')?.state).toBe('pending')
    expect(stateOf('a')).toBe('ready')
    expect(stateOf('c')).toBe('pending')
    board.change('merge a', d => { const t = d.tasks.a as Record<string, unknown>; t.state = str('merged'); t.mergedAt = 2000 })
    expect(stateOf('c')).toBe('pending')
    expect(depsMerged(board.task('c') as Task, board.snapshot())).toBe(false)
    board.change('merge b', d => { const t = d.tasks.b as Record<string, unknown>; t.state = str('merged'); t.mergedAt = 3000 })
    expect(depsMerged(board.task('c') as Task, board.snapshot())).toBe(true)
    expect(stateOf('c')).toBe('ready')
    expect(board.task('c')?.state).toBe('pending')
    expect(readySince(board.task('c') as Task, board.snapshot())).toBe(3000)
  })

  it('readySince is the merge of the last dependency, or readyAt/createdAt when later', () => {
    const a = task('a', { state: 'merged', mergedAt: 900 })
    const b = task('b', { state: 'merged', mergedAt: 500 })
    const c = task('c', { deps: deps('a', 'b'), state: 'pending', readyAt: null, createdAt: 100 })
    expect(readySince(c, snapshotOf([a, b, c]))).toBe(900)
    // order of deps does not matter
    const c2 = task('c2', { deps: deps('b', 'a'), state: 'pending', readyAt: null, createdAt: 100 })
    expect(readySince(c2, snapshotOf([a, b, c2]))).toBe(900)
    // released later than the merges: readyAt wins
    const c3 = task('c3', { deps: deps('a', 'b'), state: 'ready', readyAt: 2000, createdAt: 100 })
    expect(readySince(c3, snapshotOf([a, b, c3]))).toBe(2000)
    // created after the merges
    const c4 = task('c4', { deps: deps('a'), state: 'pending', readyAt: null, createdAt: 1500 })
    expect(readySince(c4, snapshotOf([a, c4]))).toBe(1500)
    // no deps: readyAt
    const solo = task('solo', { readyAt: 777, createdAt: 100 })
    expect(readySince(solo, snapshotOf([solo]))).toBe(777)
  })
})

describe('claimOrder', () => {
  it('sorts by priority desc, then critical path desc, then createdAt, then id', () => {
    const tasks = [
      task('low', { priority: 0, createdAt: 1 }),
      task('high', { priority: 10, createdAt: 50 }),
      task('mid-short', { priority: 5, createdAt: 1 }),
      task('mid-long', { priority: 5, createdAt: 99 }),
      task('tie-old', { priority: 1, createdAt: 10 }),
      task('tie-new', { priority: 1, createdAt: 20 }),
      task('same-b', { priority: 1, createdAt: 5 }),
      task('same-a', { priority: 1, createdAt: 5 }),
      task('neg', { priority: -3, createdAt: 0 })
    ]
    const cp = new Map<TaskId, number>([
      ['mid-short' as TaskId, 1000], ['mid-long' as TaskId, 9000], ['high' as TaskId, 1],
      ['tie-old' as TaskId, 300], ['tie-new' as TaskId, 300], ['same-a' as TaskId, 100], ['same-b' as TaskId, 100]
    ])
    const input = [...tasks]
    const out = claimOrder(tasks, cp).map(t => t.id)
    expect(out).toEqual(['high', 'mid-long', 'mid-short', 'tie-old', 'tie-new', 'same-a', 'same-b', 'low', 'neg'])
    // the input is not reordered
    expect(tasks).toEqual(input)
  })

  it('a missing critical path counts as 0', () => {
    const out = claimOrder([task('x', { createdAt: 1 }), task('y', { createdAt: 2 })], new Map([['y' as TaskId, 5]]))
    expect(out.map(t => t.id)).toEqual(['y', 'x'])
  })

  it('is a total order: any input order gives the same result, consistent with the rules', () => {
    const rand = lcg(1234)
    for (let round = 0; round < 100; round++) {
      const n = 2 + Math.floor(rand() * 10)
      const tasks: Task[] = []
      const cp = new Map<TaskId, number>()
      for (let i = 0; i < n; i++) {
        const t = task(`t${i}`, { priority: Math.floor(rand() * 3), createdAt: Math.floor(rand() * 3) })
        tasks.push(t)
        if (rand() < 0.8) cp.set(t.id, Math.floor(rand() * 3) * 100)
      }
      const reference = claimOrder(tasks, cp).map(t => t.id)
      const shuffled = [...tasks].sort(() => rand() - 0.5)
      expect(claimOrder(shuffled, cp).map(t => t.id)).toEqual(reference)
      const key = (id: string): [number, number, number, string] => {
        const t = tasks.find(x => x.id === id) as Task
        return [-t.priority, -(cp.get(t.id) ?? 0), t.createdAt, t.id]
      }
      for (let i = 0; i + 1 < reference.length; i++) {
        const a = key(reference[i] as string)
        const b = key(reference[i + 1] as string)
        const cmp = a[0] - b[0] || a[1] - b[1] || a[2] - b[2] || (a[3] < b[3] ? -1 : 1)
        expect(cmp, `${a.join()} before ${b.join()}`).toBeLessThan(0)
      }
    }
  })
})

describe('scopesOverlap', () => {
  it('overlaps a directory glob with a file inside it', () => {
    expect(scopesOverlap(['src/db/**'], ['src/db/schema.ts'])).toBe(true)
    expect(scopesOverlap(['src/db/schema.ts'], ['src/db/**'])).toBe(true)
    expect(scopesOverlap(['src/db/**'], ['src/db/**/*.sql'])).toBe(true)
    expect(scopesOverlap(['src/**'], ['src/db/x.ts'])).toBe(true)
    expect(scopesOverlap(['**/*.ts'], ['docs/readme.md'])).toBe(true) // conservative: no literal prefix
    expect(scopesOverlap(['src/a.ts'], ['src/a.ts'])).toBe(true)
  })

  it('does not overlap disjoint directories or files', () => {
    expect(scopesOverlap(['src/db/**'], ['src/api/**'])).toBe(false)
    expect(scopesOverlap(['src/api/**'], ['src/db/**'])).toBe(false)
    expect(scopesOverlap(['src/a.ts'], ['src/b.ts'])).toBe(false)
    expect(scopesOverlap(['src/db/*.ts', 'docs/**'], ['test/**', 'src/api/x.ts'])).toBe(false)
  })

  it('any overlapping pair among several globs counts', () => {
    expect(scopesOverlap(['docs/**', 'src/db/**'], ['test/**', 'src/db/migrations/1.sql'])).toBe(true)
  })

  it('an empty scope overlaps nothing', () => {
    expect(scopesOverlap([], ['src/db/**'])).toBe(false)
    expect(scopesOverlap(['src/db/**'], [])).toBe(false)
    expect(scopesOverlap([], [])).toBe(false)
    expect(scopesOverlap([], ['**'])).toBe(false)
  })

  it('is symmetric', () => {
    const globs = ['src/db/**', 'src/db/schema.ts', 'src/api/**', 'src/**', '**', 'docs/*.md', 'docs/a.md', 'src/d', 'test/{a,b}.ts', 'test/a.ts']
    for (const a of globs) {
      for (const b of globs) expect(scopesOverlap([a], [b]), `${a} vs ${b}`).toBe(scopesOverlap([b], [a]))
    }
  })
})

describe('blockedBy', () => {
  it('names the failed, cancelled or conflicted dependency, direct or transitive, that a pending task waits behind', () => {
    const snap = snapshotOf([
      task('a', { state: 'merged' as never }),
      task('bad', { state: 'failed' as never }),
      task('c', { state: 'conflict' as never }),
      task('mid', { state: 'pending' as never, deps: ['bad' as TaskId] }),
      task('leaf', { state: 'pending' as never, deps: ['a' as TaskId, 'mid' as TaskId] }),
      task('onc', { state: 'pending' as never, deps: ['c' as TaskId] }),
      task('free', { state: 'pending' as never, deps: ['a' as TaskId] }),
      task('running', { state: 'running' as never }),
      task('waits', { state: 'pending' as never, deps: ['running' as TaskId] })
    ])
    const by = (id: string): unknown => blockedBy(snap.tasks.get(id as TaskId)!, snap)
    expect(by('mid')).toEqual({ id: 'bad', state: 'failed' })
    expect(by('leaf')).toEqual({ id: 'bad', state: 'failed' })
    expect(by('onc')).toEqual({ id: 'c', state: 'conflict' })
    expect(by('free')).toBeNull()
    expect(by('waits')).toBeNull()
    expect(by('bad')).toBeNull()
  })
})

describe('openTasks', () => {
  it('lists the tasks not over, in board order, once per snapshot', () => {
    const snap = snapshotOf([
      task('a', { state: 'merged' }), task('b', { state: 'ready' }), task('c', { state: 'failed' }),
      task('d', { state: 'done' }), task('e', { state: 'cancelled' }), task('f', { state: 'conflict' })
    ])
    expect(openTasks(snap).map(t => t.id)).toEqual(['b', 'd', 'f'])
    expect(openTasks(snap)).toBe(openTasks(snap))
    // another snapshot (the board changed) is read again
    const next = snapshotOf([task('a', { state: 'merged' }), task('b', { state: 'merged' })])
    expect(openTasks(next)).toEqual([])
  })
})
