/**
 * The breakdown of bench:e2e from node logs (pure): phase times of the run that
 * counted, main on every live node, re-runs after a kill apart from duplicates,
 * and duplicate merges.
 */
import { describe, it, expect } from 'vitest'
import { analyze, criticalPath, parseLog, type LogLine, type TaskTimes } from '../scripts/bench/e2e-analysis.ts'

const L = (time: number, event: string, fields: Record<string, unknown> = {}): LogLine => ({ time, event, ...fields })

describe('bench:e2e analysis', () => {
  it('times each phase of the run that committed, and main on every live node', () => {
    const tasks = [{ id: 'a', deps: [], durationMs: 100, layer: 0 }, { id: 'b', deps: ['a'], durationMs: 100, layer: 1 }]
    const logs = new Map<string, LogLine[]>([
      ['n0', [
        L(1000, 'task:claimed', { task: 'a', epoch: 0 }), L(1010, 'task:started', { task: 'a', epoch: 0 }),
        L(1200, 'task:committed', { task: 'a', epoch: 0, agentStart: 1050, agentEnd: 1150 }), L(1250, 'task:done', { task: 'a', epoch: 0 }),
        L(1300, 'merge:done', { tasks: ['a'], main: 'm1' }),
        L(1400, 'branch:collected', { task: 'b' }), L(1500, 'merge:done', { tasks: ['b'], main: 'm2' }),
        // a second merge of b: a duplicate
        L(1600, 'merge:done', { tasks: ['b'], main: 'm3' })
      ]],
      ['n1', [
        L(1310, 'task:claimed', { task: 'b', epoch: 0 }), L(1320, 'task:started', { task: 'b', epoch: 0 }),
        L(1330, 'main:updated', { head: 'm1' }),
        L(1380, 'task:committed', { task: 'b', epoch: 0, agentStart: 1325, agentEnd: 1370 }), L(1390, 'task:done', { task: 'b', epoch: 0 }),
        L(1550, 'main:updated', { head: 'm2' })
      ]],
      // n2 ran b first and was killed: its run is a re-run cause, not a duplicate
      ['n2', [L(1305, 'task:started', { task: 'b', epoch: 0 })]]
    ])
    const r = analyze(tasks, new Map([['a', 900], ['b', 900]]), logs, 'n2')
    const a = r.tasks.find(t => t.id === 'a')!
    expect(a.node).toBe('n0')
    expect(a.t).toEqual({ ready: 900, claimed: 1000, running: 1010, agentStart: 1050, agentEnd: 1150, committed: 1200, done: 1250, onLeader: 1250, merged: 1300, mainEverywhere: 1330 })
    const b = r.tasks.find(t => t.id === 'b')!
    // ready when its dep merged; on the leader when collected; main everywhere when n1 (the last live follower) had m2
    expect(b.t).toEqual({ ready: 1300, claimed: 1310, running: 1320, agentStart: 1325, agentEnd: 1370, committed: 1380, done: 1390, onLeader: 1400, merged: 1500, mainEverywhere: 1550 })
    expect(r.runs).toBe(3)
    expect(r.extraRuns).toBe(1)
    expect(r.rerunsAfterKill).toBe(1)
    expect(r.duplicateRuns).toBe(0)
    expect(r.duplicateMerges).toBe(1)
    expect(r.merged).toBe(2)
    expect(r.doneToMerged.n).toBe(2)
    expect(r.phases.find(p => p.label.startsWith('done → branch'))?.p99).toBe(10)
    // a then b, whose phases add up to b's merge minus a's ready time
    expect(r.criticalPath.tasks).toEqual(['a', 'b'])
    expect(r.criticalPath.phases.map(p => p.ms)).toEqual([110, 20, 45, 145, 60, 60, 10, 150])
    expect(r.criticalPath.phases.reduce((sum, p) => sum + p.ms, 0)).toBe(1500 - 900)
  })

  it('the critical path follows the dependency merged last, and stops at a task ready at its creation', () => {
    const tasks = [
      { id: 'a', deps: [], durationMs: 1, layer: 0 }, { id: 'b', deps: [], durationMs: 1, layer: 0 },
      { id: 'c', deps: ['a', 'b'], durationMs: 1, layer: 1 }, { id: 'd', deps: ['c'], durationMs: 1, layer: 2 }
    ]
    const stamps = (ready: number, merged: number): TaskTimes['t'] => ({ ready, claimed: ready + 1, running: ready + 2, agentStart: ready + 3, agentEnd: merged - 4, committed: merged - 3, done: merged - 2, onLeader: merged - 1, merged })
    const times: TaskTimes[] = [
      { id: 'a', node: 'n0', t: stamps(0, 100) },
      { id: 'b', node: 'n1', t: stamps(0, 150) },
      // ready when b (merged last of its deps) merged
      { id: 'c', node: 'n0', t: stamps(150, 300) },
      // created after c merged: ready at its creation, so the chain is d alone
      { id: 'd', node: 'n1', t: stamps(400, 500) }
    ]
    expect(criticalPath(tasks, times).tasks).toEqual(['d'])
    times[3] = { id: 'd', node: 'n1', t: stamps(300, 500) }
    const path = criticalPath(tasks, times)
    expect(path.tasks).toEqual(['b', 'c', 'd'])
    expect(path.phases.reduce((sum, p) => sum + p.ms, 0)).toBe(500)
    expect(path.phases[0]).toEqual({ label: 'ready → claimed', ms: 3 })
  })

  it('a branch handed to the leader before done is on the leader at done', () => {
    const tasks = [{ id: 'h', deps: [], durationMs: 100, layer: 0 }]
    const logs = new Map<string, LogLine[]>([
      ['n0', [L(1385, 'branch:received', { task: 'h', epoch: 0 }), L(1420, 'merge:done', { tasks: ['h'], main: 'm1' })]],
      ['n1', [
        L(1310, 'task:claimed', { task: 'h', epoch: 0 }), L(1320, 'task:started', { task: 'h', epoch: 0 }),
        L(1380, 'task:committed', { task: 'h', epoch: 0, agentStart: 1325, agentEnd: 1370 }), L(1390, 'task:done', { task: 'h', epoch: 0 }),
        L(1450, 'main:updated', { head: 'm1' })
      ]]
    ])
    const h = analyze(tasks, new Map([['h', 1300]]), logs, null).tasks[0]!
    expect(h.t.onLeader).toBe(1390)
    expect(h.t.merged).toBe(1420)
  })

  it('parses JSON lines and skips anything else', () => {
    expect(parseLog('{"time":1,"event":"x"}\nplain text\n{"time":2,"event":"y","task":"a"}\n{"torn":')).toEqual([{ time: 1, event: 'x' }, { time: 2, event: 'y', task: 'a' }])
  })
})
