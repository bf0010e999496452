import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { Board, actorForPeer, plain, str, type BoardDoc } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { CONFLICT_TRANSITIONS, TASK_STATE_MOVES, TASK_TRANSITIONS, mayStart, type TaskTransition } from '../src/crdt/lifecycle.ts'
import { TASK_STATES, asPeerId, conflictIdFor, conflictSchema, parseTaskId, taskSchema, type TaskId, type TaskState } from '../src/crdt/schema.ts'

const MESH = 'mesh-lifecycle00'
const PEER = asPeerId('peer-a')
const T = parseTaskId('t')
const NOW = 1_700_000_000_000

/** The stored (raw) form of an entry of the board, as plain JSON: what a change actually wrote. */
function rawEntry (board: Board, section: 'tasks' | 'conflicts', id: string): Record<string, unknown> {
  return plain(A.load<BoardDoc>(board.save())[section][id]) as Record<string, unknown>
}

/** Calls each transition with arguments that are valid whenever its start state is. */
const CALLS: Record<TaskTransition, (d: BoardDoc, id: TaskId) => boolean> = {
  claim: (d, id) => lifecycle.claim(d, id, PEER, 0, NOW),
  withdraw: (d, id) => lifecycle.withdraw(d, id, PEER),
  start: (d, id) => lifecycle.start(d, id, PEER, 1, NOW),
  complete: (d, id) => lifecycle.complete(d, id, { peer: PEER, head: 'a'.repeat(40), summary: 'did it', now: NOW }),
  fail: (d, id) => lifecycle.fail(d, id, 'broke', { failure: true }),
  release: (d, id) => lifecycle.release(d, id, { now: NOW, notBefore: NOW + 1000, error: 'again' }),
  retry: (d, id) => lifecycle.retry(d, id, { now: NOW, depsMerged: true }),
  startMerge: (d, id) => lifecycle.startMerge(d, id),
  deferMerge: (d, id) => lifecycle.deferMerge(d, id),
  merge: (d, id) => lifecycle.merge(d, id, 'b'.repeat(40), NOW),
  requeue: (d, id) => lifecycle.requeue(d, id, { to: 'done', error: 'not on main', now: NOW }),
  recordMerged: (d, id) => lifecycle.recordMerged(d, id, 'c'.repeat(40), NOW),
  openConflict: (d, id) => lifecycle.openConflict(d, id, { id: conflictIdFor(id, 1), files: ['a.txt'], hunks: [{ file: 'a.txt', line: 1, before: '', ours: 'x', theirs: 'y', after: '' }], oursFrom: { 'a.txt': parseTaskId('u') } }),
  cancel: (d, id) => lifecycle.cancel(d, id, 'no longer wanted')
}

/** A board holding task `t` in `state` (written raw: this sets up the test, it is not a move). */
function boardIn (state: TaskState): Board {
  const board = Board.create(MESH, actorForPeer(PEER))
  board.change('plan', addTasks([simpleTask('t')], NOW - 1000))
  board.change('setup', d => { (d.tasks.t as { state: unknown }).state = str(state) })
  expect(board.task('t')?.state).toBe(state)
  return board
}

describe('task lifecycle transitions', () => {
  for (const name of Object.keys(TASK_TRANSITIONS) as TaskTransition[]) {
    for (const state of TASK_STATES) {
      const allowed = (TASK_TRANSITIONS[name].from as readonly TaskState[]).includes(state)
      it(`${name} from ${state} is ${allowed ? 'allowed' : 'refused'}`, () => {
        const board = boardIn(state)
        const before = board.task('t')
        let applied: boolean | undefined
        const bytes = board.change(name, d => { applied = CALLS[name](d, T) })
        expect(applied).toBe(allowed)
        expect(mayStart(name, state)).toBe(allowed)
        if (!allowed) {
          // a refused move writes nothing at all
          expect(bytes).toBeNull()
          expect(board.task('t')).toBe(before)
          return
        }
        const after = board.task('t')
        expect(after, 'the task still passes the schema after the move').toBeDefined()
        expect(board.snapshot().invalid).toEqual([])
        expect(TASK_TRANSITIONS[name].to as readonly TaskState[]).toContain(after?.state)
        expect(TASK_STATE_MOVES.get(state)?.has(after?.state as TaskState)).toBe(true)
      })
    }
  }

  it('the state table has an entry for every state and names only known states', () => {
    expect([...TASK_STATE_MOVES.keys()].sort()).toEqual([...TASK_STATES].sort())
    for (const t of Object.values(TASK_TRANSITIONS)) {
      for (const s of [...t.from, ...t.to]) expect(TASK_STATES).toContain(s)
    }
    // nothing leaves `merged` except main's history (requeue, recordMerged); nothing cancels a merged task
    expect([...TASK_STATE_MOVES.get('merged') ?? []].sort()).toEqual(['done', 'merged', 'ready'])
    expect(mayStart('cancel', 'merged')).toBe(false)
    expect(mayStart('cancel', 'cancelled')).toBe(false)
    // only a run ends in done; a done task is merged by a merge batch, marked merging or not (one that landed
    // before its mark was due: src/merge/queue.ts MERGING_MARK_AFTER_MS), or in conflict from either
    expect([...TASK_STATE_MOVES.entries()].filter(([, to]) => to.has('done')).map(([from]) => from).sort()).toEqual(['merged', 'merging', 'running'])
    expect([...TASK_STATE_MOVES.entries()].filter(([, to]) => to.has('merged')).map(([from]) => from).sort()).toEqual([...TASK_STATES].sort())
    expect([...TASK_STATE_MOVES.get('done') ?? []].sort()).toEqual(['cancelled', 'conflict', 'merged', 'merging', 'ready'])
  })

  it('every transition writes only fields of the task schema', () => {
    const keys = new Set(Object.keys(taskSchema.shape))
    for (const name of Object.keys(TASK_TRANSITIONS) as TaskTransition[]) {
      const state = TASK_TRANSITIONS[name].from[0] as TaskState
      const board = boardIn(state)
      board.change(name, d => { CALLS[name](d, T) })
      const raw = rawEntry(board, 'tasks', 't')
      for (const k of Object.keys(raw)) expect(keys, `${name} wrote ${k}`).toContain(k)
    }
  })

  it('a claim keeps concurrent claims; withdrawing the last claim of the epoch makes the task ready', () => {
    const board = boardIn('ready')
    board.change('claim', d => { lifecycle.claim(d, T, asPeerId('peer-a'), 0, NOW) })
    board.change('claim', d => { lifecycle.claim(d, T, asPeerId('peer-b'), 0, NOW + 1) })
    expect(Object.keys(board.task('t')?.claims ?? {}).sort()).toEqual(['peer-a', 'peer-b'])
    // the claim does not name the node: only a started run does
    expect(board.task('t')?.node).toBeNull()
    board.change('withdraw', d => { lifecycle.withdraw(d, T, asPeerId('peer-a')) })
    expect(board.task('t')?.state).toBe('claimed')
    board.change('withdraw', d => { lifecycle.withdraw(d, T, asPeerId('peer-b')) })
    expect(board.task('t')?.state).toBe('ready')
    expect(board.task('t')?.claims).toEqual({})
  })

  it('release starts a new epoch without claims and counts a failure only when told', () => {
    const board = boardIn('claimed')
    board.change('start', d => { lifecycle.start(d, T, PEER, 1, NOW) })
    expect(board.task('t')?.node).toBe(PEER)
    board.change('release', d => { lifecycle.release(d, T, { now: NOW + 5, notBefore: NOW + 100, error: 'agent failed', failure: true }) })
    const t = board.task('t')
    expect(t).toMatchObject({ state: 'ready', epoch: 1, claims: {}, readyAt: NOW + 5, notBefore: NOW + 100, failures: 1, attempts: 1, error: 'agent failed' })
    board.change('start', d => { lifecycle.start(d, T, PEER, 2, NOW) })
    board.change('release', d => { lifecycle.release(d, T, { now: NOW + 6, notBefore: null, uncountAttempt: true }) })
    expect(board.task('t')).toMatchObject({ state: 'ready', epoch: 2, failures: 1, attempts: 1, error: null })
  })

  it('retry resets attempts and goes to pending while a dependency is not merged', () => {
    const board = boardIn('failed')
    board.change('retry', d => { lifecycle.retry(d, T, { now: NOW, depsMerged: false }) })
    expect(board.task('t')).toMatchObject({ state: 'pending', readyAt: null, attempts: 0, failures: 0, error: null, epoch: 1 })
  })

  it('a conflict record names who put main\'s side of each file there only when known: older records (and malformed names) still read', () => {
    const board = boardIn('merging')
    const id = conflictIdFor(T, 1)
    board.change('conflict', d => { lifecycle.openConflict(d, T, { id, files: ['a.txt'], hunks: [], oursFrom: {} }) })
    // nothing known: the field is left out, as on records written before it existed
    expect(Object.keys(rawEntry(board, 'conflicts', id))).not.toContain('oursFrom')
    expect(board.snapshot().conflicts.get(id)?.oursFrom).toBeUndefined()
    expect(board.snapshot().invalid).toEqual([])
    const base = { id, taskId: 't', files: ['a.txt', 'b.txt'], hunks: [], state: 'open', decision: null, error: null }
    expect(conflictSchema.parse({ ...base, oursFrom: { 'a.txt': 'red', 'b.txt': 'blue' } }).oursFrom).toEqual({ 'a.txt': 'red', 'b.txt': 'blue' })
    // a peer's malformed field drops, not the conflict
    expect(conflictSchema.parse({ ...base, oursFrom: { 'a.txt': 'not a task id' } })).toMatchObject({ id, oursFrom: undefined })
    expect(conflictSchema.parse({ ...base, oursFrom: 'red' })).toMatchObject({ id, oursFrom: undefined })
  })

  it('a conflict record holds only schema fields, and its transitions check the conflict state', () => {
    const board = boardIn('merging')
    board.change('conflict', d => { CALLS.openConflict(d, T) })
    const id = conflictIdFor(T, 1)
    const raw = rawEntry(board, 'conflicts', id)
    expect(Object.keys(raw).sort()).toEqual(Object.keys(conflictSchema.shape).sort())
    expect(board.snapshot().conflicts.get(id)).toMatchObject({ state: 'open', taskId: 't', decision: null, error: null, oursFrom: { 'a.txt': 'u' } })
    expect(board.task('t')).toMatchObject({ state: 'conflict', error: 'merge conflict in a.txt' })

    const decision = { action: 'ours' as const, by: 'tester', at: NOW, note: '' }
    let ok = false
    board.change('decide', d => { ok = lifecycle.decide(d, id, decision) })
    expect(ok).toBe(true)
    board.change('fail', d => { ok = lifecycle.failDecision(d, id, 'could not') })
    expect(ok).toBe(true)
    expect(board.snapshot().conflicts.get(id)).toMatchObject({ state: 'open', decision: null, error: 'could not' })
    board.change('resolve', d => { ok = lifecycle.resolve(d, id, { decision, clearError: true }) })
    expect(ok).toBe(true)
    expect(board.snapshot().conflicts.get(id)).toMatchObject({ state: 'resolved', decision, error: null })
    // a resolved conflict takes no further move
    for (const name of Object.keys(CONFLICT_TRANSITIONS) as Array<keyof typeof CONFLICT_TRANSITIONS>) {
      const bytes = board.change(name, d => {
        ok = name === 'decide' ? lifecycle.decide(d, id, decision) : name === 'failDecision' ? lifecycle.failDecision(d, id, 'x') : lifecycle.resolve(d, id)
      })
      expect(ok, name).toBe(false)
      expect(bytes).toBeNull()
    }
  })
})
