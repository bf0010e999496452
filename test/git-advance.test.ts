/**
 * Moving main (src/git/merge.ts `advanceBranch`, every advance on every node)
 * and looking commits up (`commitOids`), on real repositories: checked out and
 * clean, dirty, detached, bare, HEAD on an unborn branch, and a lost race.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { advanceBranch, commitOids, hasCommit } from '../src/git/merge.ts'
import { commitFiles, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''
let base = ''
let next = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-advance-'))
  repo = await initRepo(join(dir, 'repo'))
  base = await commitFiles(repo, { 'a.txt': 'a\n' }, 'base')
  next = await commitFiles(repo, { 'a.txt': 'a2\n' }, 'next')
  await git(['reset', '-q', '--hard', base], { cwd: repo })
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const mainOf = async (r = repo): Promise<string> => await gitText(['rev-parse', 'refs/heads/main'], { cwd: r })

describe('advanceBranch', () => {
  it('a clean checkout of the branch follows it; a dirty one is left alone with the branch moved', async () => {
    expect(await advanceBranch(repo, 'main', base, next)).toBe('updated')
    expect(await mainOf()).toBe(next)
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('a2\n')
    await git(['reset', '-q', '--hard', base], { cwd: repo })
    await writeFile(join(repo, 'a.txt'), 'local edit\n')
    expect(await advanceBranch(repo, 'main', base, next)).toBe('dirty')
    expect(await mainOf()).toBe(next)
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('local edit\n')
  })

  it('fastForwardOnly moves only by a fast-forward of the clean checkout; anything else changes nothing and says not-fast-forward', async () => {
    const ff = { fastForwardOnly: true }
    expect(await advanceBranch(repo, 'main', base, next, ff)).toBe('updated')
    expect(await mainOf()).toBe(next)
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('a2\n')
    // `base` is behind main (git: "Already up to date", exit 0): no move
    expect(await advanceBranch(repo, 'main', next, base, ff)).toBe('not-fast-forward')
    expect(await mainOf()).toBe(next)
    // diverged: a commit main lacks
    await git(['reset', '-q', '--hard', base], { cwd: repo })
    const other = await commitFiles(repo, { 'b.txt': 'b\n' }, 'other')
    expect(await advanceBranch(repo, 'main', other, next, ff)).toBe('not-fast-forward')
    expect(await mainOf()).toBe(other)
    // dirty, and not checked out: the ancestry is the caller's to check first
    await git(['reset', '-q', '--hard', base], { cwd: repo })
    await writeFile(join(repo, 'a.txt'), 'local edit\n')
    expect(await advanceBranch(repo, 'main', base, next, ff)).toBe('not-fast-forward')
    expect(await mainOf()).toBe(base)
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('local edit\n')
    await git(['checkout', '-q', '-f', '--detach'], { cwd: repo })
    expect(await advanceBranch(repo, 'main', base, next, ff)).toBe('not-fast-forward')
    expect(await mainOf()).toBe(base)
  })

  it('a file touched but unchanged does not make the checkout dirty: it follows main (one git status asks where HEAD is and whether it is clean)', async () => {
    // same content, new mtime: the index's stat data no longer matches, the file does
    await writeFile(join(repo, 'a.txt'), 'a\n')
    await utimes(join(repo, 'a.txt'), new Date(Date.now() + 5000), new Date(Date.now() + 5000))
    expect(await advanceBranch(repo, 'main', base, next)).toBe('updated')
    expect(await readFile(join(repo, 'a.txt'), 'utf8')).toBe('a2\n')
  })

  it('a branch not checked out (detached HEAD, another branch, an unborn one, a bare repository) is moved by compare-and-swap', async () => {
    await git(['checkout', '-q', '--detach'], { cwd: repo })
    expect(await advanceBranch(repo, 'main', base, next)).toBe('not-checked-out')
    expect(await mainOf()).toBe(next)
    // HEAD on an unborn branch: git cannot name HEAD's commit, the facts are read one by one
    await git(['checkout', '-q', '--orphan', 'fresh'], { cwd: repo })
    expect(await advanceBranch(repo, 'main', next, base)).toBe('not-checked-out')
    expect(await mainOf()).toBe(base)
    const bare = join(dir, 'bare.git')
    await git(['clone', '-q', '--bare', repo, bare], { cwd: dir })
    expect(await advanceBranch(bare, 'main', base, next)).toBe('not-checked-out')
    expect(await mainOf(bare)).toBe(next)
  })

  it('a branch that is not where the caller saw it is a lost race, checked out or not, and is not moved', async () => {
    expect(await advanceBranch(repo, 'main', next, base)).toBe('lost-race')
    expect(await mainOf()).toBe(base)
    await git(['checkout', '-q', '--detach'], { cwd: repo })
    expect(await advanceBranch(repo, 'main', next, base)).toBe('lost-race')
    expect(await mainOf()).toBe(base)
  })
})

describe('commitOids', () => {
  it('names a branch\'s commit and an oid that is here; null for what is missing, in one call', async () => {
    const tree = await gitText(['rev-parse', `${next}^{tree}`], { cwd: repo })
    expect(await commitOids(repo, ['refs/heads/main', next, 'refs/heads/nope', 'f'.repeat(40), tree])).toEqual([base, next, null, null, null])
    expect(await commitOids(repo, [])).toEqual([])
  })

  it('hasCommit: a commit that is here, not a tag object pointing at one, nor a tree', async () => {
    await git(['tag', '-a', '-m', 'annotated', 'v1', next], { cwd: repo })
    const tag = await gitText(['rev-parse', 'refs/tags/v1'], { cwd: repo })
    expect(tag).not.toBe(next)
    const tree = await gitText(['rev-parse', `${next}^{tree}`], { cwd: repo })
    expect(await Promise.all([next, tag, tree, 'f'.repeat(40)].map(async o => await hasCommit(repo, o)))).toEqual([true, false, false, false])
  })
})
