/**
 * Compact task records (schema.ts `TASK_DEFAULTS`): a task written
 * without the fields still at their default reads, at every step of its life,
 * exactly as the same task written whole, and a plan is written compact only
 * once every registered node reads such records.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { Board, type BoardDoc } from '../src/crdt/board.ts'
import { plain } from '../src/crdt/board-types.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, asPlan, compactHoldouts, compactTasksRead, simpleTask, WHOLE_RECORDS_NOTE_TASKS, wholeRecordsNote } from '../src/crdt/ops.ts'
import { TASK_DEFAULTS, asPeerId, type NodeRecord, type TaskId } from '../src/crdt/schema.ts'

const MESH = 'mesh-compact-tasks-test'
const P1 = asPeerId('12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc1')
const P2 = asPeerId('12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBhBb2zkoE5KXzT')
const HEAD = 'a'.repeat(40)
const MERGE = 'b'.repeat(40)
const id = (s: string): TaskId => s as TaskId

/** A board with a plan of tasks `a` (ready), `b` (pending on a) and `c` (ready, a budget on the plan), written compact or whole. */
function boardWith (compact: boolean): Board {
  const board = Board.create(MESH, (compact ? 'c1' : 'f1').repeat(16))
  const tasks = asPlan([simpleTask('a'), simpleTask('b', { deps: [id('a')] }), simpleTask('c', { priority: 3, timeoutMs: 60_000 })], 2.5)
  board.change('plan', addTasks(tasks, 1000, compact))
  return board
}

/** The raw record of task `task` on `board`, as Automerge holds it. */
function rawRecord (board: Board, task: string): Record<string, unknown> {
  const doc = A.load<Record<string, Record<string, Record<string, unknown>>>>(board.save())
  return plain(A.toJS(doc).tasks?.[task] ?? {}) as Record<string, unknown>
}

/** Steps of several tasks' lives, each a board change. */
const STEPS: Array<[string, (d: BoardDoc) => void]> = [
  ['claim a', d => { lifecycle.claim(d, id('a'), P1, 0, 2000) }],
  ['claim a again', d => { lifecycle.claim(d, id('a'), P2, 0, 2001) }],
  ['withdraw a', d => { lifecycle.withdraw(d, id('a'), P2) }],
  ['start a', d => { lifecycle.start(d, id('a'), P1, 1, 2100) }],
  ['checkpoint a', d => { lifecycle.recordCheckpoint(d, id('a'), { head: HEAD, at: 2150, node: P1, epoch: 0, recent: ['working'] }) }],
  ['usage a', d => { lifecycle.addUsage(d, id('a'), { costUsd: 0.25, tokens: { input: 10, output: 5, cacheRead: 0, cacheWrite: 0 } }) }],
  ['fail a', d => { lifecycle.fail(d, id('a'), 'agent exited 1', { failure: true }) }],
  ['retry a', d => { lifecycle.retry(d, id('a'), { now: 2200, depsMerged: true }) }],
  ['claim a, epoch 1', d => { lifecycle.claim(d, id('a'), P2, 1, 2300) }],
  ['start a on P2', d => { lifecycle.start(d, id('a'), P2, 1, 2310) }],
  ['release a', d => { lifecycle.release(d, id('a'), { now: 2320, notBefore: 2400, error: 'lost', uncountAttempt: true }) }],
  ['claim a, epoch 2', d => { lifecycle.claim(d, id('a'), P1, 2, 2500) }],
  ['start a again', d => { lifecycle.start(d, id('a'), P1, 1, 2510) }],
  ['complete a', d => { lifecycle.complete(d, id('a'), { peer: P1, head: HEAD, summary: 'did a', now: 2600, also: [P2] }) }],
  ['merging a', d => { lifecycle.startMerge(d, id('a')) }],
  ['merged a', d => { lifecycle.merge(d, id('a'), MERGE, 2700) }],
  ['claim c', d => { lifecycle.claim(d, id('c'), P2, 0, 2750) }],
  ['start c', d => { lifecycle.start(d, id('c'), P2, 1, 2760) }],
  ['infra failure of c', d => { lifecycle.infraFail(d, id('c'), { peer: P2, count: 1, until: 9000, now: 2800, error: 'worktree', final: false, uncountAttempt: false }) }],
  ['note on c', d => { lifecycle.noteError(d, id('c'), 'a note') }],
  ['cancel b', d => { lifecycle.cancel(d, id('b'), 'not wanted') }]
]

describe('compact task records', () => {
  it('leave out exactly the fields at their default, and keep every map and list', () => {
    const rec = rawRecord(boardWith(true), 'b')
    for (const [key, value] of Object.entries(TASK_DEFAULTS)) {
      if (key === 'readyAt') continue // b is pending: null, left out; a ready task has its time
      expect(Object.hasOwn(rec, key), `${key} (${String(value)}) left out`).toBe(false)
    }
    expect(rec).toMatchObject({ id: 'b', state: 'pending', deps: ['a'], files: [], holders: [], claims: {}, infraFailures: {}, plan: 'a', budgetUsd: null })
    expect(rawRecord(boardWith(true), 'c')).toMatchObject({ priority: 3, timeoutMs: 60_000, budgetUsd: null })
    expect(rawRecord(boardWith(true), 'a')).toMatchObject({ readyAt: 1000, budgetUsd: 2.5 })
    // a whole record has them all
    expect(Object.keys(rawRecord(boardWith(false), 'b'))).toEqual(expect.arrayContaining(Object.keys(TASK_DEFAULTS)))
    // and is longer: fewer operations is the point
    expect(boardWith(true).save().length).toBeLessThan(boardWith(false).save().length)
  })

  it('read as the same tasks as whole records at every step of their lives, and are never invalid', () => {
    const compact = boardWith(true)
    const whole = boardWith(false)
    const invalid: string[] = []
    compact.onInvalid = (label, why) => { invalid.push(`${label}: ${why}`) }
    whole.onInvalid = (label, why) => { invalid.push(`${label}: ${why}`) }
    expect([...compact.snapshot().tasks]).toEqual([...whole.snapshot().tasks])
    for (const [what, step] of STEPS) {
      compact.change(what, step)
      whole.change(what, step)
      expect([...compact.snapshot().tasks], what).toEqual([...whole.snapshot().tasks])
      // a count read back from a record that left it out (0), then written
      if (what === 'fail a') expect(compact.task('a')).toMatchObject({ state: 'failed', failures: 1, attempts: 1 })
    }
    expect(invalid).toEqual([])
    expect(compact.snapshot().invalid).toEqual([])
    // the steps did what they say on both (so the comparison compared something)
    expect(compact.task('a')).toMatchObject({ state: 'merged', epoch: 2, attempts: 1, failures: 0, mergeCommit: MERGE, costUsd: 0.25, node: P1, head: HEAD })
    expect(compact.task('b')?.state).toBe('cancelled')
    expect(compact.task('c')?.infraFailures[P2]).toEqual({ count: 1, until: 9000 })
    // a board loaded from the saved bytes reads them the same (its copy read from the bytes)
    const reloaded = Board.load(MESH, 'd1'.repeat(16), compact.save())
    expect([...reloaded.snapshot().tasks]).toEqual([...compact.snapshot().tasks])
  })

  it('are written only when every registered node that has not left or been forgotten reads them', () => {
    const node = (over: Partial<NodeRecord> = {}): NodeRecord => ({ name: 'n', slots: 1, startedAt: 1, leftAt: null, readsCompactTasks: true, ...over })
    expect(compactTasksRead(new Map())).toBe(false)
    expect(compactTasksRead(new Map([['a', node()], ['b', node()]]))).toBe(true)
    // a node of an earlier version (no flag) that is still in the mesh
    expect(compactTasksRead(new Map([['a', node()], ['b', node({ readsCompactTasks: undefined })]]))).toBe(false)
    // gone: left, or forgotten
    expect(compactTasksRead(new Map([['a', node()], ['b', node({ readsCompactTasks: undefined, leftAt: 5 })]]))).toBe(true)
    expect(compactTasksRead(new Map([['a', node()], ['b', node({ readsCompactTasks: undefined, forgottenAt: 5 })]]))).toBe(true)
    expect(compactTasksRead(new Map([['b', node({ leftAt: 5 })]]))).toBe(false)
  })

  it('a large plan written whole says which nodes hold compact records back, and what to do', () => {
    const node = (over: Partial<NodeRecord> = {}): NodeRecord => ({ name: 'n', slots: 1, startedAt: 1, leftAt: null, readsCompactTasks: true, ...over })
    const old = new Map([['12D3KooWaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaOLD1', node({ name: 'vm-3', readsCompactTasks: undefined })], ['p2', node({ name: 'vm-1' })], ['p3', node({ name: 'vm-9', readsCompactTasks: undefined, leftAt: 5 })]])
    expect(compactHoldouts(old)).toEqual([{ peerId: '12D3KooWaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaOLD1', name: 'vm-3' }])
    const note = wholeRecordsNote(old, WHOLE_RECORDS_NOTE_TASKS)
    expect(note).toContain('node vm-3 (aaaaOLD1) does not read compact records')
    expect(note).toContain('`meshwork forget`')
    // a small plan, or one written compact: nothing to say
    expect(wholeRecordsNote(old, WHOLE_RECORDS_NOTE_TASKS - 1)).toBeNull()
    expect(wholeRecordsNote(new Map([['p2', node()]]), 5000)).toBeNull()
    // many: the first five named
    const many = new Map(Array.from({ length: 7 }, (_, i) => [`peer-${i}`, node({ name: `old-${i}`, readsCompactTasks: undefined })] as const))
    expect(wholeRecordsNote(many, 5000)).toMatch(/nodes old-0 \(peer-0\), .*old-4 \(peer-4\) and 2 more do not read/)
  })
})
