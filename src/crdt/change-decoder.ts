/*
 * A decoder of Automerge change chunks in TypeScript, returning what
 * `A.decodeChange` returns. It exists for cost: `A.decodeChange` (wasm) builds
 * every operation's JS object across the wasm boundary through
 * serde-wasm-bindgen, about 3.5 µs an operation, so a joiner of a board of
 * 10,000 tasks, whose plan is one change of 380,000 operations (5 MB), spent
 * 1.35 s in it for that change alone, and so did every check of a large plan.
 * This reads the same bytes with plain loops over the Uint8Array: about 0.1 s
 * for that change (0.15-0.2 s as the first call of a fresh process), and 5-7
 * µs instead of 30 for a change of ten ops (2-core AMD EPYC, Node 24).
 *
 * It reads only the form Automerge writes, and returns null (never a guess)
 * for anything else: a compressed chunk (type 2), deflated or unknown
 * columns, a wrong checksum, any value A.decodeChange would refuse or could
 * not give as a JS number, anything malformed. The caller then calls
 * A.decodeChange, which decodes what it can and throws on the rest.
 *
 * Kept in one file (over 450 lines): one format read front to back, whose
 * column readers, op assembly and strictness checks only make sense together;
 * what it shares with the other readers is in columnar.ts.
 *
 * It follows the Automerge source (github.com/automerge/automerge, rust/, read
 * at 47908d6, after js/automerge-3.4.1; 3.5.0 has no tag there):
 *   automerge/src/storage/chunk.rs               header, checksum, hash
 *   automerge/src/storage/change.rs              the change's fields
 *   automerge/src/storage/parse.rs, parse/leb128.rs  strict LEB128 of the header and values
 *   automerge/src/storage/columns/*.rs           column specs and their order
 *   automerge/src/storage/change/change_op_columns.rs  which columns, and an op's fields
 *   automerge/src/columnar/encoding/{rle,delta,boolean,raw,decodable_impls}.rs  column encodings
 *   automerge/src/columnar/column_range/{obj_id,key,opid_list,value}.rs  ids, keys, preds, values
 *   automerge/src/change.rs, legacy/mod.rs, legacy/serde_impls/*.rs  the decoded change and its JSON form
 *   automerge-wasm/src/lib.rs (decode_change)    serialized with serde_wasm_bindgen's json_compatible
 *   automerge/src/change.rs `Change::author` on branch revocation-fragments-hexane-v1
 *                                                the author footer of the extra bytes, new in 3.5.0
 * What the JS object looks like was also checked against A.decodeChange of
 * @automerge/automerge 3.5.0 (test/change-decoder.test.ts): bytes values come
 * back as arrays of numbers, not Uint8Array; numbers are JS numbers, and a
 * value outside ±(2^53 - 1) makes A.decodeChange throw; `extra_bytes` and
 * `author` are there only when the change has extra bytes.
 */
import * as A from '@automerge/automerge'
import { createHash } from 'node:crypto'
import { CHANGE_CHUNK, hasMagic } from './chunks.ts'
import { authorOf, encodesTo } from './change-encoder.ts'
import { ACTION_NAMES, ACT_INC, ACT_MARK, ACT_SET, COL_ACTION, COL_EXPAND, COL_INSERT, COL_KEY_ACTOR, COL_KEY_CTR, COL_KEY_STR, COL_MARK_NAME, COL_OBJ_ACTOR, COL_OBJ_CTR, COL_PRED_ACTOR, COL_PRED_CTR, COL_PRED_NUM, COL_VAL_META, COL_VAL_RAW, Cursor, INTERNED_KEYS, INTERNED_VALUES, rleLength, MAX_U32, VAL_BYTES, VAL_COUNTER, VAL_FLOAT, VAL_LEB, VAL_NULL, VAL_STRING, VAL_TIMESTAMP, VAL_TRUE, VAL_ULEB, float64At, hex, sleb, uleb, unreadable, utf8 } from './columnar.ts'

/**
 * At most `OPS_SLACK` operations (and as many pred entries), plus this many
 * per byte of column data: run-length encoding lets a few bytes claim
 * billions of operations, and memory here grows with the operations. A
 * plan of 10,000 tasks has one operation per 13 bytes, text typed or pasted
 * one per 6; a change denser than 4 per byte and longer than `OPS_SLACK`
 * (a deletion of thousands of list elements: 1,000 take 110 bytes) is left
 * to A.decodeChange.
 * @default 4
 */
const OPS_PER_BYTE = 4
/**
 * Operations any change may have, however few its bytes.
 * @default 4096
 */
const OPS_SLACK = 4096

/**
 * Larger changes are left to A.decodeChange: offsets here are 32-bit, and
 * op counts (`OPS_PER_BYTE`) stay below 2^31.
 * @default 256 MiB
 */
const MAX_CHANGE_BYTES = 256 * 1024 * 1024

/** Column specifications (id << 4 | type) of a change's operation columns, in the order they are stored (change_op_columns.rs). */
const KNOWN_COLUMNS = [
  COL_OBJ_ACTOR, COL_OBJ_CTR, COL_KEY_ACTOR, COL_KEY_CTR, COL_KEY_STR, COL_INSERT, COL_ACTION,
  COL_VAL_META, COL_VAL_RAW, COL_PRED_NUM, COL_PRED_ACTOR, COL_PRED_CTR, COL_EXPAND, COL_MARK_NAME
]

/** A length-prefixed UTF-8 string at the cursor (decodable_impls.rs `SmolStr`). */
function lengthPrefixedString (c: Cursor, table: Array<string | undefined>): string {
  const n = uleb(c)
  const start = c.pos
  if (n > c.end - start) unreadable()
  c.pos = start + n
  return utf8(c.buf, start, start + n, table)
}

/*
 * Each column is decoded whole into an array of one entry per op (typed where
 * the values are numbers, a run filled natively), then the ops are put
 * together from the arrays. A column must hold exactly one entry per op and
 * end where its bytes end: Automerge writes no more, and a longer column
 * (which change_op_columns.rs would read only in part) is left to it.
 */

/**
 * A run-length encoded column of unsigned integers (rle.rs) into `out`, one
 * per op: -1 for null, else at most `max`. An empty column is all nulls.
 */
function rleInto (c: Cursor, out: Int32Array | Float64Array, max: number): void {
  const n = out.length
  if (c.pos === c.end) {
    out.fill(-1)
    return
  }
  let i = 0
  while (i < n) {
    const count = sleb(c)
    if (count > 0) {
      if (count > n - i) unreadable()
      const v = uleb(c)
      if (v > max) unreadable()
      out.fill(v, i, i + count)
      i += count
    } else if (count < 0) {
      if (-count > n - i) unreadable()
      for (let k = -count; k > 0; k--) {
        const v = uleb(c)
        if (v > max) unreadable()
        out[i++] = v
      }
    } else {
      const nulls = uleb(c)
      if (nulls === 0 || nulls > n - i) unreadable()
      out.fill(-1, i, i + nulls)
      i += nulls
    }
  }
  if (c.pos !== c.end) unreadable()
}

/**
 * A delta-encoded column (delta.rs) into `out`: run-length encoded signed
 * differences from the previous non-null value, starting at 0. The values are
 * op counters: -1 for null, and one below 0 or above u32 is unreadable
 * (A.decodeChange refuses both).
 */
function deltaInto (c: Cursor, out: Float64Array): void {
  const n = out.length
  if (c.pos === c.end) {
    out.fill(-1)
    return
  }
  let i = 0
  let absolute = 0
  while (i < n) {
    const count = sleb(c)
    if (count > 0) {
      if (count > n - i) unreadable()
      const delta = sleb(c)
      // the values run from absolute + delta to absolute + count * delta
      const last = absolute + count * delta
      if (absolute + delta < 0 || absolute + delta > MAX_U32 || last < 0 || last > MAX_U32) unreadable()
      for (let k = 0; k < count; k++) {
        absolute += delta
        out[i++] = absolute
      }
    } else if (count < 0) {
      if (-count > n - i) unreadable()
      for (let k = -count; k > 0; k--) {
        absolute += sleb(c)
        if (absolute < 0 || absolute > MAX_U32) unreadable()
        out[i++] = absolute
      }
    } else {
      const nulls = uleb(c)
      if (nulls === 0 || nulls > n - i) unreadable()
      out.fill(-1, i, i + nulls)
      i += nulls
    }
  }
  if (c.pos !== c.end) unreadable()
}

/** A run-length encoded column of strings (rle.rs over decodable_impls.rs `SmolStr`), one per op; null for an empty column. */
function rleStrings (c: Cursor, n: number): Array<string | null> | null {
  if (c.pos === c.end) return null
  const out = new Array<string | null>(n).fill(null)
  let i = 0
  while (i < n) {
    const count = sleb(c)
    if (count > 0) {
      if (count > n - i) unreadable()
      const v = lengthPrefixedString(c, INTERNED_KEYS)
      for (let k = 0; k < count; k++) out[i++] = v
    } else if (count < 0) {
      if (-count > n - i) unreadable()
      for (let k = -count; k > 0; k--) out[i++] = lengthPrefixedString(c, INTERNED_KEYS)
    } else {
      const nulls = uleb(c)
      if (nulls === 0 || nulls > n - i) unreadable()
      i += nulls
    }
  }
  if (c.pos !== c.end) unreadable()
  return out
}

/**
 * A boolean column (boolean.rs) into `out` (1 for true): alternating counts
 * of false and true values, false first. An empty column is all false when
 * `maybe` (the expand column), else it has no values (the insert column).
 */
function booleansInto (c: Cursor, out: Uint8Array, maybe: boolean): void {
  const n = out.length
  if (maybe && c.pos === c.end) return
  let i = 0
  let value = false
  while (i < n) {
    const count = uleb(c)
    if (count > n - i) unreadable()
    if (value) out.fill(1, i, i + count)
    i += count
    value = !value
  }
  if (c.pos !== c.end) unreadable()
}

/** Each known column's place in `KNOWN_COLUMNS`, by spec; -1 for any other spec. */
const COLUMN_INDEX = new Int8Array(256).fill(-1)
KNOWN_COLUMNS.forEach((spec, i) => { COLUMN_INDEX[spec] = i })
const bit = (spec: number): number => 1 << (COLUMN_INDEX[spec] as number)

/**
 * The column specifications and lengths after the change's header, checked
 * against what Automerge writes: known, uncompressed, non-empty columns in
 * ascending order, whole groups (an object id's actor and counter, a pred's
 * actor and counter with its count, raw values with their metadata). Returns
 * where each column's bytes start and end in the chunk, by its place in
 * `KNOWN_COLUMNS` (an empty range for an absent one), then where the last
 * ends.
 */
function readColumns (c: Cursor): Int32Array {
  const n = uleb(c)
  if (n > KNOWN_COLUMNS.length) unreadable()
  const ranges = new Int32Array(2 * KNOWN_COLUMNS.length + 1)
  const order: number[] = []
  let last = -1
  let present = 0
  for (let i = 0; i < n; i++) {
    const spec = uleb(c)
    const len = uleb(c)
    const index = spec < 256 ? COLUMN_INDEX[spec] as number : -1
    if (spec <= last || len === 0 || index < 0) unreadable()
    last = spec
    present |= 1 << index
    order.push(index)
    ranges[2 * index + 1] = len // its length, until the loop below
  }
  let at = c.pos
  for (const index of order) {
    const len = ranges[2 * index + 1] as number
    if (len > c.end - at) unreadable()
    ranges[2 * index] = at
    ranges[2 * index + 1] = at + len
    at += len
  }
  const has = (spec: number): boolean => (present & bit(spec)) !== 0
  if (has(COL_OBJ_ACTOR) !== has(COL_OBJ_CTR)) unreadable()
  if (has(COL_VAL_RAW) && !has(COL_VAL_META)) unreadable()
  if (has(COL_PRED_ACTOR) !== has(COL_PRED_CTR)) unreadable()
  if (has(COL_PRED_ACTOR) && !has(COL_PRED_NUM)) unreadable()
  ranges[2 * KNOWN_COLUMNS.length] = at
  return ranges
}

/** The bytes of column `spec` (`readColumns`). */
function column (bytes: Uint8Array, ranges: Int32Array, spec: number): Cursor {
  const index = COLUMN_INDEX[spec] as number
  return new Cursor(bytes, ranges[2 * index] as number, ranges[2 * index + 1] as number)
}

/** A decoded operation, its fields in the order A.decodeChange gives them. */
type DecodedOp = Record<string, unknown>

function decode (bytes: Uint8Array): A.DecodedChange | null {
  const len = bytes.length
  if (len < 10 || len > MAX_CHANGE_BYTES || !hasMagic(bytes, 0) || bytes[8] !== CHANGE_CHUNK) return null
  const c = new Cursor(bytes, 9, len)
  const bodyLength = uleb(c)
  if (c.pos + bodyLength !== len) return null
  // the hash covers the chunk type, the body's length and the body (chunk.rs `hash`)
  const digest = createHash('sha256').update(bytes.subarray(8)).digest()
  if (digest[0] !== bytes[4] || digest[1] !== bytes[5] || digest[2] !== bytes[6] || digest[3] !== bytes[7]) return null

  const nDeps = uleb(c)
  if (nDeps > (len - c.pos) / 32) unreadable()
  const deps: string[] = []
  for (let i = 0; i < nDeps; i++) {
    deps.push(hex(bytes, c.pos, c.pos + 32))
    c.pos += 32
  }
  const actorLength = uleb(c)
  if (actorLength > len - c.pos) unreadable()
  const actor = hex(bytes, c.pos, c.pos + actorLength)
  c.pos += actorLength
  const seq = uleb(c)
  const startOp = uleb(c)
  // change.rs `verify_ops`: a start op beyond u32 is refused
  if (startOp === 0 || startOp > MAX_U32) unreadable()
  const time = sleb(c)
  const messageLength = uleb(c)
  if (messageLength > len - c.pos) unreadable()
  const message = messageLength === 0 ? null : utf8(bytes, c.pos, c.pos + messageLength, INTERNED_VALUES)
  c.pos += messageLength
  const nOthers = uleb(c)
  if (nOthers > len - c.pos) unreadable()
  const actors: string[] = [actor]
  for (let i = 0; i < nOthers; i++) {
    const n = uleb(c)
    if (n > len - c.pos) unreadable()
    actors.push(hex(bytes, c.pos, c.pos + n))
    c.pos += n
  }
  const ranges = readColumns(c)
  const dataEnd = ranges[2 * KNOWN_COLUMNS.length] as number
  const ops = decodeOps(bytes, ranges, actors, dataEnd - c.pos)

  const change: Record<string, unknown> = {
    ops,
    actor,
    hash: digest.toString('hex'),
    seq,
    startOp,
    time,
    message,
    deps
  }
  // bytes after the columns are the change's extra bytes (change.rs), given as an array of numbers when present
  if (dataEnd < len) {
    const extra = Array.from(bytes.subarray(dataEnd, len))
    change.extra_bytes = extra
    const author = authorOf(extra)
    if (author !== undefined) change.author = author
  }
  return change as unknown as A.DecodedChange
}

/**
 * The preds of one op (the first `n` of `ctrs` and `actorIds`), sorted as
 * Automerge sorts them (counter, then actor bytes: legacy `SortedVec<OpId>`).
 * `actorIds` are '@' + hex, which sort as the bytes do.
 */
function sortPreds (ctrs: number[], actorIds: string[], n: number): string[] {
  const order = Array.from({ length: n }, (_, i) => i)
  order.sort((x, y) => {
    const d = (ctrs[x] as number) - (ctrs[y] as number)
    if (d !== 0) return d
    const ax = actorIds[x] as string
    const ay = actorIds[y] as string
    return ax < ay ? -1 : ax > ay ? 1 : 0
  })
  return order.map(i => (ctrs[i] as number) + (actorIds[i] as string))
}

/** The value of one op (value.rs `ValueIter`), set by `readValue`. */
interface ValueSlot {
  value: unknown
  datatype: string | null
}

/**
 * The value of one op, from its metadata (the low four bits are the type,
 * the rest the length of its raw bytes) and its raw bytes at the cursor,
 * into `slot`; returns the type.
 */
function readValue (meta: number, raw: Cursor, slot: ValueSlot): number {
  // bit operations while the metadata fits 31 bits (a % on a double is a call)
  const type = meta <= 0x7fffffff ? meta & 15 : meta % 16
  const vlen = meta <= 0x7fffffff ? meta >>> 4 : (meta - type) / 16
  slot.datatype = null
  if (type <= VAL_TRUE) {
    if (vlen !== 0) unreadable()
    slot.value = type === VAL_NULL ? null : type === VAL_TRUE
    return type
  }
  const bytes = raw.buf
  const start = raw.pos
  const end = start + vlen
  if (vlen > raw.end - start) unreadable()
  switch (type) {
    case VAL_ULEB:
    case VAL_LEB:
    case VAL_COUNTER:
    case VAL_TIMESTAMP: {
      // parse/leb128.rs over exactly the value's bytes
      const inner = new Cursor(bytes, start, end)
      slot.value = type === VAL_ULEB ? uleb(inner) : sleb(inner)
      if (inner.pos !== end) unreadable()
      slot.datatype = type === VAL_ULEB ? 'uint' : type === VAL_LEB ? 'int' : type === VAL_COUNTER ? 'counter' : 'timestamp'
      break
    }
    case VAL_FLOAT:
      if (vlen !== 8) unreadable()
      slot.value = float64At(bytes, start)
      slot.datatype = 'float64'
      break
    case VAL_STRING:
      slot.value = utf8(bytes, start, end, INTERNED_VALUES)
      break
    case VAL_BYTES:
      slot.value = Array.from(bytes.subarray(start, end))
      break
    default:
      unreadable() // a value type from a later Automerge
  }
  raw.pos = end
  return type
}

/** The ops of a change: its columns decoded (change_op_columns.rs), then put together one op at a time. */
function decodeOps (bytes: Uint8Array, ranges: Int32Array, actors: readonly string[], dataLength: number): DecodedOp[] {
  const maxOps = OPS_SLACK + OPS_PER_BYTE * dataLength
  const nActors = actors.length
  const lastActor = nActors - 1

  const actionCol = column(bytes, ranges, COL_ACTION)
  // the action column's length is the number of ops; its values are checked as they are read again (`rleInto`)
  const n = rleLength(actionCol, maxOps, true)
  const action = new Int32Array(n)
  rleInto(actionCol, action, ACT_MARK)
  const objActor = new Int32Array(n)
  rleInto(column(bytes, ranges, COL_OBJ_ACTOR), objActor, lastActor)
  const objCtr = new Float64Array(n)
  rleInto(column(bytes, ranges, COL_OBJ_CTR), objCtr, MAX_U32)
  const keyActor = new Int32Array(n)
  rleInto(column(bytes, ranges, COL_KEY_ACTOR), keyActor, lastActor)
  const keyCtr = new Float64Array(n)
  deltaInto(column(bytes, ranges, COL_KEY_CTR), keyCtr)
  const keyStr = rleStrings(column(bytes, ranges, COL_KEY_STR), n)
  const insertCol = column(bytes, ranges, COL_INSERT)
  // boolean.rs: an empty insert column has no values, which Automerge refuses for any op
  if (n > 0 && insertCol.pos === insertCol.end) unreadable()
  const insert = new Uint8Array(n)
  booleansInto(insertCol, insert, false)
  const valMeta = new Float64Array(n)
  rleInto(column(bytes, ranges, COL_VAL_META), valMeta, Number.MAX_SAFE_INTEGER)
  const raw = column(bytes, ranges, COL_VAL_RAW)
  const predNum = new Int32Array(n)
  rleInto(column(bytes, ranges, COL_PRED_NUM), predNum, maxOps)
  let nPreds = 0
  for (let i = 0; i < n; i++) {
    const np = predNum[i] as number
    if (np < 0) unreadable() // opid_list.rs: a null count is refused
    nPreds += np
  }
  if (nPreds > maxOps) unreadable()
  const predActor = new Int32Array(nPreds)
  rleInto(column(bytes, ranges, COL_PRED_ACTOR), predActor, lastActor)
  const predCtr = new Float64Array(nPreds)
  deltaInto(column(bytes, ranges, COL_PRED_CTR), predCtr)
  const expand = new Uint8Array(n)
  booleansInto(column(bytes, ranges, COL_EXPAND), expand, true)
  const markName = rleStrings(column(bytes, ranges, COL_MARK_NAME), n)

  // '@' + each actor's hex, so an op id is one concatenation
  const atActors = actors.map(a => '@' + a)
  const slot: ValueSlot = { value: null, datatype: null }
  const ctrs: number[] = []
  const actorIds: string[] = []
  const ops = new Array<DecodedOp>(n)
  let lastObjActor = -1
  let lastObjCtr = -1
  let lastObj = ''
  let p = 0
  for (let i = 0; i < n; i++) {
    // obj_id.rs: both null is the root; a counter of 0 with an actor is left to Automerge
    let obj = '_root'
    const oa = objActor[i] as number
    const oc = objCtr[i] as number
    if (oa !== -1 || oc !== -1) {
      if (oa < 0 || oc < 1) unreadable()
      if (oa !== lastObjActor || oc !== lastObjCtr) {
        lastObj = oc + (atActors[oa] as string)
        lastObjActor = oa
        lastObjCtr = oc
      }
      obj = lastObj
    }

    // key.rs: a string (map key), or counter 0 alone (the list head), or actor and counter (an element)
    let key: string | null = null
    let elemId = ''
    const ka = keyActor[i] as number
    const kc = keyCtr[i] as number
    const ks = keyStr === null ? null : keyStr[i] as string | null
    if (ks !== null) {
      if (ka !== -1 || kc !== -1) unreadable()
      key = ks
    } else if (ka === -1) {
      if (kc !== 0) unreadable()
      elemId = '_head'
    } else {
      if (kc < 1) unreadable()
      elemId = kc + (atActors[ka] as string)
    }

    const act = action[i] as number
    if (act < 0) unreadable()
    const meta = valMeta[i] as number
    if (meta < 0) unreadable()
    const type = readValue(meta, raw, slot)

    // opid_list.rs: a count, then that many actors and counters
    const np = predNum[i] as number
    let pred: string[]
    if (np === 0) pred = []
    else if (np === 1) {
      const pa = predActor[p] as number
      const pc = predCtr[p++] as number
      if (pa < 0 || pc < 1) unreadable()
      pred = [pc + (atActors[pa] as string)]
    } else {
      // ctrs and actorIds are reused: entries past np are stale
      let sorted = true
      for (let j = 0; j < np; j++, p++) {
        const pa = predActor[p] as number
        const pc = predCtr[p] as number
        if (pa < 0 || pc < 1) unreadable()
        const a = atActors[pa] as string
        if (j > 0) {
          const prevCtr = ctrs[j - 1] as number
          if (pc < prevCtr || (pc === prevCtr && a < (actorIds[j - 1] as string))) sorted = false
        }
        ctrs[j] = pc
        actorIds[j] = a
      }
      if (sorted) {
        pred = new Array<string>(np)
        for (let j = 0; j < np; j++) pred[j] = (ctrs[j] as number) + (actorIds[j] as string)
      } else pred = sortPreds(ctrs, actorIds, np)
    }

    const name = markName === null ? null : markName[i] as string | null
    ops[i] = makeOp(act, obj, key, elemId, insert[i] === 1, slot.datatype, slot.value, type, expand[i] === 1, name, pred)
  }
  if (raw.pos !== raw.end) unreadable()
  return ops
}

/**
 * One op as serde_impls/op.rs serializes it: action, obj, key or elemId,
 * insert (when true), then by action: a put's datatype (numbers only) and
 * value, an increment's value, a mark's name, value and expand, a mark end's
 * expand; then pred. Makes, deletes and mark ends carry a null value and
 * nothing else here, as Automerge writes them. The shapes Automerge writes
 * most (puts, makes and deletes on a map key, or inserted in a list or text)
 * are object literals, the others built field by field.
 */
function makeOp (act: number, obj: string, key: string | null, elemId: string, ins: boolean, datatype: string | null,
  value: unknown, type: number, exp: boolean, name: string | null, pred: string[]): DecodedOp {
  if (act !== ACT_MARK && (exp || name !== null)) unreadable()
  if (act === ACT_SET) {
    if (key !== null) {
      if (!ins) {
        return datatype === null
          ? { action: 'set', obj, key, value, pred }
          : { action: 'set', obj, key, datatype, value, pred }
      }
    } else if (ins) {
      return datatype === null
        ? { action: 'set', obj, elemId, insert: true, value, pred }
        : { action: 'set', obj, elemId, insert: true, datatype, value, pred }
    } else {
      return datatype === null
        ? { action: 'set', obj, elemId, value, pred }
        : { action: 'set', obj, elemId, datatype, value, pred }
    }
    const op = opHead('set', obj, key, elemId, ins)
    if (datatype !== null) op.datatype = datatype
    op.value = value
    op.pred = pred
    return op
  }
  if (act === ACT_INC) {
    // legacy `OpType::from_parts`: an increment by an int or a uint, given without a datatype
    if (type !== VAL_LEB && type !== VAL_ULEB) unreadable()
    const op = opHead('inc', obj, key, elemId, ins)
    op.value = value
    op.pred = pred
    return op
  }
  if (act === ACT_MARK) {
    if (name === null) {
      if (type !== VAL_NULL) unreadable()
      const op = opHead('markEnd', obj, key, elemId, ins)
      op.expand = exp
      op.pred = pred
      return op
    }
    const op = opHead('markBegin', obj, key, elemId, ins)
    op.name = name
    op.value = value
    op.expand = exp
    op.pred = pred
    return op
  }
  // makes and deletes
  if (type !== VAL_NULL) unreadable()
  const action = ACTION_NAMES[act] as string
  if (key !== null && !ins) return { action, obj, key, pred }
  if (key === null) return ins ? { action, obj, elemId, insert: true, pred } : { action, obj, elemId, pred }
  const op = opHead(action, obj, key, elemId, ins)
  op.pred = pred
  return op
}

/** The first fields of an op: action, obj, key or elemId, insert when true. */
function opHead (action: string, obj: string, key: string | null, elemId: string, ins: boolean): DecodedOp {
  if (key !== null) return ins ? { action, obj, key, insert: true } : { action, obj, key }
  return ins ? { action, obj, elemId, insert: true } : { action, obj, elemId }
}

/**
 * The change `bytes` holds, decoded exactly as `A.decodeChange` decodes it,
 * or null when it is not a form this decoder reads (the caller then calls
 * A.decodeChange). Null for: anything but an uncompressed change chunk (a
 * compressed change, a document, a bundle), a checksum that does not match
 * (A.decodeChange does not check it), deflated or unknown columns, value
 * types from a later Automerge, numbers beyond ±(2^53 - 1) (A.decodeChange
 * throws on them), op counters beyond u32 or of 0, columns that disagree on
 * the number of ops, trailing bytes, more ops than `OPS_SLACK` and
 * `OPS_PER_BYTE` allow, and any truncated or malformed input. Never throws;
 * work and memory are bounded by the input's length. Synchronous; it keeps
 * only caches of short strings between calls.
 */
export function decodeChangeFast (bytes: Uint8Array): A.DecodedChange | null {
  if (!(bytes instanceof Uint8Array)) return null
  try {
    return decode(bytes)
  } catch {
    // UnreadableChunkError, a TypeError of invalid UTF-8, or anything else: not a change this decoder
    // reads, so null and the caller's A.decodeChange decides
    return null
  }
}

/**
 * The change `bytes` holds, decoded as Automerge reads it: by
 * `decodeChangeFast` when it reads it and its answer encodes back, as
 * `A.encodeChange` encodes, to exactly `bytes` (change-encoder.ts: then
 * Automerge reads those bytes as that change, and checks made on it are
 * checks of what Automerge applies); else by `A.decodeChange`, which throws on
 * bad bytes.
 */
export function decodeChange (bytes: Uint8Array): A.DecodedChange {
  const fast = decodeChangeFast(bytes)
  return fast !== null && encodesTo(fast, bytes) ? fast : A.decodeChange(bytes)
}
