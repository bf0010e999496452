import { describe, it, expect } from 'vitest'
import { electLeader, type Candidate } from '../src/scheduler/election.ts'

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
