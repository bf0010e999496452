/**
 * The TypeScript document reader (src/crdt/document-reader.ts) held to
 * Automerge's materialize: for every document it reads, the tree
 * `A.getBackend(loadDetached(bytes)).materialize('_root')` gives (classes,
 * prototypes, key order, hidden symbol properties and their attributes, every
 * value) and the heads `A.getHeads` gives; for anything else null, never a
 * throw and never a different tree. Documents come from a signed board
 * through task lifecycles written by several actors, a plan of 2,000 tasks,
 * seeded random documents of several actors with every value type, text and
 * marks, and documents built byte by byte; malformed ones from truncating,
 * flipping and rewriting those.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { isDeepStrictEqual } from 'node:util'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { materializeDocument } from '../src/crdt/document-reader.ts'
import { detachedDoc, loadDetached } from '../src/crdt/detached.ts'
import { Board, nodeActorForPeer, sessionActorForPeer, type BoardDoc } from '../src/crdt/board.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { conflictIdFor, parseTaskId } from '../src/crdt/schema.ts'
import {
  TEXT_CHARS, bodyOf, chunk as checksummed, editableDoc, int, newPeer, pick, randomEdit, randomText, rewrite, seeded, sleb, uleb,
  type Doc, type EditValues, type ListProxy, type Rand
} from './helpers/automerge-bytes.ts'

/**
 * Where `got` differs from `want` (materialize's tree), or null: prototypes,
 * own keys (string and symbol) in order with their attributes, and values
 * (`Object.is`, so -0 and NaN count; dates by time, bytes by content).
 * Stricter than isDeepStrictEqual, which skips non-enumerable properties
 * (materialize's hidden symbols).
 */
function treeDifference (got: unknown, want: unknown, path = '$'): string | null {
  if (typeof want !== 'object' || want === null) {
    return Object.is(got, want) ? null : `${path}: ${typeof got} ${String(got)} vs ${typeof want} ${String(want)}`
  }
  if (typeof got !== 'object' || got === null) return `${path}: ${String(got)} vs an object`
  if (Object.getPrototypeOf(got) !== Object.getPrototypeOf(want)) return `${path}: another prototype`
  if (want instanceof Date) return Object.is((got as Date).getTime(), want.getTime()) ? null : `${path}: date ${String(got)} vs ${String(want)}`
  if (want instanceof Uint8Array) return Buffer.compare(got as Uint8Array, want) === 0 ? null : `${path}: bytes differ`
  const gotKeys = Reflect.ownKeys(got)
  const wantKeys = Reflect.ownKeys(want)
  if (gotKeys.length !== wantKeys.length || gotKeys.some((k, i) => k !== wantKeys[i])) {
    return `${path}: keys ${gotKeys.map(String).join(',')} vs ${wantKeys.map(String).join(',')}`
  }
  for (const k of wantKeys) {
    const g = Object.getOwnPropertyDescriptor(got, k) as PropertyDescriptor
    const w = Object.getOwnPropertyDescriptor(want, k) as PropertyDescriptor
    const at = `${path}.${String(k)}`
    if (g.writable !== w.writable || g.enumerable !== w.enumerable || g.configurable !== w.configurable || g.get !== undefined || w.get !== undefined) {
      return `${at}: attributes differ`
    }
    const d = treeDifference(g.value, w.value, at)
    if (d !== null) return d
  }
  return null
}

interface Read { heads: string[], root: Record<string, unknown> }

/** Fails unless `got` is what materialize gave (`want`) and the heads are `heads`. */
function expectSameTree (got: Read | null, want: unknown, heads: string[], label: string): void {
  expect(got, `${label}: the reader gave null`).not.toBeNull()
  if (got === null) return
  expect(got.heads, label).toEqual(heads)
  const difference = treeDifference(got.root, want)
  if (difference !== null || !isDeepStrictEqual(got.root, want)) {
    expect(got.root, label).toStrictEqual(want) // shows the difference
    expect.fail(`${label}: ${difference ?? 'not deep-strict-equal'}`)
  }
}

/**
 * What a lean read (`{ lean: true }`) of materialize's tree `want` gives: the
 * same values without the hidden properties of maps and lists, and scalar
 * strings as plain strings (counters, dates and bytes as they are).
 */
function leanOf (want: unknown): unknown {
  if (want instanceof A.ImmutableString) return want.val
  if (Array.isArray(want)) return want.map(leanOf)
  if (want === null || typeof want !== 'object' || want instanceof A.Counter || want instanceof Date || want instanceof Uint8Array) return want
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(want)) out[k] = leanOf(v)
  return out
}

/**
 * Fails unless the reader reads `bytes` (not null) as materialize of the
 * document loaded from them, and reads them lean as `leanOf` that; returns the tree.
 */
function expectReadAlike (bytes: Uint8Array, label = ''): Record<string, unknown> {
  const got = materializeDocument(bytes)
  const doc = loadDetached<unknown>(bytes)
  const want = A.getBackend(doc).materialize('_root')
  expectSameTree(got, want, A.getHeads(doc), label)
  expectSameTree(materializeDocument(bytes, { lean: true }), leanOf(want), A.getHeads(doc), `${label} (lean)`)
  A.free(doc)
  return (got as Read).root
}

/**
 * The reader on `bytes` (anything): no throw; null, or, when Automerge loads
 * the bytes with the heads the reader gave, exactly what materialize gives.
 * (A caller loads the bytes with Automerge and checks the heads: the reader
 * does not read the change columns that Automerge derives them from.)
 * Returns what happened.
 */
function expectNullOrAlike (bytes: Uint8Array, label = ''): 'null' | 'refused by Automerge' | 'other heads' | 'alike' {
  let got = null as Read | null
  expect(() => { got = materializeDocument(bytes) }, label).not.toThrow()
  if (got === null) return 'null'
  let doc: A.Doc<unknown>
  try {
    doc = loadDetached<unknown>(bytes)
  } catch {
    return 'refused by Automerge' // no caller has a document to take the tree for
  }
  const heads = A.getHeads(doc)
  const same = isDeepStrictEqual(heads, (got as Read).heads)
  if (same) expectSameTree(got, A.getBackend(doc).materialize('_root'), heads, label)
  A.free(doc)
  return same ? 'alike' : 'other heads'
}

/** The characters of random text besides a-z: '\uffff' and '\ue000' too (their UTF-16 and UTF-8 orders differ). */
const CHARS = [...TEXT_CHARS, '\uffff', '\ue000']

/** A scalar of any type Automerge stores: ints to ±2^63, uints to 2^64, floats to NaN and ±Infinity. */
function randomScalar (r: Rand): unknown {
  switch (int(r, 14)) {
    case 0: return null
    case 1: return r() < 0.5
    case 2: return pick(r, [0, 1, -1, 63, 64, -64, -65, 127, 128, 2 ** 31, -(2 ** 31) - 1, 2 ** 49, -(2 ** 49), Number.MAX_SAFE_INTEGER - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER])
    case 3: return int(r, 2 ** 40) - 2 ** 39
    case 4: return new A.Uint(pick(r, [0, 1, 127, 128, 2 ** 32, Number.MAX_SAFE_INTEGER, int(r, 1e9)]))
    case 5: return new A.Int(int(r, 2000) - 1000)
    case 6: return new A.Float64(pick(r, [1.5, -2.25, 0.1, 1e-300, Number.MAX_VALUE, Number.MIN_VALUE, Infinity, -Infinity, 3]))
    case 7: return r() < 0.2 ? pick(r, [NaN, -0, Infinity]) : (int(r, 20000) - 10000) / 7
    case 8: return new A.ImmutableString(randomText(r, CHARS))
    case 9: return Uint8Array.from({ length: r() < 0.2 ? 0 : int(r, 40) }, () => int(r, 256))
    case 10: return new A.Counter(pick(r, [0, 1, -1, int(r, 2000) - 1000, 2 ** 40, -(2 ** 40)]))
    case 11: return new Date(pick(r, [0, -1, 1_700_000_000_000, -86_400_000 * 365, int(r, 2 ** 42), 8.64e15, -8.64e15]))
    case 12: return pick(r, [2n ** 53n, -(2n ** 53n), 2n ** 60n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(int(r, 1000))])
    default: return randomText(r, CHARS) // a string: a text object
  }
}

function randomValue (r: Rand, depth = 0): unknown {
  const roll = r()
  if (depth < 3 && roll < 0.1) return { a: randomValue(r, depth + 1), b: [randomScalar(r), randomValue(r, depth + 1)], [pick(r, MAP_KEYS)]: randomValue(r, depth + 1) }
  if (depth < 3 && roll < 0.18) return Array.from({ length: int(r, 5) }, () => randomValue(r, depth + 1))
  return randomScalar(r)
}

// keys whose UTF-16 and UTF-8 orders differ ('\uffff' and '😀'), integer-like ones (JS orders those first)
const MAP_KEYS = ['a', 'b', 'key with spaces', '', 'é', '😀', '\uffff', '\ue000', 'k'.repeat(40), '\ufeffbom', '0', '1', '10', '2', '-1', '01', 'constructor', 'toString', 'length']

/** What the random documents' edits are made of (randomEdit), with edits of counters, blocks and keys of a map in a list. */
const EDITS: EditValues = {
  chars: CHARS,
  scalar: randomScalar,
  value: randomValue,
  mapKeys: MAP_KEYS,
  markValues: [true, false, null, 'https://x', 42, 1.5, new Date(5)],
  extraEdits: [
    (r, d) => {
      // counters in a map and a list, incremented, overwritten, deleted
      if (!(d.m.counters instanceof Object)) d.m.counters = { x: new A.Counter(0), l: [new A.Counter(5)] }
      const roll = int(r, 5)
      if (roll < 2) { if (d.m.counters.x instanceof A.Counter) (d.m.counters.x as A.Counter).increment(int(r, 20) - 10) }
      else if (roll === 2) (d.m.counters.l[0] as A.Counter).increment(int(r, 20) - 10)
      else if (roll === 3) d.m.counters.x = r() < 0.5 ? new A.Counter(int(r, 100)) : randomScalar(r)
      else delete d.m.counters.x
    },
    (r, d) => {
      const text = d.t as string
      if (text.length > 0 && r() < 0.5) A.splitBlock(d, ['t'], int(r, text.length), { type: new A.ImmutableString('paragraph'), parents: [], attrs: {} })
    },
    (r, d) => {
      // a key of a map in the list deleted
      const list = d.l as ListProxy
      const first: unknown = list.length > 0 ? d.l[0] : null
      if (first === null || typeof first !== 'object' || Array.isArray(first) || first instanceof A.Counter || first instanceof A.ImmutableString || first instanceof Date || first instanceof Uint8Array) return
      const keys = Object.keys(first)
      if (keys.length > 0) delete (first as Doc)[pick(r, keys)]
    }
  ]
}

/**
 * The saved documents of a random history of `actors` (actor ids of different
 * lengths) editing one document, merging now and then (so keys and elements
 * have concurrent values, and ops name other actors' objects): each actor's
 * document now and then, and all merged at the end.
 */
function randomDocuments (seed: number, rounds: number, actors: string[]): Array<A.Doc<Doc>> {
  const r = seeded(seed)
  const base = editableDoc(actors[0] as string)
  const docs = actors.map((actor, i) => i === 0 ? base : A.merge(A.init<Doc>({ actor }), base))
  const out: Array<A.Doc<Doc>> = []
  for (let round = 0; round < rounds; round++) {
    const i = int(r, docs.length)
    let doc = docs[i] as A.Doc<Doc>
    doc = A.change(doc, d => {
      const n = 1 + int(r, r() < 0.1 ? 30 : 4)
      for (let k = 0; k < n; k++) randomEdit(r, d, EDITS)
    })
    const other = int(r, docs.length)
    if (other !== i && r() < 0.25) doc = A.merge(doc, docs[other] as A.Doc<Doc>)
    docs[i] = doc
    if (round % 10 === 9) out.push(doc)
  }
  out.push(docs.reduce((a, b) => A.merge(a, b)))
  return out
}

// Document chunks taken apart and built byte by byte (chunk.rs, document.rs), for what Automerge itself does not write.

/** The number of values in run-length encoded column `data` (rle.rs): runs, literal runs and null runs. */
function rleCount (data: Uint8Array | number[]): number {
  const b = Array.from(data)
  let at = 0
  const leb = (signed: boolean): number => {
    let value = 0
    let mul = 1
    let x = 0
    do {
      x = b[at++] as number
      value += (x & 0x7f) * mul
      mul *= 128
    } while (x >= 0x80)
    return signed && (x & 0x40) !== 0 ? value - mul : value
  }
  let n = 0
  while (at < b.length) {
    const count = leb(true)
    if (count > 0) {
      leb(false)
      n += count
    } else if (count < 0) {
      for (let k = 0; k < -count; k++) leb(false)
      n -= count
    } else n += leb(false)
  }
  return n
}

/** A chunk of `type` around `body`, with its checksum, as a Buffer (small ones are views into Node's pool, at an offset). */
function chunk (type: number, body: Uint8Array | number[]): Buffer {
  return Buffer.concat([checksummed(type, body)])
}

type Columns = Array<[number, Uint8Array | number[]]>

interface DocumentParts {
  actors: Uint8Array[]
  heads: Uint8Array[]
  changeColumns: Columns
  opColumns: Columns
  suffix: Uint8Array | number[]
  /** The specs of the columns stored deflated (as `documentParts` found them; `documentChunk` writes none so). */
  deflated?: number[]
}

/** The parts of document chunk `bytes`, its deflated columns inflated (and their specs without the deflate bit). */
function documentParts (bytes: Uint8Array): DocumentParts {
  let at = 9
  const read = (): number => {
    let value = 0
    let mul = 1
    for (;;) {
      const b = bytes[at++] as number
      value += (b & 0x7f) * mul
      mul *= 128
      if (b < 0x80) return value
    }
  }
  read() // the body's length
  const actors = Array.from({ length: read() }, () => {
    const n = read()
    at += n
    return bytes.slice(at - n, at)
  })
  const heads = Array.from({ length: read() }, () => {
    at += 32
    return bytes.slice(at - 32, at)
  })
  const specs = [0, 1].map(() => Array.from({ length: read() }, () => [read(), read()] as [number, number]))
  const deflated = specs.flat().filter(([spec]) => (spec & 8) !== 0).map(([spec]) => spec & ~8)
  const [changeColumns, opColumns] = specs.map(group => group.map(([spec, length]): [number, Uint8Array] => {
    at += length
    const data = bytes.slice(at - length, at)
    return (spec & 8) !== 0 ? [spec & ~8, inflateRawSync(data)] : [spec, data]
  })) as [Columns, Columns]
  return { actors, heads, changeColumns, opColumns, suffix: bytes.slice(at), deflated }
}

/** A document chunk of `parts`, its columns as given (deflated where their spec says, with the data given). */
function documentChunk (parts: DocumentParts): Uint8Array {
  const head: number[] = [...uleb(parts.actors.length)]
  for (const a of parts.actors) head.push(...uleb(a.length), ...a)
  head.push(...uleb(parts.heads.length))
  for (const h of parts.heads) head.push(...h)
  for (const group of [parts.changeColumns, parts.opColumns]) {
    head.push(...uleb(group.length))
    for (const [spec, data] of group) head.push(...uleb(spec), ...uleb(data.length))
  }
  const data = [parts.changeColumns, parts.opColumns].flatMap(group => group.map(([, d]) => Uint8Array.from(d)))
  return chunk(0, Buffer.concat([Uint8Array.from(head), ...data, Uint8Array.from(parts.suffix)]))
}

const MESH = 'mesh-document-reader'
const NOW = 1_700_000_000_000

describe('materializeDocument', () => {
  it('reads a signed board through task lifecycles, written by several actors with concurrent writes, as materialize does', async () => {
    const [p1, p2] = [await newPeer(), await newPeer()]
    const t = parseTaskId
    const one = Board.create(MESH, nodeActorForPeer(p1.id), p1.signer)
    one.change('plan', addTasks(['t1', 't2', 't3', 't4', 't5', 't6'].map((id, i) => simpleTask(id, { prompt: `do ${id} — ✓ 😀`, deps: i > 3 ? ['t1'] : [] })), NOW))
    expectReadAlike(one.save(), 'the plan')
    const two = Board.load(MESH, nodeActorForPeer(p2.id), one.save(), p2.signer)
    const client = Board.load(MESH, sessionActorForPeer(p1.id), one.save(), p1.signer)
    const boards = [one, two, client]
    /** Each board's new changes, applied on the others: writes made apart meet. */
    const exchange = (changes: Uint8Array[][]): void => {
      boards.forEach((b, i) => { b.applyChanges(changes.filter((_, j) => j !== i).flat()) })
    }
    const decision = (by: string, action: 'ours' | 'theirs' = 'ours'): { action: 'ours' | 'theirs', by: string, at: number, note: string } => ({ action, by, at: NOW, note: '' })
    const leaderId = (): string => one.snapshot().main.leader === p1.peer ? p1.id : p2.id
    // the board of the leader the concurrent elections left (only it may advance main)
    const LEADER = -1
    const rounds: Array<Array<[number, string, (d: BoardDoc) => unknown]>> = [
      // both nodes claim t1 and t2 at once; the client cancels t3
      [[0, 'claim t1', d => lifecycle.claim(d, t('t1'), p1.peer, 0, NOW)], [1, 'claim t1 too', d => lifecycle.claim(d, t('t1'), p2.peer, 0, NOW + 1)],
        [1, 'claim t2', d => lifecycle.claim(d, t('t2'), p2.peer, 0, NOW)], [2, 'cancel t3', d => lifecycle.cancel(d, t('t3'), 'not wanted')]],
      [[0, 'start t1', d => lifecycle.start(d, t('t1'), p1.peer, 1, NOW)], [1, 'start t2', d => lifecycle.start(d, t('t2'), p2.peer, 1, NOW)],
        [0, 'leader one', d => { lifecycle.electLeader(d, p1.peer, 1) }], [1, 'leader two', d => { lifecycle.electLeader(d, p2.peer, 1) }]],
      [[0, 'usage t1', d => { lifecycle.addUsage(d, t('t1'), { costUsd: 0.25, tokens: { input: 10, output: 20, cacheRead: 0, cacheWrite: 1 } }) }],
        [1, 'withdraw from t1', d => lifecycle.withdraw(d, t('t1'), p2.peer)], [2, 'cancel t5', d => lifecycle.cancel(d, t('t5'), 'later')],
        [0, 'complete t1', d => lifecycle.complete(d, t('t1'), { peer: p1.peer, head: 'a'.repeat(40), summary: 'did it', now: NOW })],
        [1, 'fail t2', d => lifecycle.fail(d, t('t2'), 'broke', { failure: true })]],
      [[LEADER, 'startMerge t1', d => lifecycle.startMerge(d, t('t1'))], [1, 'retry t2', d => lifecycle.retry(d, t('t2'), { now: NOW, depsMerged: true })],
        [LEADER, 'main', d => { lifecycle.advanceMain(d, 'd'.repeat(40)) }]],
      [[LEADER, 'merge t1', d => lifecycle.merge(d, t('t1'), 'b'.repeat(40), NOW)], [1, 'claim t2 again', d => lifecycle.claim(d, t('t2'), p2.peer, 1, NOW)],
        [0, 'claim t4', d => lifecycle.claim(d, t('t4'), p1.peer, 0, NOW)]],
      [[0, 'start t4', d => lifecycle.start(d, t('t4'), p1.peer, 1, NOW)], [1, 'start t2 again', d => lifecycle.start(d, t('t2'), p2.peer, 2, NOW)]],
      [[0, 'release t4', d => lifecycle.release(d, t('t4'), { now: NOW, notBefore: NOW + 1000, error: 'again' })],
        [1, 'complete t2', d => lifecycle.complete(d, t('t2'), { peer: p2.peer, head: 'c'.repeat(40), summary: null, now: NOW })]],
      [[LEADER, 'startMerge t2', d => lifecycle.startMerge(d, t('t2'))]],
      [[LEADER, 'conflict', d => lifecycle.openConflict(d, t('t2'), { id: conflictIdFor(t('t2'), 1), files: ['a.txt'], hunks: [{ file: 'a.txt', line: 1, before: '', ours: 'x', theirs: 'y', after: '' }], oursFrom: { 'a.txt': t('t1') } })]],
      [[0, 'decide', d => lifecycle.decide(d, conflictIdFor(t('t2'), 1), decision(p1.id))], [1, 'decide too', d => lifecycle.decide(d, conflictIdFor(t('t2'), 1), decision(p2.id, 'theirs'))]],
      [[LEADER, 'resolve', d => lifecycle.resolve(d, conflictIdFor(t('t2'), 1), { decision: decision(leaderId()), clearError: true })], [2, 'cancel t6', d => lifecycle.cancel(d, t('t6'))]]
    ]
    let written = 0
    for (const [r, round] of rounds.entries()) {
      const changes: Uint8Array[][] = boards.map(() => [])
      for (const [who, name, fn] of round) {
        const at = who === LEADER ? (one.snapshot().main.leader === p1.peer ? 0 : 1) : who
        const bytes = (boards[at] as Board).change(name, d => { fn(d) })
        if (bytes !== null) {
          (changes[at] as Uint8Array[]).push(bytes)
          written++
        }
      }
      // before the writes meet (each board its own), and after
      boards.forEach((b, i) => expectReadAlike(b.save(), `round ${r}, board ${i}`))
      exchange(changes)
      boards.forEach((b, i) => expectReadAlike(b.save(), `round ${r} merged, board ${i}`))
    }
    expect(written).toBeGreaterThan(20)
    // A.save of the boards' documents as another node loads them (a board's save can be the bytes it loaded)
    const loaded = loadDetached<BoardDoc>(one.save(), 'ab')
    const root = expectReadAlike(A.save(loaded), 'A.save')
    expect(Object.keys(root)).toEqual(['conflicts', 'main', 'meshId', 'nodes', 'tasks'])
    // the concurrent elections left a conflict, won by the greater op id as materialize has it
    expect(Object.keys(A.getConflicts(A.load<any>(A.save(loaded)).main, 'leader') ?? {})).toHaveLength(2)
  })

  it('reads a plan of 2,000 tasks (76,000 ops, deflated columns) as materialize does', () => {
    const board = Board.create(MESH, sessionActorForPeer('12D3KooWabcdefabcdefabcdefabcdefabcdefabcdefabcdef'))
    board.change('plan', addTasks(Array.from({ length: 2_000 }, (_, i) => simpleTask(`t${i}`, { deps: i > 0 ? ['t0'] : [] })), NOW))
    const bytes = board.save()
    const parts = documentParts(bytes)
    expect(parts.opColumns.length).toBeGreaterThan(5)
    // A.save deflates the columns of 256 bytes or more (the deflate bit of their specs): keys, values, ids
    expect(parts.deflated).toEqual(expect.arrayContaining([0x02, 0x15, 0x23, 0x56, 0x57]))
    const root = expectReadAlike(bytes, 'the plan')
    expect(Object.keys(root.tasks as object)).toHaveLength(2_000)
    // the same document with its columns not deflated
    expectReadAlike(documentChunk(parts), 'not deflated')
  })

  it('reads seeded random documents of several actors, with every value type, as materialize does', () => {
    const seen = new Set<string>()
    let read = 0
    let conflicts = 0
    const note = (v: unknown): void => {
      if (v instanceof A.ImmutableString) seen.add('ImmutableString')
      else if (v instanceof A.Counter) seen.add(v.value !== 0 ? 'Counter' : 'Counter 0')
      else if (v instanceof Date) seen.add(Number.isNaN(v.getTime()) ? 'Invalid Date' : 'Date')
      else if (v instanceof Uint8Array) seen.add('Uint8Array')
      else if (Array.isArray(v)) {
        seen.add('list')
        v.forEach(note)
      } else if (v !== null && typeof v === 'object') {
        seen.add('map')
        Object.values(v).forEach(note)
      } else if (typeof v === 'number') seen.add(Number.isNaN(v) ? 'NaN' : Number.isInteger(v) ? 'int' : 'float')
      else if (typeof v === 'string') seen.add(v.includes('\ufffc') ? 'text with a block' : 'text')
      else seen.add(v === null ? 'null' : typeof v)
    }
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const actors = ['aa' + seed.toString(16).padStart(6, '0'), 'ff00' + 'e'.repeat(28), '0123456789abcdef0123456789abcdef0123', '01']
      for (const doc of randomDocuments(seed, 120, actors)) {
        const bytes = A.save(doc)
        note(expectReadAlike(bytes, `seed ${seed}`))
        read++
        for (const key of Object.keys(doc.m as object)) if (Object.keys(A.getConflicts(doc.m, key) ?? {}).length > 1) conflicts++
      }
    }
    expect(read).toBeGreaterThan(60)
    expect(conflicts).toBeGreaterThan(5)
    // the documents did hold what they are meant to cover
    expect([...seen].sort()).toEqual([
      'Counter', 'Counter 0', 'Date', 'ImmutableString', 'NaN', 'Uint8Array', 'bigint', 'boolean', 'float', 'int',
      'list', 'map', 'null', 'text', 'text with a block'
    ])
  })

  it('gives each value as materialize does: ints to 2^53 - 2 as numbers and beyond as bigints, uints as bigints, counters with their increments', () => {
    const doc = A.change(A.init<Doc>({ actor: 'abcd' }), d => {
      d.ints = [0, -1, Number.MAX_SAFE_INTEGER - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2n ** 53n, -(2n ** 63n), 2n ** 63n - 1n]
      // (a Uint in a new list becomes a map of its fields: the JS API's; set one at a time)
      d.uints = [2n ** 64n - 1n]
      d.u0 = new A.Uint(0)
      d.u7 = new A.Uint(7)
      d.floats = [new A.Float64(-0), new A.Float64(NaN), new A.Float64(3), 1.5, -Infinity]
      d.when = [new Date(0), new Date(-1), new Date(8.64e15 + 1)]
      d.c = new A.Counter(Number.MAX_SAFE_INTEGER - 10)
      d.s = new A.ImmutableString('')
      d.t = ''
      d.bytes = new Uint8Array(0)
    })
    const later = A.change(A.merge(A.init<Doc>({ actor: 'ef' }), doc), d => { (d.c as A.Counter).increment(5) })
    const merged = A.change(A.merge(doc, later), d => { (d.c as A.Counter).increment(-3) })
    const root = expectReadAlike(A.save(merged), 'values') as Doc
    expect(root.ints).toEqual([0, -1, Number.MAX_SAFE_INTEGER - 1, BigInt(Number.MAX_SAFE_INTEGER), Number.MIN_SAFE_INTEGER, 2n ** 53n, -(2n ** 63n), 2n ** 63n - 1n])
    expect([root.u0, root.u7, ...root.uints]).toEqual([0n, 7n, 2n ** 64n - 1n])
    expect((root.c as A.Counter).value).toBe(Number.MAX_SAFE_INTEGER - 8)
    expect(root.s).toBeInstanceOf(A.ImmutableString)
    expect(root.t).toBe('')
    // what the JS API does not write (it stores a Float64 of NaN or -0 as 0): through the backend
    const raw = detachedDoc<Doc>('beef', b => {
      b.put('_root', 'nan', NaN, 'f64')
      b.put('_root', 'minusZero', -0, 'f64')
      b.put('_root', 'far', 2 ** 60, 'timestamp')
      b.put('_root', 'before', -(2 ** 60), 'timestamp')
    })
    const farOff = expectReadAlike(A.save(raw), 'NaN, -0, timestamps beyond Date') as Doc
    expect(Object.is(farOff.minusZero, -0)).toBe(true)
    expect(Number.isNaN((farOff.far as Date).getTime())).toBe(true)
  })

  it('takes the op with the greatest id among concurrent writes, as materialize does, and leaves out deleted ones and their objects', () => {
    const actors = ['01', 'ff', 'aa00', '7f']
    const base = A.change(A.init<Doc>({ actor: actors[0] as string }), d => {
      d.k = 0
      d.l = ['a', 'b', 'c']
      d.o = { x: 1 }
      d.c = new A.Counter(1)
    })
    const forks = actors.map((actor, i) => A.change(A.merge(A.init<Doc>({ actor }), base), d => {
      d.k = i % 2 === 0 ? { from: actor } : actor
      d.l[1] = `set by ${actor}`
      ;(d.l as ListProxy).insertAt(i % 3, actor)
      if (i === 1) delete d.o
      else d.o.x = i
      if (i === 2) delete d.c
      else (d.c as A.Counter).increment(i)
      d[`only ${actor}`] = i
    }))
    const merged = forks.reduce((a, b) => A.merge(a, b))
    expect(Object.keys(A.getConflicts(merged, 'k') ?? {})).toHaveLength(4)
    expectReadAlike(A.save(merged), 'concurrent writes')
    for (const doc of forks) expectReadAlike(A.save(doc), 'one fork')
    // an empty document, and one whose root keys were all deleted
    expect(materializeDocument(A.save(A.init<Doc>()))?.heads).toEqual([])
    expectReadAlike(A.save(A.init<Doc>()), 'empty')
    expectReadAlike(A.save(A.change(base, d => { for (const k of Object.keys(d)) delete d[k] })), 'all deleted')
  })

  it('returns null for what materialize builds otherwise or it does not read: `__proto__` keys, keys out of order, counters beyond 2^53', () => {
    // materialize sets keys with Reflect.set: a map key `__proto__` sets the prototype
    const proto = detachedDoc<Doc>('bbbb', b => {
      b.put('_root', 'a', 1)
      const m = b.putObject('_root', 'x', {})
      b.put(m, '__proto__', 'y')
    })
    const protoBytes = A.save(proto)
    expect(Object.getPrototypeOf((A.getBackend(loadDetached(protoBytes)).materialize('_root') as Doc).x)).toBeInstanceOf(A.ImmutableString)
    expect(materializeDocument(protoBytes)).toBeNull()
    // keys stored out of order (one change: its hash does not depend on how the document orders its ops), which Automerge loads
    const sorted = A.save(A.change(A.init<Doc>({ actor: 'abcd' }), d => { d.a = 1; d.b = 2 }))
    const parts = documentParts(sorted)
    expect(parts.opColumns.map(([spec, data]) => [spec, Array.from(data)])).toEqual([
      [0x15, [...sleb(-2), 1, 0x61, 1, 0x62]], [0x21, [2, 0]], [0x23, [2, 1]], [0x34, [2]], [0x42, [2, 1]], [0x56, [2, 0x14]], [0x57, [1, 2]], [0x80, [2, 0]]
    ])
    const unsorted = documentChunk({
      ...parts,
      opColumns: parts.opColumns.map(([spec, data]) => [spec, spec === 0x15 ? [...sleb(-2), 1, 0x62, 1, 0x61] : spec === 0x23 ? [...sleb(-2), ...sleb(2), ...sleb(-1)] : spec === 0x57 ? [2, 1] : data])
    })
    const loaded = loadDetached<Doc>(unsorted)
    expect(A.getHeads(loaded)).toEqual(A.getHeads(A.load(sorted)))
    expect(Object.keys(A.getBackend(loaded).materialize('_root') as Doc)).toEqual(['b', 'a'])
    expect(materializeDocument(unsorted)).toBeNull()
    // counters materialize gives as bigints
    for (const c of [2 ** 53, -(2 ** 53)]) {
      const bytes = A.save(A.change(A.init<Doc>(), d => { d.c = new A.Counter(c) }))
      expect(typeof ((A.getBackend(loadDetached(bytes)).materialize('_root') as Doc).c as A.Counter).value).toBe('bigint')
      expect(materializeDocument(bytes)).toBeNull()
    }
  })

  it('returns null for anything but one document chunk: a document followed by changes, a change, a bundle of chunks', () => {
    let doc = A.change(A.init<Doc>({ actor: 'abcd' }), d => { d.a = 1; d.t = 'text' })
    const saved = A.save(doc)
    expectReadAlike(saved)
    doc = A.change(doc, d => { d.a = 2 })
    const incremental = A.saveIncremental(doc)
    expect(materializeDocument(Buffer.concat([saved, incremental]))).toBeNull()
    expect(materializeDocument(Buffer.concat([saved, saved]))).toBeNull()
    expect(materializeDocument(A.getLastLocalChange(doc) as Uint8Array)).toBeNull()
    expect(materializeDocument(incremental)).toBeNull()
    // a Buffer is a Uint8Array, and a view of the first chunk of several is one: read alike
    expectReadAlike(Buffer.from(saved), 'a Buffer')
    const several = Buffer.concat([Buffer.alloc(3), saved, incremental])
    const view = materializeDocument(several.subarray(3, 3 + saved.length))
    expect(view?.heads).toEqual(materializeDocument(saved)?.heads)
    expect(treeDifference(view?.root, materializeDocument(saved)?.root)).toBeNull()
    expect(materializeDocument('not bytes' as unknown as Uint8Array)).toBeNull()
    expect(materializeDocument(new Uint8Array(0))).toBeNull()
  })

  it('returns null for columns it does not know, a deflate bit on bytes that are not deflated, heads out of order, a stored delete', () => {
    const doc = A.change(A.change(A.init<Doc>({ actor: 'abcd' }), d => { d.a = 1; d.l = [1, 2, 3]; d.m = { x: 'y' } }), d => { d.a = 2; (d.l as ListProxy).deleteAt(1) })
    const bytes = A.save(doc)
    const parts = documentParts(bytes)
    expectReadAlike(documentChunk(parts), 'rebuilt')
    const ops = parts.opColumns
    const specs = ops.map(([s]) => s)
    expect(specs).toEqual([0x01, 0x02, 0x11, 0x13, 0x15, 0x21, 0x23, 0x34, 0x42, 0x56, 0x57, 0x80, 0x81, 0x83])
    const withOps = (columns: Columns): Uint8Array => documentChunk({ ...parts, opColumns: columns })
    const replaced = (spec: number, data: number[]): Columns => ops.map(([s, d]) => [s, s === spec ? data : d])
    const nOps = rleCount(ops.find(([s]) => s === 0x21)?.[1] ?? [])
    // as sets (of null, as makes store): read, the objects the makes made gone
    expect(materializeDocument(withOps(replaced(0x42, [...sleb(nOps), 1])))?.root).toEqual({ a: 2, l: null, m: null })
    // the action column as stored: makeList, makeMap (their ids order them) among sets; a delete is a successor, never an op
    const cases: Array<[string, Uint8Array]> = [
      ['an unknown op column', withOps([...ops, [0xb5, [...sleb(1), 1, 0x61]]])],
      ['an op column deflated that is not', withOps(ops.map(([s, d]) => [s === 0x57 ? s | 8 : s, d]))],
      ['a column given twice', withOps([...ops.slice(0, 3), ops[2] as [number, Uint8Array], ...ops.slice(3)])],
      ['columns out of order', withOps([ops[1] as [number, Uint8Array], ops[0] as [number, Uint8Array], ...ops.slice(2)])],
      ['an empty column', withOps([[0x01, []], ...ops.slice(1)])],
      ['the actions as deletes', withOps(replaced(0x42, [...sleb(nOps), 3]))],
      ['an id column longer than the others', withOps(replaced(0x21, [...Array.from(ops.find(([s]) => s === 0x21)?.[1] ?? []), ...sleb(1), 0]))],
      ['an unknown change column', documentChunk({ ...parts, changeColumns: [...parts.changeColumns, [0xa5, [1]]] })]
    ]
    for (const [what, chunkBytes] of cases) expect(materializeDocument(chunkBytes), what).toBeNull()
    // heads out of order (two heads), which Automerge's load refuses too
    const forked = A.merge(A.change(A.clone(doc, { actor: 'ee' }), d => { d.b = 1 }), A.change(A.clone(doc, { actor: 'ff' }), d => { d.c = 1 }))
    const two = documentParts(A.save(forked))
    expect(two.heads).toHaveLength(2)
    expectReadAlike(documentChunk(two), 'two heads')
    const swapped = documentChunk({ ...two, heads: [two.heads[1] as Uint8Array, two.heads[0] as Uint8Array] })
    expect(() => A.load(swapped)).toThrow()
    expect(materializeDocument(swapped)).toBeNull()
    // no head indices (as older JS implementations wrote): read, as Automerge's load takes them
    expectReadAlike(documentChunk({ ...parts, suffix: [] }), 'no head indices')
    expect(materializeDocument(documentChunk({ ...parts, suffix: [...parts.suffix, 0] }))).toBeNull()
  })

  it('returns null for run lengths that claim billions of ops, documents denser than it takes, and columns that inflate beyond its budget, before it does the work', () => {
    const huge = 2 ** 40
    const parts = (opColumns: Columns): DocumentParts => ({ actors: [Uint8Array.from([0xab])], heads: [], changeColumns: [], opColumns, suffix: [] })
    /** One op setting a key of `length` bytes to null on the root, its keys' column deflated. */
    const longKey = (length: number): Columns => [
      [0x15 | 8, deflateRawSync(Buffer.concat([Uint8Array.from([...sleb(1), ...uleb(length)]), Buffer.alloc(length, 0x61)]))],
      [0x21, [...sleb(1), 0]], [0x23, [...sleb(1), 1]], [0x34, [1]], [0x42, [...sleb(1), 1]], [0x56, [...sleb(1), 0]], [0x80, [...sleb(1), 0]]
    ]
    const cases = [
      documentChunk(parts([[0x21, [...sleb(huge), 0]], [0x23, [...sleb(huge), 1]], [0x42, [...sleb(huge), 1]], [0x56, [...sleb(huge), 0]], [0x80, [...sleb(huge), 0]]])),
      documentChunk(parts([[0x21, [...sleb(4), 0]], [0x23, [...sleb(4), 1]], [0x42, [...sleb(4), 1]], [0x56, [...sleb(4), 0]], [0x80, [...sleb(4), ...uleb(huge)]], [0x81, [...sleb(huge), 0]], [0x83, [...sleb(huge), 1]]])),
      // a key of 24 MiB, deflated to 24 KB: beyond what so small a chunk may inflate to
      documentChunk(parts(longKey(24 * 1024 * 1024)))
    ]
    for (const bytes of cases) expect(materializeDocument(bytes)).toBeNull()
    // a long list deleted whole: 80,000 ops in a few hundred bytes, more than the reader takes for so few
    const deleted = A.save(detachedDoc<Doc>('abcdef', b => {
      const l = b.putObject('_root', 'l', [])
      b.splice(l, 0, 0, Array.from({ length: 80_000 }, () => null))
      b.commit()
      b.splice(l, 0, 80_000)
    }))
    expect(deleted.length).toBeLessThan(2_000)
    expect(A.getBackend(loadDetached(deleted)).materialize('_root')).toEqual({ l: [] })
    expect(materializeDocument(deleted)).toBeNull()
    // the same key of 1 MiB is read (so the refusal above is of its size)
    expect(Object.keys(materializeDocument(documentChunk(parts(longKey(1024 * 1024))))?.root ?? {})).toEqual(['a'.repeat(1024 * 1024)])
    // a document of ops built by hand: two keys set on the root, read alike (so the refusals above are of their size)
    const two = documentChunk(parts([
      [0x15, [...sleb(-2), 1, 0x61, 1, 0x62]], [0x21, [...sleb(2), 0]], [0x23, [...sleb(2), 1]], [0x34, [2]], [0x42, [...sleb(2), 1]], [0x56, [...sleb(2), 0]], [0x80, [...sleb(2), 0]]
    ]))
    expect(materializeDocument(two)?.root).toEqual({ a: null, b: null })
  })

  it('never throws nor answers differently on truncated, flipped, rewritten or random bytes', () => {
    const r = seeded(11)
    let doc = A.change(A.init<Doc>({ actor: '0102030405' }), d => { d.m = { a: 1, b: 'x' }; d.l = [1, 2.5, null]; d.t = 'héllo'; d.c = new A.Counter(1) })
    doc = A.change(A.merge(A.init<Doc>({ actor: 'ffee' }), doc), d => {
      d.m.a = new A.Counter(3)
      delete d.m.b
      ;(d.l as ListProxy).deleteAt(0)
      A.splice(d, ['t'], 1, 1, 'e😀')
      A.mark(d, ['t'], { start: 0, end: 2, expand: 'both' }, 'bold', true)
      ;(d.c as A.Counter).increment(2)
    })
    const samples = [A.save(doc), documentChunk(documentParts(A.save(doc)))]
    const outcomes = new Map<string, number>()
    const count = (outcome: string): void => { outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1) }
    for (const bytes of samples) {
      expectReadAlike(bytes)
      // every proper prefix, and the document with a byte more
      for (let n = 0; n < bytes.length; n++) expect(materializeDocument(bytes.subarray(0, n))).toBeNull()
      expect(materializeDocument(Uint8Array.from([...bytes, 0]))).toBeNull()
      // every byte flipped: the checksum no longer matches, or the checksum itself is off
      for (let i = 0; i < bytes.length; i++) {
        const flipped = Uint8Array.from(bytes)
        flipped[i] = (flipped[i] as number) ^ (1 << int(r, 8))
        expect(materializeDocument(flipped), `byte ${i} flipped`).toBeNull()
      }
      // the body changed and the chunk made whole again (length and checksum): null, or read as Automerge loads it
      const body = bodyOf(bytes)
      for (let i = 0; i < 1500; i++) {
        count(expectNullOrAlike(chunk(0, rewrite(r, body)), `rewrite ${i}`))
      }
    }
    // random bytes, with and without a chunk header around them
    for (let i = 0; i < 2000; i++) {
      const junk = Array.from({ length: int(r, 200) }, () => int(r, 256))
      expect(materializeDocument(Uint8Array.from(junk))).toBeNull()
      count(`junk ${expectNullOrAlike(chunk(0, junk), `junk ${i}`)}`)
    }
    // some rewrites are still documents Automerge loads (a value of the head indices, a change's time): those read alike
    expect(outcomes.get('alike')).toBeGreaterThan(0)
    expect(outcomes.get('junk alike')).toBeUndefined()
  })
})
