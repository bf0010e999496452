/**
 * The early heartbeat that acknowledges a remote claim (src/node/heartbeats.ts
 * `ackSoon`) names only heads on disk, so it waits for the claim to be written:
 * sent before, it would acknowledge nothing and the claimant would wait for the
 * next regular heartbeat. Heartbeats over a fake gossip; the test decides when
 * the write is done.
 */
import { describe, it, expect } from 'vitest'
import { Heartbeats } from '../src/node/heartbeats.ts'
import type { Gossip } from '../src/node/gossip.ts'
import type { Membership } from '../src/node/membership.ts'
import type { Board } from '../src/crdt/board.ts'
import { decodePresence, type Presence } from '../src/protocol/presence.ts'
import { asPeerId } from '../src/crdt/schema.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'

const OLD = 'a'.repeat(64)
const NEW = 'b'.repeat(64)

describe('the early acknowledgement of a claim', () => {
  it('is published once the claim is on disk, naming heads that contain it', async () => {
    const published: Presence[] = []
    const gossip = {
      route: () => {},
      subscribe: () => {},
      publish: async (_topic: string, data: Uint8Array) => { const p = decodePresence(data); if (p !== null) published.push(p) }
    } as unknown as Gossip
    // the claim is applied (the board's heads are NEW) but still being written: on disk are the heads from before
    let onDisk = [OLD]
    let written: () => void = () => {}
    let durableCalls = 0
    const h = new Heartbeats({
      announce: true,
      gossip,
      topic: 'presence',
      membership: {} as unknown as Membership,
      board: { heads: () => [NEW] } as unknown as Board,
      ackHeads: () => onDisk,
      durable: async () => { durableCalls++; await new Promise<void>(resolve => { written = resolve }) },
      peerId: () => asPeerId('12D3KooWackTest'),
      name: 'n',
      slots: () => 1,
      eligible: () => true,
      startedAt: () => 0,
      addrs: () => [],
      peerHeads: () => {},
      peerAddrs: () => {},
      onTransition: () => {},
      onPresence: () => {},
      logger: silentLogger
    })
    h.ackSoon()
    // the write is still going on: nothing is acknowledged yet (an acknowledgement sent now would name OLD)
    await waitFor(() => durableCalls > 0 || published.length > 0, { timeoutMs: 5000, message: 'ackSoon neither waited for the write nor published' })
    expect(published).toEqual([])
    onDisk = [NEW]
    written()
    await waitFor(() => published.length > 0, { timeoutMs: 5000, message: 'no acknowledgement after the claim was written' })
    expect(published.map(p => p.heads)).toEqual([[NEW]])
    h.beforeStop()
  })
})
