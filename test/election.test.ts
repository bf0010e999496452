import { describe, it, expect } from 'vitest'
import { electLeader, quorum, FORGET_AFTER_MS, type Candidate, type Voter } from '../src/scheduler/election.ts'

const c = (peerId: string, extra: Partial<Candidate> = {}): Candidate => ({ peerId, state: 'alive', eligible: true, aliveSince: 0, ...extra })

describe('leader election (pure)', () => {
  it('elects the smallest stable eligible peer with term + 1', () => {
    expect(electLeader({ leader: null, term: 0 }, [c('b'), c('a'), c('c')], 10_000)).toEqual({ leader: 'a', term: 1 })
  })
  it('ignores peers not yet stable, not eligible, or not alive', () => {
    const cands = [c('a', { aliveSince: 9000 }), c('b', { eligible: false }), c('c', { state: 'suspect' }), c('d')]
    expect(electLeader({ leader: null, term: 4 }, cands, 10_000, 3000)).toEqual({ leader: 'd', term: 5 })
  })
  it('keeps a healthy leader even when a smaller peer appears, and replaces a dead or ineligible one', () => {
    expect(electLeader({ leader: 'm', term: 2 }, [c('a'), c('m')], 10_000)).toBeNull()
    expect(electLeader({ leader: 'm', term: 2 }, [c('a'), c('m', { state: 'suspect' })], 10_000)).toBeNull()
    expect(electLeader({ leader: 'm', term: 2 }, [c('a'), c('m', { state: 'dead' })], 10_000)).toEqual({ leader: 'a', term: 3 })
    expect(electLeader({ leader: 'm', term: 2 }, [c('b'), c('m', { eligible: false })], 10_000)).toEqual({ leader: 'b', term: 3 })
    expect(electLeader({ leader: 'gone', term: 7 }, [c('z')], 10_000)).toEqual({ leader: 'z', term: 8 })
  })
  it('elects nobody when nobody is stable and eligible', () => {
    expect(electLeader({ leader: null, term: 0 }, [c('a', { eligible: false }), c('b', { aliveSince: null })], 10_000)).toBeNull()
  })
  it('every node deciding from the same view picks the same leader', () => {
    const view = [c('p3'), c('p1'), c('p2')]
    const decisions = [view, [...view].reverse(), [view[1]!, view[2]!, view[0]!]].map(v => electLeader({ leader: null, term: 0 }, v, 10_000))
    expect(new Set(decisions.map(d => d?.leader)).size).toBe(1)
  })
})

describe('the majority main needs (pure)', () => {
  const now = 10 * FORGET_AFTER_MS
  const v = (peerId: string, state: Voter['state'], extra: Partial<Voter> = {}): Voter => ({ peerId, startedAt: now - 60_000, leftAt: null, state, lastSeenAt: now - 30_000, ...extra })

  it('counts registered nodes; a strict majority must be reachable', () => {
    expect(quorum('a', [v('a', undefined), v('b', 'alive'), v('c', 'dead')], now, now - 120_000)).toEqual({ voters: 3, reachable: 2, ok: true, missing: ['c'] })
    expect(quorum('a', [v('a', undefined), v('b', 'dead')], now, now - 120_000)).toEqual({ voters: 2, reachable: 1, ok: false, missing: ['b'] })
    // two against two: neither side has a majority
    expect(quorum('a', [v('a', undefined), v('b', 'suspect'), v('c', 'dead'), v('d', 'dead')], now, now - 120_000).ok).toBe(false)
    // alone and registered alone: a one-node mesh advances
    expect(quorum('a', [v('a', undefined)], now, now).ok).toBe(true)
    // not registered yet: it counts itself
    expect(quorum('a', [], now, now)).toMatchObject({ voters: 1, reachable: 1, ok: true })
  })

  it('leaves out nodes that left, were forgotten since their start, or were unreachable for the forget time', () => {
    const left = v('b', 'left', { leftAt: now - 1000 })
    const forgotten = v('c', 'dead', { forgottenAt: now - 1000 })
    const longGone = v('d', 'dead', { lastSeenAt: now - FORGET_AFTER_MS - 1, startedAt: now - 2 * FORGET_AFTER_MS })
    expect(quorum('a', [v('a', undefined), left, forgotten, longGone], now, now - 2 * FORGET_AFTER_MS)).toEqual({ voters: 1, reachable: 1, ok: true, missing: [] })
    // forgotten before it started again: it counts again
    expect(quorum('a', [v('a', undefined), v('c', 'dead', { forgottenAt: now - 120_000 })], now, now - 120_000).ok).toBe(false)
    // never heard since this node started: silent only since this node's own start
    expect(quorum('a', [v('a', undefined), v('d', undefined, { lastSeenAt: null, startedAt: 0 })], now, now - 60_000).ok).toBe(false)
    expect(quorum('a', [v('a', undefined), v('d', undefined, { lastSeenAt: null, startedAt: 0 })], now, now - FORGET_AFTER_MS).ok).toBe(true)
    // a shorter forget time
    expect(quorum('a', [v('a', undefined), v('b', 'dead')], now, now - 120_000, 10_000).ok).toBe(true)
  })

  it('with a lease, counts a peer the failure detector still holds alive or suspect only while heard within it', () => {
    const heard = (ms: number): Partial<Voter> => ({ lastSeenAt: now - ms })
    // a leader cut off from the two others: its detector still holds them alive (timeouts widened by lag)
    const cut = [v('a', undefined), v('b', 'alive', heard(6000)), v('c', 'suspect', heard(6000))]
    expect(quorum('a', cut, now, now - 120_000).ok).toBe(true)
    expect(quorum('a', cut, now, now - 120_000, FORGET_AFTER_MS, 5000)).toEqual({ voters: 3, reachable: 1, ok: false, missing: ['b', 'c'] })
    // heard within the lease: counted as before
    expect(quorum('a', [v('a', undefined), v('b', 'alive', heard(1000)), v('c', 'suspect', heard(4999))], now, now - 120_000, FORGET_AFTER_MS, 5000)).toEqual({ voters: 3, reachable: 3, ok: true, missing: [] })
    // one of two heard: still a majority of three; never heard at all: not counted as reachable
    expect(quorum('a', [v('a', undefined), v('b', 'alive', heard(1000)), v('c', 'alive', heard(6000))], now, now - 120_000, FORGET_AFTER_MS, 5000).ok).toBe(true)
    expect(quorum('a', [v('a', undefined), v('b', 'alive', { lastSeenAt: null })], now, now - 120_000, FORGET_AFTER_MS, 5000).ok).toBe(false)
    // itself needs no lease
    expect(quorum('a', [v('a', undefined, { lastSeenAt: null })], now, now, FORGET_AFTER_MS, 5000).ok).toBe(true)
  })
})
