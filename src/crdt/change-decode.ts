import type * as A from '@automerge/automerge'

/*
 * A decoder of Automerge change chunks in JavaScript, for the fields the
 * board's checks read (authors.ts, board.ts): the header, and of every
 * operation its action, object, key, value and predecessors. `A.decodeChange`
 * builds its result through wasm-bindgen one property at a time: a joiner
 * of a 10,000-task board decodes 370,000 operations, which took it 2.3 s, most
 * of its checks. The layout is Automerge's binary format (a change chunk's
 * header fields, then its operation columns, each run-length, delta or
 * boolean encoded). Anything this decoder does not expect (a compressed or
 * unknown column, an unknown action or value type, columns that disagree on
 * the number of operations, bytes left over) makes it return null, and the
 * caller decodes with Automerge: it is never a second opinion on what a
 * change holds, only a faster reading of the same bytes, tested against
 * Automerge's (test/change-decode.test.ts).
 */

class Reader {
  readonly b: Uint8Array
  at: number
  readonly end: number
  constructor (b: Uint8Array, at: number, end: number) {
    this.b = b
    this.at = at
    this.end = end
  }

  get done (): boolean { return this.at >= this.end }

  uleb (): number {
    let value = 0
    for (let i = 0; i < 8; i++) {
      if (this.at >= this.end) throw new Error('truncated')
      const byte = this.b[this.at++] as number
      value += (byte & 0x7f) * 2 ** (7 * i)
      if ((byte & 0x80) === 0) return value
    }
    throw new Error('number too large')
  }

  sleb (): number {
    let value = 0
    for (let i = 0; i < 8; i++) {
      if (this.at >= this.end) throw new Error('truncated')
      const byte = this.b[this.at++] as number
      value += (byte & 0x7f) * 2 ** (7 * i)
      if ((byte & 0x80) === 0) return (byte & 0x40) !== 0 ? value - 2 ** (7 * (i + 1)) : value
    }
    throw new Error('number too large')
  }

  bytes (n: number): Uint8Array {
    if (this.at + n > this.end) throw new Error('truncated')
    const out = this.b.subarray(this.at, this.at + n)
    this.at += n
    return out
  }
}

const text = new TextDecoder('utf-8', { fatal: true })

/**
 * The UTF-8 string of `b`: short ASCII ones (keys, states, ids: most of a
 * change's strings) by hand, which is several times faster than a
 * `TextDecoder` call each.
 */
function utf8 (b: Uint8Array): string {
  if (b.length <= 48) {
    let s = ''
    for (let i = 0; i < b.length; i++) {
      const c = b[i] as number
      if (c >= 0x80) return text.decode(b)
      s += String.fromCharCode(c)
    }
    return s
  }
  return text.decode(b)
}
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

/** A run-length encoded column of `n` values read by `one` (null: a null run). */
function rle<T> (r: Reader | null, n: number, one: (r: Reader) => T): Array<T | null> {
  const out: Array<T | null> = []
  if (r === null) return new Array<T | null>(n).fill(null)
  while (!r.done) {
    const count = r.sleb()
    if (count > 0) {
      const v = one(r)
      for (let i = 0; i < count; i++) out.push(v)
    } else if (count < 0) {
      for (let i = 0; i < -count; i++) out.push(one(r))
    } else {
      const nulls = r.uleb()
      for (let i = 0; i < nulls; i++) out.push(null)
    }
  }
  if (out.length !== n) throw new Error('column length')
  return out
}

function delta (r: Reader | null, n: number): Array<number | null> {
  let sum = 0
  return rle(r, n, x => x.sleb()).map(d => d === null ? null : (sum += d))
}

function booleans (r: Reader | null, n: number): boolean[] {
  const out: boolean[] = []
  if (r === null) return new Array<boolean>(n).fill(false)
  let v = false
  while (!r.done) {
    const count = r.uleb()
    for (let i = 0; i < count; i++) out.push(v)
    v = !v
  }
  if (out.length !== n) throw new Error('column length')
  return out
}

const ACTIONS = ['makeMap', 'set', 'makeList', 'del', 'makeText', 'inc', 'makeTable'] as const
const COLUMNS = new Set([0x01, 0x02, 0x11, 0x13, 0x15, 0x34, 0x42, 0x56, 0x57, 0x70, 0x71, 0x73, 0x94, 0xa5])

/** A value of the value column, its metadata `meta` (length << 4 | type), as Automerge decodes it. */
function value (raw: Reader, meta: number): { value: unknown, datatype?: string } {
  const type = meta % 16
  const len = Math.floor(meta / 16)
  const b = raw.bytes(len)
  const inner = new Reader(b, 0, b.length)
  const whole = <T>(v: T): T => { if (!inner.done) throw new Error('value length'); return v }
  switch (type) {
    case 0: return { value: whole(null) }
    case 1: return { value: whole(false) }
    case 2: return { value: whole(true) }
    case 3: return { value: whole(inner.uleb()), datatype: 'uint' }
    case 4: return { value: whole(inner.sleb()), datatype: 'int' }
    case 5:
      if (len !== 8) throw new Error('float length')
      return { value: Buffer.from(b).readDoubleLE(0), datatype: 'float64' }
    case 6: return { value: utf8(b) }
    case 7: return { value: Array.from(b) } // as Automerge's JSON-compatible decoding gives bytes
    case 8: return { value: whole(inner.sleb()), datatype: 'counter' }
    case 9: return { value: whole(inner.sleb()), datatype: 'timestamp' }
    default: throw new Error(`value type ${type}`)
  }
}

/**
 * `raw` (one uncompressed change chunk whose hash is `hash`) decoded like
 * `A.decodeChange` in the fields the board's checks read, or null when it
 * holds anything this decoder does not read (see above).
 */
export function decodeChangeFast (raw: Uint8Array, hash: string): A.DecodedChange | null {
  try {
    if (raw.length < 10 || raw[0] !== 0x85 || raw[1] !== 0x6f || raw[2] !== 0x4a || raw[3] !== 0x83 || raw[8] !== 1) return null
    const head = new Reader(raw, 9, raw.length)
    const length = head.uleb()
    if (head.at + length !== raw.length) return null
    const r = new Reader(raw, head.at, raw.length)
    const deps: string[] = []
    for (let i = r.uleb(); i > 0; i--) deps.push(hex(r.bytes(32)))
    const actor = hex(r.bytes(r.uleb()))
    const seq = r.uleb()
    const startOp = r.uleb()
    const time = r.sleb()
    const message = utf8(r.bytes(r.uleb()))
    const actors = [actor]
    for (let i = r.uleb(); i > 0; i--) actors.push(hex(r.bytes(r.uleb())))
    const specs: Array<[number, number]> = []
    for (let i = r.uleb(); i > 0; i--) specs.push([r.uleb(), r.uleb()])
    const cols = new Map<number, Reader>()
    for (const [spec, len] of specs) {
      if (!COLUMNS.has(spec) || cols.has(spec)) return null
      cols.set(spec, new Reader(raw, r.at, r.at + len))
      r.bytes(len)
    }
    const col = (spec: number): Reader | null => cols.get(spec) ?? null
    // the number of operations: the action column has one value per operation
    const actionCol = col(0x42)
    if (actionCol === null) return null
    let n = 0
    {
      const probe = new Reader(raw, actionCol.at, actionCol.end)
      while (!probe.done) {
        const count = probe.sleb()
        if (count > 0) { probe.uleb(); n += count } else if (count < 0) { for (let i = 0; i < -count; i++) probe.uleb(); n -= count } else n += probe.uleb()
      }
    }
    const action = rle(actionCol, n, x => x.uleb())
    const objActor = rle(col(0x01), n, x => x.uleb())
    const objCtr = rle(col(0x02), n, x => x.uleb())
    const keyActor = rle(col(0x11), n, x => x.uleb())
    const keyCtr = delta(col(0x13), n)
    const keyStr = rle(col(0x15), n, x => utf8(x.bytes(x.uleb())))
    const insert = booleans(col(0x34), n)
    const meta = rle(col(0x56), n, x => x.uleb())
    const predCount = rle(col(0x70), n, x => x.uleb())
    const predTotal = predCount.reduce<number>((a, c) => a + (c ?? 0), 0)
    const predActor = rle(col(0x71), predTotal, x => x.uleb())
    const predCtr = delta(col(0x73), predTotal)
    if (booleans(col(0x94), n).some(x => x) || rle(col(0xa5), n, x => x.bytes(x.uleb())).some(x => x !== null)) return null
    const vals = col(0x57) ?? new Reader(raw, 0, 0)
    // consecutive operations mostly write the same object: its id is made once
    let lastCtr = -1
    let lastActor = -1
    let lastId = ''
    const id = (ctr: number | null, a: number | null): string => {
      if (ctr === lastCtr && a === lastActor) return lastId
      const name = a === null ? undefined : actors[a]
      if (ctr === null || a === null || name === undefined) throw new Error('op id')
      lastCtr = ctr
      lastActor = a
      lastId = `${ctr}@${name}`
      return lastId
    }
    const ops: A.DecodedChange['ops'] = []
    let p = 0
    for (let i = 0; i < n; i++) {
      const act = ACTIONS[action[i] ?? -1]
      if (act === undefined) return null
      const oa = objActor[i] ?? null
      const oc = objCtr[i] ?? null
      const obj = oa === null && oc === null ? '_root' : id(oc, oa)
      const op: Record<string, unknown> = { action: act, obj }
      const ks = keyStr[i] ?? null
      if (ks !== null) {
        op.key = ks
      } else {
        const kc = keyCtr[i] ?? null
        const ka = keyActor[i] ?? null
        op.elemId = kc === 0 && ka === null ? '_head' : id(kc, ka)
      }
      if (insert[i] === true) op.insert = true
      const m = meta[i] ?? 0
      if (act === 'set' || act === 'inc') {
        const v = value(vals, m)
        op.value = v.value
        if (v.datatype !== undefined && act === 'set') op.datatype = v.datatype
      } else if (m !== 0) {
        return null
      }
      const pred: string[] = []
      for (let k = predCount[i] ?? 0; k > 0; k--, p++) pred.push(id(predCtr[p] ?? null, predActor[p] ?? null))
      op.pred = pred
      ops.push(op as unknown as A.DecodedChange['ops'][number])
    }
    if (!vals.done) return null
    return { actor, hash, seq, startOp, time, message: message === '' ? null : message, deps, ops } as A.DecodedChange
  } catch {
    return null
  }
}
