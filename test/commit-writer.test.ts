/**
 * The merge commits of a batch written through one `git hash-object` process
 * (src/git/commit-writer.ts): the same commit `git commit-tree` makes but for
 * its time, checked by git, and left to `commit-tree` whenever it cannot be
 * the same (signing configured) or git refuses it.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { CommitWriter } from '../src/git/commit-writer.ts'
import { commitEnv } from '../src/git/worktree.ts'
import { commitFiles, createBranch, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''
let main = ''
let head = ''
let tree = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-cw-'))
  repo = await initRepo(join(dir, 'repo'))
  main = await commitFiles(repo, { 'a.txt': 'a\n' }, 'base')
  await createBranch(repo, 'meshwork/t', 'main')
  head = await commitFiles(repo, { 'b.txt': 'b\n' }, 'task')
  tree = await gitText(['rev-parse', `${head}^{tree}`], { cwd: repo })
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

/** A commit's text with its times blanked. */
async function textOf (oid: string): Promise<string> {
  return (await gitText(['cat-file', 'commit', oid], { cwd: repo })).replace(/> \d+ ([+-]\d{4})$/gm, '> T $1')
}

/** The writers' files left in the temp dir and in the repository's git dir. */
const leftovers = async (): Promise<string[]> => [
  ...(await readdir(tmpdir())).filter(n => n.startsWith('meshwork-commit-')),
  ...(await readdir(join(repo, '.git'))).filter(n => n.startsWith('meshwork-commit-')).map(n => `.git/${n}`)
]

describe('CommitWriter', () => {
  it('writes the commit commit-tree writes (but for its time), several through one process, and cleans up', async () => {
    const before = await leftovers()
    const message = 'Merge meshwork/t: task\n\nMeshwork-Task: t\n'
    const byGit = await gitText(['commit-tree', tree, '-p', main, '-p', head, '-F', '-'], { cwd: repo, input: message, env: commitEnv() })
    const writer = new CommitWriter(repo)
    try {
      const first = await writer.write(tree, [main, head], message)
      expect(first).toMatch(/^[0-9a-f]{40}$/)
      expect(await textOf(first as string)).toBe(await textOf(byGit))
      // stacked: the next one on top of the first
      const second = await writer.write(tree, [first as string, head], 'second\n')
      expect(await gitText(['rev-parse', `${second as string}^1`], { cwd: repo })).toBe(first)
      expect(await gitText(['log', '-1', '--format=%B', second as string], { cwd: repo })).toBe('second')
    } finally {
      await writer.close()
    }
    expect((await git(['fsck', '--strict', '--no-dangling'], { cwd: repo, allowFail: true })).code).toBe(0)
    expect(await leftovers()).toEqual(before)
  })

  it('keeps its file in the repository\'s git dir, and removes one a killed node\'s writer left there', async () => {
    // a process that has exited: its writer's file is a leftover
    const dead = spawnSync('true').pid as number
    const left = join(repo, '.git', `meshwork-commit-${dead}-0badf00d`)
    await writeFile(left, 'tree 0000\n')
    const mine = join(repo, '.git', `meshwork-commit-${process.pid}-0000beef`)
    await writeFile(mine, 'this process\'s own\n')
    const writer = new CommitWriter(repo)
    try {
      expect(await writer.write(tree, [main, head], 'in the git dir\n')).toMatch(/^[0-9a-f]{40}$/)
      const files = await leftovers()
      expect(files).not.toContain(`.git/meshwork-commit-${dead}-0badf00d`)
      // this process's other file stays (another writer of this process may be using it), and the writer's own is there
      expect(files).toContain(`.git/meshwork-commit-${process.pid}-0000beef`)
      expect(files.filter(f => f.startsWith(`.git/meshwork-commit-${process.pid}-`))).toHaveLength(2)
    } finally {
      await writer.close()
      await rm(mine, { force: true })
    }
    expect((await leftovers()).filter(f => f.startsWith('.git/'))).toEqual([])
  })

  it('a malformed commit git refuses ends the writer: that and every later write answer null, for commit-tree to make', async () => {
    const writer = new CommitWriter(repo)
    try {
      expect(await writer.write('not-a-tree', [main], 'a malformed commit\n')).toBeNull()
      expect(await writer.write(tree, [main, head], 'fine, but too late\n')).toBeNull()
    } finally {
      await writer.close()
    }
  })

  it('leaves signed commits to commit-tree: nothing is written when commit.gpgSign is on', async () => {
    // a repository of its own: what the writer reads of a repository's configuration is kept a while
    const signed = await initRepo(join(dir, 'signed'))
    await commitFiles(signed, { 'a.txt': 'a\n' }, 'base')
    await git(['config', 'commit.gpgSign', 'true'], { cwd: signed })
    const t = await gitText(['rev-parse', 'HEAD^{tree}'], { cwd: signed })
    const writer = new CommitWriter(signed)
    try {
      expect(await writer.write(t, [], 'unsigned\n')).toBeNull()
    } finally {
      await writer.close()
    }
  })
})
