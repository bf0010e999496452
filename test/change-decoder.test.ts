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
import { isDeepStrictEqual } from 'node:util'
import { deflateRawSync } from 'node:zlib'
import { decodeChangeFast } from '../src/crdt/change-decoder.ts'
import { Board, nodeActorForPeer, sessionActorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import {
  AUTHOR_FOOTERS, TEXT_CHARS, bodyOf, changeChunk, chunk, f64, int, lengthPrefixed, lifecycleSteps, newPeer, oneSet, pick,
  randomHistory, randomText, randomValue, rewrite, seeded, sleb, twoActorDoc, uleb, type Doc, type EditValues, type Rand
} from './helpers/automerge-bytes.ts'

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

const MAP_KEYS = ['a', 'b', 'key with spaces', '', 'é', '😀', 'k'.repeat(40), '\ufeffbom']

/** What the random histories' edits are made of (randomHistory). */
const EDITS: EditValues = {
  chars: TEXT_CHARS,
  scalar: randomScalar,
  value: r => randomValue(r, randomScalar),
  mapKeys: MAP_KEYS,
  markValues: [true, false, null, 'https://x', 42, 1.5, new Date(5)]
}

const MESH = 'mesh-change-decoder'
const NOW = 1_700_000_000_000

describe('decodeChangeFast', () => {
  it('decodes every change of a signed board through a task lifecycle as A.decodeChange does', async () => {
    const { id, peer, signer } = await newPeer()
    const board = Board.create(MESH, nodeActorForPeer(id), signer)
    const steps = lifecycleSteps(peer, NOW)
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
      for (const bytes of randomHistory(seed, 150, EDITS)) {
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
    // footers as A.decodeChange reads them
    for (const [extra, author] of AUTHOR_FOOTERS) {
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
    const doc = twoActorDoc()
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
        if (expectNullOrAlike(chunk(1, rewrite(r, body)), `rewrite ${i}`)) decoded++
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
