/**
 * A claim that can no longer win is let go at once (src/scheduler/scheduler.ts,
 * `lostAlready`), not at the end of its settle window, and its withdrawal goes
 * in the same board change as the claim the freed slot makes next: two nodes
 * whose slots free at about the same moment often claim the same task, and
 * the loser's slot should not wait out the window, nor cost the mesh a board
 * change of its own.
 *
 * One scheduler over a fake node (its real board and one peer's; the test
 * carries the changes between them), with a settle window of a minute: only
 * the early release can free the slot within the test's wait.
 */
import { describe, it, expect, afterEach } from 'vitest'
import * as A from '@automerge/automerge'
import { Board, str } from '../src/crdt/board.ts'
import { actorForPeer } from '../src/crdt/authors.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type PeerIdString, type TaskId } from '../src/crdt/schema.ts'
import { Scheduler } from '../src/scheduler/scheduler.ts'
import type { SchedulerNode } from '../src/node/components.ts'
import { waitFor } from '../src/util/wait.ts'
import { FakeSchedulerNode, heldAgent } from './helpers/fake-sched-node.ts'

const MESH = 'mesh-lost-claim'
const ME = asPeerId('12D3KooWlostMe')
const PEER = asPeerId('12D3KooWlostPeer')

let sched: Scheduler | null = null
afterEach(async () => {
  await sched?.stop(0)
  sched = null
})

describe('a claim already lost', () => {
  it('is withdrawn before its settle window ends, in the change that claims the next task', async () => {
    const node = new FakeSchedulerNode(MESH, ME, PEER)
    const peerBoard = Board.create(MESH, actorForPeer(PEER))
    node.board.subscribe(u => { if (u.local) peerBoard.applyChanges(u.changes) })
    const reg = peerBoard.change('node:join', d => { d.nodes[PEER] = { name: str('peer'), slots: 1, startedAt: 0, leftAt: null } })
    node.board.applyChanges([reg as Uint8Array])
    // the worktree of each claim is started as it is claimed, and undone when the claim is let go
    const early: string[] = []
    const dropped: string[] = []
    const prepareEarly = async (t: { id: string, epoch: number }, signal: AbortSignal): Promise<void> => {
      early.push(`${t.id}@${t.epoch}`)
      signal.addEventListener('abort', () => { early.push(`${t.id} aborted`) }, { once: true })
    }
    const dropEarly = async (id: string, epoch: number): Promise<void> => { dropped.push(`${id}@${epoch}`) }
    sched = new Scheduler({ node: node as unknown as SchedulerNode, agent: heldAgent, slots: 1, settleMs: 60_000, prepareEarly, dropEarly })
    sched.start()
    node.changeBoard('plan', addTasks([simpleTask('t'), simpleTask('u')]))
    const mine = (id: string): boolean => node.board.task(id as TaskId)?.claims[ME] !== undefined
    await waitFor(() => mine('t') || mine('u'), { timeoutMs: 5000, message: () => `no task was claimed: ${JSON.stringify([node.board.task('t' as TaskId), node.board.task('u' as TaskId)])}` })
    const first = mine('t') ? 't' : 'u'
    const next = first === 't' ? 'u' : 't'
    expect(mine(next)).toBe(false)
    // started within the settle window of a minute: at the claim
    expect(early).toEqual([`${first}@0`])

    // the peer claimed the same task a moment earlier; its claim arrives now
    const messages: string[] = []
    node.board.subscribe(u => { if (u.local) for (const c of u.changes) messages.push((A.decodeChange(c).message ?? '').split('\n')[0] as string) })
    const task = node.board.task(first as TaskId)
    const at = (task?.claims[ME]?.at ?? 0) - 1
    const theirs = peerBoard.change('tasks:claim', d => { lifecycle.claim(d, first as TaskId, PEER, task?.epoch ?? 0, at) })
    node.board.applyChanges([theirs as Uint8Array])

    // long before the minute is up: the lost claim is gone and the slot claimed the other task
    await waitFor(() => !mine(first) && mine(next), { timeoutMs: 10_000, message: () => `the lost claim of ${first} was not let go early: ${JSON.stringify(node.board.task(first as TaskId)?.claims)}; ${next}: ${JSON.stringify(node.board.task(next as TaskId)?.claims)}` })
    // one change did both
    expect(messages).toEqual(['tasks:claim'])
    // the lost claim's worktree was stopped and undone; the next claim's was started
    await waitFor(() => dropped.length > 0, { timeoutMs: 10_000, message: 'the lost claim\'s early worktree was not undone' })
    expect(dropped).toEqual([`${first}@0`])
    expect(early).toEqual([`${first}@0`, `${first} aborted`, `${next}@0`])
  })
})
