import { describe, it, expect } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Membership, type MemberState } from '../src/node/membership.ts'
import { PRESENCE_FULL_RATE_PEERS } from '../src/node/constants.ts'
import type { Presence } from '../src/protocol/presence.ts'
import { MAX_PRESENCE_EVERY_MS, decodePresence, encodePresence } from '../src/protocol/presence.ts'
import { generateSwarmKey, parseSwarmKey, readSwarmKey, swarmKeyFromHex, writeSwarmKey } from '../src/node/swarm-key.ts'
import { decodeJoinToken, encodeJoinToken } from '../src/node/join-token.ts'
import { UsageError } from '../src/util/errors.ts'
import { asPeerId } from '../src/crdt/schema.ts'

const HB = 1000
const SUSPECT = 3000
const DEAD = 10_000

/** A failure detector on a fake clock. */
function detector (): { m: Membership, clock: { t: number }, advance: (ms: number, lag?: number) => MemberState | undefined } {
  const clock = { t: 1_700_000_000_000 }
  const m = new Membership({ suspectAfterMs: SUSPECT, deadAfterMs: DEAD, heartbeatMs: HB, now: () => clock.t })
  return {
    m,
    clock,
    /** Advances the clock in heartbeat steps, ticking after each; returns peer P's state. */
    advance: (ms, lag = 0) => {
      for (let done = 0; done < ms; done += HB) {
        clock.t += Math.min(HB, ms - done)
        m.tick(lag)
      }
      return m.get(P)?.state
    }
  }
}

const P = asPeerId('peer-p')

function presence (extra: Partial<Omit<Presence, 'peerId'>> & { peerId?: string } = {}): Presence {
  return {
    v: 1,
    name: 'p',
    slots: 2,
    running: [],
    heads: [],
    addrs: [],
    lagMs: 0,
    load: 0.1,
    rssBytes: 1,
    backoffUntil: null,
    startedAt: 1,
    seq: 0,
    leaving: false,
    ...extra,
    peerId: asPeerId(extra.peerId ?? P)
  }
}

describe('failure detector', () => {
  it('goes alive → suspect at suspectAfter → dead at deadAfter, and a heartbeat revives', () => {
    const { m, clock, advance } = detector()
    expect(m.heartbeat(presence())).toEqual({ peerId: P, from: null, to: 'alive' })
    expect(m.get(P)?.lastSeenAt).toBe(clock.t)
    expect(advance(SUSPECT - HB)).toBe('alive')
    expect(m.get(P)?.silentMs).toBe(SUSPECT - HB)

    clock.t += HB
    expect(m.tick()).toEqual([{ peerId: P, from: 'alive', to: 'suspect' }])
    expect(advance(DEAD - SUSPECT - HB)).toBe('suspect')

    clock.t += HB
    expect(m.tick()).toEqual([{ peerId: P, from: 'suspect', to: 'dead' }])
    expect(m.tick()).toEqual([]) // no repeated transitions
    expect(advance(60_000)).toBe('dead')
    expect(m.alive()).toEqual([])

    expect(m.heartbeat(presence({ seq: 1 }))).toEqual({ peerId: P, from: 'dead', to: 'alive' })
    expect(m.tick()).toEqual([])
    expect(m.alive().map(x => x.peerId)).toEqual([P])
    expect(m.get(P)?.silentMs).toBe(0)
  })

  it('a heartbeat while suspect brings the peer back to alive; regular heartbeats keep it alive', () => {
    const { m, advance } = detector()
    m.heartbeat(presence())
    expect(advance(SUSPECT)).toBe('suspect')
    expect(m.heartbeat(presence({ seq: 1 }))).toEqual({ peerId: P, from: 'suspect', to: 'alive' })
    for (let i = 0; i < 30; i++) {
      expect(advance(HB)).toBe('alive')
      expect(m.heartbeat(presence({ seq: 2 + i }))).toBeNull()
    }
  })

  it('a leaving heartbeat makes the peer left, and it stays left through ticks', () => {
    const { m, advance } = detector()
    m.heartbeat(presence())
    expect(m.heartbeat(presence({ seq: 1, leaving: true }))).toEqual({ peerId: P, from: 'alive', to: 'left' })
    expect(advance(DEAD * 5)).toBe('left')
    expect(m.alive()).toEqual([])
    // a restarted peer speaks again
    expect(m.heartbeat(presence({ seq: 0 }))).toEqual({ peerId: P, from: 'left', to: 'alive' })
  })

  it('seed(): a peer known only from the board starts suspect and goes dead unless heard; a left one stays left', () => {
    const { m, advance } = detector()
    m.seed(P, 'p', 1, false)
    expect(m.get(P)?.state).toBe('suspect')
    expect(m.get(P)?.lastSeenAt).toBeNull()
    expect(advance(HB)).toBe('suspect') // not alive just because time passes
    expect(advance(DEAD - 2 * HB)).toBe('suspect')
    expect(advance(HB)).toBe('dead')

    m.seed(asPeerId('peer-gone'), 'gone', 1, true)
    expect(m.get('peer-gone')?.state).toBe('left')
    advance(DEAD * 3)
    expect(m.get('peer-gone')?.state).toBe('left')

    // seeding a peer already known changes nothing
    m.seed(P, 'other', 9, true)
    expect(m.get(P)?.state).toBe('dead')
    expect(m.get(P)?.name).toBe('p')

    // a seeded peer that speaks up is alive
    m.seed(asPeerId('peer-new'), 'new', 1, false)
    expect(m.heartbeat(presence({ peerId: 'peer-new' }))).toEqual({ peerId: 'peer-new', from: 'suspect', to: 'alive' })
  })

  it('a stalled event loop does not age peers: a 20 s jump between ticks does not kill a peer heard just before', () => {
    const { m, clock, advance } = detector()
    m.heartbeat(presence({ peerId: 'q', name: 'q' }))
    advance(5 * HB)
    expect(m.get('q')?.state).toBe('suspect')
    m.heartbeat(presence())
    m.heartbeat(presence({ peerId: 'q', name: 'q', seq: 1 }))
    clock.t += 20_000 // our own process was stalled
    const transitions = m.tick()
    expect(m.get(P)?.state).not.toBe('dead')
    expect(m.get(P)?.state).toBe('alive')
    expect(transitions.filter(t => t.to === 'dead')).toEqual([])
    expect(m.get(P)!.silentMs).toBeLessThanOrEqual(2 * HB)
    // lastSeenAt stays wall-clock
    expect(m.get(P)!.lastSeenAt).toBe(clock.t - 20_000)

    // but silence that continues after the stall is counted normally
    expect(advance(SUSPECT)).toBe('suspect')
    expect(advance(DEAD)).toBe('dead')
  })

  it('widens timeouts while the local event loop lags, up to 4x', () => {
    const { m, advance } = detector()
    const LAG = 60_000 // far above the cap: widening is 1 + min(3, ...) = 4
    m.heartbeat(presence())
    expect(advance(DEAD + 5 * HB, LAG)).not.toBe('dead')
    expect(m.get(P)?.state).toBe('suspect') // 15 s > 4 x suspectAfter (12 s)
    expect(advance(4 * DEAD - (DEAD + 5 * HB) - HB, LAG)).toBe('suspect') // 39 s silent
    expect(advance(HB, LAG)).toBe('dead') // 40 s = 4 x deadAfter: the cap
  })

  it('widening is bounded: a peer silent past 4 x deadAfter is dead however large the lag', () => {
    const { m, advance } = detector()
    m.heartbeat(presence({ lagMs: 1e9 }))
    expect(advance(4 * DEAD + HB, 1e9)).toBe('dead')
  })

  it('no lag, no widening; a peer that reports its own lag gets more time too', () => {
    const { m, advance } = detector()
    m.heartbeat(presence())
    m.heartbeat(presence({ peerId: 'slow', name: 'slow', lagMs: 2050 })) // widening 1 + 2000/1000 = 3
    expect(advance(DEAD, 50)).toBe('dead') // 50 ms of local lag is noise
    expect(m.get('slow')?.state).toBe('suspect')
    advance(2 * DEAD - HB)
    expect(m.get('slow')?.state).toBe('suspect') // 29 s
    advance(HB)
    expect(m.get('slow')?.state).toBe('dead') // 30 s = 3 x deadAfter
  })

  it('nextChangeIn: when the next timeout falls due with no heartbeat meanwhile, and a tick then makes the change', () => {
    const { m, clock } = detector()
    expect(m.nextChangeIn()).toBeNull() // nobody known
    m.heartbeat(presence())
    expect(m.nextChangeIn()).toBe(SUSPECT)
    clock.t += 1200
    m.tick()
    expect(m.nextChangeIn()).toBe(SUSPECT - 1200)
    // the earliest of the peers: a seeded one (never heard) is suspect already, and dead at deadAfter
    m.seed(asPeerId('seeded'), 'seeded', 1, false)
    expect(m.nextChangeIn()).toBe(SUSPECT - 1200)
    // a peer that reports lag gets its timeouts widened
    m.heartbeat(presence({ peerId: 'slow', name: 'slow', lagMs: 1050 })) // widening 2
    clock.t += SUSPECT - 1200 - 1
    m.tick()
    expect(m.get(P)?.state).toBe('alive')
    expect(m.nextChangeIn()).toBe(1)
    clock.t += 1
    expect(m.tick()).toEqual([{ peerId: P, from: 'alive', to: 'suspect' }])
    // next: the slow peer suspect at 2 x suspectAfter after its heartbeat (4.2 s on), before P dead at deadAfter (7 s on)
    expect(m.nextChangeIn()).toBe(2 * SUSPECT - (SUSPECT - 1200))
    // dead and left peers change only with a heartbeat
    const only = detector()
    only.m.heartbeat(presence())
    only.m.heartbeat(presence({ peerId: 'gone', name: 'gone', leaving: true }))
    only.advance(DEAD)
    expect(only.m.get(P)?.state).toBe('dead')
    expect(only.m.nextChangeIn()).toBeNull()
  })

  it('a calm peer that announces a longer period (`every`) is suspect no sooner than 1.5 of them; the defaults keep 3 s and 10 s', () => {
    const { m, clock } = detector()
    /** Ticks once a heartbeat period for `ms`; returns the changes. */
    const run = (ms: number): Array<[string, MemberState]> => {
      const out: Array<[string, MemberState]> = []
      for (let done = 0; done < ms; done += HB) {
        clock.t += Math.min(HB, ms - done)
        for (const t of m.tick()) out.push([t.peerId, t.to])
      }
      return out
    }
    expect(m.calmPeriodMs).toBe(2000)
    // the calm period of the defaults (2 s) fits the 3 s suspect timeout exactly
    m.heartbeat(presence({ every: 2000 }))
    expect(m.nextChangeIn()).toBe(SUSPECT)
    // a peer configured with a longer period than this node's timeouts allow gets 1.5 of its periods
    m.heartbeat(presence({ peerId: 'slow-beat', name: 'slow-beat', every: 4000 }))
    expect(run(SUSPECT)).toEqual([[P, 'suspect']])
    expect(m.nextChangeIn()).toBe(6000 - SUSPECT)
    expect(run(6000 - SUSPECT)).toEqual([['slow-beat', 'suspect']])
    // dead at deadAfter all the same
    expect(run(DEAD - 6000 - 1)).toEqual([])
    expect(run(1)).toEqual([[P, 'dead'], ['slow-beat', 'dead']])
    // a node calms down only as far as a peer with its own suspect timeout allows, and not at all when that leaves no room
    expect(new Membership({ heartbeatMs: 1000, suspectAfterMs: 2400, deadAfterMs: DEAD }).calmPeriodMs).toBe(1600)
    expect(new Membership({ heartbeatMs: 1000, suspectAfterMs: 1200, deadAfterMs: DEAD }).calmPeriodMs).toBe(1000)
    expect(new Membership({ heartbeatMs: 1000, suspectAfterMs: 30_000, deadAfterMs: 60_000 }).calmPeriodMs).toBe(2000)
  })

  it('past PRESENCE_FULL_RATE_PEERS live peers a node heartbeats in proportion to them, and its detector lets a stall count as two such periods', () => {
    const { m, clock } = detector()
    const peers = (n: number, from = 0): void => { for (let i = from; i < n; i++) m.heartbeat(presence({ peerId: `peer-${i}`, name: `peer-${i}` })) }
    peers(PRESENCE_FULL_RATE_PEERS)
    expect(m.periodMs(false)).toBe(HB)
    expect(m.periodMs(true)).toBe(m.calmPeriodMs)
    peers(2 * PRESENCE_FULL_RATE_PEERS + 10, PRESENCE_FULL_RATE_PEERS)
    const long = Math.round(HB * (2 * PRESENCE_FULL_RATE_PEERS + 10) / PRESENCE_FULL_RATE_PEERS)
    expect(long).toBeGreaterThan(m.calmPeriodMs)
    expect(m.periodMs(false)).toBe(long)
    // calm or not, the mesh's size sets the period once it is the longer one
    expect(m.periodMs(true)).toBe(long)
    // dead and left peers do not count
    m.heartbeat(presence({ peerId: 'peer-0', name: 'peer-0', leaving: true }))
    expect(m.periodMs(false)).toBe(Math.round(HB * (2 * PRESENCE_FULL_RATE_PEERS + 9) / PRESENCE_FULL_RATE_PEERS))
    // until a heartbeat announced it, the long period changes neither the detector's clock nor the lease
    expect(m.leaseMs).toBe(DEAD / 2)
    const before = m.members().find(p => p.peerId === 'peer-1')?.silentMs ?? 0
    clock.t += 2.5 * long
    m.tick()
    expect(m.get('peer-1')?.silentMs).toBe(before + 2 * HB)
    // announced: one quiet tick a long period later ages a silent peer by that whole period
    m.announced(long)
    clock.t += long
    m.tick()
    expect(m.get('peer-1')?.silentMs).toBe(before + 2 * HB + long)
    // a stall longer than two of them still counts as two
    clock.t += 60_000
    m.tick()
    expect(m.get('peer-1')?.silentMs).toBe(before + 2 * HB + long + 2 * long)
    // the lease takes the shorter of the last two periods announced, and at least half of deadAfter
    expect(m.leaseMs).toBe(DEAD / 2)
    m.announced(5 * long)
    expect(m.leaseMs).toBe(Math.max(DEAD / 2, Math.ceil(1.25 * long)))
    m.announced(5 * long)
    expect(m.leaseMs).toBe(Math.ceil(1.25 * 5 * long))
    // shorter than peers take to hold this node dead: 1.5 announced periods (and deadAfter)
    expect(m.leaseMs).toBeLessThan(Math.max(DEAD, 1.5 * 5 * long))
    // never longer than a presence message may announce, however large the mesh
    peers(100 * PRESENCE_FULL_RATE_PEERS, 2 * PRESENCE_FULL_RATE_PEERS + 10)
    expect(m.periodMs(false)).toBe(MAX_PRESENCE_EVERY_MS)
    expect(decodePresence(encodePresence(presence({ every: m.periodMs(false) })))?.every).toBe(MAX_PRESENCE_EVERY_MS)
  })

  it('rejects deadAfter below suspectAfter', () => {
    expect(() => new Membership({ suspectAfterMs: 5000, deadAfterMs: 1000 })).toThrow(RangeError)
  })
})

describe('presence codec', () => {
  it('round-trips and rejects malformed messages', () => {
    const p = presence({ heads: ['a'.repeat(64)], running: ['t-1'] })
    expect(decodePresence(encodePresence(p))).toEqual(p)
    expect(decodePresence(new TextEncoder().encode('{not json'))).toBeNull()
    expect(decodePresence(new TextEncoder().encode(JSON.stringify({ ...p, v: 2 })))).toBeNull()
    expect(decodePresence(new TextEncoder().encode(JSON.stringify({ ...p, heads: ['xyz'] })))).toBeNull()
    expect(decodePresence(new TextEncoder().encode(JSON.stringify({ ...p, running: Array.from({ length: 300 }, (_, i) => `t${i}`) })))).toBeNull()
    expect(decodePresence(new Uint8Array([0xff, 0xfe, 0x00]))).toBeNull()
  })
})

function expectNamedError (fn: () => unknown, name: string, pattern?: RegExp): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, `expected a ${name}`).toBeInstanceOf(Error)
  expect((caught as Error).name).toBe(name)
  expect(caught).toBeInstanceOf(UsageError) // exit code 2 in the CLI
  if (pattern !== undefined) expect((caught as Error).message).toMatch(pattern)
}

describe('swarm key', () => {
  it('formats as the pnet file and parses back', () => {
    const key = generateSwarmKey()
    const text = new TextDecoder().decode(key.psk)
    expect(text).toBe(`/key/swarm/psk/1.0.0/\n/base16/\n${key.hex}`)
    const parsed = parseSwarmKey(text + '\n')
    expect(parsed.hex).toBe(key.hex)
    expect(parsed.meshId).toBe(key.meshId)
    expect(parsed.meshId).toMatch(/^[0-9a-f]{16}$/)
    // CRLF and surrounding blank lines are tolerated; upper-case hex is normalised
    expect(parseSwarmKey(`\r\n/key/swarm/psk/1.0.0/\r\n/base16/\r\n${key.hex.toUpperCase()}\r\n`).hex).toBe(key.hex)
    expect(generateSwarmKey().meshId).not.toBe(key.meshId)
  })

  it('names what is wrong with a bad key (SwarmKeyError)', () => {
    const hex = 'ab'.repeat(32)
    expectNamedError(() => parseSwarmKey(''), 'SwarmKeyError', /not a libp2p pnet swarm key/)
    expectNamedError(() => parseSwarmKey(`/key/swarm/psk/2.0.0/\n/base16/\n${hex}`), 'SwarmKeyError', /not a libp2p pnet swarm key/)
    expectNamedError(() => parseSwarmKey(`/key/swarm/psk/1.0.0/\n/base64/\n${hex}`), 'SwarmKeyError', /not a libp2p pnet swarm key/)
    expectNamedError(() => parseSwarmKey('/key/swarm/psk/1.0.0/\n/base16/\n'), 'SwarmKeyError', /not a libp2p pnet swarm key/)
    expectNamedError(() => parseSwarmKey(`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(1)}`, 'my.key'), 'SwarmKeyError', /^my\.key: the key line must be 64 hex digits/)
    expectNamedError(() => parseSwarmKey(`/key/swarm/psk/1.0.0/\n/base16/\n${'zz'.repeat(32)}`), 'SwarmKeyError', /64 hex digits/)
    expectNamedError(() => swarmKeyFromHex('1234'), 'SwarmKeyError', /64 hex digits/)
  })

  it('reads and writes key files (0600, never overwriting)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshwork-key-'))
    try {
      const key = generateSwarmKey()
      const file = join(dir, 'swarm.key')
      await writeSwarmKey(file, key)
      expect((await readSwarmKey(file)).hex).toBe(key.hex)
      await expect(writeSwarmKey(file, generateSwarmKey())).rejects.toMatchObject({ name: 'SwarmKeyError', message: expect.stringMatching(/already exists/) })
      expect((await readSwarmKey(file)).hex).toBe(key.hex)
      await expect(readSwarmKey(join(dir, 'missing.key'))).rejects.toMatchObject({ name: 'SwarmKeyError', message: expect.stringMatching(/cannot read the swarm key file .*ENOENT/) })
      await writeFile(join(dir, 'junk.key'), 'hello\n')
      await expect(readSwarmKey(join(dir, 'junk.key'))).rejects.toMatchObject({ name: 'SwarmKeyError', message: expect.stringContaining('junk.key is not a libp2p pnet swarm key') })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('join token', () => {
  it('round-trips the key and the bootstrap addresses', () => {
    const key = generateSwarmKey()
    const addrs = ['/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWExample', '/dns4/example.org/tcp/4001']
    const token = encodeJoinToken(key, addrs)
    expect(token).toMatch(/^mw1:[A-Za-z0-9_-]+$/)
    const info = decodeJoinToken(`  ${token}\n`)
    expect(info.key.hex).toBe(key.hex)
    expect(info.key.meshId).toBe(key.meshId)
    expect(info.key.psk).toEqual(key.psk)
    expect(info.bootstrap).toEqual(addrs)
    expect(decodeJoinToken(encodeJoinToken(key, [])).bootstrap).toEqual([])
  })

  it('refuses garbage with a JoinTokenError', () => {
    const b64 = (s: string): string => 'mw1:' + Buffer.from(s).toString('base64url')
    const hex = 'cd'.repeat(32)
    expectNamedError(() => decodeJoinToken(''), 'JoinTokenError', /must start with "mw1:"/)
    expectNamedError(() => decodeJoinToken('hello world'), 'JoinTokenError', /must start with "mw1:"/)
    expectNamedError(() => decodeJoinToken('mw1:!!!not-base64'), 'JoinTokenError', /not base64url JSON/)
    expectNamedError(() => decodeJoinToken(b64('{"k":')), 'JoinTokenError', /not base64url JSON/)
    expectNamedError(() => decodeJoinToken(b64('{"a":[]}')), 'JoinTokenError', /no key/)
    expectNamedError(() => decodeJoinToken(b64(`{"k":"${hex}"}`)), 'JoinTokenError', /no address list/)
    expectNamedError(() => decodeJoinToken(b64(`{"k":"${hex}","a":[1]}`)), 'JoinTokenError', /no address list/)
    expectNamedError(() => decodeJoinToken(b64('{"k":"abc","a":[]}')), 'JoinTokenError', /not 64 hex digits/)
    expectNamedError(() => decodeJoinToken(b64('42')), 'JoinTokenError')
    expectNamedError(() => decodeJoinToken(b64('null')), 'JoinTokenError', /not a JSON object/)
  })
})
