import { open, readFile, rename, writeFile, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { Board } from './board.ts'
import { BoardCorruptError } from '../util/errors.ts'

/** Compacted board snapshot, written atomically (temp file + rename). */
export const BOARD_FILE = 'board.am'
/** Append-only log of incremental chunks since the snapshot. */
export const BOARD_LOG = 'board.log'
/** Rewrite the snapshot once the log is larger than this. @default 4 MiB */
export const COMPACT_LOG_BYTES = 4 * 1024 * 1024

const RECORD_HEADER = 8 // u32 length + u32 crc32

/** What loading found, for the node's log. */
export interface LoadReport {
  fromSnapshot: boolean
  logRecords: number
  /** Bytes of a torn final record (a crash mid-write), dropped. */
  tornTailBytes: number
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
  #logBytes = 0
  #pending: Promise<void> = Promise.resolve()

  constructor (dir: string) {
    this.dir = dir
  }

  /** Loads the board saved in the data dir, or creates a new one. Compacts on the way. */
  async load (meshId: string, actor: string): Promise<{ board: Board, report: LoadReport }> {
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
      board = Board.create(meshId, actor)
    } else {
      try {
        board = Board.load(meshId, actor, concat(chunks))
      } catch (err) {
        throw new BoardCorruptError(`${(err as Error).message} (files ${snapFile} and ${logFile}). ${RECOVERY_HINT(this.dir)}`)
      }
    }
    await this.#compact(board)
    return { board, report }
  }

  /** Appends the board's changes since the last save. Calls are serialised. */
  async append (board: Board): Promise<void> {
    const chunk = board.saveIncremental()
    if (chunk.length === 0) return
    const run = async (): Promise<void> => {
      if (this.#log === null) throw new Error('board store is closed')
      const header = Buffer.alloc(RECORD_HEADER)
      header.writeUInt32BE(chunk.length, 0)
      header.writeUInt32BE(crc32(chunk), 4)
      await this.#log.write(Buffer.concat([header, chunk]))
      this.#logBytes += RECORD_HEADER + chunk.length
      if (this.#logBytes > COMPACT_LOG_BYTES) await this.#compact(board)
    }
    this.#pending = this.#pending.then(run, run)
    await this.#pending
  }

  /** Writes a compacted snapshot and starts an empty log. */
  async compact (board: Board): Promise<void> {
    const run = async (): Promise<void> => { await this.#compact(board) }
    this.#pending = this.#pending.then(run, run)
    await this.#pending
  }

  async close (): Promise<void> {
    await this.#pending.catch(() => {})
    await this.#log?.close()
    this.#log = null
  }

  async #compact (board: Board): Promise<void> {
    const snapFile = join(this.dir, BOARD_FILE)
    const tmp = snapFile + '.tmp'
    const handle = await open(tmp, 'w', 0o600)
    try {
      await handle.write(board.save())
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(tmp, snapFile)
    await this.#log?.close()
    await writeFile(join(this.dir, BOARD_LOG), new Uint8Array(0), { mode: 0o600 })
    this.#log = await open(join(this.dir, BOARD_LOG), 'a', 0o600)
    this.#logBytes = 0
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

/** Whether a data dir already holds a board. */
export async function hasSavedBoard (dir: string): Promise<boolean> {
  try {
    await stat(join(dir, BOARD_FILE))
    return true
  } catch {
    return false
  }
}
