/**
 * The leader's side of the branch hand-off at done (`acceptHandoff`,
 * src/merge/handoff.ts), on a real node's board: a hand-off is taken only
 * while this node leads, only on the task's own branch, and only for the run
 * the board says the asking peer makes in that epoch; a run the board does not
 * show yet is waited for (woken by the board change), a run that is over or
 * someone else's is refused at once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { acceptHandoff, recordTaken } from '../src/merge/handoff.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
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
const never = new AbortController().signal

beforeAll(async () => {
  mesh = await createMesh(1)
  a = mesh.nodes[0]!
  a.changeBoard('plan', addTasks(['t1', 't2', 't3', 't4', 't5', 't6'].map(t => simpleTask(t))))
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
  it('refuses every hand-off while this node does not lead', async () => {
    asRunner(d => { lifecycle.start(d, id('t1'), RUNNER, 1, Date.now()) })
    expect(await acceptHandoff(a, RUNNER, req('t1'), never)).toMatch(/not the merge leader/)
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

  it('a hand-off finished after the node gave up waiting makes the leader a holder of the done task, at that head only', () => {
    asRunner(d => {
      lifecycle.start(d, id('t6'), RUNNER, 1, Date.now())
      lifecycle.complete(d, id('t6'), { peer: RUNNER, head: HEAD, summary: null, now: Date.now() })
    })
    recordTaken(a, 't6', 'b'.repeat(40))
    expect(a.board.task(id('t6'))?.holders).toEqual([RUNNER])
    recordTaken(a, 't6', HEAD)
    expect(a.board.task(id('t6'))?.holders).toEqual([RUNNER, a.peerId])
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
})
