import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, readFile, rm, writeFile, mkdir, readdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { COMMITS_PER_MAINTENANCE, Worktrees, addDetached, commitEnv, runSetup } from '../src/git/worktree.ts'
import { git, gitText } from '../src/git/git.ts'
import { headOid } from '../src/git/repo.ts'
import { simAgent } from '../src/agent/sim.ts'
import { Board } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { isAlive as alive } from './helpers/proc.ts'

let dir = ''
let repo = ''
/** The worktrees dir (`--worktrees`). */
let root = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-wt-'))
  repo = join(dir, 'repo')
  root = join(dir, 'worktrees')
  await mkdir(repo)
  await git(['init', '-q', '-b', 'main'], { cwd: repo })
  await writeFile(join(repo, 'README.md'), 'hello\n')
  await git(['add', '.'], { cwd: repo })
  await git(['commit', '-q', '-m', 'initial'], { cwd: repo, env: commitEnv() })
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

function task (id: string, sim: { write?: Record<string, string>, append?: Record<string, string> }) {
  const b = Board.create('m', 'aa'.repeat(16))
  b.change('t', addTasks([simpleTask(id, { sim: { durationMs: 1, write: sim.write ?? {}, append: sim.append ?? {}, fail: 0 } })]))
  return b.task(id)!
}

describe('worktrees', () => {
  it('headOid reads HEAD as git rev-parse does: a linked worktree, the primary one, detached, packed refs, an unborn branch', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const wt = await wts.create('h1', base)
    await writeFile(join(wt.path, 'x.txt'), 'x\n')
    const head = await wts.commit(wt, 'h1', 'one')
    const asGit = async (cwd: string): Promise<string> => await gitText(['rev-parse', 'HEAD'], { cwd })
    expect(head).not.toBe(base)
    expect(head).toBe(await asGit(wt.path))
    expect(await headOid(wt.path)).toBe(head)
    expect(await headOid(repo)).toBe(base)
    // detached: HEAD holds the oid itself
    await git(['checkout', '-q', '--detach', base], { cwd: wt.path })
    expect(await headOid(wt.path)).toBe(base)
    await git(['checkout', '-q', 'meshwork/h1'], { cwd: wt.path })
    // the branch only in packed-refs (no loose file): git answers
    await git(['pack-refs', '--all'], { cwd: repo })
    expect(await headOid(wt.path)).toBe(head)
    expect(await headOid(repo)).toBe(base)
    // a branch with no commit yet: an error, as from git
    await git(['checkout', '-q', '--orphan', 'empty'], { cwd: wt.path })
    await expect(headOid(wt.path)).rejects.toThrow()
    await git(['checkout', '-q', '-f', 'meshwork/h1'], { cwd: wt.path })
    await wts.remove(wt)
  })

  it('runs a task in its own worktree from base, commits with the trailer, leaves the primary checkout alone', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const wt = await wts.create('t1', base)
    await runSetup('echo setup-ran > .setup-marker', wt.path)
    expect(wt.path.startsWith(root)).toBe(true)
    expect(await readFile(join(wt.path, '.setup-marker'), 'utf8')).toBe('setup-ran\n')
    const t = task('t1', { write: { 'src/a.txt': 'A\n' }, append: { 'README.md': 'more\n' } })
    const res = await simAgent().run({ task: t, attempt: 1, node: 'n', cwd: wt.path, signal: new AbortController().signal })
    expect(res.outcome).toBe('success')
    const head = await wts.commit(wt, 't1', 'Task one')
    expect(head).not.toBe(base)
    expect(await gitText(['rev-parse', 'meshwork/t1'], { cwd: repo })).toBe(head)
    const msg = await gitText(['log', '-1', '--format=%B', head], { cwd: repo })
    expect(msg).toContain('Meshwork-Task: t1')
    expect(await gitText(['show', `${head}:src/a.txt`], { cwd: repo })).toBe('A')
    expect(await gitText(['show', `${head}:README.md`], { cwd: repo })).toBe('hello\nmore')
    // the primary checkout did not change
    expect(await readFile(join(repo, 'README.md'), 'utf8')).toBe('hello\n')
    expect(await gitText(['status', '--porcelain'], { cwd: repo })).toBe('')
    await wts.remove(wt)
    expect(await readdir(root)).toEqual([])
    expect(await gitText(['rev-parse', 'meshwork/t1'], { cwd: repo })).toBe(head)
    // git knows it gone: nothing left to prune, the branch free to check out again
    expect(await readdir(join(repo, '.git', 'worktrees')).catch(() => [])).toEqual([])
    expect(await gitText(['worktree', 'list', '--porcelain'], { cwd: repo })).not.toContain(root)
    const again = await wts.create('t1', head)
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: again.path })).toBe(head)
    // a locked worktree is left to git, which refuses to remove its registration: the files go all the same
    await git(['worktree', 'lock', again.path], { cwd: repo })
    await wts.remove(again)
    expect(await readdir(root)).toEqual([])
    await git(['worktree', 'prune'], { cwd: repo })
  })

  it('keeps commits an agent made itself and adds one for leftovers; two tasks never share files', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const [a, b] = await Promise.all([wts.create('a', base), wts.create('b', base)])
    await writeFile(join(a.path, 'x.txt'), 'agent commit\n')
    await git(['add', '.'], { cwd: a.path })
    await git(['commit', '-q', '-m', 'agent did this'], { cwd: a.path, env: commitEnv() })
    await writeFile(join(a.path, 'y.txt'), 'left over\n')
    await writeFile(join(b.path, 'z.txt'), 'b only\n')
    const ha = await wts.commit(a, 'a', 'A')
    const hb = await wts.commit(b, 'b', 'B')
    const log = (await gitText(['log', '--format=%s', `${base}..${ha}`], { cwd: repo })).split('\n')
    expect(log).toEqual(['A', 'agent did this'])
    expect((await git(['cat-file', '-e', `${hb}:x.txt`], { cwd: repo, allowFail: true })).code).not.toBe(0)
    expect((await git(['cat-file', '-e', `${ha}:z.txt`], { cwd: repo, allowFail: true })).code).not.toBe(0)
    // nothing left uncommitted: no extra commit
    expect(await wts.commit(b, 'b', 'B')).toBe(hb)
  })

  it('a commit git refuses with something staged (a failing prepare-commit-msg hook) is an error, not "nothing to commit"', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const wt = await wts.create('h', base)
    const hooks = join(dir, 'hooks')
    await mkdir(hooks)
    // --no-verify skips pre-commit and commit-msg, not prepare-commit-msg; git exits 1 as for nothing to commit
    await writeFile(join(hooks, 'prepare-commit-msg'), '#!/bin/sh\nexit 1\n', { mode: 0o755 })
    await git(['config', 'core.hooksPath', hooks], { cwd: repo })
    await writeFile(join(wt.path, 'left.txt'), 'left over\n')
    await expect(wts.commit(wt, 'h', 'H')).rejects.toMatchObject({ name: 'GitError', code: 1 })
    expect(await gitText(['rev-parse', 'meshwork/h'], { cwd: repo })).toBe(base)
    // with the hook gone the leftovers are committed; with nothing left the head is returned as it is
    await git(['config', '--unset', 'core.hooksPath'], { cwd: repo })
    const head = await wts.commit(wt, 'h', 'H')
    expect(head).not.toBe(base)
    expect(await wts.commit(wt, 'h', 'H')).toBe(head)
    await wts.remove(wt)
  })

  it('a rerun starts fresh from the new base; stale worktrees from a crash are pruned; a failing setup says so', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const first = await wts.create('t', base)
    await writeFile(join(first.path, 'half.txt'), 'crashed run\n')
    // "crash": the worktree is left behind; a new run of the same task replaces it
    const again = await wts.create('t', base)
    expect((await git(['status', '--porcelain'], { cwd: again.path })).stdout.toString()).toBe('')
    await wts.create('other', base)
    const removed = await wts.pruneStale()
    expect(removed.sort()).toEqual(['other', 't'])
    expect(await readdir(root)).toEqual([])
    await expect(runSetup('echo nope >&2; exit 3', (await wts.create('s', base)).path)).rejects.toMatchObject({ name: 'SetupError', message: expect.stringContaining('nope') })
  })
  it('--setup runs in its own process group: aborting the run kills it and what it started, and rejects with the reason', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const pidFile = join(dir, 'grandchild.pid')
    const abort = new AbortController()
    const made = runSetup(`sleep 1000 & echo $! > ${pidFile}; wait`, (await wts.create('hang', base)).path, abort.signal)
    await waitFor(async () => (await readFile(pidFile, 'utf8').catch(() => '')).trim() !== '', { timeoutMs: 10_000, message: 'setup did not start' })
    const grandchild = Number(await readFile(pidFile, 'utf8'))
    // the setup would sleep 1000 s: rejecting at all is rejecting at once
    abort.abort(new Error('cancelled'))
    await expect(made).rejects.toThrow('cancelled')
    await waitFor(() => !alive(grandchild), { timeoutMs: 5000, message: `setup's background child ${grandchild} survived the abort` })
  })

  it('many runs creating and removing worktrees at once in one repository all succeed', async () => {
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const ids = Array.from({ length: 12 }, (_, i) => `c${i}`)
    for (let round = 0; round < 3; round++) {
      const made = await Promise.all(ids.map(async id => await wts.create(id, base)))
      expect(made.map(w => w.branch)).toEqual(ids.map(id => `meshwork/${id}`))
      await Promise.all(made.map(async w => { await wts.remove(w) }))
    }
    expect(await readdir(root)).toEqual([])
  })

  it('task commits leave git\'s auto maintenance to every COMMITS_PER_MAINTENANCE-th commit, which runs it', async () => {
    // a repository where auto maintenance always has something to do: two packs past a limit of one (it repacks
    // them into one), in the foreground
    const packs = async (): Promise<string[]> => (await readdir(join(repo, '.git', 'objects', 'pack')).catch(() => [] as string[])).filter(f => f.endsWith('.pack'))
    for (const name of ['p1', 'p2']) {
      await writeFile(join(repo, `${name}.txt`), `${name}\n`)
      await git(['add', '.'], { cwd: repo })
      await git(['-c', 'maintenance.auto=false', 'commit', '-q', '-m', name], { cwd: repo, env: commitEnv() })
      await git(['repack', '-q'], { cwd: repo })
    }
    expect(await packs()).toHaveLength(2)
    await git(['config', 'gc.autoPackLimit', '1'], { cwd: repo })
    await git(['config', 'gc.autoDetach', 'false'], { cwd: repo })
    // git's gc raced a worktree being added once: its log, which would keep a detached gc off for a day, goes
    await writeFile(join(repo, '.git', 'gc.log'), 'fatal: bad object worktrees/m0/HEAD\nfatal: failed to run repack\n')
    const wts = new Worktrees(repo, root)
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    for (let i = 1; i <= COMMITS_PER_MAINTENANCE; i++) {
      const wt = await wts.create(`m${i}`, base)
      await writeFile(join(wt.path, `f${i}.txt`), `${i}\n`)
      await wts.commit(wt, `m${i}`, `commit ${i}`)
      await wts.remove(wt)
      // before the last, no commit started git's maintenance (a plain `git commit` here would have repacked)
      if (i < COMMITS_PER_MAINTENANCE) expect(await packs(), `after commit ${i}`).toHaveLength(2)
    }
    await waitFor(async () => (await packs()).length === 1, { timeoutMs: 30_000, message: 'auto maintenance did not repack after the last commit' })
    // it may still be writing in the repository (the teardown would race it)
    await wts.maintenance
    expect(existsSync(join(repo, '.git', 'gc.log'))).toBe(false)
  })
  it('a spare written by hand is a worktree git knows as it knows its own: detached at its commit, clean, valid, removable', async () => {
    await writeFile(join(repo, 'a.txt'), 'a\n')
    await mkdir(join(repo, 'sub'), { recursive: true })
    await writeFile(join(repo, 'sub', 'b.txt'), 'b\n')
    await git(['add', '.'], { cwd: repo })
    await git(['commit', '-q', '-m', 'files'], { cwd: repo, env: commitEnv() })
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    await mkdir(root, { recursive: true })
    const path = join(root, '.spare-by-hand')
    expect(await addDetached(repo, path, base)).toBe(true)
    expect(await readFile(join(path, 'sub', 'b.txt'), 'utf8')).toBe('b\n')
    expect(await gitText(['status', '--porcelain'], { cwd: path })).toBe('')
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: path })).toBe(base)
    const list = await gitText(['worktree', 'list', '--porcelain'], { cwd: repo })
    expect(list).toContain(`worktree ${path}\nHEAD ${base}\ndetached`)
    expect(list).not.toContain('locked')
    // git would prune nothing: it finds the worktree where its admin dir says
    expect(await gitText(['worktree', 'prune', '--dry-run', '--verbose'], { cwd: repo })).toBe('')
    const fsck = await git(['fsck', '--no-progress'], { cwd: repo, allowFail: true })
    expect(fsck.code, fsck.stderr + fsck.stdout.toString()).toBe(0)
    // the id is taken (a second spare of the same name): nothing is written, and git is asked instead
    expect(await addDetached(repo, join(dir, 'elsewhere', '.spare-by-hand'), base)).toBe(false)
    expect(existsSync(join(dir, 'elsewhere'))).toBe(false)
    await git(['worktree', 'remove', '--force', path], { cwd: repo })
    expect(await readdir(join(repo, '.git', 'worktrees')).catch(() => [])).toEqual([])
    expect(existsSync(path)).toBe(false)
    // a sparse checkout (which git copies into a new worktree) is left to git
    await git(['config', 'core.sparseCheckout', 'true'], { cwd: repo })
    expect(await addDetached(repo, path, base)).toBe(false)
    expect(existsSync(path)).toBe(false)
    await git(['config', '--unset', 'core.sparseCheckout'], { cwd: repo })
  })
  it('with a spare: the next run takes the worktree checked out ahead, moved to its path and brought to its base; stop removes the spare', async () => {
    const wts = new Worktrees(repo, root, { spare: true })
    await writeFile(join(repo, 'stable.txt'), 'never changes\n')
    await git(['add', '.'], { cwd: repo })
    await git(['commit', '-q', '-m', 'stable'], { cwd: repo, env: commitEnv() })
    const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const first = await wts.create('s1', base)
    const spare = await wts.spareReady()
    expect(spare, 'no spare was made after the first run').not.toBeNull()
    expect(spare!.startsWith(join(root, '.spare-'))).toBe(true)
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: spare! })).toBe(base)
    const stableInode = (await stat(join(spare!, 'stable.txt'))).ino
    // main moves on (one file changed, one added) before the next run
    await writeFile(join(repo, 'README.md'), 'hello again\n')
    await writeFile(join(repo, 'new.txt'), 'new\n')
    await git(['add', '.'], { cwd: repo })
    await git(['commit', '-q', '-m', 'second'], { cwd: repo, env: commitEnv() })
    const base2 = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const second = await wts.create('s2', base2)
    expect(second.path).toBe(join(root, 's2'))
    // the spare moved there (its files are the same files), and is gone from where it was
    expect(existsSync(spare!)).toBe(false)
    expect(await readFile(join(second.path, 'README.md'), 'utf8')).toBe('hello again\n')
    expect(await readFile(join(second.path, 'new.txt'), 'utf8')).toBe('new\n')
    expect(await gitText(['symbolic-ref', 'HEAD'], { cwd: second.path })).toBe('refs/heads/meshwork/s2')
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: second.path })).toBe(base2)
    expect(await gitText(['status', '--porcelain'], { cwd: second.path })).toBe('')
    const list = await gitText(['worktree', 'list', '--porcelain'], { cwd: repo })
    expect(list).toContain(`worktree ${second.path}\n`)
    expect(list).not.toContain(spare!)
    // a file that did not change between the two bases was not written again: the spare's own file
    expect((await stat(join(second.path, 'stable.txt'))).ino).toBe(stableInode)
    // the run commits and is removed as any other; git forgets it
    await writeFile(join(second.path, 'work.txt'), 'done\n')
    const head = await wts.commit(second, 's2', 'S2')
    expect(await gitText(['rev-parse', 'meshwork/s2'], { cwd: repo })).toBe(head)
    await wts.remove(second)
    await wts.remove(first)
    // the next spare was made after the second run; a stop removes it, and nothing is left for git to prune
    const next = await wts.spareReady()
    expect(next).not.toBeNull()
    expect(next).not.toBe(spare)
    await wts.dropSpare()
    expect(await readdir(root)).toEqual([])
    expect(await readdir(join(repo, '.git', 'worktrees')).catch(() => [])).toEqual([])
    // a spare left by a crash is pruned at start, and not reported as a task's worktree
    const again = new Worktrees(repo, root, { spare: true })
    await again.create('s3', base2)
    expect(await again.spareReady()).not.toBeNull()
    expect((await again.pruneStale()).sort()).toEqual(['s3'])
    expect(await readdir(root)).toEqual([])
  })
})
