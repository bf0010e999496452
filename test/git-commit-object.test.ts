/**
 * Merge commits written without `git commit-tree` (src/git/commit-object.ts):
 * the bytes, hence the oid, are the ones git writes for the same commit, git
 * reads the object back and `git fsck --strict` finds nothing wrong; wherever
 * that is not certain (a SHA-256 repository, an extension, dates from the
 * environment, an identity git would trim) the writer declines and the merge
 * goes through git.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { writeCommit } from '../src/git/commit-object.ts'
import { mergeCommit, tryMerge } from '../src/git/merge.ts'
import { commitFiles, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''
let main = ''
let head = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-commit-object-'))
  repo = await initRepo(join(dir, 'repo'))
  const base = await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
  await git(['checkout', '-q', '-b', 'meshwork/t1'], { cwd: repo })
  head = await commitFiles(repo, { 't1.txt': 't1 ✓\n' }, 't1')
  await git(['checkout', '-q', 'main'], { cwd: repo })
  main = await commitFiles(repo, { 'main.txt': 'main\n' }, 'main moves')
  expect(base).not.toBe(main)
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const spec = (tree: string, message = 'Merge meshwork/t1: tâche ✓\n\nMeshwork-Task: t1\n'): Parameters<typeof writeCommit>[1] =>
  ({ tree, parents: [main, head], name: 'meshwork', email: 'meshwork@localhost', message })

describe('writeCommit', () => {
  it('writes the commit git commit-tree writes: same oid, readable, fsck --strict clean', async () => {
    const m = await tryMerge(repo, main, head)
    if (m.kind !== 'clean') throw new Error('expected a clean merge')
    const oid = await writeCommit(repo, spec(m.tree))
    if (oid === null) throw new Error('declined a plain SHA-1 repository')
    const raw = await gitText(['cat-file', 'commit', oid], { cwd: repo })
    const date = /^committer .* (\d+ [+-]\d{4})$/m.exec(raw)?.[1] as string
    // git, given the same commit and the same date, names the same object
    const env = { GIT_AUTHOR_NAME: 'meshwork', GIT_AUTHOR_EMAIL: 'meshwork@localhost', GIT_COMMITTER_NAME: 'meshwork', GIT_COMMITTER_EMAIL: 'meshwork@localhost', GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date }
    const byGit = await gitText(['commit-tree', m.tree, '-p', main, '-p', head, '-F', '-'], { cwd: repo, input: spec(m.tree).message, env })
    expect(oid).toBe(byGit)
    expect(await gitText(['rev-parse', `${oid}^1`, `${oid}^2`, `${oid}^{tree}`], { cwd: repo })).toBe(`${main}\n${head}\n${m.tree}`)
    await git(['fsck', '--strict', '--no-dangling'], { cwd: repo })
    // written twice (a retried merge in the same second): the object is there, nothing fails
    expect(await writeCommit(repo, spec(m.tree))).toBe(oid)
  })

  it('mergeCommit stacks merges git can build on: the next merge-tree reads the commit just written', async () => {
    const m1 = await tryMerge(repo, main, head)
    if (m1.kind !== 'clean') throw new Error('expected a clean merge')
    const c1 = await mergeCommit(repo, m1.tree, main, head, 't1', 'first')
    await git(['checkout', '-q', '-b', 'meshwork/t2', main], { cwd: repo })
    const h2 = await commitFiles(repo, { 't2.txt': 't2\n' }, 't2')
    await git(['checkout', '-q', 'main'], { cwd: repo })
    const m2 = await tryMerge(repo, c1, h2)
    if (m2.kind !== 'clean') throw new Error('expected a clean merge')
    const c2 = await mergeCommit(repo, m2.tree, c1, h2, 't2', 'second')
    expect(await gitText(['log', '--first-parent', '--format=%s%n%(trailers:key=Meshwork-Task,valueonly)', '-2', c2], { cwd: repo })).toBe('Merge meshwork/t2: second\nt2\n\nMerge meshwork/t1: first\nt1')
    expect((await gitText(['ls-tree', '--name-only', c2], { cwd: repo })).split('\n')).toEqual(['README.md', 'main.txt', 't1.txt', 't2.txt'])
    await git(['fsck', '--strict', '--no-dangling'], { cwd: repo })
  })

  it('declines where git would write other bytes: an extension, dates from the environment, an identity git trims', async () => {
    const m = await tryMerge(repo, main, head)
    if (m.kind !== 'clean') throw new Error('expected a clean merge')
    expect(await writeCommit(repo, { ...spec(m.tree), name: ' meshwork' })).toBeNull()
    expect(await writeCommit(repo, { ...spec(m.tree), email: 'a<b' })).toBeNull()
    process.env.GIT_COMMITTER_DATE = '1700000000 +0000'
    try {
      expect(await writeCommit(repo, spec(m.tree))).toBeNull()
    } finally {
      delete process.env.GIT_COMMITTER_DATE
    }
    // another repository, with an extension set: decided per repository
    const other = await initRepo(join(dir, 'other'))
    await git(['config', 'core.repositoryFormatVersion', '1'], { cwd: other })
    await git(['config', 'extensions.worktreeConfig', 'true'], { cwd: other })
    await commitFiles(other, { 'x.txt': 'x\n' }, 'x')
    const tree = await gitText(['rev-parse', 'HEAD^{tree}'], { cwd: other })
    expect(await writeCommit(other, { tree, parents: [], name: 'meshwork', email: 'meshwork@localhost', message: 'm\n' })).toBeNull()
  })

  it('declines a SHA-256 repository', async () => {
    const sha256 = join(dir, 'sha256')
    await git(['init', '-q', '--object-format=sha256', sha256], { cwd: dir })
    const tree = await gitText(['hash-object', '-t', 'tree', '-w', '--stdin'], { cwd: sha256, input: '' })
    expect(await writeCommit(sha256, { tree, parents: [], name: 'meshwork', email: 'meshwork@localhost', message: 'm\n' })).toBeNull()
  })
})
