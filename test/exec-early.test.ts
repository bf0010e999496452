/**
 * A run's worktree made while its claim settles (src/node/exec.ts,
 * `prepareEarly`): the run's `prepare` takes it as it is and runs `--setup`
 * in it; a claim let go has it removed (`dropEarly`), but never a later
 * claim's. Real git.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync } from 'node:fs'
import { chmod, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './helpers/mesh.ts'
import { initRepo, commitFiles } from './helpers/git.ts'
import { Board } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import type { Task, TaskId } from '../src/crdt/schema.ts'
import { createLogger } from '../src/util/logger.ts'
import { Execution, type ExecutionInit } from '../src/node/exec.ts'
import { git } from '../src/git/git.ts'
import { waitFor } from '../src/util/wait.ts'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

async function setUp (setup?: string, more: Partial<ExecutionInit> = {}): Promise<{ exec: Execution, board: Board, dir: string }> {
  const dir = await tempDir('meshwork-early-')
  dirs.push(dir)
  const repo = await initRepo(join(dir, 'repo'))
  await commitFiles(repo, { 'README.md': '# project\n' }, 'initial')
  const board = Board.create('mesh-early', 'aa11')
  board.change('plan', addTasks([simpleTask('t')]))
  const exec = new Execution({ node: { board }, repo, worktreesDir: join(dir, 'worktrees'), branch: 'main', logger: createLogger('x', { level: 'silent' }), ...(setup !== undefined ? { setup } : {}), ...more })
  await exec.start()
  return { exec, board, dir }
}

const taskOf = (board: Board, epoch?: number): Task => {
  const t = board.task('t' as TaskId) as Task
  return epoch === undefined ? t : { ...t, epoch }
}

describe('a worktree made as its task is claimed', () => {
  it('is the one the run gets, and --setup runs in it then', async () => {
    const { exec, board, dir } = await setUp('touch setup-ran')
    const task = taskOf(board)
    await exec.prepareEarly(task, new AbortController().signal)
    const path = join(dir, 'worktrees', 't')
    expect(existsSync(join(path, 'README.md'))).toBe(true)
    // --setup waits for the run: the claim may still be lost
    expect(existsSync(join(path, 'setup-ran'))).toBe(false)
    // a file left in it now is still there when the run starts: prepare did not make it again
    await writeFile(join(path, 'marker'), 'x')
    expect(await exec.prepare({ ...task, attempts: 1 }, new AbortController().signal)).toBe(path)
    expect(existsSync(join(path, 'marker'))).toBe(true)
    expect(existsSync(join(path, 'setup-ran'))).toBe(true)
    await exec.cleanup(task)
    expect(existsSync(path)).toBe(false)
    await exec.stop()
  })

  it('is removed when its claim is let go, but not a later claim\'s', async () => {
    const { exec, board, dir } = await setUp()
    const path = join(dir, 'worktrees', 't')
    await exec.prepareEarly(taskOf(board, 0), new AbortController().signal)
    expect(existsSync(path)).toBe(true)
    await exec.dropEarly('t', 0)
    expect(existsSync(path)).toBe(false)
    // claimed again at a later epoch: the first claim's late drop leaves it
    await exec.prepareEarly(taskOf(board, 0), new AbortController().signal)
    await exec.prepareEarly(taskOf(board, 1), new AbortController().signal)
    await exec.dropEarly('t', 0)
    expect(existsSync(join(path, 'README.md'))).toBe(true)
    // a run of the task at that epoch takes it
    expect(await exec.prepare(taskOf(board, 1), new AbortController().signal)).toBe(path)
    // and a drop after the run took it leaves it to the run
    await exec.dropEarly('t', 1)
    expect(existsSync(join(path, 'README.md'))).toBe(true)
    await exec.cleanup(taskOf(board, 1))
    await exec.stop()
  })

  it('lets git finish when its claim is let go during git\'s work: no lock file is left on the task\'s branch', async () => {
    const { exec, board, dir } = await setUp()
    const repo = join(dir, 'repo')
    // git's reference-transaction hook holds git while it holds the branch's lock (the first time only)
    const started = join(dir, 'ref-started')
    const release = join(dir, 'ref-release')
    const hook = join(repo, '.git', 'hooks', 'reference-transaction')
    await writeFile(hook, `#!/bin/sh\nif [ "$1" = prepared ] && [ ! -f '${release}' ]; then touch '${started}'; while [ ! -f '${release}' ]; do sleep 0.05; done; fi\nexit 0\n`)
    await chmod(hook, 0o755)
    const claim = new AbortController()
    const early = exec.prepareEarly(taskOf(board, 0), claim.signal)
    await waitFor(() => existsSync(started), { timeoutMs: 30_000, message: 'git never reached the branch update' })
    // the claim is lost while git holds the lock: git is not killed there
    claim.abort(new Error('the claim was let go'))
    await writeFile(release, '')
    await early
    await exec.dropEarly('t', 0)
    expect(existsSync(join(dir, 'worktrees', 't'))).toBe(false)
    expect(existsSync(join(repo, '.git', 'refs', 'heads', 'meshwork', 't.lock'))).toBe(false)
    // the branch can be moved (as a leader moves it to the winner's head)
    expect((await git(['update-ref', 'refs/heads/meshwork/t', 'HEAD'], { cwd: repo, allowFail: true })).code).toBe(0)
    await exec.stop()
  })

  it('stops when its claim is let go while it is made, leaving nothing', async () => {
    const { exec, board, dir } = await setUp()
    const abort = new AbortController()
    abort.abort(new Error('the claim was let go'))
    await exec.prepareEarly(taskOf(board, 0), abort.signal)
    await exec.dropEarly('t', 0)
    expect(existsSync(join(dir, 'worktrees', 't'))).toBe(false)
    // the run made later makes its own
    expect(existsSync(join(await exec.prepare(taskOf(board, 0), new AbortController().signal), 'README.md'))).toBe(true)
    await exec.cleanup(taskOf(board, 0))
    await exec.stop()
  })

  it('is not taken from the next claim by the late end of a claim let go while git made it (the task claimed again at once)', async () => {
    // as a node makes them: from a spare worktree checked out ahead
    const { exec, board, dir } = await setUp(undefined, { spareWorktree: true })
    const repo = join(dir, 'repo')
    const path = join(dir, 'worktrees', 't')
    await exec.prepare(taskOf(board, 0), new AbortController().signal)
    await exec.cleanup(taskOf(board, 0))
    expect(await exec.worktrees.spareReady(), 'no spare worktree was made').not.toBeNull()
    // git's post-checkout hook holds the first checkout (the first claim's worktree, made but not yet handed back) until told
    const started = join(dir, 'checkout-started')
    const release = join(dir, 'checkout-release')
    const hook = join(repo, '.git', 'hooks', 'post-checkout')
    await writeFile(hook, `#!/bin/sh\nif mkdir '${join(dir, 'checkout-held')}' 2>/dev/null; then touch '${started}'; while [ ! -f '${release}' ]; do sleep 0.05; done; fi\nexit 0\n`)
    await chmod(hook, 0o755)
    const first = new AbortController()
    const early1 = exec.prepareEarly(taskOf(board, 1), first.signal)
    await waitFor(() => existsSync(started), { timeoutMs: 30_000, message: 'git never reached the first claim\'s checkout' })
    // the claim is let go (the scheduler aborts it, then drops what it made) and the task claimed again at once
    first.abort(new Error('the claim was let go'))
    const drop1 = exec.dropEarly('t', 1)
    const early2 = exec.prepareEarly(taskOf(board, 2), new AbortController().signal)
    await writeFile(release, '')
    await Promise.all([early1, drop1, early2])
    // the later claim's run has its worktree, and its work is committed to the task's branch
    expect(await exec.prepare(taskOf(board, 2), new AbortController().signal)).toBe(path)
    await writeFile(join(path, 'work.txt'), 'done\n')
    const head = await exec.finish(taskOf(board, 2))
    expect(head, 'the run\'s worktree was gone when its work was committed').not.toBeNull()
    expect((await git(['show', `${head as string}:work.txt`], { cwd: repo })).stdout.toString()).toBe('done\n')
    await exec.cleanup(taskOf(board, 2))
    expect(existsSync(path)).toBe(false)
    await exec.stop()
  })
})
