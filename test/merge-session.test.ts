import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { tryMerge } from '../src/git/merge.ts'
import { BatchProcesses, MergeTreeSession, mergeSessionsOn, resetMergeSessions } from '../src/git/merge-session.ts'
import { runBatch, type BatchItem } from '../src/git/batch.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { waitFor } from '../src/util/wait.ts'
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

  it('a session whose git dies (a commit it cannot find) ends; sessions stay on, and the next one merges', async () => {
    const head = await branch('y', { 'y.txt': 'y\n' })
    const session = new MergeTreeSession(repo)
    expect(await session.merge(base, '0123456789012345678901234567890123456789')).toBeNull()
    await session.close()
    expect(mergeSessionsOn()).toBe(true)
    const next = new MergeTreeSession(repo)
    try {
      expect(await next.merge(base, head)).toBe((await tryMerge(repo, base, head)).tree)
    } finally {
      await next.close()
    }
  })

  it('sessions whose git dies before any answer, three in a row (a git without --stdin dies so on the option): sessions are off', async () => {
    // not a repository: each session's git exits at once, having said nothing on stdout
    const nowhere = join(dir, 'not-a-repo')
    await mkdir(nowhere)
    for (let i = 0; i < 3; i++) {
      expect(mergeSessionsOn()).toBe(true)
      const s = new MergeTreeSession(nowhere)
      expect(await s.merge(base, base)).toBeNull()
      await s.close()
    }
    expect(mergeSessionsOn()).toBe(false)
  })

  it('a session started before a branch arrived in a pack of its own merges it (git looks for new packs)', async () => {
    const first = await branch('first', { 'first.txt': '1\n' })
    const session = new MergeTreeSession(repo)
    try {
      const t1 = await session.merge(base, first)
      expect(t1).not.toBeNull()
      const tip = await commitOf(t1 as string, base, first)
      // another clone makes a branch; it is fetched as a pack (no loose objects)
      const other = join(dir, 'other')
      await git(['clone', '-q', repo, other], { cwd: dir })
      await commitFiles(other, { 'late.txt': 'late\n' }, 'late')
      await git(['-c', 'fetch.unpackLimit=1', 'fetch', '-q', other, 'HEAD:refs/heads/late'], { cwd: repo })
      const late = await gitText(['rev-parse', 'refs/heads/late'], { cwd: repo })
      const t2 = await session.merge(tip, late)
      expect(t2).toBe((await tryMerge(repo, tip, late)).tree)
    } finally {
      await session.close()
    }
  })

  it('a leader\'s batches share one session and writer, which end after a while without a batch', async () => {
    const processes = new BatchProcesses(repo, 200)
    const land = async (): Promise<boolean> => true
    const one = { taskId: 'a' as TaskId, title: 'a', head: await branch('meshwork/a', { 'a.txt': 'a\n' }) }
    const two = { taskId: 'b' as TaskId, title: 'b', head: await branch('meshwork/b', { 'b.txt': 'b\n' }) }
    try {
      const r1 = await runBatch({ repo, worktreesDir: dir, base, items: [one], land, processes })
      const taken = processes.take()
      processes.release()
      const r2 = await runBatch({ repo, worktreesDir: dir, base: r1.main, items: [two], land, processes })
      expect(r2.outcomes.map(o => o.kind)).toEqual(['merged'])
      // both batches' merges went through the same session
      expect(taken.merges.merges).toBe(2)
      expect(await gitText(['ls-tree', '--name-only', r2.main], { cwd: repo })).toBe('README.md\na.txt\nb.txt\nshared.txt')
      // each merge commit: main first, the task second, the task trailer (as commit-tree writes it)
      expect(await gitText(['rev-list', '--parents', '-n', '1', r2.main], { cwd: repo })).toBe(`${r2.main} ${r1.main} ${two.head}`)
      expect(await gitText(['log', '-1', '--format=%(trailers:key=Meshwork-Task,valueonly)', r1.main], { cwd: repo })).toBe('a')
      // idle: ended, and the next batch gets new ones
      await waitFor(() => !taken.merges.usable && !taken.writer.usable, { timeoutMs: 10_000, message: 'the idle processes were never ended' })
      const next = processes.take()
      expect(next.merges).not.toBe(taken.merges)
      expect(next.merges.usable).toBe(true)
    } finally {
      await processes.close()
    }
  })
})
