/**
 * A full disk: board changes wait in memory and are retried, never dropped and
 * never left half-written in the log; the node claims nothing meanwhile and
 * resumes by itself once space returns. The data dir is a small tmpfs filled
 * to the brim (needs root to mount; skipped with the reason otherwise). A full
 * disk where only the runs write (the worktrees) pauses the node as well: its
 * board writes may still succeed there, but every run it claimed would fail.
 * A merge leader whose disk is full stands down: another node leads and
 * merges meanwhile, and it stands again once space returns.
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
import { Worker } from '../src/node/worker.ts'
import { simAgent } from '../src/agent/sim.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { git } from '../src/git/git.ts'
import { silentLogger } from '../src/util/logger.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import { ELECTION_TIMEOUT_MS } from '../src/scheduler/election.ts'

let root = ''
let mnt = ''
/** A second tmpfs: only a node's worktrees live there. */
let mntRuns = ''
let mountError: string | null = null

beforeAll(async () => {
  root = await tempDir('meshwork-diskfull-')
  mnt = join(root, 'mnt')
  await mkdir(mnt)
  mntRuns = join(root, 'mnt-runs')
  await mkdir(mntRuns)
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { stdio: 'pipe' })
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mntRuns], { stdio: 'pipe' })
  } catch (err) {
    mountError = (err as Error).message.split('\n')[0] ?? 'mount failed'
  }
})

afterAll(async () => {
  for (const m of [mnt, mntRuns]) { try { execFileSync('umount', ['-l', m], { stdio: 'pipe' }) } catch {} }
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

  describe('a node whose worktrees\' disk is full (its board\'s is not)', () => {
    let mesh: TestMesh | undefined
    let worker: Worker | undefined
    afterAll(async () => {
      await worker?.stop(0)
      await mesh?.stop()
    })

    it('claims nothing while it is full, says so in its health and logs, and resumes by itself; no run fails on it', async ctx => {
      if (mountError !== null) { ctx.skip(`cannot mount a tmpfs (${mountError}); run as root`); return }
      mesh = await createMesh(1, {})
      await waitAllAlive(mesh.nodes)
      const node = mesh.nodes[0]!
      const dir = mesh.dirs[0] as string
      const project = await initRepo(join(dir, 'project'))
      await commitFiles(project, { 'README.md': 'project\n' }, 'project')
      const events: Array<{ event: string } & Record<string, unknown>> = []
      const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
      // the board and the repository on the ordinary disk, the worktrees on the small tmpfs
      worker = new Worker({ node, agent: simAgent(), repo: project, dataDir: join(dir, 'worker'), worktreesDir: join(mntRuns, 'worktrees'), branch: 'main', slots: 1, hasBootstrap: false, logger })
      await worker.start()
      await worker.ready
      const sim = (file: string): ReturnType<typeof simpleTask>['sim'] => ({ durationMs: 10, write: { [file]: `${file}\n` }, append: {}, fail: 0 })
      const states = (): string => [...node.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state}${t.error !== null ? `(${t.error})` : ''}`).join(', ')
      node.changeBoard('plan', addTasks([simpleTask('before', { sim: sim('before.txt') })]))
      await waitFor(() => node.board.task('before')?.state === 'merged', { timeoutMs: 30_000, message: () => `before not merged: ${states()}` })
      const filler = fill(mntRuns)
      await waitFor(() => events.some(e => e.event === 'node:paused' && /disk full/.test(String(e.reason))), { timeoutMs: 10_000, message: () => `the node never paused with its worktrees' disk full: ${events.filter(e => /paused|disk/.test(e.event)).map(e => JSON.stringify(e)).join('\n')}` })
      expect(node.diskFull).toBe(false)
      expect(String(events.find(e => e.event === 'node:paused')?.reason)).toContain(join(mntRuns, 'worktrees'))
      await waitFor(() => node.membersView().members.find(m => m.peerId === node.peerId)?.health?.state === 'paused', { timeoutMs: 10_000, message: 'the health in its heartbeats did not say paused' })
      expect(node.membersView().members.find(m => m.peerId === node.peerId)?.health).toMatchObject({ state: 'paused', reason: expect.stringMatching(/disk full/) })
      node.changeBoard('plan', addTasks([simpleTask('during', { sim: sim('during.txt') })]))
      expect(node.board.task('during')?.state).toBe('ready')
      await rm(filler)
      await waitFor(() => node.board.task('during')?.state === 'merged', { timeoutMs: 30_000, message: () => `during not merged after space returned: ${states()}` })
      const order = events.map(e => e.event === 'task:claimed' || e.event === 'task:stolen' ? `${e.event}:${String(e.task)}` : e.event)
      const paused = order.indexOf('node:paused')
      const resumed = order.indexOf('node:resumed')
      expect(resumed).toBeGreaterThan(paused)
      expect(order.findIndex(e => e.endsWith(':during'))).toBeGreaterThan(resumed)
      // nothing was tried on the full disk: no failed attempt, no infrastructure failure
      const during = node.board.task('during')!
      expect(during.failures).toBe(0)
      expect(during.infraFailures).toEqual({})
      expect(events.filter(e => e.event === 'task:infra-failed' || e.event === 'task:retry')).toEqual([])
    })
  })

  describe('a merge leader whose worktrees\' disk is full', () => {
    let mesh: TestMesh | undefined
    const workers: Worker[] = []
    afterAll(async () => {
      for (const w of workers) await w.stop(0)
      await mesh?.stop()
    })

    it('stands down (another node is elected and merges), says why in its health, and stands again when space returns', async ctx => {
      if (mountError !== null) { ctx.skip(`cannot mount a tmpfs (${mountError}); run as root`); return }
      mesh = await createMesh(2)
      const root = mesh.dirs[0] as string
      const project = await initRepo(join(root, 'project'))
      await commitFiles(project, { 'README.md': 'project\n' }, 'project')
      // the first leader is the smallest peer id once both have been up for an election timeout (before,
      // the first leader loop would elect its own node, the only stable one): its --verify worktrees go on the small tmpfs
      const [lead, other] = [...mesh.nodes].sort((a, b) => (a.peerId < b.peerId ? -1 : 1)) as [MeshNode, MeshNode]
      await waitAllAlive(mesh.nodes)
      await waitFor(() => mesh!.nodes.every(n => mesh!.nodes.every(o => o === n || (n.membership.get(o.peerId)?.aliveSince ?? Infinity) <= Date.now() - ELECTION_TIMEOUT_MS) && n.startedAt <= Date.now() - ELECTION_TIMEOUT_MS), { timeoutMs: 20_000, message: 'the nodes did not see each other stably alive' })
      const events: Array<{ event: string } & Record<string, unknown>> = []
      const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
      for (const [i, node] of mesh.nodes.entries()) {
        await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
        const w = new Worker({
          node,
          agent: simAgent(),
          repo: join(root, `repo${i}`),
          dataDir: join(root, `w${i}`),
          worktreesDir: node === lead ? join(mntRuns, 'leader-worktrees') : join(root, `wt${i}`),
          branch: 'main',
          slots: 1,
          verify: 'true',
          hasBootstrap: i > 0,
          logger: node === lead ? logger : silentLogger
        })
        workers.push(w)
        await w.start()
        await w.ready
      }
      await waitAllAlive(mesh.nodes, 30_000)
      const states = (n: MeshNode): string => [...n.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state}${t.error !== null ? `(${t.error})` : ''}`).join(', ')
      const sim = (file: string): ReturnType<typeof simpleTask>['sim'] => ({ durationMs: 10, write: { [file]: `${file}\n` }, append: {}, fail: 0 })
      await waitFor(() => mesh!.nodes.every(n => n.board.snapshot().main.leader === lead.peerId), { timeoutMs: 30_000, message: () => `${lead.name} was not elected: leader ${String(other.board.snapshot().main.leader)}` })
      lead.changeBoard('plan', addTasks([simpleTask('before', { sim: sim('before.txt') })]))
      await waitFor(() => mesh!.nodes.every(n => n.board.task('before')?.state === 'merged'), { timeoutMs: 30_000, message: () => `before not merged: ${states(lead)}` })
      const termBefore = lead.board.snapshot().main.term

      const filler = fill(mntRuns)
      await waitFor(() => events.some(e => e.event === 'leader:stand-down'), { timeoutMs: 15_000, message: () => `the leader never stood down: ${events.filter(e => /leader|disk|paused/.test(e.event)).map(e => JSON.stringify(e)).join('\n')}` })
      expect(String(events.find(e => e.event === 'leader:stand-down')?.reason)).toContain(join(mntRuns, 'leader-worktrees'))
      // the other node is elected (a new term) and the leader's health says why it does not lead
      await waitFor(() => mesh!.nodes.every(n => n.board.snapshot().main.leader === other.peerId), { timeoutMs: 30_000, message: () => `no other leader: ${String(lead.board.snapshot().main.leader)}` })
      expect(lead.board.snapshot().main.term).toBeGreaterThan(termBefore)
      expect(lead.eligible).toBe(false)
      await waitFor(() => other.membership.get(lead.peerId)?.eligible === false, { timeoutMs: 10_000, message: 'the peer never heard the leader stand down' })
      expect(lead.membersView().members.find(m => m.peerId === lead.peerId)?.health).toMatchObject({ state: 'paused', reason: expect.stringMatching(/^disk full: .*; not standing for merge leader until space returns$/) })
      // work goes on: the other node runs and merges
      other.changeBoard('plan', addTasks([simpleTask('during', { sim: sim('during.txt') })]))
      await waitFor(() => mesh!.nodes.every(n => n.board.task('during')?.state === 'merged'), { timeoutMs: 30_000, message: () => `during not merged while the old leader's disk was full: ${states(other)}` })
      // the full leader tried no merge (no retry every few seconds on a disk that cannot take it)
      expect(events.filter(e => e.event === 'merge:failed' || e.event === 'merge:batch')).toHaveLength(1)

      await rm(filler)
      await waitFor(() => events.some(e => e.event === 'leader:stand-again'), { timeoutMs: 15_000, message: 'the node never stood again after space returned' })
      await waitFor(() => lead.membersView().members.find(m => m.peerId === lead.peerId)?.health?.state === 'ok', { timeoutMs: 10_000, message: 'its health never read ok again' })
      expect(lead.eligible).toBe(true)
      await waitFor(() => other.membership.get(lead.peerId)?.eligible === true, { timeoutMs: 10_000, message: 'the peer never heard it stand again' })
      // a healthy leader elected meanwhile is kept
      expect(lead.board.snapshot().main.leader).toBe(other.peerId)
    })
  })
})
