import { open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { Board, type ChangeSigner } from './board.ts'
import { BoardCorruptError } from '../util/errors.ts'

/** Compacted board snapshot, written atomically (temp file + rename). */
export const BOARD_FILE = 'board.am'
/** Append-only log of incremental chunks since the snapshot. */
export const BOARD_LOG = 'board.log'
/** Rewrite the snapshot once the log is larger than this. @default 4 MiB */
export const COMPACT_LOG_BYTES = 4 * 1024 * 1024

const RECORD_HEADER = 8 // u32 length + u32 crc32

/** First wait before a failed board write is tried again; doubles on each failure in a row. @default 100 ms */
export const WRITE_RETRY_MS = 100
/** Longest wait between tries of a failed board write. @default 5 s */
export const MAX_WRITE_RETRY_MS = 5000

/** Error codes that mean the disk (or the user's quota) is full. */
const DISK_FULL_CODES: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT'])

/** What the store reports about its writes (the node logs them and stops claiming while the disk is full). */
export interface StoreEvents {
  /** A write failed; it is tried again after `retryInMs`. `diskFull` when the disk or quota is full. */
  onWriteFailed?: (info: { error: string, code: string | null, diskFull: boolean, retryInMs: number, pendingBytes: number }) => void
  /** Writes succeed again after failing. */
  onWriteRecovered?: (info: { failures: number }) => void
}

/** A write waiting its turn: a log record, or (`chunk` null) a new snapshot of the board. */
interface PendingWrite { chunk: Uint8Array | null, resolve: () => void }

/** What loading found, for the node's log. */
export interface LoadReport {
  fromSnapshot: boolean
  logRecords: number
  /** Bytes of a torn final record (a crash mid-write), dropped. */
  tornTailBytes: number
  /** Why the compaction at load failed (a full disk), if it did: the node goes on with the log. */
  compactError?: string
}

/**
 * Persists a board in its data dir: a compacted `board.am` plus `board.log`, an
 * append-only sequence of `[length][crc32][incremental chunk]` records. A torn
 * final record (the process died mid-append) is dropped with a warning: it was
 * never acknowledged to anyone. Any other damage refuses to load with a
 * `BoardCorruptError` that says how to recover, so no data is silently lost.
 */
export class BoardStore {
  readonly dir: string
  #log: FileHandle | null = null
  /** Bytes of `board.log` known good (written and synced): the next record goes there. */
  #logBytes = 0
  #queue: PendingWrite[] = []
  #writing: Promise<void> | null = null
  #failures = 0
  #diskFull = false
  #closed = false
  #closing = false
  /** Ends the current wait between retries early (on close). */
  #wake: (() => void) | null = null
  #events: StoreEvents

  constructor (dir: string, events: StoreEvents = {}) {
    this.dir = dir
    this.#events = events
  }

  /** Whether the last board write failed because the disk (or quota) is full; false again once a write succeeds. */
  get diskFull (): boolean {
    return this.#diskFull
  }

  /** Board writes failing in a row (0 when the last one succeeded). */
  get failingWrites (): number {
    return this.#failures
  }

  /** Loads the board saved in the data dir, or creates a new one. Compacts on the way. */
  async load (meshId: string, actor: string, signer: ChangeSigner | null = null): Promise<{ board: Board, report: LoadReport }> {
    const snapFile = join(this.dir, BOARD_FILE)
    const logFile = join(this.dir, BOARD_LOG)
    const snap = await readOptional(snapFile)
    const log = await readOptional(logFile)
    const report: LoadReport = { fromSnapshot: snap !== null, logRecords: 0, tornTailBytes: 0 }
    const chunks: Uint8Array[] = []
    if (snap !== null) chunks.push(snap)
    if (log !== null) {
      const { records, tornTailBytes } = parseLog(log, logFile)
      chunks.push(...records)
      report.logRecords = records.length
      report.tornTailBytes = tornTailBytes
    }
    let board: Board
    if (chunks.length === 0) {
      board = Board.create(meshId, actor, signer)
    } else {
      try {
        board = Board.load(meshId, actor, concat(chunks), signer)
      } catch (err) {
        throw new BoardCorruptError(`${(err as Error).message} (files ${snapFile} and ${logFile}). ${RECOVERY_HINT(this.dir)}`)
      }
    }
    try {
      await this.#compact(board)
    } catch (err) {
      // a full disk at start: no new snapshot, but the old one and the log hold everything; go on with the log
      if (this.#log === null) throw err
      report.compactError = (err as Error).message
    }
    return { board, report }
  }

  /**
   * Appends the board's changes since the last save and resolves once they are
   * on disk (written in full and fsynced): only then may they be published or
   * acknowledged. Appends made while a write is in flight are written together
   * after it, with one fsync. A failed write is never dropped: it is tried
   * again (doubling waits up to `MAX_WRITE_RETRY_MS`) until it succeeds or the
   * store is closed, and a partly written record is cut off before the retry,
   * so the log never holds a damaged record in its middle.
   */
  async append (board: Board): Promise<void> {
    if (this.#closed) throw new Error('board store is closed')
    // a board that took a whole document at once (a joiner's first sync) is written as a new snapshot
    // in its turn (chunk null), not as a log record of every change of the board, uncompressed
    const snapshot = board.needsSnapshot
    if (snapshot && this.#queue.some(w => w.chunk === null)) return await this.#drained()
    const chunk = snapshot ? null : board.saveIncremental()
    if (chunk?.length === 0) {
      // nothing new, but earlier changes may still be on their way to disk: wait for them
      await this.#drained()
      return
    }
    const done = new Promise<void>(resolve => { this.#queue.push({ chunk, resolve }) })
    this.#kick(board)
    await done
  }

  /** Writes a compacted snapshot and starts an empty log (after the writes queued before it). */
  async compact (board: Board): Promise<void> {
    await this.#drained()
    await this.#compact(board)
  }

  /**
   * Lets queued writes finish, then closes the log. A write that is failing
   * (a full disk) is abandoned rather than waited for: its changes live on in
   * the peers' boards, and the log on disk stays complete up to it.
   */
  async close (): Promise<void> {
    this.#closing = true
    this.#wake?.()
    await this.#writing?.catch(() => {})
    this.#closed = true
    for (const w of this.#queue.splice(0)) w.resolve()
    await this.#log?.close()
    this.#log = null
  }

  async #drained (): Promise<void> {
    while (this.#writing !== null) await this.#writing
  }

  #kick (board: Board): void {
    if (this.#writing !== null) return
    this.#writing = this.#writeLoop(board).finally(() => { this.#writing = null })
  }

  async #writeLoop (board: Board): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      const snapshot = this.#queue[0]?.chunk === null
      // the records queued before a snapshot, together; a snapshot alone
      const upTo = snapshot ? 1 : this.#queue.findIndex(w => w.chunk === null)
      const batch = this.#queue.slice(0, upTo === -1 ? undefined : upTo)
      const records = Buffer.concat(batch.flatMap(w => {
        if (w.chunk === null) return []
        const header = Buffer.alloc(RECORD_HEADER)
        header.writeUInt32BE(w.chunk.length, 0)
        header.writeUInt32BE(crc32(w.chunk), 4)
        return [header, w.chunk]
      }))
      try {
        if (snapshot) await this.#compact(board)
        else await this.#writeAt(records)
      } catch (err) {
        const e = err as NodeJS.ErrnoException
        this.#failures++
        this.#diskFull = e.code !== undefined && DISK_FULL_CODES.has(e.code)
        const wait = Math.min(MAX_WRITE_RETRY_MS, WRITE_RETRY_MS * 2 ** Math.min(16, this.#failures - 1))
        this.#events.onWriteFailed?.({ error: e.message, code: e.code ?? null, diskFull: this.#diskFull, retryInMs: wait, pendingBytes: records.length })
        if (this.#closing) return
        await new Promise<void>(resolve => {
          const timer = setTimeout(resolve, wait)
          this.#wake = () => { clearTimeout(timer); resolve() }
        })
        this.#wake = null
        if (this.#closing) return
        continue
      }
      this.#queue.splice(0, batch.length)
      if (this.#failures > 0) this.#events.onWriteRecovered?.({ failures: this.#failures })
      this.#failures = 0
      this.#diskFull = false
      for (const w of batch) w.resolve()
      if (!snapshot && this.#logBytes > COMPACT_LOG_BYTES) {
        try {
          await this.#compact(board)
        } catch (err) {
          // the log stays as it is (complete and synced): compaction is tried again after the next append
          this.#events.onWriteFailed?.({ error: `compaction: ${(err as Error).message}`, code: (err as NodeJS.ErrnoException).code ?? null, diskFull: DISK_FULL_CODES.has((err as NodeJS.ErrnoException).code ?? ''), retryInMs: 0, pendingBytes: 0 })
        }
      }
    }
  }

  /**
   * Writes `bytes` at the end of the good part of the log, in full (a short
   * write continues where it stopped), and fsyncs. On failure the file is cut
   * back to its good length, so a retry starts from a clean end.
   */
  async #writeAt (bytes: Buffer): Promise<void> {
    const log = this.#log
    if (log === null) throw new Error('board store is closed')
    let off = 0
    try {
      while (off < bytes.length) {
        const { bytesWritten } = await log.write(bytes, off, bytes.length - off, this.#logBytes + off)
        if (bytesWritten <= 0) throw Object.assign(new Error('the disk took no bytes (short write)'), { code: 'ENOSPC' })
        off += bytesWritten
      }
      await log.datasync()
    } catch (err) {
      await log.truncate(this.#logBytes).catch(() => {})
      throw err
    }
    this.#logBytes += bytes.length
  }

  async #compact (board: Board): Promise<void> {
    const snapFile = join(this.dir, BOARD_FILE)
    const tmp = snapFile + '.tmp'
    try {
      const handle = await open(tmp, 'w', 0o600)
      try {
        await writeFully(handle, board.save())
        await handle.sync()
      } finally {
        await handle.close()
      }
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {})
      // without a new snapshot the old one and the log still hold everything: keep appending to the log
      // (after its last good record: a torn tail left by a crash must not end up in the middle)
      if (this.#log === null) await this.#openLog(false, await goodLogBytes(join(this.dir, BOARD_LOG)))
      throw err
    }
    await rename(tmp, snapFile)
    // the rename is durable only once the directory is synced; the log is emptied only after that
    await syncDir(this.dir)
    await this.#log?.close()
    this.#log = null
    await this.#openLog(true)
  }

  /** Opens `board.log` for positional writes: emptied (`empty`, synced), else cut to its `good` bytes and written after them. */
  async #openLog (empty: boolean, good = 0): Promise<void> {
    const file = join(this.dir, BOARD_LOG)
    const handle = await open(file, empty ? 'w' : 'a+', 0o600)
    if (empty) {
      await handle.sync()
      await syncDir(this.dir)
      this.#logBytes = 0
    } else {
      if ((await handle.stat()).size > good) await handle.truncate(good)
      this.#logBytes = good
    }
    // positional writes need a handle without O_APPEND
    await handle.close()
    this.#log = await open(file, 'r+')
  }
}

/** Writes all of `bytes` at the handle's position, continuing after short writes. */
async function writeFully (handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let off = 0
  while (off < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, off, bytes.length - off)
    if (bytesWritten <= 0) throw Object.assign(new Error('the disk took no bytes (short write)'), { code: 'ENOSPC' })
    off += bytesWritten
  }
}

/** fsyncs a directory, so that renames and new or truncated files in it survive a crash. */
async function syncDir (dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

const RECOVERY_HINT = (dir: string): string =>
  `The node will not start on a damaged board, so nothing is lost by accident. If other nodes of the mesh are alive they hold the board: move the damaged files aside (mv ${join(dir, BOARD_FILE)} ${join(dir, BOARD_FILE)}.damaged; same for ${BOARD_LOG}) and start again; the node rejoins with an empty board and syncs it from its peers.`

function parseLog (bytes: Uint8Array, file: string): { records: Uint8Array[], tornTailBytes: number } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const records: Uint8Array[] = []
  let off = 0
  while (off < buf.length) {
    const rest = buf.length - off
    if (rest < RECORD_HEADER) return { records, tornTailBytes: rest }
    const len = buf.readUInt32BE(off)
    const sum = buf.readUInt32BE(off + 4)
    if (off + RECORD_HEADER + len > buf.length) return { records, tornTailBytes: rest }
    const body = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len)
    if (crc32(body) !== sum) {
      const last = off + RECORD_HEADER + len === buf.length
      if (last) return { records, tornTailBytes: rest }
      throw new BoardCorruptError(`${file} is damaged at byte ${off} (checksum mismatch in the middle of the log). ${RECOVERY_HINT(join(file, '..'))}`)
    }
    records.push(body)
    off += RECORD_HEADER + len
  }
  return { records, tornTailBytes: 0 }
}

/** Length of the complete records at the start of a board log (0 when missing). */
async function goodLogBytes (file: string): Promise<number> {
  const bytes = await readOptional(file)
  if (bytes === null) return 0
  const { records, tornTailBytes } = parseLog(bytes, file)
  void records
  return bytes.length - tornTailBytes
}

async function readOptional (file: string): Promise<Uint8Array | null> {
  try {
    return await readFile(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

function concat (chunks: Uint8Array[]): Uint8Array {
  return Buffer.concat(chunks)
}

/**
 * The saved board of a data dir as one byte string (snapshot and complete log
 * records; a torn final record is left out), or null when it holds none.
 * For offline tools (`meshwork rotate-key`); a node loads with `BoardStore.load`.
 */
export async function readSavedBoard (dir: string): Promise<Uint8Array | null> {
  const snap = await readOptional(join(dir, BOARD_FILE))
  const log = await readOptional(join(dir, BOARD_LOG))
  const chunks: Uint8Array[] = []
  if (snap !== null) chunks.push(snap)
  if (log !== null) chunks.push(...parseLog(log, join(dir, BOARD_LOG)).records)
  return chunks.length === 0 ? null : concat(chunks)
}

/**
 * Writes `bytes` as a data dir's whole saved board (a new snapshot, no log),
 * atomically and durably (temp file, fsync, rename, directory fsync).
 */
export async function writeSavedBoard (dir: string, bytes: Uint8Array): Promise<void> {
  const snapFile = join(dir, BOARD_FILE)
  const tmp = snapFile + '.tmp'
  const handle = await open(tmp, 'w', 0o600)
  try {
    await writeFully(handle, bytes)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await rename(tmp, snapFile)
  await rm(join(dir, BOARD_LOG), { force: true })
  await syncDir(dir)
}

/** Whether a data dir already holds a board. */
export async function hasSavedBoard (dir: string): Promise<boolean> {
  try {
    await stat(join(dir, BOARD_FILE))
    return true
  } catch {
    return false
  }
}
