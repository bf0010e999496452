/**
 * A claim settles on an earlier heartbeat's acknowledgement
 * (src/scheduler/scheduler.ts, `ACK_HEARTBEATS_KEPT`): on a busy mesh a peer's
 * latest heartbeat often names a change still on its way here, which this
 * board cannot judge yet; the heartbeat before it that contained the claim,
 * with every change it names here, is acknowledgement enough. A heartbeat
 * from before the claim is not.
 *
 * One scheduler over a fake node (two real boards, this node's and its one
 * peer's; the test carries the changes between them and delivers the peer's
 * heartbeats), so which heads arrive when is the test's choice.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { Board, str } from '../src/crdt/board.ts'
import { actorForPeer } from '../src/crdt/authors.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type PeerIdString } from '../src/crdt/schema.ts'
import { Scheduler } from '../src/scheduler/scheduler.ts'
import type { SchedulerNode } from '../src/node/components.ts'
import type { Presence } from '../src/protocol/presence.ts'
import { ZERO_TOKENS, type Agent } from '../src/agent/types.ts'
import { waitFor } from '../src/util/wait.ts'
import { FakeSchedulerNode } from './helpers/fake-sched-node.ts'

const MESH = 'mesh-settle-acks'
const ME = asPeerId('12D3KooWsettleMe')
const PEER = asPeerId('12D3KooWsettlePeer')

let sched: Scheduler | null = null
afterEach(async () => {
  await sched?.stop(0)
  sched = null
})

/** This node's view for the scheduler: its board, one peer whose latest heads the test sets, heartbeats the test delivers. */
class FakeNode extends FakeSchedulerNode {
  constructor () {
    super(MESH, ME, PEER)
  }

  /** The peer's heartbeat with `heads` arrives. */
  heartbeat (heads: string[]): void {
    this.peer = { ...this.peer, heads, lastSeenAt: Date.now() }
    const p = { v: 1, peerId: PEER, name: 'peer', slots: 0, running: [], heads, addrs: [], lagMs: 0, load: 0, rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 0, sentAt: Date.now(), leaving: false } satisfies Presence
    this.dispatchEvent(new CustomEvent('presence', { detail: p }))
  }

  /** The peer's acknowledgement with `heads` arrives directly (src/node/claim-acks.ts); its heartbeats stay as they were. */
  ack (heads: string[]): void {
    this.dispatchEvent(new CustomEvent('ack', { detail: { peerId: PEER, heads } }))
  }
}

const instant: Agent = { kind: 'instant', run: async () => ({ outcome: 'success', error: null, costUsd: 0, tokens: ZERO_TOKENS }) }

/** A scheduler pass queued by an event before this call has run when it resolves (setImmediate is first in, first out). */
const afterSchedulerPass = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)); await new Promise(resolve => setImmediate(resolve)) }

/**
 * This node (one slot, a settle window of `settleMs`, none by default) with its peer registered and heard, and task `t` claimed here;
 * `before`: the peer's heads from before the claim (it gets this node's changes at once, the test holds back only its own).
 */
async function claimedWithPeer (settleMs = 0): Promise<{ node: FakeNode, peerBoard: Board, started: string[], before: string[] }> {
  const node = new FakeNode()
  const peerBoard = Board.create(MESH, actorForPeer(PEER))
  node.board.subscribe(u => { if (u.local) peerBoard.applyChanges(u.changes) })
  const reg = peerBoard.change('node:join', d => { d.nodes[PEER] = { name: str('peer'), slots: 0, startedAt: 0, leftAt: null } })
  node.board.applyChanges([reg as Uint8Array])
  node.heartbeat(peerBoard.heads())
  const started: string[] = []
  sched = new Scheduler({ node: node as unknown as SchedulerNode, agent: instant, slots: 1, settleMs, onRunStart: id => { started.push(id) } })
  sched.start()
  const before = peerBoard.heads()
  node.changeBoard('plan', addTasks([simpleTask('t')]))
  await waitFor(() => node.board.task('t')?.state === 'claimed', { timeoutMs: 5000, message: () => `t was never claimed: ${JSON.stringify(node.board.task('t'))}` })
  return { node, peerBoard, started, before }
}

describe('settling a claim on acknowledgements', () => {
  it('an earlier heartbeat that contains the claim settles it though the latest names a change not here yet; one from before the claim does not', async () => {
    const { node, peerBoard, started, before } = await claimedWithPeer()

    // a heartbeat from before the claim reached the peer: no acknowledgement
    node.heartbeat(before)
    await afterSchedulerPass()
    expect(node.board.task('t')?.state).toBe('claimed')

    // the peer has the claim (its heads now contain it), then writes a change this node does not have yet
    const acked = peerBoard.heads()
    peerBoard.change('plan', addTasks([simpleTask('elsewhere')]))
    const ahead = peerBoard.heads()
    expect(node.board.seenBy(ahead, acked[0] as string)).toBeNull()
    node.heartbeat(acked)
    node.heartbeat(ahead)
    // the latest heads cannot be judged here; the one before settles the claim (not the 30 s acknowledgement timeout)
    await waitFor(() => started.includes('t'), { timeoutMs: 5000, message: () => `t never started: ${JSON.stringify(node.board.task('t'))}` })
  })

  it('a direct acknowledgement settles the claim while the peer\'s heartbeats still name heads from before it', async () => {
    const { node, peerBoard, started, before } = await claimedWithPeer()

    // an acknowledgement of heads from before the claim settles nothing
    node.ack(before)
    await afterSchedulerPass()
    expect(node.board.task('t')?.state).toBe('claimed')

    // the peer's heads with the claim, sent directly: the claim settles, though no heartbeat of the peer has them
    node.ack(peerBoard.heads())
    await waitFor(() => started.includes('t'), { timeoutMs: 5000, message: () => `t never started: ${JSON.stringify(node.board.task('t'))}` })
    expect(node.peer.heads).toEqual(before)
  })

  it('once every acknowledgement is in, the claim starts without waiting out its settle window', async () => {
    // a window of a minute: only the acknowledgement can start the run within the test's bound
    const { node, peerBoard, started, before } = await claimedWithPeer(60_000)
    node.ack(before)
    await afterSchedulerPass()
    expect(node.board.task('t')?.state).toBe('claimed')
    node.ack(peerBoard.heads())
    await waitFor(() => started.includes('t'), { timeoutMs: 10_000, message: () => `t did not start on its acknowledgement within its settle window: ${JSON.stringify(node.board.task('t'))}` })
  })
})
