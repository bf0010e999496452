/*
 * An encoder of decoded Automerge changes (what `A.decodeChange` and
 * `decodeChangeFast` give) back into change chunks, byte for byte as
 * `A.encodeChange` writes them, for one check: `encodesTo(change, bytes)`.
 * A change decoded by change-decoder.ts is trusted only when it encodes back
 * to exactly the bytes it was decoded from. Then no parser differential
 * between that decoder and Automerge can hide in the bytes: the encoder
 * accepts only changes of the form A.decodeChange gives ("canonical", below),
 * for which A.decodeChange(A.encodeChange(change)) is the change itself, so
 * encode(change) === bytes means A.decodeChange(bytes) is `change`.
 *
 * Kept in one file (over 450 lines): the canonical-form checks and the column
 * encoders answer one question together, and a split would put the rules of
 * one column in two places.
 *
 * It follows the Automerge source (github.com/automerge/automerge, rust/, read
 * at 47908d6, after js/automerge-3.4.1) and, where 3.5.0 differs from it or
 * the source leaves it open, what @automerge/automerge 3.5.0 does
 * (test/change-encoder.test.ts holds it to that):
 *   automerge-wasm/src/lib.rs `encode_change`   the JS object goes through JSON.stringify
 *                                               and serde_json into a legacy Change
 *   automerge/src/legacy/mod.rs, serde_impls/*  its fields: preds and deps sorted, values
 *                                               and datatypes, ids `ctr@actorhex`
 *   automerge/src/change.rs `From<ExpandedChange>`  the builder; `author` is ignored
 *   automerge/src/storage/change.rs `build`     the header, in this order: deps, actor,
 *                                               seq, start op, time, message, other actors,
 *                                               column specs, column data, extra bytes
 *   automerge/src/storage/change/change_actors.rs  the change's actor first, then every
 *                                               other actor of an obj, elemId or pred, sorted
 *   automerge/src/storage/change/change_op_columns.rs  columns and which are left out
 *   automerge/src/storage/columns/raw_column.rs  empty columns are not written
 *   automerge/src/columnar/encoding/{rle,delta,boolean,raw,encodable_impls,leb128}.rs
 *   automerge/src/columnar/column_range/{obj_id,key,opid_list,value,boolean,rle,delta}.rs
 *   automerge/src/storage/chunk.rs              checksum: the first 4 bytes of SHA-256
 *                                               over type, body length and body
 *
 * Canonical, here: every field as A.decodeChange gives it, and nothing else.
 * Anything else gives null (encodeChangeFast) or false (encodesTo), even
 * where A.encodeChange would encode it, because Automerge would not decode it
 * back the same: preds or deps out of order, an empty message or extra
 * bytes, uppercase hex, `insert: false`, a number without its datatype, -0,
 * a field that is not Automerge's (or one of another action), an author other
 * than the extra bytes', a start op or op id counter beyond u32 or of 0.
 * Also null for what A.encodeChange cannot encode or does not encode as given:
 *   - bytes values (A.encodeChange refuses a value that is an array);
 *   - a float (a float64, a mark's number that is not a safe integer) unless
 *     serde_json surely reads its JSON back exactly: integral and below 2^63
 *     (read as an integer, then converted), or a shortest decimal form whose
 *     significand is below 2^53 and power of ten within 10^±22 (read with one
 *     correctly rounded multiplication or division of exact doubles: 0.25,
 *     1.5e-7, 123.456). 3.5.0's serde_json reads other decimals inexactly
 *     (about one random double in seven comes back a unit in the last place
 *     off), so 0.1 + 0.2 and most doubles of 17 digits are left to Automerge;
 *   - NaN and ±Infinity (JSON null), numbers beyond ±(2^53 - 1).
 * A `markBegin` value that is a number is encoded as JSON hands it to serde:
 * a uint when integral and not negative, an int when negative, else a float
 * (so A.mark's numbers, stored as floats, never encode back to their bytes;
 * neither does A.encodeChange encode them back).
 *
 * Cost (2-core AMD EPYC, Node 24, a loaded host): encodesTo on the plan of
 * 10,000 tasks (380,000 ops, 5 MB) ~55 ms, ~95 ms as the first call of a
 * process (decodeChangeFast: ~100 and ~150 ms there; A.encodeChange ~1 s);
 * 6-7 µs for a change of 10-20 ops (A.encodeChange 20-30 µs). Synchronous;
 * scratch buffers are kept between calls (dropped when a change grew them
 * past 1 MiB), and a call made while another runs (from a getter in a change)
 * is refused.
 */
import type * as A from '@automerge/automerge'
import { hash as oneShotHash } from 'node:crypto'
import { ACT_DELETE, ACT_INC, ACT_MAKE_LIST, ACT_MAKE_MAP, ACT_MAKE_TABLE, ACT_MAKE_TEXT, ACT_MARK, ACT_SET, COL_ACTION, COL_EXPAND, COL_INSERT, COL_KEY_ACTOR, COL_KEY_CTR, COL_KEY_STR, COL_MARK_NAME, COL_OBJ_ACTOR, COL_OBJ_CTR, COL_PRED_ACTOR, COL_PRED_CTR, COL_PRED_NUM, COL_VAL_META, COL_VAL_RAW, MAX_U32, VAL_COUNTER, VAL_FALSE, VAL_FLOAT, VAL_LEB, VAL_NULL, VAL_STRING, VAL_TIMESTAMP, VAL_TRUE, VAL_ULEB } from './columnar.ts'

/** Column specifications (id << 4 | type), in the order change_op_columns.rs writes them; as change-decoder.ts reads them. */
const COLUMN_SPECS = [
  COL_OBJ_ACTOR, COL_OBJ_CTR, COL_KEY_ACTOR, COL_KEY_CTR, COL_KEY_STR, COL_INSERT, COL_ACTION,
  COL_VAL_META, COL_VAL_RAW, COL_PRED_NUM, COL_PRED_ACTOR, COL_PRED_CTR, COL_EXPAND, COL_MARK_NAME
]
const C_OBJ_ACTOR = 0
const C_OBJ_CTR = 1
const C_KEY_ACTOR = 2
const C_KEY_CTR = 3
const C_KEY_STR = 4
const C_INSERT = 5
const C_ACTION = 6
const C_VAL_META = 7
const C_VAL_RAW = 8
const C_PRED_NUM = 9
const C_PRED_ACTOR = 10
const C_PRED_CTR = 11
const C_EXPAND = 12
const C_MARK_NAME = 13

const MAGIC = [0x85, 0x6f, 0x4a, 0x83]
const CHANGE_CHUNK = 1

/** Thrown inside the encoder for a change it does not encode; never escapes it. */
class NotCanonical extends Error {}
const NOT_CANONICAL = new NotCanonical('not a change this encoder encodes')
function refuse (): never {
  throw NOT_CANONICAL
}

/** A growable byte buffer. Scratch ones are kept between calls and dropped when a large change grew them. */
class Writer {
  buf: Uint8Array
  pos = 0
  constructor (size: number) {
    this.buf = new Uint8Array(size)
  }

  /** Room for `n` more bytes. */
  ensure (n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
  }

  reset (): void {
    this.pos = 0
    if (this.buf.length > KEEP_BYTES) this.buf = new Uint8Array(INITIAL_BYTES)
  }
}
/** @default 256 */
const INITIAL_BYTES = 256
/** Scratch buffers larger than this are dropped after a change. @default 1 MiB */
const KEEP_BYTES = 1 << 20

/** Unsigned LEB128 of `n` (0 ≤ n < 2^53), as leb128::write::unsigned and encodable_impls.rs `u64`. */
function writeUleb (w: Writer, n: number): void {
  if (w.pos + 10 > w.buf.length) w.ensure(10)
  const buf = w.buf
  let pos = w.pos
  if (n <= 0x7fffffff) {
    while (n >= 0x80) {
      buf[pos++] = (n & 0x7f) | 0x80
      n >>>= 7
    }
  } else {
    while (n >= 0x80) {
      buf[pos++] = (n % 128) | 0x80
      n = Math.floor(n / 128)
    }
  }
  buf[pos++] = n
  w.pos = pos
}

/** Signed LEB128 of `n` (|n| < 2^53), as leb128::write::signed and encodable_impls.rs `i64`. */
function writeSleb (w: Writer, n: number): void {
  if (w.pos + 10 > w.buf.length) w.ensure(10)
  const buf = w.buf
  let pos = w.pos
  if ((n | 0) === n) {
    for (;;) {
      const low = n & 0x7f
      n >>= 7
      if ((n === 0 && (low & 0x40) === 0) || (n === -1 && (low & 0x40) !== 0)) {
        buf[pos++] = low
        break
      }
      buf[pos++] = low | 0x80
    }
  } else {
    for (;;) {
      const rest = Math.floor(n / 128)
      const low = n - rest * 128
      if ((rest === 0 && (low & 0x40) === 0) || (rest === -1 && (low & 0x40) !== 0)) {
        buf[pos++] = low
        break
      }
      buf[pos++] = low | 0x80
      n = rest
    }
  }
  w.pos = pos
}

function ulebSize (n: number): number {
  let size = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    size++
  }
  return size
}

/** Strings longer than this go through TextEncoder (after a check for lone surrogates) rather than the loop. @default 64 */
const LONG_STRING = 64
const textEncoder = new TextEncoder()
const isWellFormed = (String.prototype as unknown as { isWellFormed?: (this: string) => boolean }).isWellFormed

/**
 * The UTF-8 bytes of `s` at the writer's position; returns their number.
 * Refuses a string with a lone surrogate: JSON.stringify writes it as an
 * escape serde_json refuses, and no decoded string has one.
 */
function writeUtf8 (w: Writer, s: string): number {
  const n = s.length
  w.ensure(3 * n)
  const buf = w.buf
  const start = w.pos
  if (n > LONG_STRING && isWellFormed !== undefined) {
    if (!isWellFormed.call(s)) refuse()
    const { written } = textEncoder.encodeInto(s, buf.subarray(start))
    w.pos = start + written
    return written
  }
  let pos = start
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) buf[pos++] = c
    else if (c < 0x800) {
      buf[pos++] = 0xc0 | (c >> 6)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else if (c < 0xd800 || c > 0xdfff) {
      buf[pos++] = 0xe0 | (c >> 12)
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0
      if (c > 0xdbff || d < 0xdc00 || d > 0xdfff) refuse()
      i++
      const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
      buf[pos++] = 0xf0 | (cp >> 18)
      buf[pos++] = 0x80 | ((cp >> 12) & 0x3f)
      buf[pos++] = 0x80 | ((cp >> 6) & 0x3f)
      buf[pos++] = 0x80 | (cp & 0x3f)
    }
  }
  w.pos = pos
  return pos - start
}

/** A length-prefixed UTF-8 string (encodable_impls.rs `SmolStr`): the bytes are written after one byte of room, and moved when the length takes more. */
function writeLengthPrefixed (w: Writer, s: string): void {
  w.ensure(1)
  const at = w.pos++
  const len = writeUtf8(w, s)
  if (len < 0x80) {
    w.buf[at] = len
    return
  }
  const extra = ulebSize(len) - 1
  w.ensure(extra)
  w.buf.copyWithin(at + 1 + extra, at + 1, at + 1 + len)
  w.pos = at
  writeUleb(w, len)
  w.pos += len
}

/** A little-endian double (encodable_impls.rs `f64`). */
const FLOAT = new Float64Array(1)
const FLOAT_BYTES = new Uint8Array(FLOAT.buffer)
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
function writeFloat (w: Writer, x: number): void {
  w.ensure(8)
  FLOAT[0] = x
  for (let i = 0; i < 8; i++) w.buf[w.pos + i] = FLOAT_BYTES[LITTLE_ENDIAN ? i : 7 - i] as number
  w.pos += 8
}

/** Literal runs longer than this are not kept for the next change. @default 4096 */
const LITERAL_KEEP = 4096

/* rle.rs `RleState` */
const S_EMPTY = 0
const S_INITIAL_NULLS = 1
const S_NULLS = 2
const S_LONE = 3
const S_RUN = 4
const S_LITERAL = 5

/**
 * rle.rs `RleEncoder` over numbers: unsigned (u64 columns) or signed (the
 * deltas of delta.rs). Runs of one value (count, value), literal runs
 * (-count, values), null runs (0, count); nulls at the start of a column
 * that has only nulls are not written at all.
 */
class NumberRle {
  w: Writer
  signed: boolean
  state = S_EMPTY
  count = 0
  /** The lone value, the run's value, or a literal run's last value (not yet in `literal`). */
  value = 0
  literal: number[] = []
  literalLength = 0
  constructor (w: Writer, signed: boolean) {
    this.w = w
    this.signed = signed
  }

  reset (): void {
    this.state = S_EMPTY
    this.literalLength = 0
    if (this.literal.length > LITERAL_KEEP) this.literal = []
  }

  put (v: number): void {
    switch (this.state) {
      case S_EMPTY:
        this.state = S_LONE
        this.value = v
        return
      case S_LONE:
        if (this.value === v) {
          this.state = S_RUN
          this.count = 2
        } else {
          this.literal[0] = this.value
          this.literalLength = 1
          this.value = v
          this.state = S_LITERAL
        }
        return
      case S_RUN:
        if (this.value === v) this.count++
        else {
          this.flushRun()
          this.state = S_LONE
          this.value = v
        }
        return
      case S_LITERAL:
        if (this.value === v) {
          this.flushLiteral()
          this.state = S_RUN
          this.count = 2
        } else {
          this.literal[this.literalLength++] = this.value
          this.value = v
        }
        return
      default:
        this.flushNulls()
        this.state = S_LONE
        this.value = v
    }
  }

  putNull (): void {
    switch (this.state) {
      case S_EMPTY:
        this.state = S_INITIAL_NULLS
        this.count = 1
        return
      case S_INITIAL_NULLS:
      case S_NULLS:
        this.count++
        return
      case S_LONE:
        this.literal[0] = this.value
        this.literalLength = 1
        this.flushLiteral()
        break
      case S_RUN:
        this.flushRun()
        break
      default:
        this.literal[this.literalLength++] = this.value
        this.flushLiteral()
    }
    this.state = S_NULLS
    this.count = 1
  }

  finish (): void {
    switch (this.state) {
      case S_NULLS:
        this.flushNulls()
        break
      case S_LONE:
        this.literal[0] = this.value
        this.literalLength = 1
        this.flushLiteral()
        break
      case S_RUN:
        this.flushRun()
        break
      case S_LITERAL:
        this.literal[this.literalLength++] = this.value
        this.flushLiteral()
        break
    }
    this.state = S_EMPTY
  }

  private flushRun (): void {
    writeSleb(this.w, this.count)
    if (this.signed) writeSleb(this.w, this.value)
    else writeUleb(this.w, this.value)
  }

  private flushNulls (): void {
    writeSleb(this.w, 0)
    writeUleb(this.w, this.count)
  }

  private flushLiteral (): void {
    const n = this.literalLength
    writeSleb(this.w, -n)
    const lit = this.literal
    if (this.signed) for (let i = 0; i < n; i++) writeSleb(this.w, lit[i] as number)
    else for (let i = 0; i < n; i++) writeUleb(this.w, lit[i] as number)
    this.literalLength = 0
  }
}

/** rle.rs `RleEncoder` over strings (key and mark name columns), each written length-prefixed. */
class StringRle {
  w: Writer
  state = S_EMPTY
  count = 0
  value = ''
  literal: string[] = []
  literalLength = 0
  constructor (w: Writer) {
    this.w = w
  }

  reset (): void {
    this.state = S_EMPTY
    this.literalLength = 0
    this.value = ''
    if (this.literal.length > LITERAL_KEEP) this.literal = []
  }

  put (v: string): void {
    switch (this.state) {
      case S_EMPTY:
        this.state = S_LONE
        this.value = v
        return
      case S_LONE:
        if (this.value === v) {
          this.state = S_RUN
          this.count = 2
        } else {
          this.literal[0] = this.value
          this.literalLength = 1
          this.value = v
          this.state = S_LITERAL
        }
        return
      case S_RUN:
        if (this.value === v) this.count++
        else {
          this.flushRun()
          this.state = S_LONE
          this.value = v
        }
        return
      case S_LITERAL:
        if (this.value === v) {
          this.flushLiteral()
          this.state = S_RUN
          this.count = 2
        } else {
          this.literal[this.literalLength++] = this.value
          this.value = v
        }
        return
      default:
        this.flushNulls()
        this.state = S_LONE
        this.value = v
    }
  }

  putNull (): void {
    switch (this.state) {
      case S_EMPTY:
        this.state = S_INITIAL_NULLS
        this.count = 1
        return
      case S_INITIAL_NULLS:
      case S_NULLS:
        this.count++
        return
      case S_LONE:
        this.literal[0] = this.value
        this.literalLength = 1
        this.flushLiteral()
        break
      case S_RUN:
        this.flushRun()
        break
      default:
        this.literal[this.literalLength++] = this.value
        this.flushLiteral()
    }
    this.state = S_NULLS
    this.count = 1
  }

  finish (): void {
    switch (this.state) {
      case S_NULLS:
        this.flushNulls()
        break
      case S_LONE:
        this.literal[0] = this.value
        this.literalLength = 1
        this.flushLiteral()
        break
      case S_RUN:
        this.flushRun()
        break
      case S_LITERAL:
        this.literal[this.literalLength++] = this.value
        this.flushLiteral()
        break
    }
    this.state = S_EMPTY
    this.value = ''
  }

  private flushRun (): void {
    writeSleb(this.w, this.count)
    writeLengthPrefixed(this.w, this.value)
  }

  private flushNulls (): void {
    writeSleb(this.w, 0)
    writeUleb(this.w, this.count)
  }

  private flushLiteral (): void {
    const n = this.literalLength
    writeSleb(this.w, -n)
    const lit = this.literal
    for (let i = 0; i < n; i++) {
      writeLengthPrefixed(this.w, lit[i] as string)
      lit[i] = '' // no reference kept to a change's strings
    }
    this.literalLength = 0
  }
}

/** delta.rs `DeltaEncoder`: run-length encoded differences from the previous non-null value, starting at 0. */
class DeltaRle {
  rle: NumberRle
  absolute = 0
  constructor (w: Writer) {
    this.rle = new NumberRle(w, true)
  }

  reset (): void {
    this.rle.reset()
    this.absolute = 0
  }

  put (v: number): void {
    this.rle.put(v - this.absolute)
    this.absolute = v
  }

  putNull (): void {
    this.rle.putNull()
  }

  finish (): void {
    this.rle.finish()
  }
}

/**
 * boolean.rs `BooleanEncoder`: alternating counts of false and true, false
 * first (a column starting with true starts with a count of 0). As
 * `MaybeBooleanEncoder` (`maybe`), a column of only false values is empty.
 */
class BooleanColumn {
  w: Writer
  last = false
  count = 0
  anyTrue = false
  constructor (w: Writer) {
    this.w = w
  }

  reset (): void {
    this.last = false
    this.count = 0
    this.anyTrue = false
  }

  put (v: boolean): void {
    if (v === this.last) this.count++
    else {
      writeUleb(this.w, this.count)
      this.last = v
      this.count = 1
      this.anyTrue = true
    }
  }

  finish (maybe: boolean): void {
    // all false: nothing is written yet (the first count is written when a true comes)
    if (maybe && !this.anyTrue) return
    if (this.count > 0) writeUleb(this.w, this.count)
  }
}

/** Everything one encoding uses, kept between calls (the encoder is synchronous and not re-entered). */
const head = new Writer(INITIAL_BYTES)
const columns = COLUMN_SPECS.map(() => new Writer(INITIAL_BYTES))
const col = (i: number): Writer => columns[i] as Writer
const objActorRle = new NumberRle(col(C_OBJ_ACTOR), false)
const objCtrRle = new NumberRle(col(C_OBJ_CTR), false)
const keyActorRle = new NumberRle(col(C_KEY_ACTOR), false)
const keyCtrDelta = new DeltaRle(col(C_KEY_CTR))
const keyStrRle = new StringRle(col(C_KEY_STR))
const insertColumn = new BooleanColumn(col(C_INSERT))
const actionRle = new NumberRle(col(C_ACTION), false)
const valMetaRle = new NumberRle(col(C_VAL_META), false)
const rawValues = col(C_VAL_RAW)
const predNumRle = new NumberRle(col(C_PRED_NUM), false)
const predActorRle = new NumberRle(col(C_PRED_ACTOR), false)
const predCtrDelta = new DeltaRle(col(C_PRED_CTR))
const expandColumn = new BooleanColumn(col(C_EXPAND))
const markNameRle = new StringRle(col(C_MARK_NAME))

/** Per op (obj, key) and per pred: the actor's index in `actors` (in order of first use), -1 for none. Actor columns are written once the order of actors is known. */
let objActors = new Int32Array(1024)
let keyActors = new Int32Array(1024)
let predActors = new Int32Array(1024)
/** The actors of the change: its own first, then the others in order of first use; and each one's index. */
const actors: string[] = []
const actorIndex = new Map<string, number>()
/** The actors of the last two op ids read (of different actors), to skip the map for ids of either. */
let lastActor = ''
let lastActorIndex = 0
let previousActor = ''
let previousActorIndex = 0
/** The object of the last op: its string (NO_OBJECT before the first op), actor (-1 for the root) and counter. */
const NO_OBJECT: unknown = Symbol('no object')
let lastObj: unknown = NO_OBJECT
let lastObjActor = -1
let lastObjCounter = 0
/** The op id `parseOpId` read. */
let idCounter = 0
let idActor = 0

function resetState (n: number): void {
  head.reset()
  for (const w of columns) w.reset()
  objActorRle.reset()
  objCtrRle.reset()
  keyActorRle.reset()
  keyCtrDelta.reset()
  keyStrRle.reset()
  insertColumn.reset()
  actionRle.reset()
  valMetaRle.reset()
  predNumRle.reset()
  predActorRle.reset()
  predCtrDelta.reset()
  expandColumn.reset()
  markNameRle.reset()
  if (objActors.length < n || objActors.length > 65536) {
    objActors = new Int32Array(Math.max(n, 1024))
    keyActors = new Int32Array(Math.max(n, 1024))
  }
  if (predActors.length > 65536) predActors = new Int32Array(1024)
  actors.length = 0
  actorIndex.clear()
  lastActor = ''
  lastActorIndex = 0
  previousActor = ''
  previousActorIndex = 0
  lastObj = NO_OBJECT
}

/** Whether `s` is lowercase hex of whole bytes, as Automerge writes ids and hashes (hex::encode). */
function isLowerHex (s: string): boolean {
  if ((s.length & 1) !== 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false
  }
  return true
}

function hexValue (c: number): number {
  return c <= 57 ? c - 48 : c - 87
}

/** The bytes of lowercase hex `s` (checked by isLowerHex). */
function writeHex (w: Writer, s: string): void {
  const n = s.length >> 1
  w.ensure(n)
  const buf = w.buf
  let pos = w.pos
  for (let i = 0; i < s.length; i += 2) buf[pos++] = (hexValue(s.charCodeAt(i)) << 4) | hexValue(s.charCodeAt(i + 1))
  w.pos = pos
}

/** The index of actor `hex` (lowercase, checked here), adding it when new. */
function actorOf (hex: string): number {
  const known = actorIndex.get(hex)
  if (known !== undefined) return known
  if (!isLowerHex(hex)) refuse()
  actors.push(hex)
  actorIndex.set(hex, actors.length - 1)
  return actors.length - 1
}

/**
 * An op id `ctr@actorhex` as A.decodeChange writes it (legacy OpId's
 * Display): a counter of 1 to u32 in decimal without leading zeros, then
 * lowercase hex; into `idCounter` and `idActor`.
 */
function parseOpId (s: unknown): void {
  if (typeof s !== 'string') refuse()
  const at = s.indexOf('@')
  if (at < 1 || at > 10) refuse()
  let ctr = 0
  for (let i = 0; i < at; i++) {
    const d = s.charCodeAt(i) - 48
    if (d < 0 || d > 9 || (i === 0 && d === 0)) refuse()
    ctr = ctr * 10 + d
  }
  if (ctr > MAX_U32) refuse()
  idCounter = ctr
  const n = s.length - at - 1
  if (n === lastActor.length && s.startsWith(lastActor, at + 1)) {
    idActor = lastActorIndex
    return
  }
  if (n === previousActor.length && s.startsWith(previousActor, at + 1)) {
    idActor = previousActorIndex
  } else idActor = actorOf(s.slice(at + 1))
  previousActor = lastActor
  previousActorIndex = lastActorIndex
  lastActor = actors[idActor] as string
  lastActorIndex = idActor
}

/** A safe integer other than -0 (JSON writes -0 as 0, which Automerge gives back as 0). */
function isInteger (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && (v !== 0 || 1 / v > 0)
}

/**
 * Whether serde_json reads JSON.stringify(x) back as exactly x. An integral
 * x below 2^63 is written as an integer, read as one and converted exactly;
 * any other x is read as significand × 10^exponent with one multiplication or
 * division of doubles, which is exact (correctly rounded) when the
 * significand is below 2^53 and the power of ten within 10^±22 (both exact
 * doubles). Others (most doubles of 17 digits) may come back off by a unit in
 * the last place and are refused.
 */
function isExactFloat (x: number): boolean {
  if (!Number.isFinite(x) || (x === 0 && 1 / x < 0)) return false
  if (Number.isInteger(x) && Math.abs(x) < 1e21) return Math.abs(x) < 2 ** 63
  const s = String(x)
  let significand = 0
  let fractionDigits = 0
  let exponent = 0
  let afterPoint = false
  for (let i = s.charCodeAt(0) === 45 ? 1 : 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 46) afterPoint = true
    else if (c === 101) {
      exponent = Number(s.slice(i + 1))
      break
    } else {
      significand = significand * 10 + (c - 48)
      if (afterPoint) fractionDigits++
    }
  }
  const e = exponent - fractionDigits
  return significand <= 2 ** 53 && e >= -22 && e <= 22
}

/** The raw bytes of one value and its metadata (value.rs `ValueMeta`: length << 4 | type). */
function putSigned (v: number, type: number): void {
  const start = rawValues.pos
  writeSleb(rawValues, v)
  valMetaRle.put((rawValues.pos - start) * 16 + type)
}

function putUnsigned (v: number): void {
  const start = rawValues.pos
  writeUleb(rawValues, v)
  valMetaRle.put((rawValues.pos - start) * 16 + VAL_ULEB)
}

function putString (v: string): void {
  const len = writeUtf8(rawValues, v)
  valMetaRle.put(len * 16 + VAL_STRING)
}

function putFloat (v: number): void {
  writeFloat(rawValues, v)
  valMetaRle.put(8 * 16 + VAL_FLOAT)
}

/** A value without datatype (a put's, a mark's): null, a boolean or a string; a mark's numbers as JSON hands them to serde. */
function putUntyped (v: unknown, numbers: boolean): void {
  if (v === null) valMetaRle.put(VAL_NULL)
  else if (v === true) valMetaRle.put(VAL_TRUE)
  else if (v === false) valMetaRle.put(VAL_FALSE)
  else if (typeof v === 'string') putString(v)
  else if (numbers && typeof v === 'number') {
    // serde_json: a JSON integer is a u64 (or an i64 when negative), anything else an f64
    if (isInteger(v)) {
      if (v >= 0) putUnsigned(v)
      else putSigned(v, VAL_LEB)
    } else if (!Number.isInteger(v) || Math.abs(v) >= 1e21) {
      if (!isExactFloat(v)) refuse()
      putFloat(v)
    } else refuse() // an integer beyond 2^53, or -0
  } else refuse()
}

const OWN_PROTOTYPE = Object.prototype

/** One op (serde_impls/op.rs `Deserialize`, then change_op_columns.rs): its columns but the actors'. */
function encodeOp (op: unknown, i: number, nPreds: number): number {
  // (no check of the prototype here, for time: the count of fields below counts inherited ones too)
  if (typeof op !== 'object' || op === null) refuse()
  const o = op as Record<string, unknown>
  let fields = 4 // action, obj, key or elemId, pred

  // consecutive ops mostly share their object (and its string: a comparison of pointers)
  const obj = o.obj
  if (obj === lastObj) {
    objActors[i] = lastObjActor
    if (lastObjActor < 0) objCtrRle.putNull()
    else objCtrRle.put(lastObjCounter)
  } else if (obj === '_root') {
    objActors[i] = -1
    objCtrRle.putNull()
    lastObj = obj
    lastObjActor = -1
  } else {
    parseOpId(obj)
    objActors[i] = idActor
    objCtrRle.put(idCounter)
    lastObj = obj
    lastObjActor = idActor
    lastObjCounter = idCounter
  }

  const key = o.key
  const elemId = o.elemId
  if (key !== undefined) {
    if (elemId !== undefined || typeof key !== 'string') refuse()
    keyStrRle.put(key)
    keyActors[i] = -1
    keyCtrDelta.putNull()
  } else if (elemId === '_head') {
    keyStrRle.putNull()
    keyActors[i] = -1
    keyCtrDelta.put(0)
  } else {
    parseOpId(elemId)
    keyStrRle.putNull()
    keyActors[i] = idActor
    keyCtrDelta.put(idCounter)
  }

  const insert = o.insert
  if (insert === true) {
    fields++
    insertColumn.put(true)
  } else if (insert === undefined) insertColumn.put(false)
  else refuse()

  const action = o.action
  let code: number
  let expand = false
  let name: string | null = null
  switch (action) {
    case 'set': {
      code = ACT_SET
      const datatype = o.datatype
      const v = o.value
      if (datatype === undefined) {
        fields++
        putUntyped(v, false)
        break
      }
      fields += 2
      switch (datatype) {
        case 'int':
        case 'counter':
        case 'timestamp':
          if (!isInteger(v)) refuse()
          putSigned(v, datatype === 'int' ? VAL_LEB : datatype === 'counter' ? VAL_COUNTER : VAL_TIMESTAMP)
          break
        case 'uint':
          if (!isInteger(v) || v < 0) refuse()
          putUnsigned(v)
          break
        case 'float64':
          if (typeof v !== 'number' || !isExactFloat(v)) refuse()
          putFloat(v)
          break
        default:
          refuse()
      }
      break
    }
    case 'makeMap': code = ACT_MAKE_MAP; valMetaRle.put(VAL_NULL); break
    case 'makeList': code = ACT_MAKE_LIST; valMetaRle.put(VAL_NULL); break
    case 'makeText': code = ACT_MAKE_TEXT; valMetaRle.put(VAL_NULL); break
    case 'makeTable': code = ACT_MAKE_TABLE; valMetaRle.put(VAL_NULL); break
    case 'del': code = ACT_DELETE; valMetaRle.put(VAL_NULL); break
    case 'inc': {
      // legacy `OpType::Increment(i64)`, written as an int
      code = ACT_INC
      fields++
      const v = o.value
      if (!isInteger(v)) refuse()
      putSigned(v, VAL_LEB)
      break
    }
    case 'markBegin': {
      code = ACT_MARK
      fields += 3
      const n = o.name
      const e = o.expand
      if (typeof n !== 'string' || typeof e !== 'boolean') refuse()
      name = n
      expand = e
      putUntyped(o.value, true)
      break
    }
    case 'markEnd': {
      code = ACT_MARK
      fields++
      const e = o.expand
      if (typeof e !== 'boolean') refuse()
      expand = e
      valMetaRle.put(VAL_NULL)
      break
    }
    default:
      refuse()
  }
  actionRle.put(code)
  expandColumn.put(expand)
  if (name === null) markNameRle.putNull()
  else markNameRle.put(name)

  // preds: as given, which must be sorted as legacy `SortedVec<OpId>` sorts them (counter, then actor bytes)
  const pred = o.pred
  if (!Array.isArray(pred)) refuse()
  const np = pred.length
  predNumRle.put(np)
  if (nPreds + np > predActors.length) {
    const next = new Int32Array(Math.max(2 * predActors.length, nPreds + np))
    next.set(predActors.subarray(0, nPreds))
    predActors = next
  }
  let prevCtr = 0
  let prevActor = -1
  for (let j = 0; j < np; j++) {
    parseOpId(pred[j])
    if (j > 0 && (idCounter < prevCtr || (idCounter === prevCtr && idActor !== prevActor && (actors[idActor] as string) < (actors[prevActor] as string)))) refuse()
    prevCtr = idCounter
    prevActor = idActor
    predActors[nPreds + j] = idActor
    predCtrDelta.put(idCounter)
  }

  // every field read, and no other (an unknown field makes A.encodeChange throw; one of another action's it ignores):
  // counted with for-in, which allocates nothing (Object.keys made an array per op) and counts inherited ones too
  let present = 0
  for (const _ in o) present++
  if (present !== fields) refuse()
  return nPreds + np
}

/**
 * The unsigned LEB128 number at `at.pos` of `bytes` as the `leb128` crate
 * reads it for the author footer (overlong encodings are taken, a tenth byte
 * other than 0 or 1 overflows): its low 32 bits, plus 2^32 when it has higher
 * ones. -1 when it fails (the end of the bytes, an overflow), which makes the
 * footer no author.
 */
function footerNumber (bytes: readonly number[], at: { pos: number }): number {
  let low = 0
  let high = false
  for (let shift = 0; ; shift += 7) {
    if (at.pos >= bytes.length) return -1
    const b = bytes[at.pos++] as number
    if (shift === 63 && b > 1) return -1
    const bits = b & 0x7f
    if (shift < 32) {
      const v = bits * 2 ** shift
      low += v % 2 ** 32
      if (v >= 2 ** 32) high = true
    } else if (bits !== 0) high = true
    if (b < 0x80) return high ? low + 2 ** 32 : low
  }
}

/** The author footer's id (change.rs `Footer::Author`). */
const FOOTER_AUTHOR = 1

/**
 * The author a change's extra bytes name, as @automerge/automerge 3.5.0 reads
 * it (change.rs `Change::author` on its branch revocation-fragments-hexane-v1;
 * not in 3.4.1): a footer id of 1, a length, and at least that many bytes,
 * whose hex is the author; undefined when the extra bytes are no such footer.
 * The length is cut to its low 32 bits, as wasm32's usize cuts it (a length
 * of 2^32 + 1 names one byte, as A.decodeChange gives it). The decoder
 * (change-decoder.ts) gives it as the change's `author`; the encoder takes a
 * change only when its `author` is this.
 */
export function authorOf (extra: readonly number[]): string | undefined {
  const at = { pos: 0 }
  if (footerNumber(extra, at) !== FOOTER_AUTHOR) return undefined
  const length = footerNumber(extra, at)
  if (length < 0) return undefined
  const n = length % 2 ** 32
  if (n > extra.length - at.pos) return undefined
  return Buffer.from(extra.slice(at.pos, at.pos + n)).toString('hex')
}

/** The fields of a decoded change. */
const CHANGE_FIELDS = new Set(['ops', 'actor', 'hash', 'seq', 'startOp', 'time', 'message', 'deps', 'extra_bytes', 'author'])

/** What `encode` leaves for the caller, besides the writers: the extra bytes, and the body's length. */
let encodedExtra: readonly number[] = []
let encodedBodyLength = 0
/** Actor indices in order of first use → in the change's order. */
let remap = new Int32Array(16)

/**
 * `change` encoded into `head` (deps up to the column specifications) and
 * the column writers; refuses (throws NOT_CANONICAL) anything not canonical.
 */
function encode (change: unknown): void {
  if (typeof change !== 'object' || change === null || Object.getPrototypeOf(change) !== OWN_PROTOTYPE) refuse()
  const c = change as Record<string, unknown>
  const { ops, actor, seq, startOp, time, message, deps, hash } = c
  const extraBytes = c.extra_bytes
  const author = c.author
  let fields = 7
  const keys = Object.keys(c)
  for (const k of keys) if (!CHANGE_FIELDS.has(k)) refuse()
  if (!Array.isArray(ops) || !Array.isArray(deps)) refuse()
  if (typeof actor !== 'string' || !isLowerHex(actor)) refuse()
  if (!isInteger(seq) || seq < 0) refuse()
  // change.rs `verify_ops`: A.decodeChange refuses a start op beyond u32
  if (!isInteger(startOp) || startOp < 1 || startOp > MAX_U32) refuse()
  if (!isInteger(time)) refuse()
  // an empty message is written as none
  if (message !== null && typeof message !== 'string') refuse()
  if (message === '') refuse()
  if (hash !== undefined) {
    if (typeof hash !== 'string' || hash.length !== 64 || !isLowerHex(hash)) refuse()
    fields++
  }
  let extra: readonly number[] = []
  if (extraBytes !== undefined) {
    // given only when there are some
    if (!Array.isArray(extraBytes) || extraBytes.length === 0) refuse()
    for (const b of extraBytes as unknown[]) if (typeof b !== 'number' || (b >>> 0) !== b || b > 255 || (b === 0 && 1 / b < 0)) refuse()
    extra = extraBytes as number[]
    fields++
  }
  // A.encodeChange ignores the author; A.decodeChange reads it from the extra bytes
  if (author !== undefined) fields++
  if (author !== (extraBytes === undefined ? undefined : authorOf(extra))) refuse()
  if (keys.length !== fields) refuse()
  for (let i = 0; i < deps.length; i++) {
    const d = deps[i] as unknown
    if (typeof d !== 'string' || d.length !== 64 || !isLowerHex(d)) refuse()
    if (i > 0 && d < (deps[i - 1] as string)) refuse() // with_dependencies sorts them
  }

  const n = ops.length
  resetState(n)
  actorOf(actor)
  // both cached actors are the change's own at first (an empty cache entry would match an empty actor id)
  lastActor = actor
  lastActorIndex = 0
  previousActor = actor
  previousActorIndex = 0
  let nPreds = 0
  for (let i = 0; i < n; i++) nPreds = encodeOp(ops[i], i, nPreds)

  // change_actors.rs: the change's actor, then the others sorted (lowercase hex of whole bytes sorts as the bytes)
  const others = actors.length === 1 ? [] : actors.slice(1).sort()
  if (remap.length < actors.length) remap = new Int32Array(2 * actors.length)
  remap[0] = 0
  for (let k = 0; k < others.length; k++) remap[actorIndex.get(others[k] as string) as number] = k + 1
  for (let i = 0; i < n; i++) {
    const a = objActors[i] as number
    if (a < 0) objActorRle.putNull()
    else objActorRle.put(remap[a] as number)
    const k = keyActors[i] as number
    if (k < 0) keyActorRle.putNull()
    else keyActorRle.put(remap[k] as number)
  }
  for (let p = 0; p < nPreds; p++) predActorRle.put(remap[predActors[p] as number] as number)

  objActorRle.finish()
  objCtrRle.finish()
  keyActorRle.finish()
  keyCtrDelta.finish()
  keyStrRle.finish()
  insertColumn.finish(false)
  actionRle.finish()
  valMetaRle.finish()
  predNumRle.finish()
  predActorRle.finish()
  predCtrDelta.finish()
  expandColumn.finish(true)
  markNameRle.finish()
  // obj_id.rs: the counters of an object column are written only with its actors (both empty when every op is on the root)
  if (col(C_OBJ_ACTOR).pos === 0) col(C_OBJ_CTR).pos = 0

  // storage/change.rs `build`
  writeUleb(head, deps.length)
  for (const d of deps as string[]) writeHex(head, d)
  writeUleb(head, actor.length >> 1)
  writeHex(head, actor)
  writeUleb(head, seq)
  writeUleb(head, startOp)
  writeSleb(head, time)
  if (message === null) writeUleb(head, 0)
  else writeLengthPrefixed(head, message)
  writeUleb(head, others.length)
  for (const o of others) {
    writeUleb(head, o.length >> 1)
    writeHex(head, o)
  }
  let nColumns = 0
  let dataLength = 0
  for (const w of columns) {
    if (w.pos > 0) {
      nColumns++
      dataLength += w.pos
    }
  }
  writeUleb(head, nColumns)
  for (let i = 0; i < columns.length; i++) {
    const len = col(i).pos
    if (len === 0) continue
    writeUleb(head, COLUMN_SPECS[i] as number)
    writeUleb(head, len)
  }
  encodedExtra = extra
  encodedBodyLength = head.pos + dataLength + extra.length
}

/**
 * Whether an encoding is under way: the scratch state is shared, and a getter
 * or proxy in a change could call in again (the inner call refuses instead).
 */
let busy = false

/** Drops large scratch buffers and the strings of the last change. */
function release (): void {
  head.reset()
  for (const w of columns) w.reset()
  keyStrRle.reset()
  markNameRle.reset()
  actors.length = 0
  actorIndex.clear()
  lastActor = ''
  previousActor = ''
  lastObj = NO_OBJECT
  encodedExtra = []
}

/** Whether `a[aStart, aStart + len)` and `b[bStart, bStart + len)` hold the same bytes. */
function sameBytes (a: Uint8Array, aStart: number, b: Uint8Array, bStart: number, len: number): boolean {
  if (len > 256) {
    return Buffer.from(a.buffer, a.byteOffset + aStart, len).equals(Buffer.from(b.buffer, b.byteOffset + bStart, len))
  }
  for (let i = 0; i < len; i++) if (a[aStart + i] !== b[bStart + i]) return false
  return true
}

/**
 * The change chunk `A.encodeChange(change)` gives, byte for byte, or null
 * when `change` is not of the form A.decodeChange gives or A.encodeChange
 * would not encode it as given (see the top of this file). Never throws.
 */
export function encodeChangeFast (change: A.DecodedChange): Uint8Array | null {
  if (busy) return null
  busy = true
  try {
    encode(change)
    const extra = encodedExtra
    const bodyLength = encodedBodyLength
    const headerLength = 9 + ulebSize(bodyLength)
    const out = new Uint8Array(headerLength + bodyLength)
    out.set(MAGIC, 0)
    out[8] = CHANGE_CHUNK
    let pos = 9
    let len = bodyLength
    while (len >= 0x80) {
      out[pos++] = (len % 128) | 0x80
      len = Math.floor(len / 128)
    }
    out[pos++] = len
    out.set(head.buf.subarray(0, head.pos), pos)
    pos += head.pos
    for (const w of columns) {
      out.set(w.buf.subarray(0, w.pos), pos)
      pos += w.pos
    }
    out.set(extra, pos)
    const digest = oneShotHash('sha256', out.subarray(8), 'buffer')
    out.set(digest.subarray(0, 4), 4)
    return out
  } catch {
    return null
  } finally {
    release()
    busy = false
  }
}

/**
 * Whether `change` (as decodeChangeFast/A.decodeChange give it) encodes, as
 * A.encodeChange encodes it, to exactly `bytes`: a change chunk whose
 * checksum matches, and whose hash is `change.hash`. Then A.decodeChange of
 * `bytes` gives `change`. False for anything `encodeChangeFast` gives null
 * for. Never throws.
 */
export function encodesTo (change: A.DecodedChange, bytes: Uint8Array): boolean {
  if (busy) return false
  busy = true
  try {
    if (!(bytes instanceof Uint8Array) || bytes.length < 10) return false
    for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) return false
    if (bytes[8] !== CHANGE_CHUNK) return false
    const hash = (change as { hash?: unknown } | null)?.hash
    if (typeof hash !== 'string') return false
    encode(change)
    const extra = encodedExtra
    const bodyLength = encodedBodyLength
    let pos = 9
    let len = bodyLength
    while (len >= 0x80) {
      if (bytes[pos++] !== ((len % 128) | 0x80)) return false
      len = Math.floor(len / 128)
    }
    if (bytes[pos++] !== len) return false
    if (bytes.length !== pos + bodyLength) return false
    if (!sameBytes(head.buf, 0, bytes, pos, head.pos)) return false
    pos += head.pos
    for (const w of columns) {
      if (!sameBytes(w.buf, 0, bytes, pos, w.pos)) return false
      pos += w.pos
    }
    for (const b of extra) if (bytes[pos++] !== b) return false
    // chunk.rs: the checksum is the first 4 bytes of the hash of type, length and body
    const digest = oneShotHash('sha256', bytes.subarray(8), 'buffer')
    for (let i = 0; i < 4; i++) if (bytes[4 + i] !== digest[i]) return false
    // and the change's hash is this one (encode checked it is 64 lowercase hex digits)
    for (let i = 0; i < 32; i++) {
      if (((hexValue(hash.charCodeAt(2 * i)) << 4) | hexValue(hash.charCodeAt(2 * i + 1))) !== digest[i]) return false
    }
    return true
  } catch {
    return false
  } finally {
    release()
    busy = false
  }
}
