/**
 * A ref lock a dead git left behind (src/git/stale-lock.ts): the node's next
 * git failure on it removes it once it has not changed for a minute, so the
 * try after that succeeds; a fresh lock and an `index.lock` stay. On real
 * repositories, through `git` (one-shot), `advanceBranch` (the leader's move
 * of main) and the ref updater (`update-ref --stdin`).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { access, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText, GitError } from '../src/git/git.ts'
import { advanceBranch } from '../src/git/merge.ts'
import { RefUpdater } from '../src/git/ref-updater.ts'
import { lockInTheWay, STALE_LOCK_MS } from '../src/git/stale-lock.ts'
import { commitFiles, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''
let base = ''
let next = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-stale-lock-'))
  repo = await initRepo(join(dir, 'repo'))
  base = await commitFiles(repo, { 'a.txt': 'a\n' }, 'base')
  next = await commitFiles(repo, { 'a.txt': 'a2\n' }, 'next')
  await git(['reset', '-q', '--hard', base], { cwd: repo })
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

/** Leaves `name` (under .git) as a dead git would, last changed `ageMs` ago. */
async function leaveLock (name: string, ageMs: number): Promise<string> {
  const path = join(repo, '.git', name)
  await writeFile(path, '')
  const t = (Date.now() - ageMs) / 1000
  await utimes(path, t, t)
  return path
}
const exists = async (path: string): Promise<boolean> => await access(path).then(() => true, () => false)
const failure = async (p: Promise<unknown>): Promise<GitError> => {
  const err = await p.then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(GitError)
  return err as GitError
}

describe('a stale ref lock', () => {
  it('fails the command that meets it, is removed, and the next try succeeds; the failure names the lock', async () => {
    const lock = await leaveLock('refs/heads/t1.lock', STALE_LOCK_MS + 60_000)
    const err = await failure(git(['branch', '-f', 't1', next], { cwd: repo }))
    expect(err.message).toContain(`Unable to create '${lock}': File exists`)
    expect(err.message).toContain(`meshwork removed the stale lock ${lock}`)
    expect(await exists(lock)).toBe(false)
    await git(['branch', '-f', 't1', next], { cwd: repo })
    expect(await gitText(['rev-parse', 'refs/heads/t1'], { cwd: repo })).toBe(next)
  })

  it('a lock younger than the limit is left in place (a git may hold it now), and so is an index.lock of any age', async () => {
    const fresh = await leaveLock('refs/heads/t2.lock', 1_000)
    const err = await failure(git(['branch', '-f', 't2', next], { cwd: repo }))
    expect(err.message).toContain(`Unable to create '${fresh}': File exists`)
    expect(err.message).not.toContain('meshwork removed')
    expect(await exists(fresh)).toBe(true)

    const index = await leaveLock('index.lock', 3_600_000)
    const r = await git(['read-tree', next], { cwd: repo, allowFail: true })
    expect(r.code).not.toBe(0)
    expect(lockInTheWay(r.stderr)).toBe(index)
    expect(await exists(index)).toBe(true)
  })

  it('on main: the leader\'s move of main takes its clean checkout along at once, rather than move the branch alone', async () => {
    const lock = await leaveLock('refs/heads/main.lock', STALE_LOCK_MS + 1_000)
    expect(await advanceBranch(repo, 'main', base, next)).toBe('updated')
    expect(await exists(lock)).toBe(false)
    expect(await gitText(['rev-parse', 'refs/heads/main'], { cwd: repo })).toBe(next)
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('a2\n')
  })

  it('through the ref updater (update-ref --stdin): its update fails once and the next one lands', async () => {
    const lock = await leaveLock('refs/heads/t3.lock', STALE_LOCK_MS * 10)
    const updater = new RefUpdater(repo, 'test')
    try {
      const err = await failure(updater.update('refs/heads/t3', next))
      expect(err.message).toContain(`meshwork removed the stale lock ${lock}`)
      await updater.update('refs/heads/t3', next)
      expect(await gitText(['rev-parse', 'refs/heads/t3'], { cwd: repo })).toBe(next)
    } finally {
      updater.close()
    }
  })
})
