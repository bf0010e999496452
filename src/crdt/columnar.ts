/*
 * What change-decoder.ts, change-encoder.ts (change chunks) and
 * document-reader.ts (document chunks) share: the format's codes, a cursor
 * over a range of bytes, Automerge's strict LEB128
 * (automerge/src/storage/parse/leb128.rs), UTF-8 strings with a cache of
 * short ones, hex ids and little-endian doubles.
 * Input they do not read throws `UnreadableChunkError`, which both readers
 * turn into null (the caller then asks Automerge).
 */

/** Counters and actor indices of an op id are u32 in Automerge (types.rs `OpId`); larger ones make it panic. */
export const MAX_U32 = 0xffffffff

/**
 * Column specifications (id << 4 | type; a document's deflate bit, 8, apart):
 * a change's op columns (change_op_columns.rs) and a document's
 * (op_set2/columns.rs), which add the op's id and its successors where a
 * change has its predecessors.
 */
export const COL_OBJ_ACTOR = 0x01
export const COL_OBJ_CTR = 0x02
export const COL_KEY_ACTOR = 0x11
export const COL_KEY_CTR = 0x13
export const COL_KEY_STR = 0x15
export const COL_ID_ACTOR = 0x21
export const COL_ID_CTR = 0x23
export const COL_INSERT = 0x34
export const COL_ACTION = 0x42
export const COL_VAL_META = 0x56
export const COL_VAL_RAW = 0x57
export const COL_PRED_NUM = 0x70
export const COL_PRED_ACTOR = 0x71
export const COL_PRED_CTR = 0x73
export const COL_SUCC_NUM = 0x80
export const COL_SUCC_ACTOR = 0x81
export const COL_SUCC_CTR = 0x83
export const COL_EXPAND = 0x94
export const COL_MARK_NAME = 0xa5

/** Value metadata type codes (value.rs `ValueType`): the low four bits; the rest is the value's length in bytes. */
export const VAL_NULL = 0
export const VAL_FALSE = 1
export const VAL_TRUE = 2
export const VAL_ULEB = 3
export const VAL_LEB = 4
export const VAL_FLOAT = 5
export const VAL_STRING = 6
export const VAL_BYTES = 7
export const VAL_COUNTER = 8
export const VAL_TIMESTAMP = 9

/** Op actions as stored (legacy/mod.rs `OpType::from_parts`, op_set2/types.rs `Action`), and their names in a decoded change (serde_impls/op.rs). */
export const ACT_MAKE_MAP = 0
export const ACT_SET = 1
export const ACT_MAKE_LIST = 2
export const ACT_DELETE = 3
export const ACT_MAKE_TEXT = 4
export const ACT_INC = 5
export const ACT_MAKE_TABLE = 6
export const ACT_MARK = 7
export const ACTION_NAMES = ['makeMap', 'set', 'makeList', 'del', 'makeText', 'inc', 'makeTable', 'mark']

/** Thrown for input the readers do not read; `decodeChangeFast` and `materializeDocument` turn it into null. */
export class UnreadableChunkError extends Error {
  override name = 'UnreadableChunkError'
}

export function unreadable (): never {
  throw new UnreadableChunkError('not a chunk these readers read')
}

/** A read position in a range of bytes. */
export class Cursor {
  buf: Uint8Array
  pos: number
  end: number
  constructor (buf: Uint8Array, pos: number, end: number) {
    this.buf = buf
    this.pos = pos
    this.end = end
  }
}

/**
 * The unsigned LEB128 number at the cursor. Strict as parse/leb128.rs is (no
 * overlong encoding), and at most 2^53 - 1: anything larger is not a number
 * A.decodeChange can give, nor a length or count that fits the input.
 */
export function uleb (c: Cursor): number {
  const buf = c.buf
  const end = c.end
  let pos = c.pos
  if (pos >= end) unreadable()
  let b = buf[pos++] as number
  if (b < 0x80) {
    c.pos = pos
    return b
  }
  let value = b & 0x7f
  let mul = 128
  for (;;) {
    if (pos >= end) unreadable()
    b = buf[pos++] as number
    if (b < 0x80) {
      if (b === 0) unreadable() // overlong
      value += b * mul
      break
    }
    value += (b & 0x7f) * mul
    mul *= 128
    if (mul > 2 ** 49) unreadable() // a ninth byte: beyond 2^56
  }
  if (value > Number.MAX_SAFE_INTEGER) unreadable()
  c.pos = pos
  return value
}

/** The signed LEB128 number at the cursor: strict as parse/leb128.rs is, within ±(2^53 - 1). */
export function sleb (c: Cursor): number {
  const buf = c.buf
  const end = c.end
  let pos = c.pos
  if (pos >= end) unreadable()
  let b = buf[pos++] as number
  if (b < 0x80) {
    c.pos = pos
    return b < 0x40 ? b : b - 0x80
  }
  let value = b & 0x7f
  let mul = 128
  let prev = b
  for (;;) {
    if (pos >= end) unreadable()
    b = buf[pos++] as number
    if (b < 0x80) {
      // overlong: the last byte only extends the sign of the one before
      if ((b === 0 && (prev & 0x40) === 0) || (b === 0x7f && (prev & 0x40) !== 0)) unreadable()
      value += (b < 0x40 ? b : b - 0x80) * mul
      break
    }
    value += (b & 0x7f) * mul
    mul *= 128
    prev = b
    if (mul > 2 ** 49) unreadable()
  }
  if (value > Number.MAX_SAFE_INTEGER || value < -Number.MAX_SAFE_INTEGER) unreadable()
  c.pos = pos
  return value
}

/**
 * The number of values in the run-length encoded column at `col` (rle.rs):
 * runs of one value (count > 0, then the value), literal runs (count < 0,
 * then that many values) and null runs (0, then the count; unreadable unless
 * `nulls`). At most `max`; `col` is left where it is.
 */
export function rleLength (col: Cursor, max: number, nulls: boolean): number {
  const c = new Cursor(col.buf, col.pos, col.end)
  let n = 0
  while (c.pos < c.end) {
    const count = sleb(c)
    if (count > 0) {
      uleb(c)
      n += count
    } else if (count < 0) {
      for (let k = -count; k > 0; k--) uleb(c)
      n -= count
    } else {
      const run = nulls ? uleb(c) : 0
      if (run === 0) unreadable()
      n += run
    }
    if (n > max) unreadable()
  }
  return n
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** Strings of at most this many bytes are interned (`INTERNED_KEYS`). @default 24 */
const INTERN_MAX_BYTES = 24
/**
 * Short ASCII strings decoded lately, by a hash of their bytes, one table for
 * map keys and one for values: a board's keys repeat (every task of a plan
 * has the same few dozen field names) and so do many values, and one string
 * for each saves an allocation per op; values that do not repeat (ids,
 * titles) would push the keys out of a shared table. A slot's string is used
 * only when its characters are the bytes read.
 */
export const INTERNED_KEYS: Array<string | undefined> = new Array<string | undefined>(4096).fill(undefined)
export const INTERNED_VALUES: Array<string | undefined> = new Array<string | undefined>(4096).fill(undefined)

/**
 * The UTF-8 text of `buf[start, end)`, interned in `table` when short; throws
 * on invalid UTF-8, as Rust's `str::from_utf8` refuses it.
 */
export function utf8 (buf: Uint8Array, start: number, end: number, table: Array<string | undefined>): string {
  const n = end - start
  if (n > INTERN_MAX_BYTES) return utf8Decoder.decode(buf.subarray(start, end))
  let h = n
  for (let i = start; i < end; i++) {
    const b = buf[i] as number
    if (b >= 0x80) return utf8Decoder.decode(buf.subarray(start, end))
    h = (Math.imul(h, 31) + b) | 0
  }
  const slot = h & 4095
  const cached = table[slot]
  if (cached !== undefined && cached.length === n) {
    let same = true
    for (let i = 0; i < n; i++) {
      if (cached.charCodeAt(i) !== buf[start + i]) {
        same = false
        break
      }
    }
    if (same) return cached
  }
  let s = ''
  for (let i = start; i < end; i++) s += String.fromCharCode(buf[i] as number)
  table[slot] = s
  return s
}

/** Scratch space for reading little-endian doubles (a float value's 8 bytes) without a DataView per value. */
const FLOAT = new Float64Array(1)
const FLOAT_BYTES = new Uint8Array(FLOAT.buffer)
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** The little-endian double at `buf[start, start + 8)` (the caller checked there are 8 bytes). */
export function float64At (buf: Uint8Array, start: number): number {
  for (let i = 0; i < 8; i++) FLOAT_BYTES[LITTLE_ENDIAN ? i : 7 - i] = buf[start + i] as number
  return FLOAT[0] as number
}

/** The hex of `buf[start, end)` (actor ids, change hashes). */
export function hex (buf: Uint8Array, start: number, end: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('hex')
}
