import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { BoardReplication, type BoardReplicationComponents, type StreamHost } from '../src/node/board-replication.ts'
import type { Board } from '../src/crdt/board.ts'
import type { Gossip } from '../src/node/gossip.ts'
import { silentLogger } from '../src/util/logger.ts'

const HB = 1000

/** A replication whose board has the heads in `have`, and whose syncs are only counted. */
function replication (have: Set<string>): { r: BoardReplication, synced: string[] } {
  const synced: string[] = []
  const components = {
    board: { hasHeads: (heads: string[]) => heads.every(h => have.has(h)) } as unknown as Board,
    store: null,
    gossip: { route: () => {} } as unknown as Gossip,
    topic: 'board',
    streams: {} as unknown as StreamHost,
    heartbeatMs: HB,
    stats: {} as unknown as BoardReplicationComponents['stats'],
    logger: silentLogger
  } satisfies BoardReplicationComponents
  const r = new BoardReplication(components)
  r.requestSync = async (peer: string) => { synced.push(peer); return true }
  return { r, synced }
}

describe('a peer whose heartbeat shows heads this board lacks', () => {
  beforeEach(() => { vi.useFakeTimers() })
  afterEach(() => { vi.useRealTimers() })

  it('is synced with two usual heartbeat periods later if they are still missing, with no second heartbeat (a large mesh heartbeats further apart)', () => {
    const { r, synced } = replication(new Set())
    r.peerHeads('p', ['a'])
    vi.advanceTimersByTime(2 * HB - 1)
    expect(synced).toEqual([])
    vi.advanceTimersByTime(1)
    expect(synced).toEqual(['p'])
    // once: the mark is gone until a heartbeat shows a gap again
    vi.advanceTimersByTime(10 * HB)
    expect(synced).toEqual(['p'])
  })

  it('is not synced with when the heads arrive meanwhile, nor when its next heartbeat shows none lacking', () => {
    const have = new Set<string>()
    const { r, synced } = replication(have)
    r.peerHeads('p', ['a'])
    r.peerHeads('q', ['b'])
    have.add('a')
    r.peerHeads('q', [])
    vi.advanceTimersByTime(3 * HB)
    expect(synced).toEqual([])
  })

  it('is judged by the last heads it showed', () => {
    const have = new Set<string>()
    const { r, synced } = replication(have)
    r.peerHeads('p', ['a'])
    vi.advanceTimersByTime(HB)
    r.peerHeads('p', ['b'])
    have.add('a')
    vi.advanceTimersByTime(HB)
    expect(synced).toEqual(['p'])
  })

  it('is left alone once replication stops', async () => {
    const { r, synced } = replication(new Set())
    r.peerHeads('p', ['a'])
    await r.stop()
    vi.advanceTimersByTime(3 * HB)
    expect(synced).toEqual([])
  })
})
