/**
 * `meshwork drain` reading through the node it drains (src/api/drain.ts): a
 * node with nothing to finish leaves at once and closes the connection, so the
 * sync that confirms the drain request fails because the drain worked. The
 * drain then counts as done once the board shows the node left after the
 * request (its leave comes by gossip through the other nodes); anything else
 * is the confirmation's error, as before. The client here is a real board with
 * a sync that fails at once, so when the leave arrives is the test's choice
 * (with real nodes it is a race: rolling-upgrade.test.ts met it once in CI).
 */
import { describe, it, expect } from 'vitest'
import { Board, str } from '../src/crdt/board.ts'
import { actorForPeer } from '../src/crdt/authors.ts'
import { asPeerId } from '../src/crdt/schema.ts'
import { requestDrain } from '../src/api/drain.ts'
import type { Client } from '../src/api/client.ts'

const CLIENT = asPeerId('12D3KooWdrainClient')
const TARGET = asPeerId('12D3KooWdrainTarget')
const OTHER = asPeerId('12D3KooWdrainOther')

/** A client reading through `peer`, whose board knows TARGET and OTHER, and whose confirming sync fails at once. */
function client (peer: string, timeoutMs: number): { client: Client, board: Board, syncs: string[] } {
  const board = Board.create('mesh-drain', actorForPeer(CLIENT))
  for (const p of [TARGET, OTHER]) board.change('node:join', d => { d.nodes[p] = { name: str(p === TARGET ? 'c' : 'a'), slots: 1, startedAt: 1, leftAt: null } })
  const syncs: string[] = []
  const node = {
    board,
    changeBoard: (message: string, fn: Parameters<Board['change']>[1]) => board.change(message, fn),
    requestSync: async (p: string) => { syncs.push(p); return false }
  }
  return { client: { node, peer, timeoutMs, close: async () => {} } as unknown as Client, board, syncs }
}

/** What the drained node writes as it leaves, arriving at the client `ms` from now. */
function leaveLater (board: Board, ms: number): void {
  setTimeout(() => { board.change('node:leave', d => { const r = d.nodes[TARGET]; if (r !== undefined) r.leftAt = Date.now() }) }, ms)
}

describe('drain through the node it drains', () => {
  it('a failed confirmation counts as done once the board shows the node left after the request', async () => {
    const { client: c, board, syncs } = client(TARGET, 5000)
    leaveLater(board, 300)
    await expect(requestDrain(c, 'c')).resolves.toEqual({ peerId: TARGET, name: 'c', already: false })
    expect(syncs).toEqual([TARGET])
    const rec = board.snapshot().nodes.get(TARGET)
    expect(rec?.drainAt).toBeTypeOf('number')
    expect(rec?.leftAt).toBeGreaterThanOrEqual(rec?.drainAt as number)
  })

  it('no leave within the client\'s timeout: the confirmation\'s error, as before', async () => {
    const { client: c } = client(TARGET, 500)
    await expect(requestDrain(c, 'c')).rejects.toThrow(/the drain request is recorded locally but not confirmed by .*drainTarget: the sync with it failed/)
  })

  it('read through another node, a failed confirmation fails at once whatever the board shows later', async () => {
    const { client: c, board } = client(OTHER, 5000)
    leaveLater(board, 300)
    const started = Date.now()
    await expect(requestDrain(c, 'c')).rejects.toThrow(/not confirmed by .*drainOther/)
    expect(Date.now() - started).toBeLessThan(300)
  })
})
