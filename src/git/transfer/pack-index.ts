import { open, readFile } from 'node:fs/promises'

/*
 * Reading a fetched pack's index (git's pack-format: version 2 `.idx`) and
 * one object's header in the `.pack`, so that the check that a fetch brought
 * the commit it announced needs no git process when the pack holds that
 * commit whole (src/git/transfer/fetch.ts). Anything this reader does not
 * recognise answers "unknown", and the caller asks git instead.
 */

const IDX_MAGIC = 0xff744f63
/** The object type numbers of a pack entry's header. */
const OBJ_COMMIT = 1

/**
 * Where `oid` (hex, SHA-1 or SHA-256) is in the pack that `idx` indexes: its
 * byte offset in the `.pack`, or null when the index does not list it or is
 * not a version 2 index of that hash length.
 */
export function packOffset (idx: Uint8Array, oid: string): number | null {
  const hashBytes = oid.length / 2
  if ((hashBytes !== 20 && hashBytes !== 32) || !/^[0-9a-f]+$/.test(oid)) return null
  const view = new DataView(idx.buffer, idx.byteOffset, idx.byteLength)
  const fanoutAt = 8
  const namesAt = fanoutAt + 256 * 4
  if (idx.byteLength < namesAt || view.getUint32(0) !== IDX_MAGIC || view.getUint32(4) !== 2) return null
  const count = view.getUint32(fanoutAt + 255 * 4)
  const crcAt = namesAt + count * hashBytes
  const offsetsAt = crcAt + count * 4
  const largeAt = offsetsAt + count * 4
  if (idx.byteLength < largeAt) return null
  const want = Buffer.from(oid, 'hex')
  const first = want[0] as number
  let lo = first === 0 ? 0 : view.getUint32(fanoutAt + (first - 1) * 4)
  let hi = view.getUint32(fanoutAt + first * 4)
  const names = Buffer.from(idx.buffer, idx.byteOffset + namesAt, count * hashBytes)
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const cmp = names.compare(want, 0, hashBytes, mid * hashBytes, (mid + 1) * hashBytes)
    if (cmp === 0) {
      const small = view.getUint32(offsetsAt + mid * 4)
      if ((small & 0x80000000) === 0) return small
      const at = largeAt + (small & 0x7fffffff) * 8
      if (idx.byteLength < at + 8) return null
      const large = view.getBigUint64(at)
      return large <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(large) : null
    }
    if (cmp > 0) hi = mid
    else lo = mid + 1
  }
  return null
}

/**
 * Whether the pack at `packFile` (indexed by `idxFile`) holds `oid` as a
 * whole commit object: true; false when it holds it as another type; null
 * when that cannot be told here (not listed, stored as a delta, an index
 * this reader does not know).
 */
export async function packedCommit (idxFile: string, packFile: string, oid: string): Promise<boolean | null> {
  const offset = packOffset(await readFile(idxFile), oid)
  if (offset === null) return null
  const fh = await open(packFile, 'r')
  try {
    const head = Buffer.alloc(1)
    const { bytesRead } = await fh.read(head, 0, 1, offset)
    if (bytesRead !== 1) return null
    const type = ((head[0] as number) >> 4) & 0x7
    // 6 and 7 are deltas (by offset, by reference): their type is their base's, not read here
    if (type === 6 || type === 7) return null
    return type === OBJ_COMMIT
  } finally {
    await fh.close()
  }
}
