/**
 * A full disk: board changes wait in memory and are retried, never dropped and
 * never left half-written in the log; the node claims nothing meanwhile and
 * resumes by itself once space returns. The data dir is a small tmpfs filled
 * to the brim (needs root to mount; skipped with the reason otherwise).
 */
import { parseTaskId } from '../src/crdt/schema.ts'
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync } from 'node:child_process'
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir, createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { BoardStore, BOARD_LOG } from '../src/crdt/store.ts'
import { actorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { createLogger } from '../src/util/logger.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'

let root = ''
let mnt = ''
let mountError: string | null = null

beforeAll(async () => {
  root = await tempDir('meshwork-diskfull-')
  mnt = join(root, 'mnt')
  await mkdir(mnt)
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { stdio: 'pipe' })
  } catch (err) {
    mountError = (err as Error).message.split('\n')[0] ?? 'mount failed'
  }
})

afterAll(async () => {
  if (mountError === null) execFileSync('umount', ['-l', mnt], { stdio: 'pipe' })
  await rm(root, { recursive: true, force: true })
})

/** Fills the file system of `dir` to the brim with `dir/filler`; returns its path. */
function fill (dir: string): string {
  const file = join(dir, 'filler')
  const fd = openSync(file, 'w')
  try {
    for (const size of [65536, 4096, 512, 1]) {
      const buf = Buffer.alloc(size, 1)
      for (;;) {
        try {
          if (writeSync(fd, buf) < size) break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
          throw err
        }
      }
    }
  } finally {
    closeSync(fd)
  }
  return file
}

/** Parses a board log strictly: every record whole, nothing after the last. */
function logRecords (log: Buffer): number {
  let off = 0
  let n = 0
  while (off < log.length) {
    expect(off + 8, 'a record header is cut').toBeLessThanOrEqual(log.length)
    off += 8 + log.readUInt32BE(off)
    expect(off, 'a record body is cut').toBeLessThanOrEqual(log.length)
    n++
  }
  return n
}

const big = (id: string): ReturnType<typeof simpleTask> => simpleTask(id, { prompt: `${id} `.repeat(6000) })

describe('a full disk', () => {
  it('the store keeps a change that cannot be written, retries it, and the log is never damaged', async ctx => {
    if (mountError !== null) { ctx.skip(`cannot mount a tmpfs (${mountError}); run as root`); return }
    const dir = join(mnt, 'store')
    await mkdir(dir)
    const failures: Array<{ diskFull: boolean, code: string | null }> = []
    let recovered = 0
    const store = new BoardStore(dir, { onWriteFailed: f => { failures.push(f) }, onWriteRecovered: () => { recovered++ } })
    const { board } = await store.load('mesh-full', actorForPeer('p'))
    board.change('a', addTasks([big('before')]))
    await store.append(board)
    const filler = fill(mnt)
    // larger than any slack left in the log's last page: part of it may be written (a short write), the rest cannot
    board.change('b', addTasks([big('during-1')]))
    let written = false
    const pending = store.append(board).then(() => { written = true })
    board.change('c', addTasks([big('during-2')]))
    const pending2 = store.append(board)
    await waitFor(() => store.diskFull, { timeoutMs: 10_000, message: 'the store never noticed the full disk' })
    expect(written).toBe(false)
    expect(failures[0]).toMatchObject({ diskFull: true, code: 'ENOSPC' })
    // what is on disk meanwhile is whole: the part of a record that fit was cut off again
    await waitFor(() => failures.length >= 2, { timeoutMs: 10_000, message: 'no retry' })
    expect(logRecords(await readFile(join(dir, BOARD_LOG)))).toBe(1)
    await rm(filler)
    await Promise.all([pending, pending2])
    expect(store.diskFull).toBe(false)
    expect(recovered).toBe(1)
    await store.close()
    // a restart finds every change
    const again = new BoardStore(dir)
    const loaded = await again.load('mesh-full', actorForPeer('p'))
    expect([...loaded.board.snapshot().tasks.keys()].sort()).toEqual(['before', 'during-1', 'during-2'])
    expect(loaded.report.tornTailBytes).toBe(0)
    await again.close()
  })

  describe('a node', () => {
    let mesh: TestMesh | undefined
    let scheds: Scheduler[] = []
    afterAll(async () => {
      await stopSchedulers(scheds)
      await mesh?.stop()
    })

    it('stops claiming while its disk is full, says so, and resumes by itself when space returns', async ctx => {
      if (mountError !== null) { ctx.skip(`cannot mount a tmpfs (${mountError}); run as root`); return }
      const dataDir = join(mnt, 'node')
      mesh = await createMesh(1, { dataDir })
      await waitAllAlive(mesh.nodes)
      const node = mesh.nodes[0]!
      const events: Array<{ event: string } & Record<string, unknown>> = []
      const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
      scheds = [attachScheduler(node, new RunLog(), 1, { logger })]
      const sim = { durationMs: 10, write: {}, append: {}, fail: 0 }
      node.changeBoard('plan', addTasks([simpleTask('first', { sim })]))
      await waitFor(() => node.board.task('first')?.state === 'done', { timeoutMs: 20_000, message: () => JSON.stringify(node.board.task('first')) })
      await node.flush()
      const filler = fill(mnt)
      // a change that cannot be written (a task nobody can claim: its dependency never comes)
      node.changeBoard('plan', addTasks([{ ...big('waiting'), deps: [parseTaskId('never')] }]))
      await waitFor(() => node.diskFull, { timeoutMs: 10_000, message: 'the node never noticed the full disk' })
      await waitFor(() => events.some(e => e.event === 'node:paused'), { timeoutMs: 10_000, message: 'the scheduler never paused' })
      expect(events.find(e => e.event === 'node:paused')?.reason).toMatch(/disk full/)
      // and it says so in its heartbeats, which `status --json` shows as nodes[].health
      expect(node.membersView().members.find(m => m.peerId === node.peerId)?.health).toMatchObject({ state: 'paused', reason: expect.stringMatching(/disk full/) })
      node.changeBoard('plan', addTasks([simpleTask('second', { sim })]))
      expect(node.board.task('second')?.state).toBe('ready')
      await rm(filler)
      await waitFor(() => node.board.task('second')?.state === 'done', { timeoutMs: 30_000, message: () => JSON.stringify(node.board.task('second')) })
      const order = events.map(e => e.event === 'task:claimed' || e.event === 'task:stolen' ? `${e.event}:${String(e.task)}` : e.event)
      const resumed = order.indexOf('node:resumed')
      expect(resumed).toBeGreaterThan(order.indexOf('node:paused'))
      const claimed = order.findIndex(e => e.endsWith(':second'))
      expect(claimed).toBeGreaterThan(resumed)
      expect(node.diskFull).toBe(false)
      expect(node.membersView().members.find(m => m.peerId === node.peerId)?.health?.state).toBe('ok')
      await node.flush()
      // the board on disk is whole (every record complete) and holds every change
      expect(logRecords(await readFile(join(dataDir, BOARD_LOG)))).toBeGreaterThan(0)
    })
  })
})
