/**
 * Claim acknowledgements: a node sends its heads to the claimant alone over
 * `/meshwork/ack/1` (src/node/claim-acks.ts) once the claim is on disk; for a
 * claimant that does not take them so (an older version), the remote claim
 * brings this node's next heartbeat forward instead of adding a presence
 * message. Either way presence traffic no longer grows with nodes x claims.
 */
import { describe, it, expect, afterEach, vi } from 'vitest'
import { Heartbeats, ACK_DELAY_MS, ACK_MIN_GAP_MS, ADDRS_EVERY, ADDRS_FRESH_MS } from '../src/node/heartbeats.ts'
import { Membership, type Transition } from '../src/node/membership.ts'
import type { SignedMessage } from '@libp2p/gossipsub'
import type { Gossip } from '../src/node/gossip.ts'
import { Board } from '../src/crdt/board.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { silentLogger } from '../src/util/logger.ts'
import { decodePresence, encodePresence, type Presence } from '../src/protocol/presence.ts'
import { createMesh, waitAllAlive, waitConverged, type TestMesh } from './helpers/mesh.ts'
import { waitFor } from '../src/util/wait.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { ACK_PROTOCOL, ClaimAcks } from '../src/node/claim-acks.ts'
import type { StreamHost } from '../src/node/board-replication.ts'
import { FramedStream } from '../src/protocol/frame.ts'

const HB = 1000

/**
 * Heartbeats over a gossip that records what it publishes (sequence numbers in `sent`, whole messages in `messages`), on fake timers;
 * `deliver` hands it a peer's heartbeat as gossip would (validated), `transitions` records the failure detector's changes.
 */
function heartbeats (opts: { addrs?: () => string[], startedAt?: number, loopBusyMs?: () => number, membership?: Membership } = {}): { hb: Heartbeats, sent: number[], messages: Presence[], transitions: Transition[], deliver: (p: Presence) => void } {
  const sent: number[] = []
  const messages: Presence[] = []
  const transitions: Transition[] = []
  let handler: ((msg: SignedMessage, from: string) => void) | null = null
  const gossip = {
    route: (_topic: string, h: { handle: (msg: SignedMessage, from: string) => void }) => { handler = h.handle },
    subscribe: () => {},
    publish: async (_topic: string, data: Uint8Array) => {
      const p = decodePresence(data)
      expect(p).not.toBeNull()
      sent.push(p?.seq ?? -1)
      if (p !== null) messages.push(p)
    }
  } as unknown as Gossip
  const startedAt = opts.startedAt ?? 0
  const hb = new Heartbeats({
    announce: true,
    gossip,
    topic: 'presence',
    membership: opts.membership ?? new Membership({ heartbeatMs: HB }),
    board: Board.create('acks-mesh', 'aa'.repeat(16)),
    peerId: () => asPeerId('12D3KooWself'),
    name: 'self',
    slots: () => 1,
    eligible: () => true,
    startedAt: () => startedAt,
    addrs: opts.addrs ?? (() => []),
    peerHeads: () => {},
    peerAddrs: () => {},
    onTransition: t => { transitions.push(t) },
    onPresence: () => {},
    ...(opts.loopBusyMs !== undefined ? { loopBusyMs: opts.loopBusyMs } : {}),
    logger: silentLogger
  })
  const deliver = (p: Presence): void => { handler?.({ data: encodePresence(p) } as unknown as SignedMessage, p.peerId) }
  return { hb, sent, messages, transitions, deliver }
}

describe('acknowledgements as early heartbeats', () => {
  afterEach(() => { vi.useRealTimers() })

  it('an acknowledgement replaces the next heartbeat: the period restarts from it', async () => {
    vi.useFakeTimers()
    const { hb, sent } = heartbeats()
    hb.afterStart()
    expect(sent.length).toBe(1)
    await vi.advanceTimersByTimeAsync(HB)
    expect(sent.length).toBe(2)
    await vi.advanceTimersByTimeAsync(400)
    hb.ackSoon()
    await vi.advanceTimersByTimeAsync(ACK_DELAY_MS)
    expect(sent.length).toBe(3)
    expect(hb.acksSent).toBe(1)
    // the heartbeat that was due 600 ms after the acknowledgement is not sent: the next is a period after it
    await vi.advanceTimersByTimeAsync(HB - 1)
    expect(sent.length).toBe(3)
    await vi.advanceTimersByTimeAsync(1)
    expect(sent.length).toBe(4)
    // four messages in 2.4 s: the same as heartbeats alone would have sent by 3 s
    hb.stop()
  })

  it('a burst of claims is acknowledged by one message, and acknowledgements keep ACK_MIN_GAP_MS apart', async () => {
    vi.useFakeTimers()
    const { hb, sent } = heartbeats()
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(300)
    for (let i = 0; i < 10; i++) {
      hb.ackSoon()
      await vi.advanceTimersByTimeAsync(2)
    }
    await vi.advanceTimersByTimeAsync(ACK_DELAY_MS)
    expect(sent.length).toBe(2)
    // another claim right after: its acknowledgement waits for the gap, then goes
    hb.ackSoon()
    await vi.advanceTimersByTimeAsync(ACK_MIN_GAP_MS - ACK_DELAY_MS - 10)
    expect(sent.length).toBe(2)
    await vi.advanceTimersByTimeAsync(ACK_DELAY_MS + 10)
    expect(sent.length).toBe(3)
    expect(hb.acksSent).toBe(2)
    // an acknowledgement the regular heartbeat (due 10 ms from now) carries anyway adds nothing
    await vi.advanceTimersByTimeAsync(HB - 30)
    hb.ackSoon()
    await vi.advanceTimersByTimeAsync(ACK_MIN_GAP_MS)
    expect(sent.length).toBe(4)
    expect(hb.acksSent).toBe(2)
    hb.stop()
  })
})

describe('the failure detector while the event loop is quiet', () => {
  afterEach(() => { vi.useRealTimers() })

  it('ticks at the heartbeats and when a timeout falls due, not four times a period, and declares a silent peer on time', async () => {
    vi.useFakeTimers()
    // an event loop that is never busy: every period is quiet
    const { hb, transitions, deliver } = heartbeats({ loopBusyMs: () => 0 })
    const peer: Presence = { v: 1, peerId: asPeerId('12D3KooWpeer'), name: 'p', slots: 1, running: [], heads: [], addrs: [], lagMs: 0, load: 0, rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 0, leaving: false }
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(2 * HB)
    for (let i = 0; i < 5; i++) {
      deliver({ ...peer, seq: i })
      // between heartbeats only the next heartbeat is set: the peer's timeout is further off
      expect(vi.getTimerCount()).toBe(1)
      await vi.advanceTimersByTimeAsync(HB)
    }
    expect(transitions).toEqual([{ peerId: peer.peerId, from: null, to: 'alive' }])
    // silent from now on: suspect once suspectAfter has passed since its last heartbeat, within a few ms, though no heartbeat of this node falls then
    const last = Date.now() - HB
    await vi.advanceTimersByTimeAsync(last + 3000 - Date.now() - 1)
    expect(transitions.length).toBe(1)
    await vi.advanceTimersByTimeAsync(5)
    expect(transitions.at(-1)).toEqual({ peerId: peer.peerId, from: 'alive', to: 'suspect' })
    await vi.advanceTimersByTimeAsync(last + 10_000 - Date.now() - 1)
    expect(transitions.length).toBe(2)
    await vi.advanceTimersByTimeAsync(5)
    expect(transitions.at(-1)).toEqual({ peerId: peer.peerId, from: 'suspect', to: 'dead' })
    hb.stop()
  })

  it('ticks four times a period again once the loop was busy (the ticks measure its lag)', async () => {
    vi.useFakeTimers()
    let busy = 0
    const { hb } = heartbeats({ loopBusyMs: () => busy })
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(2 * HB)
    expect(vi.getTimerCount()).toBe(1)
    // 60 ms of work in the next period: from the heartbeat after it, a tick every quarter period beside the heartbeat
    busy += 60
    await vi.advanceTimersByTimeAsync(HB)
    expect(vi.getTimerCount()).toBe(2)
    await vi.advanceTimersByTimeAsync(HB / 4)
    expect(vi.getTimerCount()).toBe(2)
    // quiet again: back to the heartbeats alone
    await vi.advanceTimersByTimeAsync(HB)
    expect(vi.getTimerCount()).toBe(1)
    hb.stop()
  })
})

describe('calm heartbeats', () => {
  afterEach(() => { vi.useRealTimers() })

  it('a calm node beats a calm period apart and says so (`every`); busy again, a period apart; an acknowledgement still goes at once', async () => {
    vi.useFakeTimers()
    const membership = new Membership({ heartbeatMs: HB })
    const { hb, messages } = heartbeats({ membership })
    let calm = true
    hb.setExtras(() => ({ calm }))
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(3 * 2 * HB)
    expect(messages.length).toBe(4)
    expect(messages.every(m => m.every === 2 * HB)).toBe(true)
    // an acknowledgement while calm is not held to the calm period
    await vi.advanceTimersByTimeAsync(HB)
    hb.ackSoon()
    await vi.advanceTimersByTimeAsync(ACK_DELAY_MS)
    expect(messages.length).toBe(5)
    // busy: the beat already announced comes a calm period after the last, and the next a period after it, without `every`
    calm = false
    await vi.advanceTimersByTimeAsync(2 * HB - ACK_DELAY_MS)
    expect(messages.length).toBe(5)
    await vi.advanceTimersByTimeAsync(ACK_DELAY_MS)
    expect(messages.length).toBe(6)
    expect(messages.at(-1)?.every).toBeUndefined()
    await vi.advanceTimersByTimeAsync(HB)
    expect(messages.length).toBe(7)
    hb.stop()
  })

  it('no calm period when the suspect timeout leaves no room for one; the last heartbeat of a stop carries none', async () => {
    vi.useFakeTimers()
    const membership = new Membership({ heartbeatMs: HB, suspectAfterMs: 1200, deadAfterMs: 5000 })
    const { hb, messages } = heartbeats({ membership })
    hb.setExtras(() => ({ calm: true }))
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(3 * HB)
    expect(messages.length).toBe(4)
    expect(messages.every(m => m.every === undefined)).toBe(true)
    expect(hb.presence(true).every).toBeUndefined()
    hb.stop()
  })
})

describe('heartbeat payload', () => {
  afterEach(() => { vi.useRealTimers() })

  it('addresses go out while the node is new, when they change, when a peer comes alive and every ADDRS_EVERY beats; defaults are left out', async () => {
    vi.useFakeTimers()
    let addrs = ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWself']
    const { hb, messages } = heartbeats({ addrs: () => addrs, startedAt: Date.now() })
    hb.afterStart()
    await vi.advanceTimersByTimeAsync(ADDRS_FRESH_MS - 1)
    // new: every beat carries them
    expect(messages.length).toBe(ADDRS_FRESH_MS / HB)
    expect(messages.every(m => m.addrs.length === 1)).toBe(true)
    // ok health and leader eligibility are what an absent field means: not sent
    expect(messages.every(m => m.health === undefined && m.eligible === undefined && m.heads.length === 1)).toBe(true)
    await vi.advanceTimersByTimeAsync(2 * ADDRS_EVERY * HB)
    const settled = messages.slice(ADDRS_FRESH_MS / HB)
    expect(settled.filter(m => m.addrs.length > 0).length).toBe(2)
    // a change goes in the next beat
    addrs = [...addrs, '/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWself']
    await vi.advanceTimersByTimeAsync(HB)
    expect(messages.at(-1)?.addrs.length).toBe(2)
    await vi.advanceTimersByTimeAsync(HB)
    expect(messages.at(-1)?.addrs.length).toBe(0)
    // a peer that comes alive may not know them: sent again for a while
    hb.peerCameAlive()
    await vi.advanceTimersByTimeAsync(3 * HB)
    expect(messages.slice(-3).every(m => m.addrs.length === 2)).toBe(true)
    hb.stop()
  })

  it('a receiver keeps the addresses it heard last when a heartbeat carries none', () => {
    const m = new Membership({ heartbeatMs: HB })
    const base: Presence = { v: 1, peerId: asPeerId('12D3KooWpeer'), name: 'p', slots: 1, running: [], heads: [], addrs: ['/ip4/10.0.0.3/tcp/4001'], lagMs: 0, load: 0, rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 0, leaving: false }
    m.heartbeat(base)
    m.heartbeat({ ...base, seq: 1, addrs: [] })
    expect(m.get('12D3KooWpeer')?.addrs).toEqual(['/ip4/10.0.0.3/tcp/4001'])
    expect(m.get('12D3KooWpeer')?.eligible).toBe(true)
    expect(m.get('12D3KooWpeer')?.health?.state).toBe('ok')
  })
})

let mesh: TestMesh | undefined
afterEach(async () => { await mesh?.stop(); mesh = undefined })

describe('claims acknowledged over a real mesh', () => {
  // a long period: only an acknowledgement sent at once can show a claim to its claimant within a second or two
  const heartbeatMs = 6000
  const timing = { heartbeatMs, suspectAfterMs: 3 * heartbeatMs, deadAfterMs: 10 * heartbeatMs }

  /** Claims t-0..t-2 on `a` one after another; waits until both peers acknowledged each (`acked`: whether a knows `peer` saw `hash`). */
  async function claimAll (a: TestMesh['nodes'][number], peers: Array<TestMesh['nodes'][number]>, acked: (peer: string, hash: string) => boolean): Promise<void> {
    a.changeBoard('plan', addTasks([0, 1, 2].map(i => simpleTask(`t-${i}`))))
    await waitConverged(mesh?.nodes ?? [], 20_000, n => n.board.snapshot().tasks.size === 3)
    for (const i of [0, 1, 2]) {
      const id = `t-${i}` as TaskId
      const hash = a.changeBoardHash('tasks:claim', d => { lifecycle.claim(d, id, a.peerId, 0, Date.now()) })
      expect(hash).not.toBeNull()
      for (const peer of peers) {
        await waitFor(() => acked(peer.peerId, hash as string), {
          timeoutMs: 2500,
          message: `${peer.name} did not acknowledge claim ${i} within 2.5 s (its regular heartbeat comes every ${heartbeatMs} ms)`
        })
      }
    }
  }

  it('each remote claim is acknowledged to its claimant alone, long before the next regular heartbeat: no presence message brought forward', async () => {
    mesh = await createMesh(3, timing)
    await waitAllAlive(mesh.nodes, 60_000)
    const [a, b, c] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0], typeof mesh.nodes[0]]
    // what a heard from each peer directly, newest last
    const heard = new Map<string, string[][]>()
    a.addEventListener('ack', evt => { heard.set(evt.detail.peerId, [...(heard.get(evt.detail.peerId) ?? []), evt.detail.heads]) })
    const sentBefore = [b, c].map(n => n.stats.gossipSent.messages)
    const started = Date.now()
    await claimAll(a, [b, c], (peer, hash) => (heard.get(peer) ?? []).some(h => a.board.seenBy(h, hash) === true))
    const elapsed = Date.now() - started
    for (const [k, peer] of [b, c].entries()) {
      // it wrote nothing on the board: all it gossiped is regular heartbeats, none brought forward
      expect(peer.stats.gossipSent.messages - (sentBefore[k] as number)).toBeLessThanOrEqual(1 + Math.ceil(elapsed / heartbeatMs))
      expect(peer.stats.claimAcks.sent).toBeGreaterThanOrEqual(3)
      expect(peer.stats.claimAcks.failed).toBe(0)
    }
    expect(a.stats.claimAcks.received).toBeGreaterThanOrEqual(6)
  }, 90_000)

  it('a claimant that does not take direct acknowledgements (an older version) gets them as heartbeats brought forward', async () => {
    mesh = await createMesh(0, timing)
    const a = await mesh.add({ directAcks: false })
    const b = await mesh.add()
    const c = await mesh.add()
    await waitAllAlive(mesh.nodes, 60_000)
    const sentBefore = b.stats.gossipSent.messages
    const started = Date.now()
    // the claim counts as seen by a peer once its heartbeat heads (on a's side) contain it
    await claimAll(a, [b, c], (peer, hash) => a.board.seenBy(a.membership.get(peer)?.heads ?? [], hash) === true)
    const elapsed = Date.now() - started
    // one presence message per claim at most, plus regular beats; nothing sent directly to a
    expect(b.stats.gossipSent.messages - sentBefore).toBeLessThanOrEqual(3 + Math.ceil(elapsed / heartbeatMs))
    expect(b.stats.claimAcks.sent + c.stats.claimAcks.sent).toBe(0)
    expect(a.stats.claimAcks.received).toBe(0)
  }, 90_000)

  it('garbage on the acknowledgement protocol closes that stream and counts nothing; the node goes on', async () => {
    mesh = await createMesh(2, timing)
    await waitAllAlive(mesh.nodes, 60_000)
    const [a, b] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0]]
    const acks: unknown[] = []
    a.addEventListener('ack', evt => { acks.push(evt.detail) })
    for (const body of [new TextEncoder().encode('{"heads":["not-a-hash"]}'), new TextEncoder().encode('not json'), new Uint8Array(9000)]) {
      const stream = await b.host.dialProtocol(peerIdFromString(a.peerId), ACK_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = new FramedStream(stream, { maxDataLength: 16 * 1024 })
      await lp.writeRaw(body, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
      await waitFor(() => stream.status !== 'open', { timeoutMs: 10_000, message: `a kept a stream open after ${body.length} bytes of garbage (status ${stream.status})` })
    }
    expect(acks).toEqual([])
    expect(a.stats.claimAcks.received).toBe(0)
    // a well-formed one still counts
    const stream = await b.host.dialProtocol(peerIdFromString(a.peerId), ACK_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    await new FramedStream(stream, { maxDataLength: 16 * 1024 }).writeRaw(new TextEncoder().encode(JSON.stringify({ heads: b.board.heads() })), { signal: AbortSignal.timeout(10_000) })
    await waitFor(() => acks.length === 1, { timeoutMs: 10_000, message: 'a well-formed acknowledgement never arrived' })
    expect(a.host.status).toBe('started')
    stream.abort(new Error('test done'))
  }, 90_000)
})

describe('direct acknowledgements that cannot go', () => {
  it('no connection to the claimant: not sent (the caller acknowledges by heartbeat); a claimant that refuses the protocol: tried twice, then handed back', async () => {
    let dials = 0
    const streams = {
      status: 'started',
      handle: async () => {},
      unhandle: async () => {},
      dialProtocol: async () => { dials++; throw new Error('protocol selection failed') }
    } as unknown as StreamHost
    const failed: string[] = []
    const stats = { sent: 0, received: 0, failed: 0 }
    const peer = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
    let connected = false
    const acks = new ClaimAcks({ streams, connected: () => connected, heads: () => [], onAck: () => {}, onFailed: p => { failed.push(p) }, stats, logger: silentLogger })
    expect(acks.send(peer)).toBe(false)
    await acks.start()
    expect(acks.send(peer)).toBe(false)
    expect(dials).toBe(0)
    connected = true
    expect(acks.send(peer)).toBe(true)
    await waitFor(() => failed.length === 1, { timeoutMs: 5000, message: 'the failed acknowledgement was never handed back' })
    expect(failed).toEqual([peer])
    expect(dials).toBe(2)
    expect(stats).toEqual({ sent: 0, received: 0, failed: 1 })
    acks.stop()
  })
})
