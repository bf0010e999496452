/**
 * Heartbeats (and board changes) are not forwarded to peers that hear their
 * author directly (src/node/presence-relay.ts): the bookkeeping alone on a
 * fake clock, then a real 4-node mesh, where each node gets about one copy of
 * each heartbeat, and keeps hearing an author whose link to it was cut (and
 * getting its board changes) through the others, without ever suspecting it.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { PresenceRelay, peerTag, DIRECT_FRESH_PERIODS, REPORT_FRESH_PERIODS } from '../src/node/presence-relay.ts'
import { decodePresence } from '../src/protocol/presence.ts'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Transition } from '../src/node/membership.ts'
import type { Presence } from '../src/protocol/presence.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'

const PERIOD = 1000

function relay (): { r: PresenceRelay, clock: { now: number } } {
  const clock = { now: 1_000_000 }
  return { r: new PresenceRelay(() => PERIOD, () => clock.now), clock }
}

const A = peerTag(Uint8Array.from({ length: 38 }, (_, i) => i))
const B = peerTag(Uint8Array.from({ length: 38 }, (_, i) => 100 + i))

describe('presence relay bookkeeping', () => {
  it('tags are 8 base64url characters from the end of the peer id bytes, and a presence message carries a report', () => {
    expect(A).toMatch(/^[A-Za-z0-9_-]{8}$/)
    expect(A).not.toBe(B)
    const base = { v: 1, peerId: 'p', name: '', slots: 1, running: [], heads: [], addrs: [], lagMs: 0, load: 0, rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 0, leaving: false }
    const ok = decodePresence(Buffer.from(JSON.stringify({ ...base, direct: A + B })))
    expect(ok?.direct).toBe(A + B)
    expect(decodePresence(Buffer.from(JSON.stringify({ ...base, direct: A + 'x' })))).toBeNull()
    // absent: a sender of an earlier version
    expect(decodePresence(Buffer.from(JSON.stringify(base)))?.direct).toBeUndefined()
  })

  it('reports the authors heard directly lately, and only those; a lapse of one is noticed', () => {
    const { r, clock } = relay()
    r.heard(A, true, false)
    r.heard(B, false, false)
    expect(r.report()).toBe(A)
    expect(r.nextLapseIn(), 'nothing sent yet: nothing can lapse').toBeNull()
    r.sent(r.report())
    expect(r.lapsed()).toBe(false)
    // when a lapse falls due (the quiet failure detector sets its tick for then)
    expect(r.nextLapseIn()).toBe(DIRECT_FRESH_PERIODS * PERIOD)
    clock.now += DIRECT_FRESH_PERIODS * PERIOD - 1
    expect(r.lapsed()).toBe(false)
    expect(r.nextLapseIn()).toBe(1)
    clock.now += 2
    expect(r.lapsed()).toBe(true)
    expect(r.nextLapseIn()).toBe(0)
    expect(r.report()).toBe('')
    r.sent('')
    expect(r.lapsed()).toBe(false)
    expect(r.nextLapseIn()).toBeNull()
  })

  it('a calm author or reporter (a longer announced period) stays fresh for as many of its own periods', () => {
    const { r, clock } = relay()
    r.heard(A, true, false, 2 * PERIOD)
    r.heard(B, true, false)
    r.sent(r.report())
    expect(r.nextLapseIn()).toBe(DIRECT_FRESH_PERIODS * PERIOD)
    clock.now += DIRECT_FRESH_PERIODS * PERIOD + 1
    expect(r.report()).toBe(A)
    expect(r.lapsed(), 'B lapsed').toBe(true)
    r.sent(r.report())
    expect(r.nextLapseIn()).toBe(DIRECT_FRESH_PERIODS * 2 * PERIOD - DIRECT_FRESH_PERIODS * PERIOD - 1)
    clock.now += DIRECT_FRESH_PERIODS * PERIOD
    expect(r.lapsed()).toBe(true)
    r.peerReport('peer-c', A, 2 * PERIOD)
    r.peerReport('peer-d', A)
    clock.now += REPORT_FRESH_PERIODS * PERIOD + 1
    expect([...r.skipFor(A) ?? []]).toEqual(['peer-c'])
    clock.now += REPORT_FRESH_PERIODS * PERIOD
    expect(r.skipFor(A)).toBeNull()
  })

  it('skips the peers whose fresh report names the author, never a leaving author\'s last heartbeat', () => {
    const { r, clock } = relay()
    r.peerReport('peer-c', A + B)
    r.peerReport('peer-d', B)
    r.peerReport('peer-e', undefined)
    expect([...r.skipFor(A) ?? []]).toEqual(['peer-c'])
    expect([...r.skipFor(B) ?? []].sort()).toEqual(['peer-c', 'peer-d'])
    // among the peers a copy would go to only (a gossip mesh's few), whatever the others report
    expect([...r.skipFor(B, ['peer-d', 'peer-e', 'peer-f']) ?? []]).toEqual(['peer-d'])
    expect(r.skipFor(A, ['peer-d', 'peer-e'])).toBeNull()
    // a report with nothing in it, or none at all (an older peer): every copy
    r.peerReport('peer-d', '')
    expect([...r.skipFor(B) ?? []]).toEqual(['peer-c'])
    r.peerReport('peer-c', undefined)
    expect(r.skipFor(B)).toBeNull()
    r.peerReport('peer-c', A)
    r.heard(A, true, true)
    expect(r.skipFor(A)).toBeNull()
    r.heard(A, true, false)
    expect([...r.skipFor(A) ?? []]).toEqual(['peer-c'])
    // a report that stopped coming is not trusted
    clock.now += REPORT_FRESH_PERIODS * PERIOD + 1
    expect(r.skipFor(A)).toBeNull()
  })
})

describe('presence relay in a mesh', () => {
  let mesh: TestMesh | null = null
  afterEach(async () => { await mesh?.stop(); mesh = null })

  it('each node gets about one copy of each heartbeat; an author whose link was cut is still heard, never suspected', async () => {
    mesh = await createMesh(4)
    const nodes = mesh.nodes
    await waitAllAlive(nodes)
    const [a, b, c, d] = nodes
    if (a === undefined || b === undefined || c === undefined || d === undefined) throw new Error('mesh of 4 expected')
    const tag = (n: typeof a): string => peerTag(n.host.peerId.toMultihash().bytes)
    // every node hears every other directly and says so: reports name the other three
    const reports = new Map<string, string>()
    const onPresence = (evt: CustomEvent<Presence>): void => { reports.set(evt.detail.peerId, evt.detail.direct ?? '') }
    a.addEventListener('presence', onPresence)
    await waitFor(() => nodes.slice(1).every(n => reports.get(n.peerId)?.length === 24), { timeoutMs: 20_000, message: () => `reports: ${[...reports.values()].map(r => r.length / 8).join(', ')}` })
    a.removeEventListener('presence', onPresence)

    // copies that arrive per heartbeat delivered (the first copy of each): 3 in a 4-node mesh without the relay
    const copies0 = nodes.map(n => n.stats.gossipCopies.copies)
    const heard = nodes.map(() => 0)
    const counters = nodes.map((n, i) => {
      const f = (): void => { heard[i] = (heard[i] ?? 0) + 1 }
      n.addEventListener('presence', f)
      return f
    })
    await waitFor(() => heard.every(h => h >= 30), { timeoutMs: 30_000, message: () => `heartbeats heard: ${heard.join(', ')}` })
    nodes.forEach((n, i) => { n.removeEventListener('presence', counters[i] as () => void) })
    const ratios = nodes.map((n, i) => (n.stats.gossipCopies.copies - (copies0[i] ?? 0)) / (heard[i] ?? 1))
    expect(Math.max(...ratios), `copies per heartbeat: ${ratios.map(r => r.toFixed(2)).join(', ')}`).toBeLessThan(1.5)
    expect(nodes.every(n => n.stats.presenceForwardsSkipped > 0)).toBe(true)

    // a's board changes are not forwarded either: each of the others hears a directly
    const skipped0 = nodes.map(n => n.stats.forwardsSkipped)
    a.changeBoard('relay test', addTasks([simpleTask('relay-1')]))
    await waitFor(() => nodes.every(n => n.board.task('relay-1') !== undefined), { timeoutMs: 20_000, message: 'a board change of a did not reach every node' })
    await waitFor(() => nodes.slice(1).some((n, i) => n.stats.forwardsSkipped > (skipped0[i + 1] ?? 0)), { timeoutMs: 10_000, message: 'no node left out a forward of a board change' })

    // cut the link between a and c: c hears a through the two others from then on
    const transitions: Transition[] = []
    const onState = (evt: CustomEvent<Transition>): void => { if (evt.detail.peerId === a.peerId) transitions.push(evt.detail) }
    c.addEventListener('peer:state', onState)
    let fromA = 0
    const countA = (evt: CustomEvent<Presence>): void => { if (evt.detail.peerId === a.peerId) fromA++ }
    c.addEventListener('presence', countA)
    let reportOfC = ''
    const onC = (evt: CustomEvent<Presence>): void => { if (evt.detail.peerId === c.peerId) reportOfC = evt.detail.direct ?? '' }
    b.addEventListener('presence', onC)
    await mesh.partition([a], [c])
    expect(c.connectedPeers().map(p => p.toString())).not.toContain(a.peerId)
    // 12 heartbeats: four suspect timeouts' worth
    await waitFor(() => fromA >= 12, { timeoutMs: 30_000, message: () => `c heard ${fromA} heartbeats of a after the cut` })
    c.removeEventListener('presence', countA)
    c.removeEventListener('peer:state', onState)
    b.removeEventListener('presence', onC)
    expect(transitions).toEqual([])
    expect(c.membership.get(a.peerId)?.state).toBe('alive')
    // c's reports no longer name a (so b and d forward a's heartbeats to it), and still name b and d
    const named = (r: string): string[] => r.match(/.{8}/g) ?? []
    expect(named(reportOfC)).not.toContain(tag(a))
    expect(named(reportOfC).sort()).toEqual([tag(b), tag(d)].sort())
    // and a's board changes reach c through the others
    a.changeBoard('relay test', addTasks([simpleTask('relay-2')]))
    await waitFor(() => c.board.task('relay-2') !== undefined, { timeoutMs: 20_000, message: 'a board change of a did not reach c after the cut' })
  }, 90_000)
})
