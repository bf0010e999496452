/**
 * What the tests of the Automerge readers and writers in TypeScript
 * (change-decoder, change-encoder, document-reader) share: a seeded generator
 * of numbers and random text, random edits and histories of an Automerge
 * document (each test file brings its own mix of values), LEB128 numbers and
 * chunks built byte by byte (chunk.rs, change.rs) for what Automerge itself
 * does not write, and fixtures: a signed board's task lifecycle, author
 * footers of extra bytes.
 */
import * as A from '@automerge/automerge'
import { createHash } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { BoardDoc } from '../../src/crdt/board.ts'
import { signerFromPrivateKey, type ChangeSigner } from '../../src/crdt/signing.ts'
import * as lifecycle from '../../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../../src/crdt/ops.ts'
import { asPeerId, conflictIdFor, parseTaskId, type PeerIdString } from '../../src/crdt/schema.ts'

export type Rand = () => number

/** A seeded generator of numbers in [0, 1) (mulberry32). */
export function seeded (seed: number): Rand {
  let s = seed | 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const int = (r: Rand, n: number): number => Math.floor(r() * n)
export function pick<T> (r: Rand, items: readonly T[]): T {
  return items[int(r, items.length)] as T
}

/** The characters of random text besides a-z (a test file may add its own). */
export const TEXT_CHARS = ['a', 'b', 'z', ' ', '0', '/', 'é', 'ß', 'ж', '中', '文', '😀', '🧩', '\u{10ffff}', '\ufeff', '\n', '"', '\\']

export function randomText (r: Rand, chars: readonly string[] = TEXT_CHARS): string {
  const len = r() < 0.1 ? 0 : r() < 0.1 ? 30 + int(r, 200) : int(r, 12)
  let s = ''
  for (let i = 0; i < len; i++) s += r() < 0.6 ? String.fromCharCode(97 + int(r, 26)) : pick(r, chars)
  return s
}

export type Doc = Record<string, any>

/** What a test file's random edits are made of; the edits themselves are `randomEdit`'s. */
export interface EditValues {
  /** The characters of text (`randomText`). */
  chars: readonly string[]
  /** A scalar of any type Automerge stores. */
  scalar: (r: Rand) => unknown
  /** A value put in a map or list: a scalar, or maps and lists of them. */
  value: (r: Rand) => unknown
  mapKeys: readonly string[]
  /** The values a mark of the text is set to. */
  markValues: readonly A.MarkValue[]
  /** Edits of the file's own, drawn as often as each of the ten common ones. */
  extraEdits?: ReadonlyArray<(r: Rand, d: Doc) => void>
}

/** A value of `scalar`, or now and then a map or list of values, two deep at most. */
export function randomValue (r: Rand, scalar: (r: Rand) => unknown, depth = 0): unknown {
  const roll = r()
  if (depth < 2 && roll < 0.1) return { a: randomValue(r, scalar, depth + 1), b: [scalar(r), randomValue(r, scalar, depth + 1)] }
  if (depth < 2 && roll < 0.18) return Array.from({ length: int(r, 4) }, () => randomValue(r, scalar, depth + 1))
  return scalar(r)
}

/** A list of a document inside A.change, with Automerge's list methods. */
export type ListProxy = unknown[] & { insertAt: (i: number, ...v: unknown[]) => void, deleteAt: (i: number, n?: number) => void }

/**
 * One random edit of `d` (inside A.change; `d.m` a map, `d.l` a list, `d.t`
 * text, `d.c` a counter): maps, lists, text, counters, marks, deletes, and
 * `v.extraEdits`.
 */
export function randomEdit (r: Rand, d: Doc, v: EditValues): void {
  const list = d.l as ListProxy
  const text = d.t as string
  const extra = v.extraEdits ?? []
  const which = int(r, 11 + extra.length)
  switch (which) {
    case 0:
    case 1: d.m[pick(r, v.mapKeys)] = v.value(r); break
    case 2: { const k = pick(r, v.mapKeys); if (k in d.m) delete d.m[k]; break }
    case 3: list.insertAt(int(r, list.length + 1), v.value(r)); break
    case 4: if (list.length > 0) list.deleteAt(int(r, list.length), 1 + int(r, 2)); break
    case 5: if (list.length > 0) d.l[int(r, list.length)] = v.scalar(r); break
    case 6: A.splice(d, ['t'], int(r, text.length + 1), text.length > 0 ? int(r, 3) : 0, randomText(r, v.chars)); break
    case 7: (d.c as A.Counter).increment(int(r, 200) - 100); break
    case 8: {
      if (text.length < 2) break
      const start = int(r, text.length - 1)
      const range = { start, end: start + 1 + int(r, text.length - start - 1), expand: pick(r, ['before', 'after', 'both', 'none'] as const) }
      if (r() < 0.7) A.mark(d, ['t'], range, pick(r, ['bold', 'link', 'comment']), pick(r, v.markValues))
      else A.unmark(d, ['t'], range, pick(r, ['bold', 'link']))
      break
    }
    case 9: d.m.nested = { deep: { deeper: [v.scalar(r), v.scalar(r)] }, when: new Date(1_700_000_000_000) }; break
    default:
      if (which - 10 < extra.length) (extra[which - 10] as (r: Rand, d: Doc) => void)(r, d)
      else d.m[pick(r, v.mapKeys)] = v.scalar(r)
  }
}

/** A document of `actor` with the objects `randomEdit` edits: a map, a list, text and a counter. */
export function editableDoc (actor: string, options: { message?: string, time?: number } = {}): A.Doc<Doc> {
  return A.change(A.init<Doc>({ actor }), options, d => {
    d.m = {}
    d.l = []
    d.t = 'hello'
    d.c = new A.Counter(0)
  })
}

/**
 * Every change of a random history of three actors (actor ids of different
 * lengths) editing one document, merging now and then so ops name other
 * actors' objects, elements and preds and changes have several deps: each
 * change as written, with and without messages and times, empty ones too.
 */
export function randomHistory (seed: number, rounds: number, v: EditValues): Uint8Array[] {
  const r = seeded(seed)
  const actors = ['aa' + seed.toString(16).padStart(6, '0'), 'ff00' + 'e'.repeat(28), '0123456789abcdef0123456789abcdef0123']
  let base = editableDoc(actors[0] as string, { message: 'base', time: 0 })
  const docs = actors.map((actor, i) => i === 0 ? base : A.merge(A.init<Doc>({ actor }), base))
  const out: Uint8Array[] = [A.getLastLocalChange(base) as Uint8Array]
  for (let round = 0; round < rounds; round++) {
    const i = int(r, docs.length)
    let doc = docs[i] as A.Doc<Doc>
    const opts = r() < 0.3 ? {} : { message: r() < 0.5 ? randomText(r, v.chars) : 'm', time: pick(r, [0, 1, -5, 1_700_000_000, Number.MAX_SAFE_INTEGER]) }
    if (r() < 0.05) doc = A.emptyChange(doc, r() < 0.5 ? 'empty' : undefined)
    else {
      doc = A.change(doc, opts, d => {
        const n = 1 + int(r, r() < 0.1 ? 40 : 4)
        for (let k = 0; k < n; k++) randomEdit(r, d, v)
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

/** A document of two actors' changes: a map, a list, text with a mark, a counter set over a key, deletes. */
export function twoActorDoc (): A.Doc<Doc> {
  const doc = A.change(A.init<Doc>({ actor: '0102030405' }), d => { d.m = { a: 1, b: 'x' }; d.l = [1, 2.5, null]; d.t = 'héllo' })
  return A.change(A.merge(A.init<Doc>({ actor: 'ffee' }), doc), { message: 'edit' }, d => {
    d.m.a = new A.Counter(3)
    delete d.m.b
    ;(d.l as ListProxy).deleteAt(0)
    A.splice(d, ['t'], 1, 1, 'e😀')
    A.mark(d, ['t'], { start: 0, end: 2, expand: 'both' }, 'bold', true)
  })
}

// LEB128 (parse/leb128.rs) and chunks built byte by byte.
export function uleb (n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return out
}

export function sleb (n: number): number[] {
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

export const lengthPrefixed = (s: string): number[] => [...uleb(Buffer.byteLength(s)), ...Buffer.from(s)]

/** The 8 bytes of float64 `x`, little-endian. */
export const f64 = (x: number): number[] => Array.from(new Uint8Array(Float64Array.of(x).buffer))

/**
 * A chunk of `type` around `body`, with its checksum; or with the checksum
 * of `checksumOf` (a compressed chunk carries that of the change chunk).
 */
export function chunk (type: number, body: Uint8Array | number[], checksumOf: { type: number, body: Uint8Array | number[] } = { type, body }): Uint8Array {
  const typeAndLength = (t: number, b: Uint8Array | number[]): number[] => [t, ...uleb(b.length)]
  const hash = createHash('sha256').update(Uint8Array.from(typeAndLength(checksumOf.type, checksumOf.body))).update(Uint8Array.from(checksumOf.body)).digest()
  return Uint8Array.from([0x85, 0x6f, 0x4a, 0x83, ...hash.subarray(0, 4), ...typeAndLength(type, body), ...body])
}

/** The body of chunk `bytes` (after magic, checksum, type and length). */
export function bodyOf (bytes: Uint8Array): Uint8Array {
  let at = 9
  while (((bytes[at] as number) & 0x80) !== 0) at++
  return bytes.subarray(at + 1)
}

/** `body` rewritten at random: a byte set or a bit flipped, or 1-3 bytes cut or inserted. */
export function rewrite (r: Rand, body: Uint8Array): number[] {
  const b = Array.from(body)
  const at = int(r, b.length)
  switch (int(r, 4)) {
    case 0: b[at] = int(r, 256); break
    case 1: b[at] = (b[at] as number) ^ (1 << int(r, 8)); break
    case 2: b.splice(at, 1 + int(r, 3)); break
    default: b.splice(at, 0, ...Array.from({ length: 1 + int(r, 3) }, () => int(r, 256)))
  }
  return b
}

export interface ChangeFields {
  actor?: number[]
  others?: number[][]
  startOp?: number[]
  columns: Array<[number, number[]]>
  extra?: number[]
}

/** A change chunk (seq 1, time 0, no deps, no message) with header fields and raw columns as given (spec, bytes), in the order given. */
export function changeChunk (f: ChangeFields): Uint8Array {
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

/**
 * Columns of one op `set _root.x = <value>` with the value's metadata and raw
 * bytes as given; its runs of one as runs (count 1), or as literal runs
 * (count -1, as Automerge writes a lone value) when `literal`.
 */
export function oneSet (meta: number, raw: number[], literal = false): Array<[number, number[]]> {
  const one = sleb(literal ? -1 : 1)
  const cols: Array<[number, number[]]> = [
    [0x15, [...one, ...lengthPrefixed('x')]],
    [0x34, [1]],
    [0x42, [...one, 1]],
    [0x56, [...one, ...uleb(meta)]]
  ]
  if (raw.length > 0) cols.push([0x57, raw])
  cols.push([0x70, [...one, 0]])
  return cols
}

/**
 * Extra bytes of a change and the author A.decodeChange reads from them (a
 * footer). Its leb128 crate takes overlong numbers, a tenth byte of 0 or 1
 * ends one and any other overflows, and wasm32 keeps a length's low 32 bits.
 */
export const AUTHOR_FOOTERS: ReadonlyArray<[number[], string | undefined]> = (() => {
  const ones = (n: number): number[] => [0x81, ...Array<number>(n - 2).fill(0x80)]
  return [
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
})()

/** A new Ed25519 key: its peer id (as a string and as a board names it) and a signer of changes. */
export async function newPeer (): Promise<{ id: string, peer: PeerIdString, signer: ChangeSigner }> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  return { id, peer: asPeerId(id), signer: signerFromPrivateKey(id, key) }
}

/** The changes of a plan of four tasks taken by `peer` through every step of their lifecycle (merged, failed, retried, cancelled, released, conflicted), at `now`. */
export function lifecycleSteps (peer: PeerIdString, now: number): Array<[string, (d: BoardDoc) => unknown]> {
  const t = parseTaskId
  const decision = { action: 'ours' as const, by: 'tester', at: now, note: '' }
  return [
    ['plan', addTasks([simpleTask('t1', { prompt: 'do it — ✓ 😀' }), simpleTask('t2', { deps: ['t1'] }), simpleTask('t3'), simpleTask('t4')], now)],
    ['claim', d => lifecycle.claim(d, t('t1'), peer, 0, now)],
    ['start', d => lifecycle.start(d, t('t1'), peer, 1, now)],
    ['usage', d => { lifecycle.addUsage(d, t('t1'), { costUsd: 0.25, tokens: { input: 10, output: 20, cacheRead: 0, cacheWrite: 1 } }) }],
    ['complete', d => lifecycle.complete(d, t('t1'), { peer, head: 'a'.repeat(40), summary: 'did it', now })],
    ['startMerge', d => lifecycle.startMerge(d, t('t1'))],
    ['merge', d => lifecycle.merge(d, t('t1'), 'b'.repeat(40), now)],
    ['claim t3', d => lifecycle.claim(d, t('t3'), peer, 0, now)],
    ['start t3', d => lifecycle.start(d, t('t3'), peer, 1, now)],
    ['fail t3', d => lifecycle.fail(d, t('t3'), 'broke', { failure: true })],
    ['retry t3', d => lifecycle.retry(d, t('t3'), { now, depsMerged: true })],
    ['cancel t3', d => lifecycle.cancel(d, t('t3'), 'no longer wanted')],
    ['claim t4', d => lifecycle.claim(d, t('t4'), peer, 0, now)],
    ['start t4', d => lifecycle.start(d, t('t4'), peer, 1, now)],
    ['release t4', d => lifecycle.release(d, t('t4'), { now, notBefore: now + 1000, error: 'again' })],
    ['claim t4 again', d => lifecycle.claim(d, t('t4'), peer, 1, now)],
    ['start t4 again', d => lifecycle.start(d, t('t4'), peer, 2, now)],
    ['complete t4', d => lifecycle.complete(d, t('t4'), { peer, head: 'c'.repeat(40), summary: null, now })],
    ['startMerge t4', d => lifecycle.startMerge(d, t('t4'))],
    ['conflict', d => lifecycle.openConflict(d, t('t4'), { id: conflictIdFor(t('t4'), 1), files: ['a.txt'], hunks: [{ file: 'a.txt', line: 1, before: '', ours: 'x', theirs: 'y', after: '' }], oursFrom: { 'a.txt': t('t1') } })],
    ['decide', d => lifecycle.decide(d, conflictIdFor(t('t4'), 1), decision)],
    ['resolve', d => lifecycle.resolve(d, conflictIdFor(t('t4'), 1), { decision, clearError: true })],
    ['leader', d => { lifecycle.electLeader(d, peer, 1) }],
    ['main', d => { lifecycle.advanceMain(d, 'd'.repeat(40)) }]
  ]
}
