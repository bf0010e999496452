/*
 * Automerge's storage chunks, read at the byte level: magic (4 bytes),
 * checksum (4), type (1), body length (unsigned LEB128), body. Saved
 * documents, changes and sync messages' parts are sequences of them.
 */

/** The first four bytes of every chunk. */
export const CHUNK_MAGIC = new Uint8Array([0x85, 0x6f, 0x4a, 0x83])
/** Chunk types. */
export const DOCUMENT_CHUNK = 0
export const CHANGE_CHUNK = 1
export const COMPRESSED_CHANGE_CHUNK = 2

/** The unsigned LEB128 number at `at` of `b` and the offset after it; null past the end or beyond 2^49. */
export function readUleb (b: Uint8Array, at: number): { value: number, next: number } | null {
  let value = 0
  for (let i = 0; i < 7; i++) {
    const byte = b[at + i]
    if (byte === undefined) return null
    value += (byte & 0x7f) * 2 ** (7 * i)
    if ((byte & 0x80) === 0) return { value, next: at + i + 1 }
  }
  return null
}

/** Whether the chunk magic starts at `at` of `b`. */
export function hasMagic (b: Uint8Array, at: number): boolean {
  return CHUNK_MAGIC.every((m, i) => b[at + i] === m)
}

/** Whether `chunk` is a document chunk (magic, checksum, then chunk type 0), not a change. */
export function isDocumentChunk (chunk: Uint8Array): boolean {
  return chunk.length > 8 && hasMagic(chunk, 0) && chunk[8] === DOCUMENT_CHUNK
}

/** The chunks `bytes` holds, each a view of its bytes; null when they are not a whole sequence of chunks (`chunkFramingProblem`). */
export function splitChunks (bytes: Uint8Array): Uint8Array[] | null {
  if (chunkFramingProblem(bytes) !== null) return null
  const chunks: Uint8Array[] = []
  let at = 0
  while (at < bytes.length) {
    const length = readUleb(bytes, at + 9) as { value: number, next: number }
    chunks.push(bytes.subarray(at, length.next + length.value))
    at = length.next + length.value
  }
  return chunks
}

/**
 * Why `bytes` is not a whole sequence of chunks (none is one), or null when it is: each
 * starts with the magic and a known type, and the last ends where the bytes
 * end. What `A.load` refuses before it reads a chunk's content (an
 * incremental load reads what it can and drops the rest). Checksums and
 * content are Automerge's to check.
 */
export function chunkFramingProblem (bytes: Uint8Array): string | null {
  let at = 0
  while (at < bytes.length) {
    if (bytes.length - at < 10) return `not enough data (a chunk header at byte ${at})`
    if (!hasMagic(bytes, at)) return `invalid magic at byte ${at}`
    const type = bytes[at + 8] as number
    if (type !== DOCUMENT_CHUNK && type !== CHANGE_CHUNK && type !== COMPRESSED_CHANGE_CHUNK) return `unknown chunk type ${type} at byte ${at}`
    const length = readUleb(bytes, at + 9)
    if (length === null || length.next + length.value > bytes.length) return `not enough data (a chunk at byte ${at} runs past the end)`
    at = length.next + length.value
  }
  return null
}
