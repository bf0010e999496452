/**
 * What one merge round costs in git processes (src/merge/queue.ts), on a real
 * node's board and a real repository: the leader's round is the ceiling of the
 * whole mesh (issue 13), and on a host short of CPU each git process it starts
 * costs it hundreds of milliseconds. A `git` shim first on PATH records every
 * process the round starts; the queue is driven directly (no leader loop, no
 * main follower beside it), so the round is all the shim sees.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo, revParse } from './helpers/git.ts'
import { MergeQueue } from '../src/merge/queue.ts'
import { MergeJob } from '../src/merge/merge-job.ts'
import type { LocalMain, MergeContext } from '../src/merge/context.ts'
import { branchOid } from '../src/git/merge.ts'
import { git, gitText } from '../src/git/git.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { str } from '../src/crdt/board.ts'
import type { TaskId } from '../src/crdt/schema.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh
let node: MeshNode
let root = ''
let repo = ''
let base = ''
let shimLog = ''
let slowMerges = ''
let heldMerges = ''
const savedPath = process.env.PATH

beforeAll(async () => {
  mesh = await createMesh(1)
  node = mesh.nodes[0] as MeshNode
  root = mesh.dirs[0] as string
  repo = await initRepo(join(root, 'repo'))
  base = await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
  // this node leads, and the board's main is the repository's
  node.changeBoard('test:lead', d => { lifecycle.electLeader(d, node.peerId, 1); lifecycle.advanceMain(d, base) })
  // every git process this test process starts from here on is written to shimLog
  const bin = join(root, 'bin')
  await mkdir(bin)
  shimLog = join(root, 'git.log')
  await writeFile(shimLog, '')
  const realGit = execFileSync('sh', ['-c', 'command -v git']).toString().trim()
  slowMerges = join(root, 'slow-merges')
  heldMerges = join(root, 'held-merges')
  // logs each subcommand (past a `-c name=value`); while the file slowMerges exists, each merge-tree takes 2 s more (a host
  // short of CPU); while heldMerges exists, a merge-tree that starts waits until it is gone
  await writeFile(join(bin, 'git'), `#!/bin/sh\nsub="$1"\n[ "$1" = -c ] && sub="$3"\necho "$sub" >> '${shimLog}'\nif [ "$sub" = merge-tree ] && [ -e '${slowMerges}' ]; then sleep 2; fi\nwhile [ "$sub" = merge-tree ] && [ -e '${heldMerges}' ]; do sleep 0.05; done\nexec '${realGit}' "$@"\n`)
  await chmod(join(bin, 'git'), 0o755)
  process.env.PATH = `${bin}:${savedPath ?? ''}`
})

afterAll(async () => {
  process.env.PATH = savedPath
  await mesh?.stop()
})

/** The git subcommands started since `from` lines of the shim's log. */
async function gitSince (from: number): Promise<string[]> {
  return (await readFile(shimLog, 'utf8')).split('\n').filter(l => l !== '').slice(from)
}

/** Branch `meshwork/<id>` from `base`, writing one file; returns its head. */
async function prepareBranch (id: string): Promise<string> {
  await git(['checkout', '-q', '-B', `meshwork/${id}`, base], { cwd: repo })
  const head = await commitFiles(repo, { [`${id}.txt`]: `${id}\n` }, id)
  await git(['checkout', '-q', 'main'], { cwd: repo })
  return head
}

/** A finished task whose branch `meshwork/<id>` (from `base`) writes one file, done on the board and held by this node. */
async function doneTask (id: string): Promise<string> {
  const head = await prepareBranch(id)
  markDone(id, head)
  return head
}

/** Task `id` done at `head` on the board, held by this node. */
function markDone (id: string, head: string): void {
  node.changeBoard('test:done', d => {
    addTasks([simpleTask(id)])(d)
    const rec = d.tasks[id] as Record<string, unknown>
    rec.state = str('done')
    rec.head = str(head)
    rec.holders = [str(node.peerId)]
    rec.doneAt = Date.now()
  })
}

/** Task `id` on the board in state `state` (a run elsewhere in the mesh: `running`; over: `cancelled`). */
function setState (id: string, state: 'running' | 'cancelled'): void {
  node.changeBoard('test:state', d => {
    if (d.tasks[id] === undefined) addTasks([simpleTask(id)])(d)
    const rec = d.tasks[id] as Record<string, unknown>
    rec.state = str(state)
  })
}

/** The queue with what `Leadership` would give it; main is read once and then trusted, as on a leader merging in a row. */
function queue (wake: () => void = () => {}, markMergingAfterMs = 0): MergeQueue {
  let seen: string | null = null
  const main: LocalMain = {
    trusted: () => seen,
    read: async () => { seen = await branchOid(repo, 'main'); return seen },
    moved: oid => { seen = oid },
    missing: () => null,
    landing: async fn => await fn()
  }
  const ctx: MergeContext = {
    // marked merging at once unless a test says otherwise: several use the mark as their moment to act
    init: { node, repo, worktreesDir: join(root, 'worktrees'), branch: 'main', logger: silentLogger, markMergingAfterMs },
    advanced: () => {},
    wake,
    syncMain: async () => {},
    job: new MergeJob(node, silentLogger),
    main,
    majority: () => true,
    branchMissing: () => {}
  }
  const q = new MergeQueue(ctx)
  queues.push(q)
  return q
}

/** Every queue a test made: their merge processes (a session, a commit writer) are ended after each test. */
const queues: MergeQueue[] = []
afterEach(async () => { await Promise.all(queues.splice(0).map(async q => { await q.close() })) })

describe('a merge round', () => {
  it('merges batches whose branches were handed off with two git processes each, to move main, once the leader\'s merge processes run: no lookups', async () => {
    const q = queue()
    // a first pass reads main and its history (a leader does this once, then follows its own merges)
    expect(await q.next()).toBe(false)
    q.arrived('w' as TaskId, await doneTask('w'))
    let from = (await gitSince(0)).length
    expect(await q.next()).toBe(true)
    // the first batch starts the merge session (merge-tree --stdin) and the commit writer (hash-object, and
    // `git var` once in a while for the identities it writes); status (where main is checked out, and whether
    // the checkout is clean) + merge --ff-only move main
    expect((await gitSince(from)).filter(c => c !== 'var').sort()).toEqual(['hash-object', 'merge', 'merge-tree', 'status'])
    const ids = ['a', 'b', 'c']
    for (const id of ids) q.arrived(id as TaskId, await doneTask(id))
    from = (await gitSince(0)).length
    expect(await q.next()).toBe(true)
    const ran = await gitSince(from)
    // the next batch's three merges and commits go through the same two processes: only main's move starts git
    expect(ran.sort()).toEqual(['merge', 'status'])
    for (const id of ids) expect(node.board.task(id)?.state).toBe('merged')
    const head = node.board.snapshot().main.head as string
    expect(await revParse(repo, 'refs/heads/main')).toBe(head)
    // the clean checkout followed main, one merge commit per task on its first-parent history
    expect((await gitText(['ls-files'], { cwd: repo })).split('\n')).toEqual(['README.md', 'a.txt', 'b.txt', 'c.txt', 'w.txt'])
    expect((await gitText(['log', '--first-parent', '--format=%s', `${base}..${head}`], { cwd: repo })).split('\n').map(l => l.replace(/:.*/, ''))).toEqual(['Merge meshwork/c', 'Merge meshwork/b', 'Merge meshwork/a', 'Merge meshwork/w'])
    await git(['fsck', '--strict', '--no-dangling'], { cwd: repo })
  })

  it('a task done while the batch is stacked joins it once: marked merging, landed in the same move of main', async () => {
    const q = queue()
    expect(await q.next()).toBe(false)
    q.arrived('f' as TaskId, await doneTask('f'))
    // g is done (and its branch here) the moment the batch is marked merging, before its merges are made;
    // h the moment g joins: too late, the batch was extended once already
    const lateHead = await prepareBranch('g')
    const laterHead = await prepareBranch('h')
    const off = node.board.subscribe(() => {
      // (a microtask: once the change that marked the task is through, before any git process of the round can end)
      if (node.board.task('f')?.state === 'merging' && node.board.task('g') === undefined) {
        queueMicrotask(() => { markDone('g', lateHead); q.arrived('g' as TaskId, lateHead) })
      }
      if (node.board.task('g')?.state === 'merging' && node.board.task('h') === undefined) {
        queueMicrotask(() => { markDone('h', laterHead); q.arrived('h' as TaskId, laterHead) })
      }
    })
    const before = node.board.snapshot().main.head as string
    try {
      expect(await q.next()).toBe(true)
    } finally {
      off()
    }
    expect(node.board.task('f')?.state).toBe('merged')
    expect(node.board.task('g')?.state).toBe('merged')
    expect(node.board.task('h')?.state).toBe('done')
    const head = node.board.snapshot().main.head as string
    expect((await gitText(['log', '--first-parent', '--format=%s', `${before}..${head}`], { cwd: repo })).split('\n').map(l => l.replace(/:.*/, ''))).toEqual(['Merge meshwork/g', 'Merge meshwork/f'])
    // h goes with the next batch
    expect(await q.next()).toBe(true)
    expect(node.board.task('h')?.state).toBe('merged')
  })

  it('a task done while the batch is stacked waits for the next one when the batch\'s merges took longer than a move of main', async () => {
    const q = queue()
    expect(await q.next()).toBe(false)
    // a first batch: main moves (tens of milliseconds here)
    q.arrived('i' as TaskId, await doneTask('i'))
    expect(await q.next()).toBe(true)
    // the next batch's merge takes 2 s: joining it would cost its task more than another move of main costs the late one
    // (the shim slows a merge-tree's start: the queue's merge session from the first batch is ended, so this batch
    // starts one)
    await q.close()
    q.arrived('j' as TaskId, await doneTask('j'))
    const lateHead = await prepareBranch('k')
    const off = node.board.subscribe(() => {
      if (node.board.task('j')?.state === 'merging' && node.board.task('k') === undefined) {
        queueMicrotask(() => { markDone('k', lateHead); q.arrived('k' as TaskId, lateHead) })
      }
    })
    await writeFile(slowMerges, '')
    try {
      expect(await q.next()).toBe(true)
    } finally {
      off()
      await rm(slowMerges, { force: true })
    }
    expect(node.board.task('j')?.state).toBe('merged')
    expect(node.board.task('k')?.state).toBe('done')
    expect(await q.next()).toBe(true)
    expect(node.board.task('k')?.state).toBe('merged')
  })

  it('a batch that lands before its mark is due takes its task from done to merged in one board change; one still merging then is marked merging', async () => {
    /** Task `id`'s states as the board shows them, each change apart. */
    const watch = (id: string): { states: string[], off: () => void } => {
      const states: string[] = []
      const off = node.board.subscribe(() => { const st = node.board.task(id)?.state; if (st !== undefined && states.at(-1) !== st) states.push(st) })
      return { states, off }
    }
    // no mark due before the batch lands
    const fast = queue(() => {}, 600_000)
    expect(await fast.next()).toBe(false)
    fast.arrived('lazy1' as TaskId, await doneTask('lazy1'))
    const p = watch('lazy1')
    try {
      expect(await fast.next()).toBe(true)
    } finally {
      p.off()
    }
    expect(p.states).toEqual(['merged'])
    // a batch whose merge is held (a merge-tree that waits for a file) is marked once the mark is due, then lands
    const slow = queue(() => {}, 50)
    expect(await slow.next()).toBe(false)
    slow.arrived('lazy2' as TaskId, await doneTask('lazy2'))
    const q = watch('lazy2')
    await writeFile(heldMerges, '')
    try {
      const round = slow.next()
      await waitFor(() => node.board.task('lazy2')?.state === 'merging', { timeoutMs: 30_000, message: () => `lazy2 was never marked merging while its merge was held: ${node.board.task('lazy2')?.state}` })
      await rm(heldMerges, { force: true })
      expect(await round).toBe(true)
    } finally {
      q.off()
      await rm(heldMerges, { force: true })
    }
    expect(q.states).toEqual(['merging', 'merged'])
  })

  it('a task whose branch did not arrive through a hand-off is looked up once, in one process for the batch', async () => {
    const q = queue()
    expect(await q.next()).toBe(false)
    for (const id of ['d', 'e']) await doneTask(id)
    const from = (await gitSince(0)).length
    expect(await q.next()).toBe(true)
    expect((await gitSince(from)).filter(c => c === 'cat-file')).toHaveLength(1)
    expect(node.board.task('d')?.state).toBe('merged')
    expect(node.board.task('e')?.state).toBe('merged')
  })

  describe('under load (tasks still running in the mesh)', () => {
    afterEach(async () => {
      await rm(slowMerges, { force: true })
      setState('busy', 'cancelled')
    })

    /** A queue whose last round took about 2 s (its merge-tree slowed down): the time a batch right after it is held. */
    async function afterSlowRound (id: string, wake: () => void): Promise<MergeQueue> {
      const q = queue(wake)
      expect(await q.next()).toBe(false)
      q.arrived(id as TaskId, await doneTask(id))
      await writeFile(slowMerges, '')
      try {
        expect(await q.next()).toBe(true)
      } finally {
        await rm(slowMerges, { force: true })
      }
      expect(node.board.task(id)?.state).toBe('merged')
      return q
    }

    it('a batch found right after a move of main is held for the last round\'s time, then lands with what was done meanwhile in one move', async () => {
      setState('busy', 'running')
      let woken = 0
      const heads = { m: await prepareBranch('m'), n: await prepareBranch('n') }
      const q = await afterSlowRound('l', () => { woken++ })
      markDone('m', heads.m)
      q.arrived('m' as TaskId, heads.m)
      const before = node.board.snapshot().main.head as string
      // held: nothing merged, main unchanged, and the loop is to be woken when the hold ends
      expect(await q.next()).toBe(false)
      expect(node.board.task('m')?.state).toBe('done')
      expect(node.board.snapshot().main.head).toBe(before)
      markDone('n', heads.n)
      q.arrived('n' as TaskId, heads.n)
      // asked again during the hold (a board change woke the loop): still held, one wake-up pending
      expect(await q.next()).toBe(false)
      await waitFor(() => woken > 0, { timeoutMs: 10_000, message: 'the held batch never woke the leader loop' })
      expect(woken).toBe(1)
      expect(await q.next()).toBe(true)
      expect(node.board.task('m')?.state).toBe('merged')
      expect(node.board.task('n')?.state).toBe('merged')
      const head = node.board.snapshot().main.head as string
      // both in the one move of main that followed `before`
      expect((await gitText(['log', '--first-parent', '--format=%s', `${before}..${head}`], { cwd: repo })).split('\n').map(l => l.replace(/:.*/, ''))).toEqual(['Merge meshwork/n', 'Merge meshwork/m'])
    })

    it('nothing else running in the mesh: a batch right after a move of main merges at once', async () => {
      const q = await afterSlowRound('o', () => {})
      q.arrived('p' as TaskId, await doneTask('p'))
      expect(await q.next()).toBe(true)
      expect(node.board.task('p')?.state).toBe('merged')
    })

    it('a task another one depends on merges at once, held by nothing', async () => {
      setState('busy', 'running')
      const q = await afterSlowRound('s', () => {})
      q.arrived('t' as TaskId, await doneTask('t'))
      node.changeBoard('test:dependent', d => { addTasks([simpleTask('u', { deps: ['t'] })])(d) })
      expect(await q.next()).toBe(true)
      expect(node.board.task('t')?.state).toBe('merged')
      setState('u', 'cancelled')
    })
  })
})
