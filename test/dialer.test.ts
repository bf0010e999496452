/**
 * The dialing policy (src/node/dialer.ts) on a fake host that records every
 * dial and refuses it, with a real membership, on fake timers: which peers a
 * node dials in each redial round.
 */
import { describe, it, expect, afterEach, vi } from 'vitest'
import { Dialer, type DialHost } from '../src/node/dialer.ts'
import { Membership } from '../src/node/membership.ts'
import { REDIAL_INTERVAL_MS, REMEMBERED_EAGER_MS } from '../src/node/constants.ts'
import type { Presence } from '../src/protocol/presence.ts'
import { asPeerId } from '../src/crdt/schema.ts'
import { createLogger } from '../src/util/logger.ts'

afterEach(() => { vi.useRealTimers() })

const HB = 500
const addrOf = (peer: string): string => `/ip4/127.0.0.1/tcp/${10_000 + peer.charCodeAt(peer.length - 1)}`

function presence (peer: string, leaving = false): Presence {
  return { v: 1, peerId: asPeerId(peer), name: peer, slots: 1, running: [], heads: [], addrs: [addrOf(peer)], lagMs: 0, load: 0, rssBytes: 1, backoffUntil: null, startedAt: 1, seq: 0, leaving }
}

/** A dialer on a host whose dials all fail at once; `dials(peer)` counts the dials of a peer's address. */
function setUp (remembered: string[]): { dialer: Dialer, membership: Membership, connect: (peer: string) => void, dials: (peer: string) => number, round: () => Promise<void> } {
  const membership = new Membership({ heartbeatMs: HB, suspectAfterMs: 1500, deadAfterMs: 4000 })
  const listeners = new Map<string, (evt: CustomEvent<unknown>) => void>()
  const dialed: string[] = []
  const host = {
    status: 'started',
    addEventListener: (type: string, fn: (evt: CustomEvent<unknown>) => void) => { listeners.set(type, fn) },
    removeEventListener: () => {},
    dial: async (addrs: Array<{ toString: () => string }>) => {
      dialed.push(...addrs.map(String))
      throw new Error('connection refused')
    },
    peerStore: { merge: async () => {} }
  } as unknown as DialHost
  const dialer = new Dialer({
    host,
    membership,
    bootstrap: [],
    peerId: () => 'self',
    remembered: () => remembered.map(p => ({ peerId: p, addrs: [addrOf(p)] })),
    logger: createLogger('dialer', { level: 'error' })
  })
  dialer.start()
  return {
    dialer,
    membership,
    connect: peer => { listeners.get('peer:connect')?.({ detail: { toString: () => peer } } as CustomEvent<unknown>) },
    dials: peer => dialed.filter(a => a === addrOf(peer)).length,
    // one redial round, and the failed dials settled (so the next round may dial the same peers again)
    round: async () => { await vi.advanceTimersByTimeAsync(REDIAL_INTERVAL_MS) }
  }
}

/** Makes `peer` known with its address, then silent until dead (ticking the membership on the fake clock). */
async function goneDead (membership: Membership, peer: string): Promise<void> {
  membership.heartbeat(presence(peer))
  for (let t = 0; t < 5000; t += HB) {
    await vi.advanceTimersByTimeAsync(HB)
    membership.tick()
  }
  expect(membership.get(peer)?.state).toBe('dead')
}

describe('dialer', () => {
  it('a node linked to nobody dials every peer it knows every round, dead and left ones too', async () => {
    vi.useFakeTimers()
    const { dialer, membership, dials, round } = setUp(['peer-r'])
    await goneDead(membership, 'peer-d')
    membership.heartbeat(presence('peer-l', true))
    expect(membership.get('peer-l')?.state).toBe('left')
    membership.heartbeat(presence('peer-a'))
    dialer.afterStart()
    for (let i = 0; i < 4; i++) await round()
    // the first round at start, then one every REDIAL_INTERVAL_MS: 5 rounds, and every peer dialed in each
    for (const peer of ['peer-d', 'peer-l', 'peer-a', 'peer-r']) expect(dials(peer), `dials of ${peer}`).toBe(5)
    dialer.stop()
  })

  it('a linked node dials dead peers every fifth round, remembered ones every round for REMEMBERED_EAGER_MS after its start, and left ones never', async () => {
    vi.useFakeTimers()
    const { dialer, membership, connect, dials, round } = setUp(['peer-r'])
    connect('peer-c')
    await goneDead(membership, 'peer-d')
    membership.heartbeat(presence('peer-l', true))
    dialer.afterStart()
    for (let i = 0; i < 9; i++) await round()
    expect(dials('peer-r'), 'a remembered peer, just after the start').toBe(10)
    expect(dials('peer-d'), 'a dead peer').toBe(2)
    expect(dials('peer-l'), 'a peer that left').toBe(0)
    // past the eager window a remembered peer that never came back is dialed with the dead ones
    await vi.advanceTimersByTimeAsync(REMEMBERED_EAGER_MS)
    const before = dials('peer-r')
    for (let i = 0; i < 10; i++) await round()
    expect(dials('peer-r') - before).toBe(2)
    dialer.stop()
  })
})
