import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { detachedDoc, keysAt, loadDetached, readPath } from '../src/crdt/detached.ts'
import { ChangedPlaces, DocMirror } from '../src/crdt/mirror.ts'
import { objectPaths } from '../src/crdt/authors.ts'
import { chunkFramingProblem } from '../src/crdt/chunks.ts'
import { Board, actorForPeer, plain, str } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as L from '../src/crdt/lifecycle.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { BoardCorruptError } from '../src/util/errors.ts'

/*
 * The board's document is detached (no object tree of Automerge's) and its
 * entries are read from a plain copy kept up to date from patches
 * (detached.ts, mirror.ts): the copy must always say what the document says.
 */

/** A small deterministic generator (mulberry32). */
function rng (seed: number): () => number {
  return () => {
    seed |= 0; seed = seed + 0x6d2b79f5 | 0
    let t = Math.imul(seed ^ seed >>> 15, 1 | seed)
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t
    return ((t ^ t >>> 14) >>> 0) / 4294967296
  }
}

/** A value as JSON would show it, with Automerge's scalars as plain values: how the copy and the document are compared. */
function norm (v: unknown): unknown {
  if (v instanceof A.Counter) return { counter: v.value }
  return JSON.parse(JSON.stringify(plain(v) ?? null))
}

type Doc = Record<string, any>

/** The places the changes `doc` has beyond `heads` wrote (what the board notes for an update). */
function placesSince (doc: A.Doc<Doc>, heads: string[]): ChangedPlaces {
  const places = new ChangedPlaces()
  const backend = A.getBackend(doc)
  for (const m of A.getChangesMetaSince(doc, heads)) places.note(A.decodeChange(backend.getChangeByHash(m.hash) as Uint8Array), objectPaths(doc))
  return places
}

describe('a detached document', () => {
  it('keeps no object tree: its root object stays empty while its content grows, and a clone of it is detached too', () => {
    const g = A.change(A.init<Doc>({ actor: 'aa' }), d => { d.tasks = {} })
    const doc = detachedDoc<Doc>('bb', b => { b.applyChanges(A.getAllChanges(g)) })
    const patches: A.Patch[] = []
    const after = A.change(doc, { patchCallback: p => { patches.push(...p) } }, d => { d.tasks.t1 = { state: str('ready') } })
    expect(Object.keys(after)).toEqual([])
    expect(patches.map(p => p.path.join('/'))).toContain('tasks/t1/state')
    expect(norm(readPath(after, ['tasks', 't1']))).toEqual({ state: 'ready' })
    expect(keysAt(after, 'tasks')).toEqual(['t1'])
    const fork = A.change(A.clone(after, { actor: 'cc' }), d => { d.tasks.t2 = { state: str('done') } })
    expect(Object.keys(fork)).toEqual([])
    expect(keysAt(fork, 'tasks').sort()).toEqual(['t1', 't2'])
  })

  it('loads what A.load loads, and refuses what it refuses: trailing bytes, a cut chunk, missing dependencies', () => {
    let d = A.change(A.init<Doc>({ actor: 'aa' }), x => { x.tasks = {} })
    d = A.change(d, x => { for (let i = 0; i < 20; i++) x.tasks['t' + i] = { n: i } })
    const full = A.save(d)
    const more = A.change(d, x => { x.tasks.t1.n = 100 })
    const inc = A.saveIncremental(more)
    const both = loadDetached<Doc>(Buffer.concat([full, inc]), 'bb')
    expect(A.getActorId(both)).toBe('bb')
    expect(norm(readPath(both, ['tasks', 't1']))).toEqual({ n: 100 })
    expect(keysAt(both, 'tasks')).toHaveLength(20)
    for (const [what, bytes, why] of [
      ['trailing bytes', Buffer.concat([full, Buffer.from([1, 2, 3])]), /not enough data/],
      ['a cut chunk', Buffer.concat([full, inc.subarray(0, inc.length - 2)]), /not enough data/],
      ['not a chunk', Buffer.from('not an automerge document at all'), /invalid magic/],
      ['a change without its dependencies', A.getLastLocalChange(more) as Uint8Array, /deps|dependencies/]
    ] as const) {
      expect(() => A.load(bytes), `A.load refuses ${what}`).toThrow()
      expect(() => loadDetached(bytes), `loadDetached refuses ${what}`).toThrow(why)
    }
    expect(chunkFramingProblem(Buffer.concat([full, inc]))).toBeNull()
    // no bytes at all: an empty document, as A.load gives
    expect(A.getHeads(A.load(new Uint8Array(0)))).toEqual([])
    expect(A.getHeads(loadDetached(new Uint8Array(0)))).toEqual([])
  })
})

describe('the plain copy of a document', () => {
  it('says what the document says after every update: maps, lists, deletes, counters, concurrent writes merged', () => {
    const random = rng(7)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T
    const g = A.change(A.init<Doc>({ actor: 'a0' }), d => { d.tasks = {}; d.main = { head: null } })
    let doc = detachedDoc<Doc>('a1', b => { b.applyChanges(A.getAllChanges(g)) })
    let peer = detachedDoc<Doc>('a2', b => { b.applyChanges(A.getAllChanges(g)) })
    const mirror = new DocMirror()
    mirror.reset(doc)
    const keys = ['t1', 't2', 't3', 't4']
    const edit = (d: Doc): void => {
      const k = pick(keys)
      const t = d.tasks[k]
      const r = random()
      if (t === undefined || r < 0.1) d.tasks[k] = { state: str('ready'), deps: [str('x')], claims: {}, n: 0, c: new A.Counter(1) }
      else if (r < 0.25) t.state = str(pick(['ready', 'claimed', 'done']))
      else if (r < 0.4) t.claims[pick(['p1', 'p2', 'p3'])] = { epoch: Math.floor(random() * 5), at: str('now') }
      else if (r < 0.5) { const c = pick(['p1', 'p2', 'p3']); if (t.claims[c] !== undefined) delete t.claims[c] }
      else if (r < 0.6) t.deps.push(str(pick(['y', 'z'])))
      else if (r < 0.68) { if (t.deps.length > 0) t.deps.deleteAt(Math.floor(random() * t.deps.length)) }
      else if (r < 0.74) { if (t.deps.length > 0) t.deps.insertAt(0, str('w')) }
      else if (r < 0.8) t.c.increment(2)
      else if (r < 0.86) t.n = random() < 0.5 ? null : Math.floor(random() * 100)
      else if (r < 0.9) delete d.tasks[k]
      else d.main.head = str(pick(['h1', 'h2']))
    }
    const check = (step: number): void => {
      for (const key of ['tasks', 'main']) expect(norm(mirror.root(key)), `${key} after step ${step}`).toEqual(norm(readPath(doc, [key])))
    }
    for (let step = 0; step < 400; step++) {
      const patches: A.Patch[] = []
      const heads = A.getHeads(doc)
      if (random() < 0.6) {
        doc = A.change(doc, { patchCallback: p => { patches.push(...p) } }, edit)
      } else {
        // a peer's concurrent edits, merged: conflicting writes and deletes of one entry meet
        peer = A.change(peer, edit)
        ;[doc] = A.applyChanges(doc, A.getChanges(doc, peer), { patchCallback: p => { patches.push(...p) } })
        ;[peer] = A.applyChanges(peer, A.getChanges(peer, doc))
      }
      // the places every change the update added wrote (Automerge's patches say what changed, for the check)
      const touched = mirror.refresh(doc, placesSince(doc, heads))
      for (const p of patches) expect(touched.has(p.path[0] === 'main' ? 'main' : `${String(p.path[0])}/${String(p.path[1])}`)).toBe(true)
      check(step)
    }
  })

  it('a plan of many new entries is read in one piece, and says what the document says, as entry by entry', () => {
    const g = A.change(A.init<Doc>({ actor: 'a0' }), d => { d.tasks = {}; d.nodes = {} })
    let doc = detachedDoc<Doc>('a1', b => { b.applyChanges(A.getAllChanges(g)) })
    const mirror = new DocMirror()
    mirror.reset(doc)
    doc = A.change(doc, d => { d.tasks.old = { n: 1 } }) // never reaches the copy: read with the section
    const plans = [100, 30, 200] // read whole, then entry by entry (30 < 64), then whole again (200 > 131 held)
    let n = 0
    for (const size of plans) {
      const heads = A.getHeads(doc)
      doc = A.change(doc, d => {
        for (let i = 0; i < size; i++) d.tasks[`t${n + i}`] = { deps: [str('old')], n: n + i }
        d.tasks.old.n = n
        d.nodes.a = { at: n }
      })
      n += size
      const touched = mirror.refresh(doc, placesSince(doc, heads))
      expect(touched.size).toBe(size + 2)
      expect(touched.has(`tasks/t${n - 1}`) && touched.has('tasks/old') && touched.has('nodes/a')).toBe(true)
      for (const key of ['tasks', 'nodes']) expect(norm(mirror.root(key)), `${key} after a plan of ${size}`).toEqual(norm(readPath(doc, [key])))
    }
    expect(mirror.keys('tasks')).toHaveLength(n + 1)
  })

  it('an entry whose place is not in the copy (a copy that missed an update) is read again from the document', () => {
    const g = A.change(A.init<Doc>({ actor: 'a0' }), d => { d.tasks = {} })
    let doc = detachedDoc<Doc>('a1', b => { b.applyChanges(A.getAllChanges(g)) })
    const mirror = new DocMirror()
    mirror.reset(doc)
    doc = A.change(doc, d => { d.tasks.t1 = { deps: [str('a')], n: 1 } }) // never reaches the copy
    const heads = A.getHeads(doc)
    doc = A.change(doc, d => { d.tasks.t1.deps.insertAt(1, str('b')); d.tasks.t1.n = 2 })
    expect(mirror.entry('tasks', 't1')).toBeUndefined()
    expect([...mirror.refresh(doc, placesSince(doc, heads))]).toEqual(['tasks/t1'])
    expect(norm(mirror.entry('tasks', 't1'))).toEqual({ deps: ['a', 'b'], n: 2 })
  })
})

describe('a board read from its plain copy', () => {
  it('shows what a board loaded afresh from its saved bytes shows, after writes and a peer\'s concurrent writes', () => {
    const peerA = asPeerId('12D3KooW' + 'a'.repeat(44))
    const peerB = asPeerId('12D3KooW' + 'b'.repeat(44))
    const a = Board.create('mesh-mirror', actorForPeer(peerA))
    const b = Board.create('mesh-mirror', actorForPeer(peerB))
    const fromA: Uint8Array[] = []
    const w = (board: Board, out: Uint8Array[], fn: (d: any) => void): void => { const c = board.change('w', fn); if (c !== null) out.push(c) }
    w(a, fromA, addTasks(Array.from({ length: 30 }, (_, i) => simpleTask('t' + i))))
    b.applyChanges(fromA.splice(0))
    const fromB: Uint8Array[] = []
    for (let i = 0; i < 30; i += 3) {
      const id = ('t' + i) as TaskId
      w(a, fromA, d => L.claim(d, id, peerA, 0, 1))
      w(b, fromB, d => L.cancel(d, id, 'cancelled by b'))
      w(a, fromA, d => L.start(d, id, peerA, 1, 2))
    }
    w(b, fromB, d => L.claim(d, 't1' as TaskId, peerB, 0, 3))
    a.applyChanges(fromB.splice(0))
    b.applyChanges(fromA.splice(0))
    for (const board of [a, b]) {
      const fresh = Board.load('mesh-mirror', actorForPeer('peer-c'), board.save())
      expect(fresh.snapshot().tasks).toEqual(board.snapshot().tasks)
      expect(fresh.snapshot().main).toEqual(board.snapshot().main)
    }
    expect(a.snapshot().tasks).toEqual(b.snapshot().tasks)
    expect(['running', 'cancelled']).toContain(a.snapshot().tasks.get('t0' as TaskId)?.state)
    expect(a.snapshot().tasks.get('t1' as TaskId)?.claims).toHaveProperty(peerB)
  })

  it('a board loaded from saved bytes reads its copy from them (document-reader.ts), with the changes saved after them read in, and shows what Automerge shows', () => {
    const peerA = asPeerId('12D3KooW' + 'a'.repeat(44))
    const peerB = asPeerId('12D3KooW' + 'b'.repeat(44))
    const a = Board.create('mesh-mirror', actorForPeer(peerA))
    a.change('plan', addTasks(Array.from({ length: 40 }, (_, i) => simpleTask('t' + i))))
    const saved = a.save()
    // a peer's changes after the snapshot, concurrent with some of a's: its log
    const b = Board.load('mesh-mirror', actorForPeer(peerB), saved)
    const log: Uint8Array[] = []
    for (let i = 0; i < 10; i++) log.push(b.change('w', d => L.claim(d, ('t' + i) as TaskId, peerB, 0, i)) as Uint8Array)
    log.push(b.change('w', d => L.cancel(d, 't3' as TaskId, 'by b')) as Uint8Array)
    a.change('w', d => L.claim(d, 't3' as TaskId, peerA, 0, 1))
    a.applyChanges(log)
    const many: Uint8Array[] = []
    for (let i = 0; i < 300; i++) many.push(b.change('w', d => { (d.tasks as any)['t' + (i % 40)].notBefore = i }) as Uint8Array)
    a.applyChanges(many)
    const cases: Array<[string, Uint8Array, 'read' | 'materialized', Board | null]> = [
      ['a snapshot alone', saved, 'read', null],
      ['a snapshot and a log of 11 changes', Buffer.concat([saved, ...log]), 'read', null],
      ['a snapshot and a log of 311 changes', Buffer.concat([saved, ...log, ...many]), 'materialized', null]
    ]
    for (const [what, bytes, made] of cases) {
      const loaded = Board.load('mesh-mirror', actorForPeer('peer-c'), bytes)
      expect(loaded.copyMadeBy, what).toBe(made)
      // the same content made the other way: materialized by Automerge from the document as loaded
      const doc = loadDetached<Doc>(bytes, 'cc')
      const mirror = new DocMirror()
      mirror.reset(doc)
      expect(mirror.lastReset).toBe('materialized')
      for (const t of loaded.snapshot().tasks.values()) expect(norm(mirror.entry('tasks', t.id)), `${what}: ${t.id}`).toEqual(norm(readPath(doc, ['tasks', t.id])))
      expect(loaded.snapshot().tasks.size, what).toBe(40)
      if (bytes !== saved) expect(loaded.snapshot().tasks.get('t1' as TaskId)?.claims, what).toHaveProperty(peerB)
    }
  })

  it('a snapshot keeps what it showed while the board changes on, whether or not another was taken in between', () => {
    const a = Board.create('mesh-mirror', actorForPeer('peer-a'))
    a.change('w', addTasks([simpleTask('t1')]))
    const s1 = a.snapshot()
    a.change('w', addTasks([simpleTask('t2')]))
    a.change('w', addTasks([simpleTask('t3')]))
    const s2 = a.snapshot()
    expect(a.snapshot()).toBe(s2)
    a.change('w', d => L.cancel(d, 't1' as TaskId))
    a.change('w', addTasks([simpleTask('t4')]))
    const s3 = a.snapshot()
    expect([...s1.tasks.keys()]).toEqual(['t1'])
    expect(s1.tasks.get('t1' as TaskId)?.state).toBe('ready')
    expect([...s2.tasks.keys()].sort()).toEqual(['t1', 't2', 't3'])
    expect(s2.tasks.get('t1' as TaskId)?.state).toBe('ready')
    expect([...s3.tasks.keys()].sort()).toEqual(['t1', 't2', 't3', 't4'])
    expect(s3.tasks.get('t1' as TaskId)?.state).toBe('cancelled')
    expect(a.task('t4')?.id).toBe('t4')
  })

  it('refuses saved bytes with a cut tail as corrupt, as before', () => {
    const a = Board.create('mesh-mirror', actorForPeer('peer-a'))
    a.change('w', addTasks([simpleTask('t1')]))
    const bytes = a.save()
    expect(() => Board.load('mesh-mirror', actorForPeer('peer-a'), bytes.subarray(0, bytes.length - 3))).toThrow(BoardCorruptError)
    expect(Board.meshIdOf(bytes)).toBe('mesh-mirror')
    expect(Board.meshIdOf(bytes.subarray(0, bytes.length - 3))).toBeNull()
  })
})
