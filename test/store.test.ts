import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { appendFile, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import * as A from '@automerge/automerge'
import { BoardStore, BOARD_FILE, BOARD_LOG } from '../src/crdt/store.ts'
import { Board, actorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { tempDir } from './helpers/mesh.ts'

const MESH = 'mesh-store-test'
const ACTOR = actorForPeer('peer-store')

let dir: string
beforeEach(async () => { dir = await tempDir('meshwork-store-') })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

/** Opens the store, makes `batches` changes (each appended as one log record) and closes it. */
async function writeRecords (batches: string[][]): Promise<Board> {
  const store = new BoardStore(dir)
  const { board } = await store.load(MESH, ACTOR)
  for (const ids of batches) {
    board.change('add', addTasks(ids.map(id => simpleTask(id)), 1000))
    await store.append(board)
  }
  await store.close()
  return board
}

/** Offsets of the records in a board.log (u32 length, u32 crc32, body). */
function recordOffsets (log: Buffer): number[] {
  const out: number[] = []
  let off = 0
  while (off + 8 <= log.length) {
    out.push(off)
    off += 8 + log.readUInt32BE(off)
  }
  expect(off).toBe(log.length)
  return out
}

async function snapshotFiles (): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {}
  for (const name of (await readdir(dir)).sort()) out[name] = await readFile(join(dir, name))
  return out
}

async function expectCorrupt (pattern: RegExp): Promise<Error> {
  const store = new BoardStore(dir)
  let caught: unknown
  try {
    await store.load(MESH, ACTOR)
  } catch (err) {
    caught = err
  } finally {
    await store.close()
  }
  expect(caught, 'load should have refused the damaged board').toBeInstanceOf(Error)
  const err = caught as Error
  expect(err.name).toBe('BoardCorruptError')
  expect(err.message).toMatch(pattern)
  // the error tells the operator how to recover
  expect(err.message).toMatch(/move the damaged files aside/)
  expect(err.message).toContain(`mv ${join(dir, BOARD_FILE)} ${join(dir, BOARD_FILE)}.damaged`)
  expect(err.message).toMatch(/syncs it from its peers/)
  return err
}

describe('BoardStore', () => {
  it('round-trips 1,000 tasks across a restart and compacts the log on load', async () => {
    const batches = Array.from({ length: 20 }, (_, b) => Array.from({ length: 50 }, (_, i) => `t-${b}-${i}`))
    const before = await writeRecords(batches)
    expect(before.snapshot().tasks.size).toBe(1000)
    expect((await stat(join(dir, BOARD_LOG))).size).toBeGreaterThan(0)

    const store = new BoardStore(dir)
    try {
      const { board, report } = await store.load(MESH, ACTOR)
      expect(report).toEqual({ fromSnapshot: true, logRecords: 20, tornTailBytes: 0 })
      expect(board.snapshot().tasks.size).toBe(1000)
      expect(board.snapshot().invalid).toEqual([])
      expect(board.heads()).toEqual(before.heads())
      expect([...board.snapshot().tasks.keys()].sort()).toEqual([...before.snapshot().tasks.keys()].sort())
      expect(board.task('t-19-49')).toEqual(before.task('t-19-49'))
      expect(board.task('t-0-0')?.createdAt).toBe(1000)
      // compaction on load: everything is in board.am, the log starts empty
      expect((await stat(join(dir, BOARD_LOG))).size).toBe(0)
      expect((await stat(join(dir, BOARD_FILE))).size).toBeGreaterThan(0)
      expect(await readdir(dir)).not.toContain(`${BOARD_FILE}.tmp`)
    } finally {
      await store.close()
    }

    // and once more from the compacted snapshot alone
    const again = new BoardStore(dir)
    try {
      const { board, report } = await again.load(MESH, ACTOR)
      expect(report).toEqual({ fromSnapshot: true, logRecords: 0, tornTailBytes: 0 })
      expect(board.snapshot().tasks.size).toBe(1000)
    } finally {
      await again.close()
    }
  })

  it('starts a new board in an empty dir', async () => {
    const store = new BoardStore(dir)
    try {
      const { board, report } = await store.load(MESH, ACTOR)
      expect(report).toEqual({ fromSnapshot: false, logRecords: 0, tornTailBytes: 0 })
      expect(board.snapshot().tasks.size).toBe(0)
    } finally {
      await store.close()
    }
  })

  for (const [label, tail] of [
    ['a torn body (header says 200 bytes, 50 written)', Buffer.concat([header(200, 0xdeadbeef), Buffer.alloc(50, 0xab)])],
    ['a torn header (5 bytes)', Buffer.from([0, 0, 1, 0, 7])],
    ['a complete last record with a bad checksum', Buffer.concat([header(16, 0x12345678), Buffer.alloc(16, 0)])]
  ] as const) {
    it(`drops ${label} at the end of the log and keeps the records before it`, async () => {
      await writeRecords([['a-1'], ['a-2', 'a-3'], ['a-4']])
      await appendFile(join(dir, BOARD_LOG), tail)
      const store = new BoardStore(dir)
      try {
        const { board, report } = await store.load(MESH, ACTOR)
        expect(report.tornTailBytes).toBe(tail.length)
        expect(report.logRecords).toBe(3)
        expect([...board.snapshot().tasks.keys()].sort()).toEqual(['a-1', 'a-2', 'a-3', 'a-4'])
        expect((await stat(join(dir, BOARD_LOG))).size).toBe(0)
      } finally {
        await store.close()
      }
    })
  }

  it('refuses a log with a checksum mismatch in the middle, and leaves the files alone', async () => {
    await writeRecords([['m-1'], ['m-2'], ['m-3']])
    const logFile = join(dir, BOARD_LOG)
    const log = await readFile(logFile)
    const offsets = recordOffsets(log)
    expect(offsets).toHaveLength(3)
    const second = offsets[1]!
    log[second + 8 + 3]! ^= 0xff // flip a byte in the body of the second record
    await writeFile(logFile, log)
    const files = await snapshotFiles()

    const err = await expectCorrupt(new RegExp(`damaged at byte ${second} \\(checksum mismatch in the middle of the log\\)`))
    expect(err.message).toContain(logFile)
    expect(await snapshotFiles()).toEqual(files)
  })

  for (const withLog of [false, true]) {
    it(`refuses a truncated board.am${withLog ? ' followed by log records' : ''}, and leaves the files alone`, async () => {
      const store = new BoardStore(dir)
      const { board } = await store.load(MESH, ACTOR)
      board.change('add', addTasks(Array.from({ length: 50 }, (_, i) => simpleTask(`s-${i}`))))
      await store.compact(board)
      if (withLog) {
        board.change('more', addTasks([simpleTask('after-snapshot')]))
        await store.append(board)
      }
      await store.close()

      const snapFile = join(dir, BOARD_FILE)
      const snap = await readFile(snapFile)
      expect(snap.length).toBeGreaterThan(100)
      await writeFile(snapFile, snap.subarray(0, Math.floor(snap.length / 2)))
      const files = await snapshotFiles()
      expect((files[BOARD_LOG]?.length ?? 0) > 0).toBe(withLog)

      const err = await expectCorrupt(/the saved board cannot be read/)
      expect(err.message).toContain(snapFile)
      expect(await snapshotFiles()).toEqual(files)
    })
  }

  it('writes a board that took a whole document at once (a joiner\'s first sync) as one snapshot, after the records queued before it', async () => {
    // Automerge chooses whether to send a whole document or changes; a fresh source board until it sends one
    let joined: { store: BoardStore, board: Board, source: Board, first: Promise<void> } | null = null
    for (let attempt = 0; attempt < 5 && joined === null; attempt++) {
      for (const f of await readdir(dir)) await rm(join(dir, f))
      const source = Board.create(MESH, actorForPeer(`peer-source-${attempt}`))
      for (let b = 0; b < 3; b++) source.change('plan', addTasks(Array.from({ length: 100 }, (_, i) => simpleTask(`s-${b}-${i}`, { prompt: randomBytes(48).toString('hex') })), 1000))
      const store = new BoardStore(dir)
      const { board } = await store.load(MESH, ACTOR)
      // a change of its own, on its way to the log while the document arrives
      board.change('mine', addTasks([simpleTask('own-1')], 1000))
      const first = store.append(board)
      syncFrom(source, board)
      if (board.needsSnapshot) joined = { store, board, source, first }
      else await Promise.all([first, store.close()])
    }
    expect(joined, 'the source never sent a whole document in 5 fresh tries').not.toBeNull()
    const { store, board, source, first } = joined as NonNullable<typeof joined>
    try {
      await Promise.all([first, store.append(board)])
      expect(board.needsSnapshot).toBe(false)
      // the snapshot holds everything; the log holds none of the board's changes
      expect((await stat(join(dir, BOARD_LOG))).size).toBe(0)
      const snap = await readFile(join(dir, BOARD_FILE))
      expect(snap.length).toBeLessThan(A.saveIncremental(A.load(source.save())).length)
      expect(Board.load(MESH, ACTOR, snap).heads()).toEqual(board.heads())
      // later changes go to the log as before
      board.change('mine', addTasks([simpleTask('own-2')], 1000))
      await store.append(board)
      expect(recordOffsets(await readFile(join(dir, BOARD_LOG)))).toHaveLength(1)
    } finally {
      await store.close()
    }
    const again = new BoardStore(dir)
    try {
      const { board: reloaded } = await again.load(MESH, ACTOR)
      expect(reloaded.snapshot().tasks.size).toBe(302)
      expect(reloaded.heads()).toEqual(board.heads())
    } finally {
      await again.close()
    }
  })

  it('refuses a data dir that holds another mesh\'s board', async () => {
    await writeRecords([['x-1']])
    const files = await snapshotFiles()
    const store = new BoardStore(dir)
    await expect(store.load('some-other-mesh', ACTOR)).rejects.toMatchObject({ name: 'BoardCorruptError', message: expect.stringMatching(/another mesh/) })
    await store.close()
    expect(await snapshotFiles()).toEqual(files)
  })
})

/** Runs the sync protocol from `source` into `board` (and back) until both are idle. */
function syncFrom (source: Board, board: Board): void {
  let mine = A.initSyncState()
  let theirs = A.initSyncState()
  for (let round = 0; round < 10; round++) {
    const [m1, toSource] = board.generateSyncMessage(mine)
    mine = m1
    if (toSource !== null) theirs = source.receiveSyncMessage(theirs, toSource)
    const [t1, toBoard] = source.generateSyncMessage(theirs)
    theirs = t1
    if (toBoard !== null) mine = board.receiveSyncMessage(mine, toBoard)
    if (toSource === null && toBoard === null) return
  }
  throw new Error('sync did not settle in 10 rounds')
}

function header (len: number, crc: number): Buffer {
  const h = Buffer.alloc(8)
  h.writeUInt32BE(len, 0)
  h.writeUInt32BE(crc >>> 0, 4)
  return h
}
