import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { tryMerge } from '../src/git/merge.ts'
import { MergeTreeSession, mergeSessionsOn, resetMergeSessions } from '../src/git/merge-session.ts'
import { runBatch, type BatchItem } from '../src/git/batch.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import type { TaskId } from '../src/crdt/schema.ts'

let dir = ''
let repo = ''
let base = ''

beforeEach(async () => {
  resetMergeSessions()
  dir = await mkdtemp(join(tmpdir(), 'meshwork-merge-session-'))
  repo = await initRepo(join(dir, 'repo'))
  base = await commitFiles(repo, { 'README.md': 'base\n', 'shared.txt': 'one\n' }, 'base')
})
afterEach(async () => {
  resetMergeSessions()
  await rm(dir, { recursive: true, force: true })
})

/** A branch from `from` that writes `files`; its head. */
async function branch (name: string, files: Record<string, string>, from = base): Promise<string> {
  await git(['checkout', '-q', '-B', name, from], { cwd: repo })
  const head = await commitFiles(repo, files, name)
  await git(['checkout', '-q', 'main'], { cwd: repo })
  return head
}

/** A merge commit of `tree` on `ours` and `theirs`, as the batch makes one. */
async function commitOf (tree: string, ours: string, theirs: string): Promise<string> {
  return await gitText(['commit-tree', tree, '-p', ours, '-p', theirs, '-m', 'merge'], { cwd: repo })
}

describe('a merge-tree session (one git process for a batch\'s clean merges)', () => {
  it('stacks merges one on another with the trees one git process per merge makes', async () => {
    const heads = []
    for (let i = 0; i < 6; i++) heads.push(await branch(`t${i}`, { [`t${i}.txt`]: `${i}\n` }))
    const session = new MergeTreeSession(repo)
    let tip = base
    let oneByOne = base
    try {
      for (const head of heads) {
        const tree = await session.merge(tip, head)
        expect(tree, 'the session answered').not.toBeNull()
        const alone = await tryMerge(repo, oneByOne, head)
        expect(alone.kind).toBe('clean')
        expect(tree).toBe(alone.tree)
        tip = await commitOf(tree as string, tip, head)
        oneByOne = await commitOf(alone.tree, oneByOne, head)
      }
    } finally {
      await session.close()
    }
    expect(mergeSessionsOn()).toBe(true)
    expect(await gitText(['ls-tree', '--name-only', tip], { cwd: repo })).toBe('README.md\nshared.txt\nt0.txt\nt1.txt\nt2.txt\nt3.txt\nt4.txt\nt5.txt')
  })

  it('a conflict ends the session (null, then null for every later merge); tryMerge lists it', async () => {
    const a = await branch('a', { 'shared.txt': 'a\n' })
    const b = await branch('b', { 'shared.txt': 'b\n' })
    const c = await branch('c', { 'c.txt': 'c\n' })
    const session = new MergeTreeSession(repo)
    try {
      const first = await session.merge(base, a)
      expect(first).not.toBeNull()
      const tip = await commitOf(first as string, base, a)
      expect(await session.merge(tip, b)).toBeNull()
      // ended: even a clean merge is left to the caller now
      expect(await session.merge(tip, c)).toBeNull()
      const alone = await tryMerge(repo, tip, b)
      expect(alone.kind).toBe('conflict')
      if (alone.kind === 'conflict') expect(alone.files).toEqual(['shared.txt'])
    } finally {
      await session.close()
    }
    // a conflict says nothing against sessions
    expect(mergeSessionsOn()).toBe(true)
  })

  it('a git whose answers stay in its buffer: the first merge falls back within the bound, and sessions are off from then on', async () => {
    const head = await branch('x', { 'x.txt': 'x\n' })
    const expected = await tryMerge(repo, base, head)
    // no stdbuf library preloaded: a git that does not flush each answer (2.39 here) says nothing until it exits
    const session = new MergeTreeSession(repo, { stdbuf: null, firstAnswerMs: 300 })
    const t0 = Date.now()
    const tree = await session.merge(base, head)
    await session.close()
    if (tree === null) {
      expect(mergeSessionsOn()).toBe(false)
      // the next session is not even started
      const next = new MergeTreeSession(repo)
      expect(await next.merge(base, head)).toBeNull()
      await next.close()
      expect(Date.now() - t0).toBeLessThan(30_000)
    } else {
      // a git that flushes by itself answers without help
      expect(tree).toBe(expected.tree)
      expect(mergeSessionsOn()).toBe(true)
    }
  })

  it('runBatch lands the same main whether the merges went through a session or one process each', async () => {
    const items: BatchItem[] = []
    for (const id of ['a', 'b', 'c', 'd']) items.push({ taskId: id as TaskId, title: id, head: await branch(`meshwork/${id}`, { [`${id}.txt`]: `${id}\n` }) })
    const land = async (): Promise<boolean> => true
    const through = await runBatch({ repo, worktreesDir: dir, base, items, land })
    expect(mergeSessionsOn()).toBe(true)
    // sessions off (what a git that does not flush leads to): one merge-tree per item
    resetMergeSessions()
    const off = new MergeTreeSession(repo, { stdbuf: null, firstAnswerMs: 1 })
    await off.merge(base, items[0]!.head)
    await off.close()
    expect(mergeSessionsOn()).toBe(false)
    const alone = await runBatch({ repo, worktreesDir: dir, base, items, land })
    expect(through.outcomes.map(o => o.kind)).toEqual(['merged', 'merged', 'merged', 'merged'])
    expect(alone.outcomes.map(o => o.kind)).toEqual(['merged', 'merged', 'merged', 'merged'])
    expect(await gitText(['rev-parse', `${through.main}^{tree}`], { cwd: repo })).toBe(await gitText(['rev-parse', `${alone.main}^{tree}`], { cwd: repo }))
  })
})
