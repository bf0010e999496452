/**
 * Gossiped board changes that arrive together are applied together
 * (src/node/board-replication.ts): one board update for all of them, and a
 * batch holding a refused change still applies the others, with the refusal
 * counted against the peer that sent it. A real board and replication, with
 * the gossip layer replaced by a recorder of its handler and rejections.
 */
import { describe, it, expect } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { BoardReplication, type StreamHost } from '../src/node/board-replication.ts'
import type { Gossip, TopicHandler } from '../src/node/gossip.ts'
import { Board, nodeActorForPeer } from '../src/crdt/board.ts'
import { signerFromPrivateKey } from '../src/crdt/signing.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { encodeBoardChange } from '../src/protocol/board-gossip.ts'
import { silentLogger } from '../src/util/logger.ts'

const MESH = 'batch-apply-mesh'

async function nodeBoard (): Promise<{ board: Board, peer: string }> {
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  return { board: Board.create(MESH, nodeActorForPeer(peer), signerFromPrivateKey(peer, key)), peer }
}

/** A replication of `board` whose gossip handler the test calls; `rejected` records each rejection. */
function replicate (board: Board): { handle: (change: Uint8Array, from: string) => void, rejected: Array<[string, string]>, refused: Record<string, number> } {
  let handler: TopicHandler | null = null
  const rejected: Array<[string, string]> = []
  const gossip = {
    route: (_topic: string, h: TopicHandler) => { handler = h },
    reject: (reason: string, from: string) => { rejected.push([reason, from]); return 'reject' },
    subscribe: () => {},
    publish: async () => {}
  } as unknown as Gossip
  const stats = { syncSessions: 0, syncFailures: 0, changesBroadcast: 0, changesReceived: 0, syncBytes: { in: 0, out: 0 }, refusedAuthors: {}, refusedForgotten: { keys: 0, total: 0 }, streamsRefused: {} }
  // the replication routes itself into the gossip layer
  void new BoardReplication({ board, store: null, gossip, topic: 'board', streams: { status: 'started' } as unknown as StreamHost, heartbeatMs: 1000, stats, logger: silentLogger })
  return {
    handle: (change, from) => { (handler as TopicHandler | null)?.handle({ data: encodeBoardChange(change) } as unknown as Parameters<TopicHandler['handle']>[0], from) },
    rejected,
    refused: stats.refusedAuthors
  }
}

const nextTurn = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

describe('gossiped board changes', () => {
  it('that arrive together are applied in one board update', async () => {
    const here = await nodeBoard()
    const peer = await nodeBoard()
    const changes = ['a', 'b', 'c', 'd', 'e'].map(id => peer.board.change('plan', addTasks([simpleTask(id)])) as Uint8Array)
    const { handle, rejected } = replicate(here.board)
    const updates: string[][] = []
    here.board.subscribe(u => { updates.push(u.tasks) })
    for (const c of changes) handle(c, peer.peer)
    expect(here.board.task('a'), 'applied before the messages read with it were handled').toBeUndefined()
    await nextTurn()
    expect(updates, 'board updates').toHaveLength(1)
    expect([...(updates[0] ?? [])].sort()).toEqual(['a', 'b', 'c', 'd', 'e'])
    expect(rejected).toEqual([])
  })

  it('a refused change among them is counted against its sender, and the others land', async () => {
    const here = await nodeBoard()
    const good = await nodeBoard()
    const bad = await nodeBoard()
    const first = good.board.change('plan', addTasks([simpleTask('t1')])) as Uint8Array
    bad.board.applyChanges([first])
    // a claim in another node's name: every node refuses it once it is applied (its role rule needs the history)
    const forbidden = bad.board.change('claim', d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(good.peer), 0, Date.now()) }) as Uint8Array
    const second = good.board.change('plan', addTasks([simpleTask('t2')])) as Uint8Array
    const { handle, rejected, refused } = replicate(here.board)
    handle(first, good.peer)
    handle(forbidden, bad.peer)
    handle(second, good.peer)
    await nextTurn()
    expect(here.board.task('t1')).toBeDefined()
    expect(here.board.task('t2')).toBeDefined()
    expect(here.board.task('t1')?.claims[asPeerId(good.peer)], 'the refused claim').toBeUndefined()
    expect(rejected).toEqual([['forbidden-write', bad.peer]])
    expect(refused).toEqual({ [bad.peer]: 1 })
  })
})
