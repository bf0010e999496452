/**
 * What a node keeps per peer or per task follows what is alive (issue 11,
 * case 9): per-peer stream limits forget quiet peers, the membership forgets
 * peers gone for long that the board does not register, and per-task memory
 * (failure back-offs, progress of finished tasks) goes with its task. Clocks
 * are injected: nothing here sleeps.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { PeerStreamLimiter } from '../src/node/peer-limits.ts'
import { Membership } from '../src/node/membership.ts'
import { dropOlderThan, dropUnless } from '../src/util/prune.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import type { Presence } from '../src/protocol/presence.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { addBounded, countBounded, setBounded, type Forgotten } from '../src/util/bounded.ts'
import { Allowlist } from '../src/node/allowlist.ts'
import { MAX_DENIED_REMEMBERED, MAX_REFUSED_AUTHORS } from '../src/node/constants.ts'
import { buildStatus } from '../src/api/status.ts'
import { renderStatus } from '../src/cli/render.ts'
import { decodeMembersView } from '../src/protocol/members.ts'

function presence (peerId: string, extra: Partial<Presence> = {}): Presence {
  return {
    v: 1, peerId: asPeerId(peerId), name: peerId, slots: 1, running: [], heads: [], addrs: [], lagMs: 0, load: 0, rssBytes: 0,
    backoffUntil: null, startedAt: 0, seq: 0, leaving: false, ...extra
  }
}

describe('per-peer stream limits', () => {
  it('admits up to maxConcurrent streams of a peer at once; others are unaffected', () => {
    let now = 0
    const l = new PeerStreamLimiter({ maxConcurrent: 2, perSecond: 5, burst: 20 }, () => now)
    const a1 = l.admit('A')
    const a2 = l.admit('A')
    expect(a1.ok && a2.ok).toBe(true)
    const a3 = l.admit('A')
    expect(a3).toEqual({ ok: false, reason: 'too-many-streams', first: true })
    // logged once: the next refusal of A is not a first
    expect(l.admit('A')).toEqual({ ok: false, reason: 'too-many-streams', first: false })
    expect(l.admit('B').ok).toBe(true)
    if (a1.ok) a1.release()
    if (a1.ok) a1.release() // a second release changes nothing
    expect(l.active('A')).toBe(1)
    now += 1000
    expect(l.admit('A').ok).toBe(true)
    expect(l.admit('A').ok).toBe(false)
  })

  it('refuses a peer that opens streams faster than the bucket refills, until it slows down', () => {
    let now = 0
    const l = new PeerStreamLimiter({ maxConcurrent: 100, perSecond: 5, burst: 10 }, () => now)
    const release = (): void => {
      const a = l.admit('A')
      if (!a.ok) throw new Error(`refused: ${a.reason}`)
      a.release()
    }
    for (let i = 0; i < 10; i++) release()
    expect(l.admit('A')).toMatchObject({ ok: false, reason: 'too-fast' })
    // another peer has its own bucket
    expect(l.admit('B').ok).toBe(true)
    now += 200 // one token back at 5 a second
    release()
    expect(l.admit('A')).toMatchObject({ ok: false, reason: 'too-fast', first: false })
    now += 2000
    for (let i = 0; i < 10; i++) release()
    expect(l.admit('A').ok).toBe(false)
  })

  it('prune drops peers that hold no stream and whose bucket is full again', () => {
    let now = 0
    const l = new PeerStreamLimiter({ maxConcurrent: 4, perSecond: 5, burst: 10 }, () => now)
    const held = l.admit('holder')
    const quick = l.admit('quick')
    if (quick.ok) quick.release()
    for (let i = 0; i < 10; i++) { const a = l.admit('busy'); if (a.ok) a.release() }
    expect(l.size).toBe(3)
    expect(l.prune()).toBe(0) // every bucket is short of a token or more
    now += 250 // quick's one token is back; busy needs 2 s
    expect(l.prune()).toBe(1)
    expect(l.size).toBe(2)
    now += 5000
    expect(l.prune()).toBe(1) // busy is quiet again; holder still holds a stream
    expect(l.size).toBe(1)
    expect(l.active('holder')).toBe(1)
    if (held.ok) held.release()
    expect(l.prune()).toBe(1)
    expect(l.size).toBe(0)
  })
})

describe('membership pruning', () => {
  it('drops peers dead or left for long that the board does not register, and keeps the rest', () => {
    let now = 1_000_000
    const m = new Membership({ heartbeatMs: 100, suspectAfterMs: 300, deadAfterMs: 1000, now: () => now })
    const tick = (ms: number): void => {
      for (let t = 0; t < ms; t += 100) { now += 100; m.tick() }
    }
    m.heartbeat(presence('gone'))
    m.heartbeat(presence('registered'))
    m.heartbeat(presence('left'))
    m.heartbeat(presence('left', { leaving: true, seq: 1 }))
    m.heartbeat(presence('alive'))
    m.seed(asPeerId('seeded'), 'seeded', 1, false)
    const board = new Set(['registered', 'seeded'])
    const keep = (p: string): boolean => board.has(p)
    // everyone but 'alive' goes quiet; 'alive' keeps beating
    for (let i = 0; i < 30; i++) { tick(100); m.heartbeat(presence('alive', { seq: i + 1 })) }
    expect(m.get('gone')?.state).toBe('dead')
    // dead, but not for long yet
    expect(m.prune(60_000, keep)).toEqual([])
    for (let i = 0; i < 600; i++) { tick(100); m.heartbeat(presence('alive', { seq: 100 + i })) }
    expect(m.prune(60_000, keep).sort()).toEqual(['gone', 'left'])
    expect(m.get('gone')).toBeUndefined()
    expect(m.get('left')).toBeUndefined()
    // registered on the board: kept (it still counts toward the majority; the board would seed it again)
    expect(m.get('registered')?.state).toBe('dead')
    expect(m.get('seeded')?.state).toBe('dead')
    expect(m.get('alive')?.state).toBe('alive')
    expect(m.size).toBe(3)
    // a pruned peer that speaks again is simply known again
    m.heartbeat(presence('gone', { seq: 9 }))
    expect(m.get('gone')?.state).toBe('alive')
    // once the board no longer keeps it, a registered peer goes too
    board.delete('registered')
    expect(m.prune(60_000, keep)).toEqual(['registered'])
  })
})

describe('per-task memory', () => {
  it('dropOlderThan drops back-offs that ran out; dropUnless drops entries of tasks that are over', () => {
    const failedAt = new Map<string, number>([['a', 1000], ['b', 5000], ['c', 5999]])
    expect(dropOlderThan(failedAt, 10_000, 5000)).toBe(2)
    expect([...failedAt.keys()]).toEqual(['c'])
    const state = new Map<string, string>([['a', 'merged'], ['b', 'done'], ['c', 'cancelled']])
    const seen = new Map<string, string>([['a', 'h1'], ['b', 'h2'], ['c', 'h3'], ['gone', 'h4']])
    expect(dropUnless(seen, id => state.get(id) === 'done')).toBe(3)
    expect([...seen.keys()]).toEqual(['b'])
  })

  let mesh: TestMesh | undefined
  afterEach(async () => {
    await mesh?.stop()
    mesh = undefined
  })

  it('a node forgets the progress of tasks that are over', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]
    if (node === undefined) throw new Error('no node')
    node.changeBoard('test:add', addTasks([simpleTask('running-one'), simpleTask('cancelled-one')]))
    node.publishProgress('running-one', 'text', 'working')
    node.publishProgress('cancelled-one', 'text', 'working too')
    expect(Object.keys(node.membersView().progress ?? {}).sort()).toEqual(['cancelled-one', 'running-one'])
    node.prune()
    expect(Object.keys(node.membersView().progress ?? {}).sort()).toEqual(['cancelled-one', 'running-one'])
    node.changeBoard('test:cancel', d => { lifecycle.cancel(d, 'cancelled-one' as TaskId) })
    expect(node.board.task('cancelled-one' as TaskId)?.state).toBe('cancelled')
    node.prune()
    expect(Object.keys(node.membersView().progress ?? {})).toEqual(['running-one'])
  })
})

describe('what peers can make up without end is bounded', () => {
  it('countBounded keeps the keys counted most recently and counts what it forgot', () => {
    const counts: Record<string, number> = {}
    const forgotten: Forgotten = { keys: 0, total: 0 }
    for (const k of ['p1', 'p2', 'p3']) countBounded(counts, k, 3, forgotten)
    countBounded(counts, 'p1', 3, forgotten, 4)
    // p2 was counted least recently: it goes for p4, with its count
    countBounded(counts, 'p4', 3, forgotten)
    expect(counts).toEqual({ p3: 1, p1: 5, p4: 1 })
    expect(forgotten).toEqual({ keys: 1, total: 1 })
    countBounded(counts, 'p5', 3, forgotten)
    expect(Object.keys(counts)).toEqual(['p1', 'p4', 'p5'])
    expect(forgotten).toEqual({ keys: 2, total: 2 })
    const set = new Set<string>()
    expect([1, 2, 3, 4].map(i => addBounded(set, `k${i}`, 2))).toEqual([0, 0, 1, 1])
    expect([...set]).toEqual(['k3', 'k4'])
    expect(addBounded(set, 'k4', 2)).toBe(0)
    // a map the same way: a new key past the bound drops the oldest, a known key is only updated
    const map = new Map<string, number>()
    for (const i of [1, 2, 3]) setBounded(map, `k${i}`, i, 2)
    expect([...map]).toEqual([['k2', 2], ['k3', 3]])
    setBounded(map, 'k2', 20, 2)
    expect([...map]).toEqual([['k2', 20], ['k3', 3]])
  })

  it('--allow remembers at most maxDenied refused peers (each logged once while remembered), and counts the forgotten', () => {
    expect(MAX_DENIED_REMEMBERED).toBe(1024)
    const allow = new Allowlist([])
    allow.maxDenied = 4
    const logged: string[] = []
    allow.onDenied = peer => { logged.push(peer) }
    // the gater's checks read only the peer id's text
    type Check = (peer: { toString: () => string }) => boolean
    const gater = allow.gater() as unknown as { denyInboundEncryptedConnection: Check, denyOutboundEncryptedConnection: Check }
    const peer = (i: number): { toString: () => string } => ({ toString: () => `intruder-${i}` })
    for (let i = 0; i < 10; i++) expect(gater.denyInboundEncryptedConnection(peer(i))).toBe(true)
    expect(allow.deniedRemembered).toBe(4)
    expect(allow.deniedForgotten).toBe(6)
    expect(logged).toHaveLength(10)
    // a remembered peer is not logged again; a forgotten one is
    gater.denyOutboundEncryptedConnection(peer(9))
    expect(logged).toHaveLength(10)
    gater.denyOutboundEncryptedConnection(peer(0))
    expect(logged).toHaveLength(11)
    expect(allow.deniedRemembered).toBe(4)
  })

  let mesh: TestMesh | undefined
  afterEach(async () => {
    await mesh?.stop()
    mesh = undefined
  })

  it('refused-change counts by author keep the newest MAX_REFUSED_AUTHORS; members, status and its text say how many more', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    // as the replication counts each refused change (board-replication.ts)
    for (let i = 0; i < MAX_REFUSED_AUTHORS + 5; i++) countBounded(node.stats.refusedAuthors, `author-${i}`, MAX_REFUSED_AUTHORS, node.stats.refusedForgotten)
    countBounded(node.stats.refusedAuthors, 'author-300', MAX_REFUSED_AUTHORS, node.stats.refusedForgotten, 2)
    const view = decodeMembersView(new TextEncoder().encode(JSON.stringify(node.membersView())), 'n0')
    expect(Object.keys(view.refused ?? {})).toHaveLength(MAX_REFUSED_AUTHORS)
    expect(view.refused?.['author-0']).toBeUndefined()
    expect(view.refused?.['author-300']).toBe(2)
    expect(view.refusedForgotten).toEqual({ authors: 6, changes: 6 })
    const report = buildStatus(node.board.snapshot(), view)
    expect(report.refusedForgotten).toEqual({ authors: 6, changes: 6 })
    expect(renderStatus(report, node.peerId)).toMatch(/REFUSED board changes: .*thor-300 2; 6 more by 6 other authors/)
  })
})
