import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { Board, actorForPeer, str, type BoardDoc, type TaskRecord } from '../src/crdt/board.ts'
import { addTasks, newTaskRecord, simpleTask } from '../src/crdt/ops.ts'

const MESH = 'mesh-aaaaaaaaaaaa'
const OTHER_MESH = 'mesh-bbbbbbbbbbbb'
const actorA = actorForPeer('peer-a')
const actorB = actorForPeer('peer-b')
const actorEvil = actorForPeer('peer-evil')

/** Applies change bytes from a peer (null entries: the change was empty). */
function deliver (board: Board, changes: Array<Uint8Array | null>): void {
  board.applyChanges(changes.filter((c): c is Uint8Array => c !== null))
}

/** The sorted task ids of a board's validated snapshot. */
function taskIds (board: Board): string[] {
  return [...board.snapshot().tasks.keys()].sort()
}

/** A raw Automerge copy of a board (what a misbehaving peer could build from it). */
function rawCopy (board: Board, actor: string): A.Doc<BoardDoc> {
  return A.load<BoardDoc>(board.save(), { actor })
}

function expectRejected (fn: () => unknown, pattern: RegExp): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, 'expected a BoardChangeRejectedError').toBeInstanceOf(Error)
  expect((caught as Error).name).toBe('BoardChangeRejectedError')
  expect((caught as Error).message).toMatch(pattern)
}

describe('board genesis', () => {
  it('two boards of one mesh created independently share the genesis and merge without hiding tasks', () => {
    const a = Board.create(MESH, actorA)
    const b = Board.create(MESH, actorB)
    expect(a.genesisHash).toMatch(/^[0-9a-f]{64}$/)
    expect(b.genesisHash).toBe(a.genesisHash)
    expect(a.heads()).toEqual([a.genesisHash])
    expect(b.heads()).toEqual([a.genesisHash])

    // each side writes before hearing from the other
    const fromA = [a.change('a1', addTasks([simpleTask('a-1'), simpleTask('a-2')])), a.change('a2', addTasks([simpleTask('a-3')]))]
    const fromB = [b.change('b1', addTasks([simpleTask('b-1')]))]
    deliver(a, fromB)
    deliver(b, fromA)

    const all = ['a-1', 'a-2', 'a-3', 'b-1']
    expect(taskIds(a)).toEqual(all)
    expect(taskIds(b)).toEqual(all)
    expect(a.heads()).toEqual(b.heads())
    expect(a.snapshot().invalid).toEqual([])
    expect(b.task('a-1')?.state).toBe('ready')

    // the same holds for whole saves merged together (what a restart after a partition does)
    const c = Board.create(MESH, actorForPeer('peer-c'))
    c.change('c1', addTasks([simpleTask('c-1')]))
    const merged = Board.load(MESH, actorA, Buffer.concat([a.save(), c.save()]))
    expect(taskIds(merged)).toEqual([...all, 'c-1'])
  })

  it('boards of different meshes have different geneses; a save of one does not load as the other', () => {
    const a = Board.create(MESH, actorA)
    const other = Board.create(OTHER_MESH, actorA)
    expect(other.genesisHash).not.toBe(a.genesisHash)
    a.change('add', addTasks([simpleTask('t-1')]))

    let caught: unknown
    try {
      Board.load(OTHER_MESH, actorA, a.save())
    } catch (err) {
      caught = err
    }
    expect((caught as Error | undefined)?.name).toBe('BoardCorruptError')
    expect((caught as Error).message).toMatch(/another mesh/)

    // and a save loads fine into its own mesh
    expect(taskIds(Board.load(MESH, actorB, a.save()))).toEqual(['t-1'])
  })
})

describe('root writes from peers', () => {
  function boardWithTasks (): Board {
    const board = Board.create(MESH, actorA)
    board.change('add', addTasks([simpleTask('keep-1'), simpleTask('keep-2')]))
    return board
  }

  it('checkChange and applyChanges refuse a change that replaces the root; the board is unchanged', () => {
    const board = boardWithTasks()
    const heads = board.heads()
    const snap = board.snapshot()

    const evil = A.change(rawCopy(board, actorEvil), d => { d.tasks = {} })
    const change = A.getLastLocalChange(evil)
    expect(change).toBeDefined()

    expectRejected(() => board.checkChange(change!), /writes the document root \(key tasks\)/)
    expectRejected(() => { board.applyChanges([change!]) }, /document root/)

    // a batch with a good change and the bad one is refused whole
    const peer = Board.create(MESH, actorB)
    const good = peer.change('good', addTasks([simpleTask('good-1')]))!
    expectRejected(() => { board.applyChanges([good, change!]) }, /document root/)

    expect(board.heads()).toEqual(heads)
    expect(board.hasHeads([A.decodeChange(change!).hash!])).toBe(false)
    expect(board.snapshot()).toBe(snap)
    expect(taskIds(board)).toEqual(['keep-1', 'keep-2'])

    // deleting a root key is refused the same way
    const deleter = A.change(rawCopy(board, actorEvil), d => { delete (d as Partial<BoardDoc>).conflicts })
    expectRejected(() => { board.applyChanges([A.getLastLocalChange(deleter)!]) }, /key conflicts/)

    // undecodable bytes are refused too, with the same error type
    expectRejected(() => board.checkChange(new Uint8Array([1, 2, 3, 4])), /undecodable/)
    expect(board.heads()).toEqual(heads)
  })

  it('a root write arriving through the sync protocol is rolled back and refused', () => {
    const board = boardWithTasks()
    const heads = board.heads()
    let evil = A.change(rawCopy(board, actorEvil), d => {
      d.tasks = {}
      d.main = { head: str('f'.repeat(40)), leader: str('evil'), term: 99 }
    })
    // a legitimate-looking change after it, so the message carries more than one change
    evil = A.change(evil, d => { d.tasks.x = newTaskRecord(simpleTask('x'), 0) })

    let boardState = A.initSyncState()
    let evilState = A.initSyncState()
    let caught: unknown
    // run the protocol turn by turn until the board refuses (bounded)
    for (let round = 0; round < 10 && caught === undefined; round++) {
      const [bs, toEvil] = board.generateSyncMessage(boardState)
      boardState = bs
      // (the peer's document moves on with what it receives: an older copy of it cannot take a second message)
      if (toEvil !== null) [evil, evilState] = A.receiveSyncMessage(evil, evilState, toEvil)
      const [es, toBoard] = A.generateSyncMessage(evil, evilState)
      evilState = es
      if (toBoard === null) continue
      try {
        boardState = board.receiveSyncMessage(boardState, toBoard)
      } catch (err) {
        caught = err
      }
    }
    expect(caught, 'the board accepted a root write over sync').toBeInstanceOf(Error)
    expect((caught as Error).name).toBe('BoardChangeRejectedError')
    expect((caught as Error).message).toMatch(/writes the document root .*rolled back/)

    // rolled back: same heads, same tasks, same main, and still writable
    expect(board.heads()).toEqual(heads)
    expect(taskIds(board)).toEqual(['keep-1', 'keep-2'])
    expect(board.snapshot().main).toEqual({ head: null, leader: null, term: 0 })
    expect(board.change('after', addTasks([simpleTask('after')]))).not.toBeNull()
    expect(taskIds(board)).toEqual(['after', 'keep-1', 'keep-2'])
    // the rolled-back document really lacks the evil changes (not just the index)
    const reloaded = Board.load(MESH, actorB, board.save())
    expect(taskIds(reloaded)).toEqual(['after', 'keep-1', 'keep-2'])
  })

  it('a root write parked by sync behind a missing dependency is not let in when the dependency arrives', () => {
    const board = boardWithTasks()
    const heads = board.heads()
    // c1: an innocent change; c2: a root write that depends on c1
    let evil = A.change(rawCopy(board, actorEvil), d => { d.tasks.innocent = newTaskRecord(simpleTask('innocent'), 0) })
    const c1 = A.getLastLocalChange(evil)!
    evil = A.change(evil, d => { d.tasks = {} })
    const c2 = A.getLastLocalChange(evil)!
    // a hand-made sync message carrying only c2: Automerge parks it (its dependency is missing)
    const msg = A.encodeSyncMessage({ heads: A.getHeads(evil), need: [], have: [], changes: [c2] })
    let refusedBySync = false
    try {
      board.receiveSyncMessage(A.initSyncState(), msg)
    } catch (err) {
      expect((err as Error).name).toBe('BoardChangeRejectedError')
      refusedBySync = true
    }
    // c1 alone is a fine change (it passes checkChange, e.g. in the gossip validator) ...
    expect(() => board.checkChange(c1)).not.toThrow()
    // ... but applying it must not release the parked root write
    let refusedByApply = false
    try {
      board.applyChanges([c1])
    } catch (err) {
      expect((err as Error).name).toBe('BoardChangeRejectedError')
      refusedByApply = true
    }
    expect(refusedBySync || refusedByApply).toBe(true)
    expect(board.hasHeads([A.decodeChange(c2).hash!])).toBe(false)
    expect(taskIds(board)).toContain('keep-1')
    expect(taskIds(board)).toContain('keep-2')
    if (refusedByApply) expect(board.heads()).toEqual(heads)
    // once the bad change is gone, the innocent change applies normally
    board.applyChanges([c1])
    expect(taskIds(board)).toEqual(['innocent', 'keep-1', 'keep-2'])
  })

  it('an honest sync between two boards still works', () => {
    const a = boardWithTasks()
    const b = Board.create(MESH, actorB)
    b.change('b', addTasks([simpleTask('b-1')]))
    let sa = A.initSyncState()
    let sb = A.initSyncState()
    for (let round = 0; round < 20; round++) {
      const [na, ma] = a.generateSyncMessage(sa)
      sa = na
      if (ma !== null) sb = b.receiveSyncMessage(sb, ma)
      const [nb, mb] = b.generateSyncMessage(sb)
      sb = nb
      if (mb !== null) sa = a.receiveSyncMessage(sa, mb)
      if (ma === null && mb === null) break
    }
    expect(taskIds(a)).toEqual(['b-1', 'keep-1', 'keep-2'])
    expect(a.heads()).toEqual(b.heads())
  })
})

describe('hasHeads', () => {
  it('older heads stay present as the board grows; an absent change is present once applied; a refused one stays absent', () => {
    const board = Board.create(MESH, actorA)
    const h1 = A.decodeChange(board.change('one', addTasks([simpleTask('one')]))!).hash!
    expect(board.hasHeads([h1])).toBe(true)
    const peer = Board.create(MESH, actorB)
    const p1 = peer.change('p1', addTasks([simpleTask('p1')]))!
    const hp = A.decodeChange(p1).hash!
    // asked twice while absent (the second answer is remembered for this version of the document)
    expect(board.hasHeads([hp])).toBe(false)
    expect(board.hasHeads([h1, hp])).toBe(false)
    board.applyChanges([p1])
    expect(board.hasHeads([hp])).toBe(true)
    const h2 = A.decodeChange(board.change('two', addTasks([simpleTask('two')]))!).hash!
    // h1 and hp are no heads any more: still present, and so is everything together
    expect(board.heads()).toEqual([h2])
    expect(board.hasHeads([h1, hp, h2])).toBe(true)
    // a change refused after it was applied (a parked root write released) is rolled back: absent
    const evil = A.change(rawCopy(board, actorEvil), d => { d.tasks = {} })
    const bad = A.getLastLocalChange(evil)!
    expectRejected(() => { board.applyChanges([bad]) }, /document root/)
    expect(board.hasHeads([A.decodeChange(bad).hash!])).toBe(false)
    expect(board.hasHeads([h1, hp, h2])).toBe(true)
    expect(board.heads()).toEqual([h2])
  })
})

describe('schema validation of entries', () => {
  it('quarantines an invalid task, reports it once, and shows it once fixed', () => {
    const board = Board.create(MESH, actorA)
    const reports: Array<[string, string]> = []
    board.onInvalid = (key, reason) => { reports.push([key, reason]) }
    board.change('ok', addTasks([simpleTask('fine')]))

    const peer = Board.create(MESH, actorB)
    const bad = peer.change('bad', d => {
      d.tasks.broken = { ...newTaskRecord(simpleTask('broken'), 0), state: str('bogus') }
    })
    deliver(board, [bad])

    expect(board.task('broken')).toBeUndefined()
    expect(taskIds(board)).toEqual(['fine'])
    expect(board.snapshot().invalid).toEqual(['tasks/broken'])
    expect(reports).toHaveLength(1)
    expect(reports[0]![0]).toBe('tasks/broken')
    expect(reports[0]![1]).toMatch(/state/)

    // another change to the still-invalid entry is not reported again
    deliver(board, [peer.change('still bad', d => { d.tasks.broken!.error = str('noted') })])
    expect(board.snapshot().invalid).toEqual(['tasks/broken'])
    expect(reports).toHaveLength(1)

    // fixed by a later change: visible, no longer listed
    deliver(board, [peer.change('fix', d => { d.tasks.broken!.state = str('ready') })])
    expect(board.task('broken')?.state).toBe('ready')
    expect(board.task('broken')?.error).toBe('noted')
    expect(board.snapshot().invalid).toEqual([])
    expect(taskIds(board)).toEqual(['broken', 'fine'])
    expect(reports).toHaveLength(1)
  })

  it('loads tasks written before summaries existed (summary null) and validates summaries that are there', () => {
    const board = Board.create(MESH, actorA)
    const peer = Board.create(MESH, actorB)
    const old = peer.change('old node', d => {
      const rec: Record<string, unknown> = newTaskRecord(simpleTask('old'), 0)
      delete rec.summary
      // records a node of another version writes: not of this version's write type
      d.tasks.old = rec as unknown as TaskRecord
      d.tasks.bad = { ...newTaskRecord(simpleTask('bad'), 0), summary: 42 } as unknown as TaskRecord
      d.tasks.good = { ...newTaskRecord(simpleTask('good'), 0), summary: str('did it') }
    })
    deliver(board, [old])
    expect(board.task('old')?.summary).toBeNull()
    expect(board.task('good')?.summary).toBe('did it')
    expect(board.snapshot().invalid).toEqual(['tasks/bad'])
    // a reload keeps them the same
    expect(Board.load(MESH, actorA, board.save()).task('old')?.summary).toBeNull()
  })

  it('quarantines a task whose id differs from its key', () => {
    const board = Board.create(MESH, actorA)
    const reports: string[] = []
    board.onInvalid = (key, reason) => { reports.push(`${key}: ${reason}`) }
    board.change('mismatch', d => { d.tasks.one = newTaskRecord(simpleTask('two'), 0) })
    expect(board.task('one')).toBeUndefined()
    expect(board.snapshot().invalid).toEqual(['tasks/one'])
    expect(reports).toEqual(['tasks/one: id does not match its key'])
  })
})

describe('concurrent updates', () => {
  it('concurrent writes to one task field converge to the same value on both sides', () => {
    const a = Board.create(MESH, actorA)
    const b = Board.create(MESH, actorB)
    deliver(b, [a.change('add', addTasks([simpleTask('t')]))])
    expect(b.task('t')).toBeDefined()

    // both write the same fields before hearing from each other (fields anybody may write: a task's definition is never rewritten)
    const fromA = a.change('a', d => {
      d.tasks.t!.error = str('error from a')
      d.tasks.t!.notBefore = 1
    })
    const fromB = b.change('b', d => {
      d.tasks.t!.error = str('error from b')
      d.tasks.t!.notBefore = 2
    })
    deliver(a, [fromB])
    deliver(b, [fromA])

    expect(a.heads()).toEqual(b.heads())
    const ta = a.task('t')!
    const tb = b.task('t')!
    expect(ta).toEqual(tb)
    expect(['error from a', 'error from b']).toContain(ta.error)
    expect([1, 2]).toContain(ta.notBefore)
    expect(a.snapshot().invalid).toEqual([])
  })

  it('concurrent claims on one task are all kept (one key per claimant)', () => {
    const a = Board.create(MESH, actorA)
    const b = Board.create(MESH, actorB)
    deliver(b, [a.change('add', addTasks([simpleTask('t')]))])
    const fromA = a.change('claim a', d => { (d.tasks.t!.claims as Record<string, unknown>)['peer-a'] = { epoch: 0, at: 10 } })
    const fromB = b.change('claim b', d => { (d.tasks.t!.claims as Record<string, unknown>)['peer-b'] = { epoch: 0, at: 11 } })
    deliver(a, [fromB])
    deliver(b, [fromA])
    expect(a.task('t')!.claims).toEqual({ 'peer-a': { epoch: 0, at: 10 }, 'peer-b': { epoch: 0, at: 11 } })
    expect(b.task('t')!.claims).toEqual(a.task('t')!.claims)
  })
})
