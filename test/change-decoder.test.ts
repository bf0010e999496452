/**
 * The TypeScript change decoder (src/crdt/change-decoder.ts) held to
 * `A.decodeChange`: for every change it decodes, the same object (fields,
 * their order, value types); for anything else null, never a throw and never
 * a different answer. Changes come from a real board's task lifecycle
 * (signed), a plan of 2,000 tasks, seeded random documents of several actors
 * and every value type, `A.encodeChange` of random decoded changes, and chunks
 * built byte by byte; malformed ones from truncating, flipping and rewriting
 * those.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { createHash } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import { deflateRawSync } from 'node:zlib'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decodeChangeFast } from '../src/crdt/change-decoder.ts'
import { Board, nodeActorForPeer, sessionActorForPeer, type BoardDoc } from '../src/crdt/board.ts'
import { signerFromPrivateKey } from '../src/crdt/signing.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, conflictIdFor, parseTaskId } from '../src/crdt/schema.ts'

type Decoded = A.DecodedChange & Record<string, unknown>

/** Where the key order of `got` differs from `want`'s: the change's fields, and each op's (first few). */
function keyOrderProblems (got: Decoded, want: Decoded): string[] {
  const problems: string[] = []
  const keys = (o: object): string => Object.keys(o).join(',')
  if (keys(got) !== keys(want)) problems.push(`change: ${keys(got)} vs ${keys(want)}`)
  const n = Math.min(got.ops.length, want.ops.length)
  for (let i = 0; i < n && problems.length < 5; i++) {
    const g = got.ops[i] as object
    const w = want.ops[i] as object
    if (keys(g) !== keys(w)) problems.push(`op ${i}: ${keys(g)} vs ${keys(w)}`)
  }
  return problems
}

/** Fails unless `got` is deep-strict-equal to `want` (what A.decodeChange gave), with its fields in the same order. */
function expectSame (got: Decoded, want: Decoded, label: string): void {
  if (!isDeepStrictEqual(got, want)) {
    expect(got, label).toStrictEqual(want) // shows the difference
    expect.fail(`${label}: not deep-strict-equal to A.decodeChange`)
  }
  expect(keyOrderProblems(got, want), label).toEqual([])
}

/** Fails unless the fast decoder reads `bytes` (not null) and gives what A.decodeChange gives. */
function expectDecodedAlike (bytes: Uint8Array, label = ''): Decoded {
  const want = A.decodeChange(bytes) as Decoded
  const got = decodeChangeFast(bytes) as Decoded | null
  expect(got, `${label}: the fast decoder gave null`).not.toBeNull()
  if (got === null) return want
  expectSame(got, want, label)
  return got
}

/** The fast decoder on `bytes` (anything): no throw; null, or exactly what A.decodeChange gives. Returns whether it decoded. */
function expectNullOrAlike (bytes: Uint8Array, label = ''): boolean {
  let got = null as Decoded | null
  expect(() => { got = decodeChangeFast(bytes) as Decoded | null }, label).not.toThrow()
  if (got === null) return false
  let want: Decoded
  try {
    want = A.decodeChange(bytes) as Decoded
  } catch (err) {
    expect.fail(`${label}: the fast decoder read a change A.decodeChange refuses (${String(err)})`)
  }
  expectSame(got, want, label)
  return true
}

/** A seeded generator of numbers in [0, 1) (mulberry32). */
function seeded (seed: number): () => number {
  let s = seed | 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

type Rand = () => number
const int = (r: Rand, n: number): number => Math.floor(r() * n)
function pick<T> (r: Rand, items: readonly T[]): T {
  return items[int(r, items.length)] as T
}

const CHARS = ['a', 'b', 'z', ' ', '0', '/', 'é', 'ß', 'ж', '中', '文', '😀', '🧩', '\u{10ffff}', '\ufeff', '\n', '"', '\\']

function randomText (r: Rand): string {
  const len = r() < 0.1 ? 0 : r() < 0.1 ? 30 + int(r, 200) : int(r, 12)
  let s = ''
  for (let i = 0; i < len; i++) s += r() < 0.6 ? String.fromCharCode(97 + int(r, 26)) : pick(r, CHARS)
  return s
}

/** A scalar of any type Automerge stores; bigints beyond 2^53 (which A.decodeChange cannot give as numbers) rarely. */
function randomScalar (r: Rand): unknown {
  switch (int(r, 14)) {
    case 0: return null
    case 1: return r() < 0.5
    case 2: return pick(r, [0, 1, -1, 127, 128, -64, -65, 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER])
    case 3: return int(r, 2 ** 40) - 2 ** 39
    case 4: return new A.Uint(pick(r, [0, 1, 127, 128, 2 ** 32, Number.MAX_SAFE_INTEGER, int(r, 1e9)]))
    case 5: return new A.Int(int(r, 2000) - 1000)
    case 6: return new A.Float64(pick(r, [1.5, -2.25, 0.1, 1e-300, Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity, 3]))
    case 7: return (int(r, 20000) - 10000) / 7
    case 8: return new A.ImmutableString(randomText(r))
    case 9: return Uint8Array.from({ length: r() < 0.2 ? 0 : int(r, 40) }, () => int(r, 256))
    case 10: return new A.Counter(int(r, 2000) - 1000)
    case 11: return new Date(pick(r, [0, -1, 1_700_000_000_000, -86_400_000 * 365, int(r, 2 ** 42)]))
    case 12: return r() < 0.15 ? pick(r, [2n ** 60n, -(2n ** 60n), 2n ** 64n - 1n, 2n ** 53n + 1n]) : BigInt(int(r, 1000))
    default: return randomText(r) // a string: a text object
  }
}

function randomValue (r: Rand, depth = 0): unknown {
  const roll = r()
  if (depth < 2 && roll < 0.1) return { a: randomValue(r, depth + 1), b: [randomScalar(r), randomValue(r, depth + 1)] }
  if (depth < 2 && roll < 0.18) return Array.from({ length: int(r, 4) }, () => randomValue(r, depth + 1))
  return randomScalar(r)
}

const MAP_KEYS = ['a', 'b', 'key with spaces', '', 'é', '😀', 'k'.repeat(40), '\ufeffbom']
type Doc = Record<string, any>

/** One random edit of `d` (inside A.change): maps, lists, text, counters, marks, deletes. */
function randomEdit (r: Rand, d: Doc): void {
  const list = d.l as unknown[]
  const text = d.t as string
  switch (int(r, 11)) {
    case 0:
    case 1: d.m[pick(r, MAP_KEYS)] = randomValue(r); break
    case 2: { const k = pick(r, MAP_KEYS); if (k in d.m) delete d.m[k]; break }
    case 3: (d.l as { insertAt: (i: number, ...v: unknown[]) => void }).insertAt(int(r, list.length + 1), randomValue(r)); break
    case 4: if (list.length > 0) (d.l as { deleteAt: (i: number, n?: number) => void }).deleteAt(int(r, list.length), 1 + int(r, 2)); break
    case 5: if (list.length > 0) d.l[int(r, list.length)] = randomScalar(r); break
    case 6: A.splice(d, ['t'], int(r, text.length + 1), text.length > 0 ? int(r, 3) : 0, randomText(r)); break
    case 7: (d.c as A.Counter).increment(int(r, 200) - 100); break
    case 8: {
      if (text.length < 2) break
      const start = int(r, text.length - 1)
      const range = { start, end: start + 1 + int(r, text.length - start - 1), expand: pick(r, ['before', 'after', 'both', 'none'] as const) }
      if (r() < 0.7) A.mark(d, ['t'], range, pick(r, ['bold', 'link', 'comment']), pick(r, [true, false, null, 'https://x', 42, 1.5, new Date(5)]))
      else A.unmark(d, ['t'], range, pick(r, ['bold', 'link']))
      break
    }
    case 9: d.m.nested = { deep: { deeper: [randomScalar(r), randomScalar(r)] }, when: new Date(1_700_000_000_000) }; break
    default: d.m[pick(r, MAP_KEYS)] = randomScalar(r)
  }
}

/**
 * Every change of a random history of three actors (actor ids of different
 * lengths) editing one document, merging now and then so ops name other
 * actors' objects, elements and preds and changes have several deps: each
 * change as written, with and without messages and times, empty ones too.
 */
function randomHistory (seed: number, rounds: number): Uint8Array[] {
  const r = seeded(seed)
  const actors = ['aa' + seed.toString(16).padStart(6, '0'), 'ff00' + 'e'.repeat(28), '0123456789abcdef0123456789abcdef0123']
  let base = A.change(A.init<Doc>({ actor: actors[0] as string }), { message: 'base', time: 0 }, d => {
    d.m = {}
    d.l = []
    d.t = 'hello'
    d.c = new A.Counter(0)
  })
  const docs = actors.map((actor, i) => i === 0 ? base : A.merge(A.init<Doc>({ actor }), base))
  const out: Uint8Array[] = [A.getLastLocalChange(base) as Uint8Array]
  for (let round = 0; round < rounds; round++) {
    const i = int(r, docs.length)
    let doc = docs[i] as A.Doc<Doc>
    const opts = r() < 0.3 ? {} : { message: r() < 0.5 ? randomText(r) : 'm', time: pick(r, [0, 1, -5, 1_700_000_000, Number.MAX_SAFE_INTEGER]) }
    if (r() < 0.05) doc = A.emptyChange(doc, r() < 0.5 ? 'empty' : undefined)
    else {
      doc = A.change(doc, opts, d => {
        const n = 1 + int(r, r() < 0.1 ? 40 : 4)
        for (let k = 0; k < n; k++) randomEdit(r, d)
      })
    }
    const last = A.getLastLocalChange(doc)
    if (last !== undefined) out.push(last)
    const other = int(r, docs.length)
    if (other !== i && r() < 0.3) doc = A.merge(doc, docs[other] as A.Doc<Doc>)
    docs[i] = doc
  }
  base = docs.reduce((a, b) => A.merge(a, b))
  const seen = new Set(out.map(c => Buffer.from(c).toString('base64')))
  for (const c of A.getAllChanges(base)) if (!seen.has(Buffer.from(c).toString('base64'))) out.push(c)
  return out
}

// Chunks built byte by byte (chunk.rs, change.rs), for what Automerge itself does not write.
function uleb (n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

function sleb (n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = ((n % 128) + 128) % 128
    n = Math.floor(n / 128)
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

const lengthPrefixed = (s: string): number[] => [...uleb(Buffer.byteLength(s)), ...Buffer.from(s)]

/** A chunk of `type` around `body`, with the checksum of the body as a change chunk (what a compressed chunk carries). */
function chunk (type: number, body: Uint8Array | number[], checksumOf: { type: number, body: Uint8Array | number[] } = { type, body }): Uint8Array {
  const typeAndLength = (t: number, b: Uint8Array | number[]): number[] => [t, ...uleb(b.length)]
  const hash = createHash('sha256').update(Uint8Array.from(typeAndLength(checksumOf.type, checksumOf.body))).update(Uint8Array.from(checksumOf.body)).digest()
  return Uint8Array.from([0x85, 0x6f, 0x4a, 0x83, ...hash.subarray(0, 4), ...typeAndLength(type, body), ...body])
}

/** The body of change chunk `bytes` (after magic, checksum, type and length). */
function bodyOf (bytes: Uint8Array): Uint8Array {
  let at = 9
  while (((bytes[at] as number) & 0x80) !== 0) at++
  return bytes.subarray(at + 1)
}

interface ChangeFields {
  actor?: number[]
  others?: number[][]
  startOp?: number[]
  columns: Array<[number, number[]]>
  extra?: number[]
}

/** A change chunk with header fields and raw columns as given (spec, bytes), in the order given. */
function changeChunk (f: ChangeFields): Uint8Array {
  const body: number[] = [0] // no deps
  const actor = f.actor ?? [0xaa, 0xbb]
  body.push(...uleb(actor.length), ...actor, 1, ...(f.startOp ?? [1]), 0, 0)
  const others = f.others ?? []
  body.push(...uleb(others.length))
  for (const o of others) body.push(...uleb(o.length), ...o)
  body.push(...uleb(f.columns.length))
  for (const [spec, data] of f.columns) body.push(...uleb(spec), ...uleb(data.length))
  for (const [, data] of f.columns) body.push(...data)
  body.push(...(f.extra ?? []))
  return chunk(1, body)
}

/** Columns of one op `set _root.x = <value>` with the value's metadata and raw bytes as given. */
function oneSet (meta: number, raw: number[]): Array<[number, number[]]> {
  const cols: Array<[number, number[]]> = [
    [0x15, [...sleb(1), ...lengthPrefixed('x')]],
    [0x34, [1]],
    [0x42, [...sleb(1), 1]],
    [0x56, [...sleb(1), ...uleb(meta)]]
  ]
  if (raw.length > 0) cols.push([0x57, raw])
  cols.push([0x70, [...sleb(1), 0]])
  return cols
}

const MESH = 'mesh-change-decoder'
const NOW = 1_700_000_000_000

describe('decodeChangeFast', () => {
  it('decodes every change of a signed board through a task lifecycle as A.decodeChange does', async () => {
    const key = await generateKeyPair('Ed25519')
    const id = peerIdFromPrivateKey(key).toString()
    const peer = asPeerId(id)
    const board = Board.create(MESH, nodeActorForPeer(id), signerFromPrivateKey(id, key))
    const t = parseTaskId
    const decision = { action: 'ours' as const, by: 'tester', at: NOW, note: '' }
    const steps: Array<[string, (d: BoardDoc) => unknown]> = [
      ['plan', addTasks([simpleTask('t1', { prompt: 'do it — ✓ 😀' }), simpleTask('t2', { deps: ['t1'] }), simpleTask('t3'), simpleTask('t4')], NOW)],
      ['claim', d => lifecycle.claim(d, t('t1'), peer, 0, NOW)],
      ['start', d => lifecycle.start(d, t('t1'), peer, 1, NOW)],
      ['usage', d => { lifecycle.addUsage(d, t('t1'), { costUsd: 0.25, tokens: { input: 10, output: 20, cacheRead: 0, cacheWrite: 1 } }) }],
      ['complete', d => lifecycle.complete(d, t('t1'), { peer, head: 'a'.repeat(40), summary: 'did it', now: NOW })],
      ['startMerge', d => lifecycle.startMerge(d, t('t1'))],
      ['merge', d => lifecycle.merge(d, t('t1'), 'b'.repeat(40), NOW)],
      ['claim t3', d => lifecycle.claim(d, t('t3'), peer, 0, NOW)],
      ['start t3', d => lifecycle.start(d, t('t3'), peer, 1, NOW)],
      ['fail t3', d => lifecycle.fail(d, t('t3'), 'broke', { failure: true })],
      ['retry t3', d => lifecycle.retry(d, t('t3'), { now: NOW, depsMerged: true })],
      ['cancel t3', d => lifecycle.cancel(d, t('t3'), 'no longer wanted')],
      ['claim t4', d => lifecycle.claim(d, t('t4'), peer, 0, NOW)],
      ['start t4', d => lifecycle.start(d, t('t4'), peer, 1, NOW)],
      ['release t4', d => lifecycle.release(d, t('t4'), { now: NOW, notBefore: NOW + 1000, error: 'again' })],
      ['claim t4 again', d => lifecycle.claim(d, t('t4'), peer, 1, NOW)],
      ['start t4 again', d => lifecycle.start(d, t('t4'), peer, 2, NOW)],
      ['complete t4', d => lifecycle.complete(d, t('t4'), { peer, head: 'c'.repeat(40), summary: null, now: NOW })],
      ['startMerge t4', d => lifecycle.startMerge(d, t('t4'))],
      ['conflict', d => lifecycle.openConflict(d, t('t4'), { id: conflictIdFor(t('t4'), 1), files: ['a.txt'], hunks: [{ file: 'a.txt', line: 1, before: '', ours: 'x', theirs: 'y', after: '' }], oursFrom: { 'a.txt': t('t1') } })],
      ['decide', d => lifecycle.decide(d, conflictIdFor(t('t4'), 1), decision)],
      ['resolve', d => lifecycle.resolve(d, conflictIdFor(t('t4'), 1), { decision, clearError: true })],
      ['leader', d => { lifecycle.electLeader(d, peer, 1) }],
      ['main', d => { lifecycle.advanceMain(d, 'd'.repeat(40)) }]
    ]
    for (const [name, fn] of steps) {
      const bytes = board.change(name, d => { expect(fn(d), name).not.toBe(false) })
      expect(bytes, name).not.toBeNull()
      const decoded = expectDecodedAlike(bytes as Uint8Array, name)
      expect(decoded.message, name).toMatch(/\nmeshwork-sig\/1 /)
    }
    // and every change of the board, its genesis included, as another node loads them
    const all = A.getAllChanges(A.load(board.save()))
    expect(all.length).toBeGreaterThan(steps.length)
    for (const c of all) expectDecodedAlike(c, 'from the saved board')
  })

  it('decodes a plan of 2,000 tasks (76,000 ops, 1 MB) as A.decodeChange does', () => {
    const board = Board.create(MESH, sessionActorForPeer('12D3KooWabcdefabcdefabcdefabcdefabcdefabcdefabcdef'))
    const bytes = board.change('plan', addTasks(Array.from({ length: 2_000 }, (_, i) => simpleTask(`t${i}`, { deps: i > 0 ? ['t0'] : [] })), NOW)) as Uint8Array
    const want = A.decodeChange(bytes) as Decoded
    const got = decodeChangeFast(bytes) as Decoded | null
    expect(want.ops.length).toBeGreaterThan(74_000)
    expect(got).not.toBeNull()
    // isDeepStrictEqual: vitest's equality takes seconds over tens of thousands of ops
    expect(isDeepStrictEqual(got, want)).toBe(true)
    expect(keyOrderProblems(got as Decoded, want)).toEqual([])
  })

  it('decodes hundreds of random changes of several actors, with every value type, as A.decodeChange does', () => {
    let decoded = 0
    let refused = 0
    const seen = { values: new Set<string>(), actions: new Set<string>(), multiDeps: 0, otherActors: 0, messages: 0, empty: 0, inserts: 0 }
    for (const seed of [1, 2, 3, 4]) {
      for (const bytes of randomHistory(seed, 150)) {
        let want: Decoded | null = null
        try {
          want = A.decodeChange(bytes) as Decoded
        } catch {
          // an integer beyond 2^53 (a bigint): A.decodeChange cannot give it as a number, and the fast decoder reads no such change
          expect(decodeChangeFast(bytes), `seed ${seed}`).toBeNull()
          refused++
          continue
        }
        expectDecodedAlike(bytes, `seed ${seed}`)
        decoded++
        if (want.deps.length > 1) seen.multiDeps++
        if (want.message !== null) seen.messages++
        if (want.ops.length === 0) seen.empty++
        for (const op of want.ops as unknown as Array<Record<string, unknown>>) {
          seen.actions.add(String(op.action))
          if (op.action === 'set') seen.values.add(op.datatype !== undefined ? String(op.datatype) : op.value === null ? 'null' : Array.isArray(op.value) ? 'bytes' : typeof op.value)
          if (op.insert === true) seen.inserts++
          const ids = [op.obj, op.elemId, ...(op.pred as string[])].filter((x): x is string => typeof x === 'string' && x.includes('@'))
          if (ids.some(x => !x.endsWith(want.actor))) seen.otherActors++
        }
      }
    }
    expect(decoded).toBeGreaterThan(400)
    expect(refused).toBeGreaterThan(0)
    // the histories did hold what they are meant to cover
    expect([...seen.values].sort()).toEqual(['boolean', 'bytes', 'counter', 'float64', 'int', 'null', 'string', 'timestamp', 'uint'])
    expect([...seen.actions].sort()).toEqual(['del', 'inc', 'makeList', 'makeMap', 'makeText', 'markBegin', 'markEnd', 'set'])
    expect(seen.multiDeps).toBeGreaterThan(10)
    expect(seen.otherActors).toBeGreaterThan(10)
    expect(seen.messages).toBeGreaterThan(10)
    expect(seen.empty).toBeGreaterThan(0)
    expect(seen.inserts).toBeGreaterThan(10)
  })

  it('decodes random changes encoded from their decoded form (A.encodeChange) as A.decodeChange does', () => {
    const r = seeded(99)
    const hexOf = (n: number): string => Array.from({ length: n }, () => int(r, 256).toString(16).padStart(2, '0')).join('')
    let decoded = 0
    for (let c = 0; c < 200; c++) {
      const actor = hexOf(1 + int(r, 32))
      const others = Array.from({ length: int(r, 4) }, () => hexOf(1 + int(r, 20)))
      const anyActor = (): string => r() < 0.5 ? actor : others.length > 0 ? pick(r, others) : actor
      const opId = (): string => `${1 + int(r, r() < 0.1 ? 2 ** 32 - 1 : 500)}@${anyActor()}`
      const ops = Array.from({ length: int(r, 12) }, () => {
        const obj = r() < 0.4 ? '_root' : opId()
        const where = r() < 0.5 ? { key: r() < 0.3 ? pick(r, MAP_KEYS) : randomText(r) } : { elemId: r() < 0.3 ? '_head' : opId() }
        const insert = r() < 0.3 ? { insert: true } : {}
        const pred = Array.from({ length: r() < 0.7 ? int(r, 2) : int(r, 6) }, opId)
        switch (int(r, 8)) {
          case 0: return { action: pick(r, ['makeMap', 'makeList', 'makeText', 'makeTable']), obj, ...where, ...insert, pred }
          case 1: return { action: 'del', obj, ...where, pred }
          case 2: return { action: 'inc', obj, ...where, value: int(r, 2000) - 1000, pred }
          case 3: return { action: 'markBegin', obj, ...where, ...insert, name: randomText(r), value: pick(r, [null, true, 'x', 7, -2.5]), expand: r() < 0.5, pred }
          case 4: return { action: 'markEnd', obj, ...where, ...insert, expand: r() < 0.5, pred }
          case 5: {
            const datatype = pick(r, ['int', 'uint', 'float64', 'counter', 'timestamp'])
            const value = datatype === 'float64' ? r() * 1e6 - 5e5 : datatype === 'uint' ? int(r, Number.MAX_SAFE_INTEGER) : int(r, 2 ** 50) - 2 ** 49
            return { action: 'set', obj, ...where, ...insert, datatype, value, pred }
          }
          default: return { action: 'set', obj, ...where, ...insert, value: pick(r, [null, true, false, randomText(r), '']), pred }
        }
      })
      const change = {
        actor,
        seq: pick(r, [0, 1, 2, 1000, Number.MAX_SAFE_INTEGER]),
        startOp: pick(r, [1, 2, 1000, 2 ** 32 - 1]),
        time: pick(r, [0, -1, 1_700_000_000, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]),
        message: r() < 0.5 ? null : randomText(r),
        deps: Array.from({ length: int(r, 4) }, () => hexOf(32)),
        ops,
        ...(r() < 0.2 ? { extra_bytes: Array.from({ length: 1 + int(r, 8) }, () => int(r, 256)) } : {})
      }
      let bytes: Uint8Array
      try {
        bytes = A.encodeChange(change as unknown as A.DecodedChange)
      } catch {
        continue // a combination A.encodeChange does not take
      }
      expectDecodedAlike(bytes, `change ${c}`)
      decoded++
    }
    expect(decoded).toBeGreaterThan(150)
  })

  it('gives what A.decodeChange gives for values Automerge writes but its JS API does not: -0, NaN payloads, extra bytes', () => {
    const f64 = (x: number): number[] => Array.from(new Uint8Array(Float64Array.of(x).buffer))
    for (const raw of [f64(-0), f64(NaN), [1, 0, 0, 0, 0, 0, 0xf8, 0x7f], f64(5e-324)]) {
      const got = expectDecodedAlike(changeChunk({ columns: oneSet((8 << 4) | 5, raw) }), `float ${raw.join(',')}`)
      expect(Object.is((got.ops[0] as { value: number }).value, new Float64Array(Uint8Array.from(raw).buffer)[0])).toBe(true)
    }
    expect(expectDecodedAlike(changeChunk({ columns: oneSet((1 << 4) | 3, [5]), extra: [9, 8, 7] })).extra_bytes).toEqual([9, 8, 7])
    // preds stored out of order (Automerge gives them sorted: counter, then actor bytes)
    const unsorted = changeChunk({
      others: [[0x01]],
      columns: [...oneSet(0, []).slice(0, 4), [0x70, [...sleb(1), 3]], [0x71, [...sleb(-3), 0, 0, 1]], [0x73, [...sleb(-3), ...sleb(7), ...sleb(-2), ...sleb(0)]]]
    })
    expect(expectDecodedAlike(unsorted, 'unsorted preds').ops[0]?.pred).toEqual(['5@01', '5@aabb', '7@aabb'])
    // an actor of no bytes, a uint, a timestamp before 1970
    expectDecodedAlike(changeChunk({ actor: [], columns: oneSet((1 << 4) | 3, [127]) }), 'uint')
    expectDecodedAlike(changeChunk({ columns: oneSet((1 << 4) | 9, sleb(-5)) }), 'timestamp')
  })

  it('gives the author of a change as A.decodeChange does (a footer in its extra bytes)', () => {
    // as Automerge writes it: the first change of an actor whose document has an author
    let doc = A.change(A.init<Doc>({ actor: 'aa01', author: 'beef00' }), d => { d.x = 1 })
    expect(expectDecodedAlike(A.getLastLocalChange(doc) as Uint8Array, 'authored').author).toBe('beef00')
    doc = A.change(doc, d => { d.x = 2 })
    expectDecodedAlike(A.getLastLocalChange(doc) as Uint8Array, 'the second change')
    // footers as A.decodeChange reads them: its leb128 crate takes overlong numbers, a tenth byte of 0 or 1
    // ends one and any other overflows, and wasm32 keeps a length's low 32 bits
    const ones = (n: number): number[] => [0x81, ...Array<number>(n - 2).fill(0x80)]
    const footers: Array<[number[], string | undefined]> = [
      [[1, 0], ''],
      [[1, 3, 0xaa, 0xbb, 0xcc, 0xdd], 'aabbcc'],
      [[1, 5, 0xaa], undefined],
      [[2, 1, 0xaa], undefined],
      [[1], undefined],
      [[1, 0x80], undefined],
      [[0x81, 0x00, 1, 0xaa], 'aa'],
      [[...ones(10), 0x00, 1, 0xaa], 'aa'],
      [[...ones(10), 0x01, 1, 0xaa], undefined],
      [[1, 0x81, 0x80, 0x80, 0x80, 0x10, 0xaa, 0xbb], 'aa'],
      [[1, 0x82, ...Array<number>(8).fill(0x80), 0x01, 0xaa, 0xbb, 0xcc], 'aabb'],
      [[1, 0x82, ...Array<number>(8).fill(0x80), 0x02, 0xaa, 0xbb, 0xcc], undefined],
      [[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xaa], undefined]
    ]
    for (const [extra, author] of footers) {
      const got = expectDecodedAlike(changeChunk({ columns: oneSet(0, []), extra }), `footer ${extra.join(',')}`)
      expect(got.author, `footer ${extra.join(',')}`).toBe(author)
    }
  })

  it('keeps apart short strings that land in one slot of its string cache', () => {
    // 'Aa' and 'BB' (and 'AaBB', 'BBAa', ...) hash alike: the cache must compare the bytes
    const bytes = A.getLastLocalChange(A.change(A.init<Doc>(), d => {
      d.Aa = new A.ImmutableString('BB')
      d.BB = new A.ImmutableString('Aa')
      d.AaBB = new A.ImmutableString('BBAa')
      d.BBAa = new A.ImmutableString('AaBB')
    })) as Uint8Array
    const got = expectDecodedAlike(bytes)
    expect(got.ops.map(op => `${(op as { key: string }).key}=${String(op.value)}`).sort()).toEqual(['Aa=BB', 'AaBB=BBAa', 'BB=Aa', 'BBAa=AaBB'])
  })

  it('returns null for what it does not read: compressed chunks, documents, deflated or unknown columns, values beyond 2^53, counters beyond u32', () => {
    const small = A.getLastLocalChange(A.change(A.init<Doc>({ actor: 'abcd' }), { message: 'msg', time: 7 }, d => { d.x = 'hello world, '.repeat(30); d.n = 5 })) as Uint8Array
    const want = A.decodeChange(small)
    expectDecodedAlike(small)
    // a compressed change chunk (type 2: the body deflated, the checksum of the change chunk): A.decodeChange reads it
    const body = bodyOf(small)
    const compressed = chunk(2, deflateRawSync(body), { type: 1, body })
    expect(A.decodeChange(compressed)).toEqual(want)
    expect(decodeChangeFast(compressed)).toBeNull()
    // a saved document is a document chunk
    expect(decodeChangeFast(A.save(A.change(A.init<Doc>(), d => { d.a = 1 })))).toBeNull()
    // the changes Automerge hands out are uncompressed change chunks, large ones too; any other would give null
    let big = A.init<Doc>()
    big = A.change(big, d => { d.list = Array.from({ length: 3000 }, (_, i) => `item ${i % 7}`) })
    for (const c of [...A.getAllChanges(big), A.getLastLocalChange(big) as Uint8Array]) {
      expect(c[8]).toBe(1)
      expectDecodedAlike(c, 'a large change')
    }

    const ok = oneSet(0, [])
    expect(decodeChangeFast(changeChunk({ columns: ok }))).not.toBeNull()
    const cases: Array<[string, Uint8Array]> = [
      ['a deflated column', changeChunk({ columns: ok.map(([s, b]) => [s === 0x56 ? s | 8 : s, b]) })],
      ['an unknown column', changeChunk({ columns: [...ok, [0x2a5, [...sleb(1), 0]]] })],
      ['an empty column', changeChunk({ columns: [[0x01, []], ...ok] })],
      ['columns out of order', changeChunk({ columns: [ok[1] as [number, number[]], ok[0] as [number, number[]], ...ok.slice(2)] })],
      ['an int beyond 2^53', changeChunk({ columns: oneSet((8 << 4) | 4, sleb(2 ** 60)) })],
      ['a uint of 2^53', changeChunk({ columns: oneSet((8 << 4) | 3, uleb(2 ** 53)) })],
      ['a value type from a later Automerge', changeChunk({ columns: oneSet((2 << 4) | 10, [1, 2]) })],
      ['an overlong value', changeChunk({ columns: oneSet((2 << 4) | 3, [0x81, 0x00]) })],
      ['a value shorter than its metadata', changeChunk({ columns: oneSet((2 << 4) | 6, [0x61]) })],
      ['a start op beyond u32', changeChunk({ startOp: uleb(2 ** 32), columns: ok })],
      ['an obj counter beyond u32', changeChunk({ columns: [[0x01, [...sleb(1), 0]], [0x02, [...sleb(1), ...uleb(2 ** 32)]], ...ok] })],
      ['an obj actor past the actors', changeChunk({ columns: [[0x01, [...sleb(1), 1]], [0x02, [...sleb(1), 1]], ...ok] })],
      ['a pred counter of 0', changeChunk({ columns: [...ok.slice(0, 4), [0x70, [...sleb(1), 1]], [0x71, [...sleb(1), 0]], [0x73, [...sleb(1), 0]]] })],
      ['a pred actor without its counter', changeChunk({ columns: [...ok.slice(0, 4), [0x70, [...sleb(1), 1]], [0x71, [...sleb(1), 0]]] })],
      ['an action column longer than the others', changeChunk({ columns: ok.map(([s, b]) => [s, s === 0x42 ? [...sleb(2), 1] : b]) })],
      ['a key column longer than the others', changeChunk({ columns: ok.map(([s, b]) => [s, s === 0x15 ? [...sleb(2), ...lengthPrefixed('x')] : b]) })],
      ['an unknown action', changeChunk({ columns: ok.map(([s, b]) => [s, s === 0x42 ? [...sleb(1), 8] : b]) })],
      ['a key of actor and string', changeChunk({ columns: [[0x11, [...sleb(1), 0]], [0x13, [...sleb(1), 1]], ...ok] })]
    ]
    for (const [what, bytes] of cases) expect(decodeChangeFast(bytes), what).toBeNull()
  })

  it('decodes compact changes of a few thousand ops; leaves a larger change of many ops per byte to A.decodeChange', () => {
    const listOf = (n: number): A.Doc<Doc> => A.change(A.init<Doc>({ actor: 'abcdef' }), d => { d.l = Array.from({ length: n }, () => null) })
    // 1,000 nulls inserted, then deleted in one splice: about 100 bytes each
    const small = listOf(1000)
    expectDecodedAlike(A.getLastLocalChange(small) as Uint8Array, '1,000 nulls')
    expectDecodedAlike(A.getLastLocalChange(A.change(small, d => { (d.l as unknown[]).splice(0, 1000) })) as Uint8Array, '1,000 deleted')
    // 20,000 deleted take about as few bytes: more ops than the decoder allocates for so few bytes
    const large = A.getLastLocalChange(A.change(listOf(20_000), d => { (d.l as unknown[]).splice(0, 20_000) })) as Uint8Array
    expect(large.length).toBeLessThan(1000)
    expect(A.decodeChange(large).ops).toHaveLength(20_000)
    expect(decodeChangeFast(large)).toBeNull()
  })

  it('returns null for run lengths that claim billions of ops or preds, before it allocates for them', () => {
    const huge = 2 ** 40
    const cases = [
      changeChunk({ columns: [[0x15, [...sleb(huge), ...lengthPrefixed('x')]], [0x34, [...uleb(huge)]], [0x42, [...sleb(huge), 1]], [0x56, [...sleb(huge), 0]], [0x70, [...sleb(huge), 0]]] }),
      changeChunk({ columns: [[0x15, [...sleb(1), ...lengthPrefixed('x')]], [0x34, [1]], [0x42, [...sleb(1), 1]], [0x56, [...sleb(1), 0]], [0x70, [...sleb(1), ...uleb(huge)]], [0x71, [...sleb(huge), 0]], [0x73, [...sleb(huge), 1]]] }),
      changeChunk({ columns: [[0x15, [...sleb(-huge), ...lengthPrefixed('x')]], [0x34, [1]], [0x42, [...sleb(1), 1]], [0x56, [...sleb(1), 0]], [0x70, [...sleb(1), 0]]] }),
      changeChunk({ columns: [[0x15, [...sleb(1), ...uleb(huge)]], [0x34, [1]], [0x42, [...sleb(1), 1]], [0x56, [...sleb(1), 0]], [0x70, [...sleb(1), 0]]] })
    ]
    for (const bytes of cases) expect(decodeChangeFast(bytes)).toBeNull()
  })

  it('never throws nor answers differently on truncated, flipped, rewritten or random bytes', () => {
    const r = seeded(7)
    let doc = A.change(A.init<Doc>({ actor: '0102030405' }), d => { d.m = { a: 1, b: 'x' }; d.l = [1, 2.5, null]; d.t = 'héllo' })
    doc = A.change(A.merge(A.init<Doc>({ actor: 'ffee' }), doc), { message: 'edit' }, d => {
      d.m.a = new A.Counter(3)
      delete d.m.b
      ;(d.l as { deleteAt: (i: number) => void }).deleteAt(0)
      A.splice(d, ['t'], 1, 1, 'e😀')
      A.mark(d, ['t'], { start: 0, end: 2, expand: 'both' }, 'bold', true)
    })
    const samples = [...A.getAllChanges(doc), changeChunk({ columns: oneSet((8 << 4) | 5, [0, 0, 0, 0, 0, 0, 0xf8, 0x3f]), extra: [1] })]
    let decoded = 0
    for (const bytes of samples) {
      expectDecodedAlike(bytes)
      // every proper prefix, and the change with a byte more
      for (let n = 0; n < bytes.length; n++) expect(decodeChangeFast(bytes.subarray(0, n))).toBeNull()
      expect(decodeChangeFast(Uint8Array.from([...bytes, 0]))).toBeNull()
      // every byte flipped (the checksum no longer matches, or the checksum itself is off)
      for (let i = 0; i < bytes.length; i++) {
        const flipped = Uint8Array.from(bytes)
        flipped[i] = (flipped[i] as number) ^ (1 << int(r, 8))
        expect(decodeChangeFast(flipped), `byte ${i} flipped`).toBeNull()
      }
      // the body changed and the chunk made whole again (length and checksum): the decoder reads it through
      const body = bodyOf(bytes)
      for (let i = 0; i < 3000; i++) {
        const b = Array.from(body)
        const at = int(r, b.length)
        switch (int(r, 4)) {
          case 0: b[at] = int(r, 256); break
          case 1: b[at] = (b[at] as number) ^ (1 << int(r, 8)); break
          case 2: b.splice(at, 1 + int(r, 3)); break
          default: b.splice(at, 0, ...Array.from({ length: 1 + int(r, 3) }, () => int(r, 256)))
        }
        if (expectNullOrAlike(chunk(1, b), `rewrite ${i}`)) decoded++
      }
    }
    // some rewrites are still changes (another value, key or count): those decode, and alike
    expect(decoded).toBeGreaterThan(0)
    // random bytes, with and without a chunk header around them
    for (let i = 0; i < 2000; i++) {
      const junk = Array.from({ length: int(r, 200) }, () => int(r, 256))
      expect(decodeChangeFast(Uint8Array.from(junk))).toBeNull()
      expectNullOrAlike(chunk(1, junk), `junk ${i}`)
    }
    expect(decodeChangeFast(new Uint8Array(0))).toBeNull()
    expect(decodeChangeFast('not bytes' as unknown as Uint8Array)).toBeNull()
  })
})
