/**
 * Gossiped board changes are applied once gossipsub has forwarded them, those
 * of one turn of the event loop together; a refused change among them takes
 * only itself along and is blamed on the peer it came from. Runs the board
 * replication on a real board with a stand-in for the gossip layer (the
 * handler gossipsub would call), so that two changes arrive in one turn for sure.
 */
import { describe, it, expect } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { BoardReplication, type BoardReplicationComponents, type ReplicationStats } from '../src/node/board-replication.ts'
import { Board, nodeActorForPeer, str, type TaskRecord } from '../src/crdt/board.ts'
import { signerFromPrivateKey } from '../src/crdt/signing.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { encodeBoardChange } from '../src/protocol/board-gossip.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Gossip } from '../src/node/gossip.ts'

const MESH = 'mesh-replication-batch-test'

async function peer (): Promise<{ id: string, board: Board }> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  return { id, board: Board.create(MESH, nodeActorForPeer(id), signerFromPrivateKey(id, key)) }
}

interface Handler { validate: (msg: { data: Uint8Array }, from: string) => unknown, handle: (msg: { data: Uint8Array }, from: string) => void }

function replicate (board: Board): { deliver: (change: Uint8Array, from: string) => void, rejected: Array<[string, string]>, stats: ReplicationStats } {
  let handler: Handler | undefined
  const rejected: Array<[string, string]> = []
  const gossip = {
    route: (_topic: string, h: Handler) => { handler = h },
    reject: (reason: string, from: string) => { rejected.push([reason, from]); return 'reject' },
    subscribe: () => {},
    publish: async () => {}
  }
  const stats: ReplicationStats = { syncSessions: 0, syncFailures: 0, changesBroadcast: 0, changesReceived: 0, syncBytes: { in: 0, out: 0 }, refusedAuthors: {}, refusedForgotten: { keys: 0, total: 0 }, streamsRefused: {} }
  const components: BoardReplicationComponents = {
    board,
    store: null,
    gossip: gossip as unknown as Gossip,
    topic: 'board',
    streams: { status: 'started', handle: async () => {}, unhandle: async () => {}, dialProtocol: async () => { throw new Error('no streams here') } },
    heartbeatMs: 1000,
    stats,
    logger: silentLogger
  }
  void new BoardReplication(components)
  return {
    deliver: (change, from) => {
      // as gossipsub does: validate, then hand the message over
      const msg = { data: encodeBoardChange(change) }
      expect(handler?.validate(msg, from)).toBe('accept')
      handler?.handle(msg, from)
    },
    rejected,
    stats
  }
}

describe('board replication applies gossiped changes after the handler returns, a turn\'s worth together', () => {
  it('applies the good changes of a turn and refuses the bad one, blamed on the peer it came from', async () => {
    const [honest, rogue, reader] = [await peer(), await peer(), await peer()]
    const plan = honest.board.change('plan', addTasks([simpleTask('a'), simpleTask('b')])) as Uint8Array
    for (const b of [rogue.board, reader.board]) b.applyChanges([plan])
    const r = replicate(reader.board)

    // nobody may rewrite a task's definition once written: the rule needs the task's history, so it is
    // judged when the change is applied, not by the validator (rogue's own board does not check its writes)
    const rewrite = rogue.board.change('rewrite', d => { (d.tasks['a'] as TaskRecord).prompt = str('do something else') }) as Uint8Array
    const cancel = honest.board.change('cancel b', d => { (d.tasks['b'] as TaskRecord).state = str('cancelled') }) as Uint8Array
    r.deliver(rewrite, rogue.id)
    r.deliver(cancel, honest.id)
    // nothing is applied inside the handler: gossipsub forwards the message first
    expect(reader.board.task('b')?.state).toBe('ready')
    expect(r.stats.changesReceived).toBe(2)

    await waitFor(() => reader.board.task('b')?.state === 'cancelled', { timeoutMs: 5000, message: 'the honest change was never applied' })
    expect(reader.board.task('a')?.prompt).toBe('do a')
    expect(r.rejected).toEqual([['forbidden-write', rogue.id]])
    expect(r.stats.refusedAuthors).toEqual({ [rogue.id]: 1 })
  })

  it('applies the changes of one turn in one board update', async () => {
    const [writer, reader] = [await peer(), await peer()]
    const plan = writer.board.change('plan', addTasks([simpleTask('a'), simpleTask('b')])) as Uint8Array
    reader.board.applyChanges([plan])
    const r = replicate(reader.board)
    const updates: string[][] = []
    reader.board.subscribe(u => { updates.push([...u.tasks].sort()) })
    const changes = ['a', 'b'].map(id => writer.board.change(`cancel ${id}`, d => { (d.tasks[id] as TaskRecord).state = str('cancelled') }) as Uint8Array)
    for (const c of changes) r.deliver(c, writer.id)
    await waitFor(() => reader.board.task('b')?.state === 'cancelled', { timeoutMs: 5000, message: 'the changes were never applied' })
    expect(reader.board.task('a')?.state).toBe('cancelled')
    expect(updates).toEqual([['a', 'b']])
    expect(r.rejected).toEqual([])
  })
})
