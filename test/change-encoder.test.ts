/**
 * The change encoder (src/crdt/change-encoder.ts) held to `A.encodeChange`:
 * for every decoded change it encodes, the same bytes; for what it does not,
 * null, never a throw. And `encodesTo(change, bytes)` is true only when
 * A.decodeChange(bytes) is `change`: true for what Automerge writes (when
 * Automerge itself encodes the decoded change back to those bytes), false
 * when any byte or any field differs. Changes come from a signed board's task
 * lifecycle, a plan of 2,000 tasks, seeded random documents of several actors
 * and every value type, A.encodeChange of random decoded changes, those
 * changes mutated field by field, and chunks built or rewritten byte by byte.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { isDeepStrictEqual } from 'node:util'
import { decodeChangeFast } from '../src/crdt/change-decoder.ts'
import { encodeChangeFast, encodesTo } from '../src/crdt/change-encoder.ts'
import { Board, nodeActorForPeer, sessionActorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import {
  AUTHOR_FOOTERS, TEXT_CHARS, bodyOf, changeChunk, chunk, f64, int, lifecycleSteps, newPeer, oneSet, pick, randomHistory,
  randomText, randomValue, rewrite, seeded, sleb, twoActorDoc, type Doc, type EditValues, type Rand
} from './helpers/automerge-bytes.ts'

type Decoded = A.DecodedChange & Record<string, unknown>
type Op = Record<string, unknown>

const same = (a: Uint8Array | null, b: Uint8Array | null): boolean =>
  a !== null && b !== null && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))

/** A.encodeChange of anything, null where it throws. */
function automergeEncode (change: unknown): Uint8Array | null {
  try {
    return A.encodeChange(change as A.DecodedChange)
  } catch {
    return null
  }
}

/** encodeChangeFast of anything, failing the test if it throws. */
function fastEncode (change: unknown, label: string): Uint8Array | null {
  try {
    return encodeChangeFast(change as A.DecodedChange)
  } catch (err) {
    expect.fail(`${label}: encodeChangeFast threw ${String(err)}`)
  }
}

/** encodesTo of anything, failing the test if it throws. */
function fastEncodesTo (change: unknown, bytes: Uint8Array, label: string): boolean {
  try {
    return encodesTo(change as A.DecodedChange, bytes)
  } catch (err) {
    expect.fail(`${label}: encodesTo threw ${String(err)}`)
  }
}

/**
 * Whether a change has a float the encoder may leave to Automerge (one
 * serde_json may not read back exactly): a float64 or a mark's number that is
 * not a safe integer, or is -0.
 */
function hasFloat (change: Decoded): boolean {
  return (change.ops as unknown as Op[]).some(op => typeof op.value === 'number' && (!Number.isSafeInteger(op.value) || Object.is(op.value, -0)) &&
    (op.datatype === 'float64' || op.action === 'markBegin'))
}

/**
 * The encoder's promise for `change` (any object): null, or exactly
 * A.encodeChange's bytes, which Automerge decodes back to `change` (but for
 * the hash, which is the bytes'); encodesTo then agrees. Returns the bytes.
 */
function expectNullOrAlike (change: unknown, label: string): Uint8Array | null {
  const got = fastEncode(change, label)
  if (got === null) return null
  const want = automergeEncode(change)
  if (want === null) expect.fail(`${label}: encoded a change A.encodeChange refuses`)
  if (!same(got, want)) {
    expect(Buffer.from(got).toString('hex'), label).toBe(Buffer.from(want).toString('hex'))
  }
  const back = A.decodeChange(got) as Decoded
  const withoutHash = (c: object): object => ({ ...c, hash: undefined })
  if (!isDeepStrictEqual(withoutHash(back), withoutHash(change as object))) {
    expect(back, `${label}: Automerge decodes the bytes to another change`).toStrictEqual(change)
    expect.fail(`${label}: Automerge decodes the bytes to another change`)
  }
  expect(fastEncodesTo(change, got, label), label).toBe((change as { hash?: unknown }).hash === back.hash)
  return got
}

/**
 * For a change Automerge wrote: encodeChangeFast of its decoded form is
 * A.encodeChange's (not null unless `mayRefuse`), and encodesTo of what
 * decodeChangeFast and A.decodeChange give is true exactly when Automerge
 * encodes the decoded change back to these bytes. Returns whether it encoded.
 */
function expectEncodedAlike (bytes: Uint8Array, label: string, mayRefuse = false): boolean {
  const decoded = A.decodeChange(bytes) as Decoded
  const want = automergeEncode(decoded)
  const got = fastEncode(decoded, label)
  if (want === null) {
    expect(got, `${label}: encoded what A.encodeChange refuses`).toBeNull()
    return false
  }
  if (got === null) {
    if (!mayRefuse) expect.fail(`${label}: encodeChangeFast gave null`)
    expect(hasFloat(decoded), `${label}: null for a change without floats`).toBe(true)
  } else if (!same(got, want)) {
    expect(Buffer.from(got).toString('hex'), label).toBe(Buffer.from(want).toString('hex'))
  }
  const roundTrips = got !== null && same(want, bytes)
  const fast = decodeChangeFast(bytes)
  expect(fast, `${label}: the fast decoder gave null`).not.toBeNull()
  expect(fastEncodesTo(fast, bytes, label), `${label}: encodesTo(decodeChangeFast)`).toBe(roundTrips)
  expect(fastEncodesTo(decoded, bytes, label), `${label}: encodesTo(A.decodeChange)`).toBe(roundTrips)
  return got !== null
}

/** The characters of random text besides a-z: NUL too. */
const CHARS = [...TEXT_CHARS, '\u0000']

/** Floats JSON and serde_json carry exactly (short decimals), and doubles of every kind. */
const PLAIN_FLOATS = [0.25, 1.5, -2.25, 0.1, 123.456, 1e-7, -3.75e-5, 1e21, 1.5e22, 3, -4, 0]
function randomDouble (r: Rand): number {
  const f = new Float64Array(1)
  const u = new Uint32Array(f.buffer)
  u[0] = int(r, 2 ** 32)
  u[1] = int(r, 2 ** 32)
  return Number.isFinite(f[0]) ? f[0] as number : 0.5
}

/** A scalar of any type Automerge stores; bigints beyond 2^53 (which A.decodeChange cannot give as numbers) rarely. */
function randomScalar (r: Rand): unknown {
  switch (int(r, 15)) {
    case 0: return null
    case 1: return r() < 0.5
    case 2: return pick(r, [0, 1, -1, 127, 128, -64, -65, 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER])
    case 3: return int(r, 2 ** 40) - 2 ** 39
    case 4: return new A.Uint(pick(r, [0, 1, 127, 128, 2 ** 32, Number.MAX_SAFE_INTEGER, int(r, 1e9)]))
    case 5: return new A.Int(int(r, 2000) - 1000)
    case 6: return new A.Float64(pick(r, [1.5, -2.25, 0.1, 1e-300, Number.MAX_VALUE, Number.MIN_VALUE, 3, ...PLAIN_FLOATS]))
    case 7: return r() < 0.5 ? (int(r, 20000) - 10000) / 7 : pick(r, PLAIN_FLOATS)
    case 8: return new A.ImmutableString(randomText(r, CHARS))
    case 9: return Uint8Array.from({ length: r() < 0.2 ? 0 : int(r, 40) }, () => int(r, 256))
    case 10: return new A.Counter(int(r, 2000) - 1000)
    case 11: return new Date(pick(r, [0, -1, 1_700_000_000_000, -86_400_000 * 365, int(r, 2 ** 42)]))
    case 12: return r() < 0.15 ? pick(r, [2n ** 60n, -(2n ** 60n), 2n ** 53n + 1n]) : BigInt(int(r, 1000))
    default: return randomText(r, CHARS) // a string: a text object
  }
}

const MAP_KEYS = ['a', 'b', 'key with spaces', '', 'é', '😀', 'k'.repeat(40), '\ufeffbom', 'x'.repeat(200)]

/** What the random histories' edits are made of (randomHistory). */
const EDITS: EditValues = {
  chars: CHARS,
  scalar: randomScalar,
  value: r => randomValue(r, randomScalar),
  mapKeys: MAP_KEYS,
  markValues: [true, false, null, 'https://x', 42, -3, 1.5, new Date(5)]
}

/**
 * A random decoded change, as a caller might hand A.encodeChange one: preds
 * and deps in any order, actors of any length (empty ones, prefixes of
 * others), every action, datatype and kind of value, extra bytes with and
 * without an author footer.
 */
function randomRawChange (r: Rand): Record<string, unknown> {
  const hexOf = (n: number): string => Array.from({ length: n }, () => int(r, 256).toString(16).padStart(2, '0')).join('')
  const actor = r() < 0.05 ? '' : hexOf(1 + int(r, 32))
  const others = Array.from({ length: int(r, 4) }, () => pick(r, ['', actor.slice(0, 2), actor + '00', hexOf(1 + int(r, 20)), hexOf(16)]))
  const anyActor = (): string => r() < 0.5 ? actor : others.length > 0 ? pick(r, others) : actor
  const opId = (): string => `${1 + int(r, r() < 0.1 ? 2 ** 32 - 1 : 500)}@${anyActor()}`
  const ops = Array.from({ length: r() < 0.1 ? 30 + int(r, 100) : int(r, 12) }, () => {
    const obj = r() < 0.4 ? '_root' : opId()
    const where = r() < 0.5 ? { key: r() < 0.3 ? pick(r, MAP_KEYS) : randomText(r, CHARS) } : { elemId: r() < 0.3 ? '_head' : opId() }
    const insert = r() < 0.3 ? { insert: true } : {}
    const pred = Array.from({ length: r() < 0.7 ? int(r, 2) : int(r, 6) }, opId)
    switch (int(r, 9)) {
      case 0: return { action: pick(r, ['makeMap', 'makeList', 'makeText', 'makeTable']), obj, ...where, ...insert, pred }
      case 1: return { action: 'del', obj, ...where, ...insert, pred }
      case 2: return { action: 'inc', obj, ...where, value: int(r, 2000) - 1000, pred }
      case 3: {
        const value = pick(r, [null, true, false, 'x', '', 7, 0, -2, 42, -2.5, 0.1, 1e21, randomDouble(r), randomText(r, CHARS)])
        return { action: 'markBegin', obj, ...where, ...insert, name: randomText(r, CHARS), value, expand: r() < 0.5, pred }
      }
      case 4: return { action: 'markEnd', obj, ...where, ...insert, expand: r() < 0.5, pred }
      case 5:
      case 6: {
        const datatype = pick(r, ['int', 'uint', 'float64', 'counter', 'timestamp'])
        const value = datatype === 'float64'
          ? pick(r, [r() * 1e6 - 5e5, int(r, 1000) / 8, randomDouble(r), ...PLAIN_FLOATS])
          : datatype === 'uint' ? pick(r, [int(r, Number.MAX_SAFE_INTEGER), int(r, 200), 0]) : pick(r, [int(r, 2 ** 50) - 2 ** 49, int(r, 200) - 100, 0, -1])
        return { action: 'set', obj, ...where, ...insert, datatype, value, pred }
      }
      default: return { action: 'set', obj, ...where, ...insert, value: pick(r, [null, true, false, randomText(r, CHARS), '']), pred }
    }
  })
  const author = r() < 0.3 ? hexOf(int(r, 20)) : null
  const extra = author !== null
    ? [1, author.length / 2, ...Buffer.from(author, 'hex'), ...(r() < 0.3 ? [int(r, 256)] : [])]
    : r() < 0.2 ? Array.from({ length: 1 + int(r, 8) }, () => int(r, 256)) : null
  return {
    actor,
    seq: pick(r, [0, 1, 2, 1000, Number.MAX_SAFE_INTEGER]),
    startOp: pick(r, [1, 2, 1000, 2 ** 32 - 1]),
    time: pick(r, [0, -1, 1_700_000_000, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]),
    message: r() < 0.5 ? null : randomText(r, CHARS),
    deps: Array.from({ length: int(r, 4) }, () => hexOf(32)),
    ops,
    ...(extra !== null ? { extra_bytes: extra } : {})
  }
}

/**
 * `change` altered in one field each: every field of the change, and of op
 * `k`, to values of the same kind and of others, in and out of the form
 * A.decodeChange gives. Each alteration is a fresh copy.
 */
function mutations (change: Decoded, r: Rand): Array<[string, Record<string, unknown>]> {
  const out: Array<[string, Record<string, unknown>]> = []
  const c = change as Record<string, unknown>
  const actor = change.actor
  const with_ = (label: string, fields: Record<string, unknown>, remove: string[] = []): void => {
    const m = { ...structuredClone(c), ...fields }
    for (const k of remove) delete m[k]
    out.push([label, m])
  }
  with_('actor uppercase', { actor: actor.toUpperCase() })
  with_('another actor', { actor: 'ab' + actor })
  with_('actor of odd length', { actor: actor + 'a' })
  with_('actor not hex', { actor: 'zz' })
  with_('actor a number', { actor: 5 })
  for (const seq of [change.seq + 1, -1, 1.5, -0, 2 ** 53, '1']) with_(`seq ${String(seq)}`, { seq })
  for (const startOp of [change.startOp + 1, 0, 2 ** 32, 2 ** 32 - 1, -0, 1.5]) with_(`startOp ${String(startOp)}`, { startOp })
  for (const time of [change.time + 1, -0, 1.5, 2 ** 53, '0', null]) with_(`time ${String(time)}`, { time })
  for (const message of ['', 'x', null, '\ud800', 'a\udc00b', 'é😀', 5]) with_(`message ${JSON.stringify(message)}`, { message })
  with_('no message', {}, ['message'])
  const deps = change.deps
  const dep = (b: number): string => b.toString(16).padStart(2, '0').repeat(32)
  with_('deps reversed', { deps: [...deps].reverse() })
  with_('deps with a dep more', { deps: [...deps, dep(int(r, 256))].sort() })
  with_('deps unsorted', { deps: [dep(0xff), dep(0x00)] })
  with_('deps duplicated', { deps: [dep(0x10), dep(0x10)] })
  with_('deps uppercase', { deps: [dep(0xab).toUpperCase()] })
  with_('deps short', { deps: ['abcd'] })
  with_('no deps', { deps: [] })
  for (const extra of [[], [1, 2, 3], [1, 2, 0xbe, 0xef], [1, 0], [256], [-0], [1.5], ['1'], new Uint8Array([1, 2])]) {
    with_(`extra bytes ${JSON.stringify(extra)}`, { extra_bytes: extra })
  }
  with_('extra bytes and their author', { extra_bytes: [1, 2, 0xbe, 0xef], author: 'beef' })
  with_('extra bytes and an empty author', { extra_bytes: [1, 0], author: '' })
  with_('an author without extra bytes', { author: 'beef' }, ['extra_bytes'])
  with_('another author', { author: 'abcd' })
  with_('no extra bytes', {}, ['extra_bytes', 'author'])
  with_('hash of zeros', { hash: '00'.repeat(32) })
  with_('hash uppercase', { hash: change.hash.toUpperCase() })
  with_('hash null', { hash: null })
  with_('no hash', {}, ['hash'])
  with_('hash undefined', { hash: undefined })
  with_('an unknown field', { foo: 1 })
  with_('ops not an array', { ops: {} })

  const ops = change.ops as unknown as Op[]
  if (ops.length === 0) {
    with_('an op added', { ops: [{ action: 'set', obj: '_root', key: 'k', value: 'v', pred: [] }] })
    return out
  }
  const k = int(r, ops.length)
  const op = ops[k] as Op
  const withOp = (label: string, fields: Record<string, unknown>, remove: string[] = []): void => {
    const m = structuredClone(c) as Decoded
    const o = { ...(m.ops[k] as unknown as Op), ...fields }
    for (const f of remove) delete o[f]
    ;(m.ops as unknown as Op[])[k] = o
    out.push([`op ${k} (${String(op.action)}): ${label}`, m])
  }
  const other = `${1 + int(r, 9)}@${actor}`
  for (const value of ['another', '', 5, -5, 0, -0, 1.5, 0.1 + 0.2, NaN, Infinity, 2 ** 53, 2n ** 60n, [1, 2], new Uint8Array([1]), true, null, '\udfff', { a: 1 }]) {
    withOp(`value ${typeof value === 'bigint' ? `${value}n` : String(value)}`, { value })
  }
  withOp('no value', {}, ['value'])
  for (const datatype of ['int', 'uint', 'float64', 'counter', 'timestamp', 'bytes', 'undefined', 'str', null]) withOp(`datatype ${String(datatype)}`, { datatype })
  withOp('no datatype', {}, ['datatype'])
  for (const key of ['another', '', 'é😀', '\ud800', 5]) withOp(`key ${JSON.stringify(key)}`, { key }, ['elemId'])
  withOp('both key and elemId', { key: 'k', elemId: '_head' })
  withOp('neither key nor elemId', {}, ['key', 'elemId'])
  for (const elemId of ['_head', other, `0@${actor}`, `01@${actor}`, `+1@${actor}`, `1@${actor.toUpperCase()}`, `1@${actor}0`, `1@${actor}@${actor}`, `4294967295@${actor}`, `4294967296@${actor}`, '1@', '_root', 5]) {
    withOp(`elemId ${String(elemId)}`, { elemId }, ['key'])
  }
  for (const obj of ['_root', '', other, '_head', `0@${actor}`, `1@${actor.toUpperCase()}`, `1@ab${actor}`, null]) withOp(`obj ${String(obj)}`, { obj })
  withOp('no obj', {}, ['obj'])
  for (const insert of [true, false, 1, null, undefined]) withOp(`insert ${String(insert)}`, { insert })
  withOp('no insert', {}, ['insert'])
  const pred = op.pred as string[]
  withOp('preds reversed', { pred: [...pred].reverse() })
  withOp('a pred duplicated', { pred: pred.length > 0 ? [pred[0], ...pred] : [other, other] })
  withOp('no preds', { pred: [] })
  withOp('a pred more, sorted', { pred: [...pred, `${4_000_000_000}@${actor}`] })
  withOp('preds out of order', { pred: [`9@${actor}`, `3@${actor}`] })
  withOp('preds of one counter, actors out of order', { pred: [`3@ff${actor}`, `3@00${actor}`] })
  withOp('preds of one counter, actors in order', { pred: [`3@00${actor}`, `3@ff${actor}`] })
  withOp('pred _root', { pred: ['_root'] })
  withOp('pred of counter 0', { pred: [`0@${actor}`] })
  withOp('pred of an empty actor', { pred: ['3@'] })
  withOp('preds not an array', { pred: '3@aa' })
  withOp('no pred', {}, ['pred'])
  for (const action of ['set', 'del', 'inc', 'makeMap', 'makeList', 'makeText', 'makeTable', 'markBegin', 'markEnd', 'foo', 5]) withOp(`action ${String(action)}`, { action })
  for (const name of ['bold', '', 5]) withOp(`name ${String(name)}`, { name })
  withOp('no name', {}, ['name'])
  for (const expand of [true, false, 1, null]) withOp(`expand ${String(expand)}`, { expand })
  withOp('no expand', {}, ['expand'])
  withOp('ref', { ref: other })
  withOp('an unknown field', { foo: 1 })
  const m = structuredClone(c) as Decoded
  ;(m.ops as unknown[])[k] = null
  out.push([`op ${k} null`, m])
  return out
}

/** Fails if encodesTo vouches for `bytes` with a change A.decodeChange does not give for them. Returns whether it vouched. */
function expectSound (change: unknown, bytes: Uint8Array, label: string): boolean {
  if (!fastEncodesTo(change, bytes, label)) return false
  let want: unknown
  try {
    want = A.decodeChange(bytes)
  } catch (err) {
    expect.fail(`${label}: encodesTo vouched for bytes A.decodeChange refuses (${String(err)})`)
  }
  if (!isDeepStrictEqual(change, want)) {
    expect(change, label).toStrictEqual(want)
    expect.fail(`${label}: encodesTo vouched for a change A.decodeChange does not give`)
  }
  return true
}

const MESH = 'mesh-change-encoder'
const NOW = 1_700_000_000_000

describe('encodeChangeFast and encodesTo', () => {
  it('encode every change of a signed board through a task lifecycle as A.encodeChange does', async () => {
    const { id, peer, signer } = await newPeer()
    const board = Board.create(MESH, nodeActorForPeer(id), signer)
    const steps = lifecycleSteps(peer, NOW)
    const all: Uint8Array[] = []
    for (const [name, fn] of steps) {
      const bytes = board.change(name, d => { expect(fn(d), name).not.toBe(false) })
      expect(bytes, name).not.toBeNull()
      all.push(bytes as Uint8Array)
    }
    // and every change of the board, its genesis included, as another node loads them
    all.push(...A.getAllChanges(A.load(board.save())))
    expect(all.length).toBeGreaterThan(2 * steps.length)
    for (const [i, bytes] of all.entries()) {
      expectEncodedAlike(bytes, `change ${i}`)
      // Automerge writes these as it would encode them again: the fast path vouches for each
      expect(same(A.encodeChange(A.decodeChange(bytes)), bytes), `change ${i}`).toBe(true)
      expect(encodesTo(decodeChangeFast(bytes) as A.DecodedChange, bytes), `change ${i}`).toBe(true)
    }
  })

  it('encodes a plan of 2,000 tasks (76,000 ops, 1 MB) as A.encodeChange does', () => {
    const board = Board.create(MESH, sessionActorForPeer('12D3KooWabcdefabcdefabcdefabcdefabcdefabcdefabcdef'))
    const bytes = board.change('plan', addTasks(Array.from({ length: 2_000 }, (_, i) => simpleTask(`t${i}`, { deps: i > 0 ? ['t0'] : [] })), NOW)) as Uint8Array
    const fast = decodeChangeFast(bytes) as A.DecodedChange
    expect(fast.ops.length).toBeGreaterThan(74_000)
    // A.decodeChange gives what the fast decoder gives (change-decoder.test.ts): one of them stands for both
    const got = encodeChangeFast(fast)
    expect(got).not.toBeNull()
    expect(same(got, A.encodeChange(fast))).toBe(true)
    expect(same(got, bytes)).toBe(true)
    expect(encodesTo(fast, bytes)).toBe(true)
    // a byte off anywhere, a field off: not
    const flipped = Uint8Array.from(bytes)
    flipped[bytes.length - 100] = (flipped[bytes.length - 100] as number) ^ 1
    expect(encodesTo(fast, flipped)).toBe(false)
    const ops = fast.ops as unknown as Op[]
    const altered = { ...fast, ops: ops.map((op, i) => i === 50_000 ? { ...op, key: `${String(op.key)}x` } : op) }
    expect(encodesTo(altered as A.DecodedChange, bytes)).toBe(false)
  })

  it('encodes hundreds of random changes of several actors, with every value type, as A.encodeChange does', () => {
    const counts = { encoded: 0, floats: 0, automergeRefuses: 0, notRoundTrip: 0, vouched: 0 }
    const seen = { values: new Set<string>(), actions: new Set<string>() }
    for (const seed of [11, 12, 13, 14]) {
      for (const [i, bytes] of randomHistory(seed, 120, EDITS).entries()) {
        let decoded: Decoded
        try {
          decoded = A.decodeChange(bytes) as Decoded
        } catch {
          continue // an integer beyond 2^53 (a bigint): A.decodeChange cannot give it as a number
        }
        const label = `seed ${seed} change ${i}`
        if (automergeEncode(decoded) === null) counts.automergeRefuses++
        else if (expectEncodedAlike(bytes, label, true)) {
          counts.encoded++
          if (same(A.encodeChange(decoded), bytes)) counts.vouched++
          else counts.notRoundTrip++
        } else counts.floats++
        if (automergeEncode(decoded) === null) expect(fastEncode(decoded, label)).toBeNull()
        for (const op of decoded.ops as unknown as Op[]) {
          seen.actions.add(String(op.action))
          if (op.action === 'set') seen.values.add(op.datatype !== undefined ? String(op.datatype) : op.value === null ? 'null' : Array.isArray(op.value) ? 'bytes' : typeof op.value)
        }
      }
    }
    expect(counts.encoded).toBeGreaterThan(300)
    expect(counts.vouched).toBeGreaterThan(250)
    // bytes values (A.encodeChange refuses a value that is an array), floats serde_json may not read exactly, marks
    // of integers (Automerge stores A.mark's 42 as an int and encodes the decoded 42 as a uint)
    expect(counts.automergeRefuses).toBeGreaterThan(0)
    expect(counts.floats).toBeGreaterThan(0)
    expect(counts.notRoundTrip).toBeGreaterThan(0)
    expect([...seen.values].sort()).toEqual(['boolean', 'bytes', 'counter', 'float64', 'int', 'null', 'string', 'timestamp', 'uint'])
    expect([...seen.actions].sort()).toEqual(['del', 'inc', 'makeList', 'makeMap', 'makeText', 'markBegin', 'markEnd', 'set'])
  })

  it('encodes random decoded changes, and what A.encodeChange makes of them, as A.encodeChange does', () => {
    const r = seeded(99)
    const counts = { raw: 0, rawNull: 0, decoded: 0, vouched: 0, automergeRefuses: 0 }
    for (let c = 0; c < 400; c++) {
      const raw = randomRawChange(r)
      const bytes = automergeEncode(raw)
      const label = `change ${c}`
      // as given (preds and deps in any order, numbers of any kind): null, or A.encodeChange's bytes
      if (expectNullOrAlike(raw, `${label} as given`) === null) counts.rawNull++
      else counts.raw++
      if (bytes === null) {
        counts.automergeRefuses++
        continue
      }
      // as Automerge decodes it: not null, but for floats serde_json may not read exactly
      if (expectEncodedAlike(bytes, label, true)) counts.decoded++
      if (encodesTo(decodeChangeFast(bytes) as A.DecodedChange, bytes)) counts.vouched++
    }
    expect(counts.raw).toBeGreaterThan(20)
    expect(counts.rawNull).toBeGreaterThan(100)
    expect(counts.decoded).toBeGreaterThan(300)
    expect(counts.vouched).toBeGreaterThan(300)
  })

  it('gives null or what A.encodeChange gives for decoded changes altered field by field, and false for the original bytes', () => {
    const r = seeded(5)
    const bases: Uint8Array[] = [...randomHistory(21, 60, EDITS)]
    for (let i = 0; i < 25; i++) {
      const b = automergeEncode(randomRawChange(r))
      if (b !== null) bases.push(b)
    }
    let encoded = 0
    let refused = 0
    let mutated = 0
    for (const [i, bytes] of bases.entries()) {
      const fast = decodeChangeFast(bytes) as Decoded | null
      if (fast === null) continue
      const vouched = encodesTo(fast, bytes)
      for (const [what, change] of mutations(fast, r)) {
        const label = `base ${i}, ${what}`
        if (expectNullOrAlike(change, label) === null) refused++
        else encoded++
        // the bytes were of `fast`: any other change is not what they encode
        if (!isDeepStrictEqual(change, fast)) {
          mutated++
          expect(fastEncodesTo(change, bytes, label), label).toBe(false)
        } else expect(fastEncodesTo(change, bytes, label), label).toBe(vouched)
      }
    }
    expect(mutated).toBeGreaterThan(5000)
    expect(encoded).toBeGreaterThan(500)
    expect(refused).toBeGreaterThan(2000)
  })

  it('encodesTo is false when the bytes differ anywhere: each byte flipped, cut short, one more', () => {
    const r = seeded(7)
    const doc = twoActorDoc()
    const authored = A.change(A.init<Doc>({ actor: 'aa01', author: 'beef00' }), d => { d.x = 1 })
    const samples = [...A.getAllChanges(doc), A.getLastLocalChange(authored) as Uint8Array]
    for (const [s, bytes] of samples.entries()) {
      const fast = decodeChangeFast(bytes) as A.DecodedChange
      expect(encodesTo(fast, bytes), `sample ${s}`).toBe(true)
      for (let i = 0; i < bytes.length; i++) {
        for (const bit of [1 << int(r, 8), 0xff]) {
          const flipped = Uint8Array.from(bytes)
          flipped[i] = (flipped[i] as number) ^ bit
          expect(encodesTo(fast, flipped), `sample ${s}: byte ${i} ^ ${bit}`).toBe(false)
        }
      }
      for (let n = 0; n < bytes.length; n++) expect(encodesTo(fast, bytes.subarray(0, n))).toBe(false)
      expect(encodesTo(fast, Uint8Array.from([...bytes, 0]))).toBe(false)
      // the body changed and the chunk made whole again (length and checksum): another change, not this one
      const body = bodyOf(bytes)
      for (let i = 0; i < body.length; i++) {
        const b = Uint8Array.from(body)
        b[i] = (b[i] as number) ^ (1 << int(r, 8))
        expect(encodesTo(fast, chunk(1, b)), `sample ${s}: body byte ${i}`).toBe(false)
      }
      // its hash is part of the change
      expect(encodesTo({ ...fast, hash: '00'.repeat(32) }, bytes)).toBe(false)
    }
  })

  it('encodesTo vouches only for what A.decodeChange gives: rewritten bodies, hand-built chunks, a signature trailer', () => {
    const r = seeded(8)
    const doc = A.change(A.init<Doc>({ actor: '0102030405' }), { message: 'm' }, d => { d.m = { a: 1, b: 'xyz', c: 0.5 }; d.l = ['p', 'q']; d.t = 'héllo' })
    const samples = [...A.getAllChanges(doc), ...randomHistory(31, 10, EDITS).slice(0, 5)]
    let vouched = 0
    for (const bytes of samples) {
      const body = bodyOf(bytes)
      for (let i = 0; i < 1500; i++) {
        const c = chunk(1, rewrite(r, body))
        const fast = decodeChangeFast(c)
        if (fast !== null && expectSound(fast, c, `rewrite ${i}`)) vouched++
      }
    }
    // some rewrites are still changes as Automerge writes them (another value, key or count)
    expect(vouched).toBeGreaterThan(0)

    // chunks the fast decoder reads but Automerge does not write so: runs of one, a float -0 or NaN, preds out of order
    const built: Array<[string, Uint8Array, boolean]> = [
      ['as Automerge writes it', changeChunk({ columns: oneSet((8 << 4) | 5, f64(0.5), true) }), true],
      ['runs of one', changeChunk({ columns: oneSet((8 << 4) | 5, f64(0.5), false) }), false],
      ['-0', changeChunk({ columns: oneSet((8 << 4) | 5, f64(-0), true) }), false],
      ['NaN', changeChunk({ columns: oneSet((8 << 4) | 5, f64(NaN), true) }), false],
      ['a NaN payload', changeChunk({ columns: oneSet((8 << 4) | 5, [1, 0, 0, 0, 0, 0, 0xf8, 0x7f], true) }), false],
      ['a float of 17 digits', changeChunk({ columns: oneSet((8 << 4) | 5, f64(0.1 + 0.2), true) }), false],
      ['an unused other actor', changeChunk({ columns: oneSet(0, [], true), others: [[0x01]] }), false],
      ['preds out of order', changeChunk({ columns: [...oneSet(0, [], true).slice(0, 4), [0x70, [...sleb(-1), 3]], [0x71, [...sleb(-3), 0, 0, 1]], [0x73, [...sleb(-3), ...sleb(7), ...sleb(-2), ...sleb(0)]]], others: [[0x01]] }), false]
    ]
    for (const [what, bytes, vouches] of built) {
      const fast = decodeChangeFast(bytes)
      expect(fast, what).not.toBeNull()
      expect(expectSound(fast, bytes, what), what).toBe(vouches)
    }

    // a trailer of the shape Automerge's signing branch splits off a change (signature, length, version, "AMSG"):
    // 3.5.0 reads it as extra bytes, and so does the fast decoder; if A.decodeChange ever splits it, this fails
    const base = A.decodeChange(A.getLastLocalChange(doc) as Uint8Array)
    const signed = A.encodeChange({ ...base, extra_bytes: [9, 9, 9, 9, 4, 0, 0, 0, 1, ...Buffer.from('AMSG')] } as A.DecodedChange)
    const fast = decodeChangeFast(signed)
    expect(fast).not.toBeNull()
    expect(expectSound(fast, signed, 'signature trailer')).toBe(true)
  })

  it('encodes floats exactly, or not at all', () => {
    const r = seeded(3)
    const base = { actor: 'aa01', seq: 1, startOp: 1, time: 0, message: null, deps: [] }
    let encoded = 0
    let refused = 0
    const values = [...PLAIN_FLOATS, 2 ** 53, 2 ** 62, -(2 ** 62), 2 ** 63, 1e300, 5e-324, Number.MAX_VALUE, 0.1 + 0.2, 1 / 3, -0, NaN, Infinity, -Infinity]
    for (let i = 0; i < 3000; i++) values.push(randomDouble(r), r() * 1000, int(r, 1e6) / 1000, int(r, 1e4) / 16)
    for (const [i, value] of values.entries()) {
      for (const op of [
        { action: 'set', obj: '_root', key: 'x', datatype: 'float64', value, pred: [] },
        { action: 'markBegin', obj: '1@aa01', elemId: '_head', name: 'n', value, expand: false, pred: [] }
      ]) {
        if (expectNullOrAlike({ ...base, ops: [op] }, `value ${i} (${value}) in ${op.action}`) === null) refused++
        else encoded++
      }
    }
    expect(encoded).toBeGreaterThan(6000)
    expect(refused).toBeGreaterThan(3000)
    for (const value of PLAIN_FLOATS) {
      expect(encodeChangeFast({ ...base, ops: [{ action: 'set', obj: '_root', key: 'x', datatype: 'float64', value, pred: [] }] } as unknown as A.DecodedChange), String(value)).not.toBeNull()
    }
  })

  it('reads the author of extra bytes as A.decodeChange does (a footer), and vouches for such changes', () => {
    const base = A.decodeChange(A.getLastLocalChange(A.change(A.init<Doc>({ actor: 'aa01' }), d => { d.x = 1 })) as Uint8Array)
    // footers as A.decodeChange reads them
    const footers = AUTHOR_FOOTERS.map(([extra]) => extra)
    let authored = 0
    for (const extra of footers) {
      const bytes = A.encodeChange({ ...base, extra_bytes: extra } as A.DecodedChange)
      const label = `footer ${extra.join(',')}`
      expectEncodedAlike(bytes, label)
      expect(encodesTo(decodeChangeFast(bytes) as A.DecodedChange, bytes), label).toBe(true)
      if ((A.decodeChange(bytes) as Decoded).author !== undefined) authored++
    }
    expect(authored).toBeGreaterThan(5)
    // and as Automerge writes it for a document with an author
    const doc = A.change(A.init<Doc>({ actor: 'aa02', author: 'beef00' }), d => { d.x = 1 })
    expectEncodedAlike(A.getLastLocalChange(doc) as Uint8Array, 'authored')
  })

  it('refuses a call from inside another (a getter in a change): the scratch state is shared', () => {
    const small = A.getLastLocalChange(A.change(A.init<Doc>({ actor: 'abcd' }), d => { d.x = true })) as Uint8Array
    const fast = decodeChangeFast(small) as A.DecodedChange
    expect(fast.ops).toHaveLength(1)
    const inner: Array<Uint8Array | boolean | null> = []
    const op = { ...(fast.ops[0] as unknown as Op) }
    Object.defineProperty(op, 'value', {
      enumerable: true,
      get: () => {
        inner.push(encodeChangeFast(fast), encodesTo(fast, small))
        return true
      }
    })
    const change = { ...fast, ops: [op] }
    expect(expectNullOrAlike(change, 'a getter')).not.toBeNull()
    expect(encodesTo(change as unknown as A.DecodedChange, small)).toBe(true)
    // inside the encoder's reads: refused; inside A.encodeChange's JSON.stringify: answered
    expect(inner.slice(0, 2)).toEqual([null, false])
    expect(inner.some(x => x === true)).toBe(true)
  })

  it('never throws, on anything', () => {
    const small = A.getLastLocalChange(A.change(A.init<Doc>(), d => { d.x = 1 })) as Uint8Array
    const fast = decodeChangeFast(small) as A.DecodedChange
    const junk: unknown[] = [null, undefined, 5, 'x', [], {}, { ops: null }, { ...fast, ops: [5] }, { ...fast, ops: [[]] }, Object.create(fast),
      { ...fast, deps: 'x' }, { ...fast, extra_bytes: { length: 2 } }, { ...fast, ops: [{ ...fast.ops[0], pred: { length: 0 } }] },
      // an object of '' first: the encoder keeps the last op's object, and must not take '' for it
      { ...fast, ops: [{ ...fast.ops[0], obj: '' }] }, { ...fast, ops: [{ ...fast.ops[0], obj: undefined }] }]
    for (const j of junk) {
      expect(fastEncode(j, 'junk')).toBeNull()
      expect(fastEncodesTo(j, small, 'junk')).toBe(false)
    }
    for (const bytes of [new Uint8Array(0), new Uint8Array(10), 'bytes' as unknown as Uint8Array, null as unknown as Uint8Array, small.subarray(1)]) {
      expect(fastEncodesTo(fast, bytes, 'bytes')).toBe(false)
    }
    expect(encodesTo(fast, small)).toBe(true)
    // a long string, a key past the cache of strings, a message of 300 bytes
    const long = A.getLastLocalChange(A.change(A.init<Doc>({ actor: 'abcd' }), { message: 'm'.repeat(300) }, d => { d['k'.repeat(200)] = 'é'.repeat(5000) + '😀' })) as Uint8Array
    expect(encodesTo(decodeChangeFast(long) as A.DecodedChange, long)).toBe(true)
    expectEncodedAlike(long, 'long strings')
  })
})
