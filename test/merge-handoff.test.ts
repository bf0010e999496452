/**
 * The taking side of the branch hand-off at done (`acceptHandoff`,
 * src/merge/handoff.ts), on a real node's board: a hand-off is taken only
 * while this node leads or no leader is alive here (a keeper), only on the task's own branch, and only for the run
 * the board says the asking peer makes in that epoch; a run the board does not
 * show yet is waited for (woken by the board change), a run that is over or
 * someone else's is refused at once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { waitFor } from '../src/util/wait.ts'
import { acceptHandoff, TakenBranches } from '../src/merge/handoff.ts'
import { silentLogger } from '../src/util/logger.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type ConflictId, type TaskId } from '../src/crdt/schema.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { HandoffRequest } from '../src/git/transfer.ts'
import { Board, actorForPeer, type BoardDoc } from '../src/crdt/board.ts'

/** Another node of the mesh (only its id matters here: the board names it as the task's runner). */
const RUNNER = asPeerId('12D3KooWNV38ASnTHYdoiGx2myLEypuBC9TmpdGkVgj59btUAAmd')
const HEAD = 'a'.repeat(40)
const req = (task: string, extra: Partial<HandoffRequest> = {}): HandoffRequest => ({ task, epoch: 0, ref: `refs/heads/meshwork/${task}`, oid: HEAD, ...extra })
const id = (s: string): TaskId => s as TaskId

let mesh: TestMesh
let a: MeshNode
let b: MeshNode
const never = new AbortController().signal

beforeAll(async () => {
  mesh = await createMesh(2)
  a = mesh.nodes[0]!
  b = mesh.nodes[1]!
  a.changeBoard('plan', addTasks(['t1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9'].map(t => simpleTask(t))))
})

afterAll(async () => {
  await mesh?.stop()
})

/**
 * A change written as RUNNER would write it, applied to node a's board as if
 * it came from RUNNER: node a itself may not start or end another node's run
 * (its own changes are checked against the role rules). RUNNER has no key
 * here, so it writes as an older version's unsigned node.
 */
function asRunner (fn: (d: BoardDoc) => void): void {
  const runner = Board.load(a.board.meshId, actorForPeer(RUNNER), a.board.save())
  a.board.applyChanges([runner.change('runner', fn) as Uint8Array])
}

/** Whether `p` is still pending once the event loop has gone round (nothing can have settled it since). */
async function pending (p: Promise<unknown>): Promise<boolean> {
  let settled = false
  void p.then(() => { settled = true }, () => { settled = true })
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
  return !settled
}

describe('acceptHandoff', () => {
  it('refuses every hand-off while another node leads and is alive here; while none is, takes it as a keeper', async () => {
    asRunner(d => { lifecycle.start(d, id('t1'), RUNNER, 1, Date.now()) })
    // no leader elected yet: a keeps the branch until one collects it
    expect(await acceptHandoff(a, RUNNER, req('t1'), never)).toBeNull()
    // a leader this node does not see alive (RUNNER has no presence here): the same
    asRunner(d => { lifecycle.electLeader(d, RUNNER, 1) })
    expect(a.board.snapshot().main.leader).toBe(RUNNER)
    expect(await acceptHandoff(a, RUNNER, req('t1'), never)).toBeNull()
    // b leads, alive (elected over the board b has from a, so its leader wins): the branch goes there, not here
    await waitFor(() => b.board.snapshot().main.leader === RUNNER, { timeoutMs: 30_000, message: () => 'b never had the board with RUNNER as leader' })
    b.changeBoard('elect', d => { lifecycle.electLeader(d, b.peerId, 1) })
    await waitFor(() => a.board.snapshot().main.leader === b.peerId && a.membership.get(b.peerId)?.state === 'alive',
      { timeoutMs: 30_000, message: () => `a never saw b lead and alive: leader ${String(a.board.snapshot().main.leader)}, b ${a.membership.get(b.peerId)?.state ?? 'unknown'}` })
    expect(await acceptHandoff(a, RUNNER, req('t1'), never)).toMatch(new RegExp(`not the merge leader \\(${b.peerId} is, and alive\\)`))
  })

  it('takes the branch of a run the asking peer makes, in its epoch, and nothing else', async () => {
    a.changeBoard('elect', d => { lifecycle.electLeader(d, a.peerId, 1) })
    expect(await acceptHandoff(a, RUNNER, req('t1'), never)).toBeNull()
    // another branch than the task's own
    expect(await acceptHandoff(a, RUNNER, req('t1', { ref: 'refs/heads/main' }), never)).toMatch(/not the branch of task t1/)
    // the run of an epoch that is over
    expect(await acceptHandoff(a, RUNNER, req('t1', { epoch: 0 }), never)).toBeNull()
    a.changeBoard('release', d => { lifecycle.release(d, id('t1'), { now: Date.now(), notBefore: null }) })
    expect(await acceptHandoff(a, RUNNER, req('t1', { epoch: 0 }), never)).toMatch(/past the run of epoch 0/)
    // a run of someone else (the leader itself runs t2)
    a.changeBoard('start', d => { lifecycle.start(d, id('t2'), a.peerId, 1, Date.now()) })
    expect(await acceptHandoff(a, RUNNER, req('t2'), never)).toMatch(/running on/)
  })

  it('a done run is taken again only at the head the board names', async () => {
    asRunner(d => {
      lifecycle.start(d, id('t3'), RUNNER, 1, Date.now())
      lifecycle.complete(d, id('t3'), { peer: RUNNER, head: HEAD, summary: null, now: Date.now() })
    })
    expect(await acceptHandoff(a, RUNNER, req('t3'), never)).toBeNull()
    expect(await acceptHandoff(a, RUNNER, req('t3', { oid: 'b'.repeat(40) }), never)).toMatch(/t3 is done at a{40}/)
  })

  it('a taken branch makes this node a holder once the board shows its task done at that head, not before and not at another', () => {
    const taken = new TakenBranches(a, silentLogger)
    // taken before the done (the usual order: the runner writes done once the branch is taken)
    asRunner(d => { lifecycle.start(d, id('t6'), RUNNER, 1, Date.now()) })
    taken.taken('t6', 0, HEAD)
    expect(taken.waiting).toBe(1)
    expect(a.board.task(id('t6'))?.holders).toEqual([])
    asRunner(d => { lifecycle.complete(d, id('t6'), { peer: RUNNER, head: HEAD, summary: null, now: Date.now() }) })
    taken.settle()
    expect(a.board.task(id('t6'))?.holders).toEqual([RUNNER, a.peerId])
    expect(taken.waiting).toBe(0)
    // taken after the done (the runner gave up waiting), at another head than the board's: nothing written
    asRunner(d => {
      lifecycle.start(d, id('t7'), RUNNER, 1, Date.now())
      lifecycle.complete(d, id('t7'), { peer: RUNNER, head: HEAD, summary: null, now: Date.now() })
    })
    taken.taken('t7', 0, 'b'.repeat(40))
    expect(a.board.task(id('t7'))?.holders).toEqual([RUNNER])
    expect(taken.waiting).toBe(0)
    // at the head the board names: a holder at once
    taken.taken('t7', 0, HEAD)
    expect(a.board.task(id('t7'))?.holders).toEqual([RUNNER, a.peerId])
  })

  it('waits for the board to show the run, and takes it when the change arrives', async () => {
    const p = acceptHandoff(a, RUNNER, req('t4'), never, 60_000)
    expect(await pending(p)).toBe(true)
    asRunner(d => { lifecycle.start(d, id('t4'), RUNNER, 1, Date.now()) })
    expect(await p).toBeNull()
  })

  it('gives up on a run the board never shows, when the wait or the request\'s signal ends', async () => {
    expect(await acceptHandoff(a, RUNNER, req('t5'), never, 50)).toMatch(/did not show the run in time: task t5 is ready/)
    const ac = new AbortController()
    const p = acceptHandoff(a, RUNNER, req('t5'), ac.signal, 60_000)
    expect(await pending(p)).toBe(true)
    ac.abort()
    expect(await p).toMatch(/did not show the run in time/)
  })

  it('a keeper takes a run of the leader\'s own from the leader itself, done, merging or in conflict, while it refuses other runners', async () => {
    a.changeBoard('elect', d => { lifecycle.electLeader(d, a.peerId, 1) })
    a.changeBoard('run', d => {
      lifecycle.start(d, id('t8'), a.peerId, 1, Date.now())
      lifecycle.complete(d, id('t8'), { peer: a.peerId, head: HEAD, summary: null, now: Date.now() })
      lifecycle.startMerge(d, id('t8'))
    })
    await waitFor(() => b.board.snapshot().main.leader === a.peerId && b.board.task(id('t8'))?.state === 'merging' && b.membership.get(a.peerId)?.state === 'alive',
      { timeoutMs: 30_000, message: () => `b never saw a lead alive with t8 merging: ${JSON.stringify(b.board.task(id('t8')))}` })
    expect(await acceptHandoff(b, a.peerId, req('t8'), never)).toBeNull()
    // at another commit than the board's: refused
    expect(await acceptHandoff(b, a.peerId, req('t8', { oid: 'c'.repeat(40) }), never)).toMatch(/t8 is merging/)
    // another runner while a leads and is alive: refused
    expect(await acceptHandoff(b, RUNNER, req('t8'), never)).toMatch(/not the merge leader/)
    // taken: b writes itself a holder of the merging run, and a sees it
    const taken = new TakenBranches(b, silentLogger)
    taken.taken('t8', 0, HEAD)
    expect(b.board.task(id('t8'))?.holders).toEqual([a.peerId, b.peerId])
    await waitFor(() => a.board.task(id('t8'))?.holders.includes(b.peerId) === true, { timeoutMs: 30_000, message: 'a never saw b hold t8' })

    // a run of a's own in conflict (waiting for a human) is kept the same way
    a.changeBoard('run', d => {
      lifecycle.start(d, id('t9'), a.peerId, 1, Date.now())
      lifecycle.complete(d, id('t9'), { peer: a.peerId, head: HEAD, summary: null, now: Date.now() })
      lifecycle.startMerge(d, id('t9'))
      lifecycle.openConflict(d, id('t9'), { id: 't9-1' as ConflictId, files: ['a.txt'], hunks: [], oursFrom: {} })
    })
    await waitFor(() => b.board.task(id('t9'))?.state === 'conflict', { timeoutMs: 30_000, message: () => `b never saw t9 in conflict: ${JSON.stringify(b.board.task(id('t9')))}` })
    expect(await acceptHandoff(b, a.peerId, req('t9'), never)).toBeNull()
    taken.taken('t9', 0, HEAD)
    expect(b.board.task(id('t9'))?.holders).toEqual([a.peerId, b.peerId])
  })
})
