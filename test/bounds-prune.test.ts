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
