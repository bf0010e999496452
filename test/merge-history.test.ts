import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import type { TaskId } from '../src/crdt/schema.ts'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { runBatch, type BatchItem } from '../src/git/batch.ts'
import { extendHistory, mainHistory, reconcileMerged, type MainHistory } from '../src/git/history.ts'
import { commitFiles, initRepo } from './helpers/git.ts'

type T = { id: string, state: 'done' | 'merged' | 'conflict' | 'failed' | 'ready', mergeCommit: string | null, head: string | null }

const history = (commits: string[], merges: Record<string, Array<{ commit: string, head: string }>>): MainHistory => ({ commits: new Set(commits), merges: new Map(Object.entries(merges)) })

describe('reconcileMerged (pure)', () => {
  it('a task marked merged whose merge commit is on main is left alone', () => {
    const h = history(['m0', 'm1'], { a: [{ commit: 'm1', head: 'ha' }] })
    expect(reconcileMerged([{ id: 'a', state: 'merged', mergeCommit: 'm1', head: 'ha' }], h)).toEqual({ requeue: [], record: [] })
  })

  it('merged on the losing side of a partition: back to done (branch held) or ready (no branch)', () => {
    const h = history(['m0', 'm1'], { a: [{ commit: 'm1', head: 'ha' }] })
    const tasks: T[] = [
      { id: 'b', state: 'merged', mergeCommit: 'lost1', head: 'hb' },
      { id: 'c', state: 'merged', mergeCommit: 'lost2', head: null }
    ]
    expect(reconcileMerged(tasks, h)).toEqual({ requeue: [{ id: 'b', to: 'done', lost: 'lost1' }, { id: 'c', to: 'ready', lost: 'lost2' }], record: [] })
  })

  it('on main but not marked merged (or marked with a commit main lost): recorded, so it is never merged twice', () => {
    const h = history(['m0', 'm1', 'm2'], { a: [{ commit: 'm1', head: 'ha' }], b: [{ commit: 'm2', head: 'hb' }] })
    const tasks: T[] = [
      { id: 'a', state: 'done', mergeCommit: null, head: 'ha' },
      { id: 'b', state: 'merged', mergeCommit: 'other-side', head: 'hb' }
    ]
    expect(reconcileMerged(tasks, h)).toEqual({ requeue: [], record: [{ id: 'a', commit: 'm1' }, { id: 'b', commit: 'm2' }] })
  })

  it('merged on main, then shown done or ready with another run\'s head (the other side of a partition ran it meanwhile): recorded merged, never merged twice', () => {
    const h = history(['m0', 'm1', 'm2'], { a: [{ commit: 'm1', head: 'h-majority' }], b: [{ commit: 'm2', head: 'hb' }] })
    const tasks: T[] = [
      { id: 'a', state: 'done', mergeCommit: 'm1', head: 'h-minority' },
      { id: 'b', state: 'ready', mergeCommit: 'm2', head: null }
    ]
    expect(reconcileMerged(tasks, h)).toEqual({ requeue: [], record: [{ id: 'a', commit: 'm1' }, { id: 'b', commit: 'm2' }] })
  })

  it('an old merge of another task with the same id (another head) does not count', () => {
    const h = history(['m0', 'old'], { a: [{ commit: 'old', head: 'h-old' }] })
    expect(reconcileMerged([{ id: 'a', state: 'done', mergeCommit: null, head: 'h-new' }], h)).toEqual({ requeue: [], record: [] })
    expect(reconcileMerged([{ id: 'a', state: 'merged', mergeCommit: 'gone', head: 'h-new' }], h)).toEqual({ requeue: [{ id: 'a', to: 'done', lost: 'gone' }], record: [] })
  })
})

describe('re-deriving merged state from real git history', () => {
  let dir = ''
  let repo = ''
  let base = ''
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshwork-history-'))
    repo = await initRepo(join(dir, 'repo'))
    base = await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
  })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  async function task (id: string): Promise<BatchItem> {
    await git(['checkout', '-q', '-B', `meshwork/${id}`, base], { cwd: repo })
    const head = await commitFiles(repo, { [`${id}.txt`]: `${id}\n` }, id)
    await git(['checkout', '-q', 'main'], { cwd: repo })
    return { taskId: id as TaskId, title: id, head }
  }

  it('two leaders merged on the two sides of a partition: after the heal the losing side\'s tasks are re-queued, merged again on the kept main, each exactly once', async () => {
    const items = new Map<string, BatchItem>()
    for (const id of ['a', 'b', 'c', 'd']) items.set(id, await task(id))
    const it = (id: string): BatchItem => items.get(id) as BatchItem
    const land = async (): Promise<boolean> => true
    // side 1's leader merges a and b; side 2's leader, from the same main, merges c and d
    const side1 = await runBatch({ repo, worktreesDir: dir, base, items: [it('a'), it('b')], land })
    const side2 = await runBatch({ repo, worktreesDir: dir, base, items: [it('c'), it('d')], land })
    const commitOf = (r: typeof side1, id: string): string => { const o = r.outcomes.find(x => x.taskId === id); if (o?.kind !== 'merged') throw new Error(`${id} not merged`); return o.commit }
    // after the heal the board kept side 1's main, and every task says merged (each side's writes survive in the CRDT)
    const board: T[] = [
      { id: 'a', state: 'merged', mergeCommit: commitOf(side1, 'a'), head: it('a').head },
      { id: 'b', state: 'merged', mergeCommit: commitOf(side1, 'b'), head: it('b').head },
      { id: 'c', state: 'merged', mergeCommit: commitOf(side2, 'c'), head: it('c').head },
      { id: 'd', state: 'merged', mergeCommit: commitOf(side2, 'd'), head: it('d').head }
    ]
    const h1 = await mainHistory(repo, side1.main)
    expect([...h1.merges.keys()].sort()).toEqual(['a', 'b'])
    const repair = reconcileMerged(board, h1)
    expect(repair).toEqual({ requeue: [{ id: 'c', to: 'done', lost: commitOf(side2, 'c') }, { id: 'd', to: 'done', lost: commitOf(side2, 'd') }], record: [] })
    // the new leader merges the re-queued tasks on the kept main
    const again = await runBatch({ repo, worktreesDir: dir, base: side1.main, items: repair.requeue.map(r => it(r.id)), land })
    const h = await mainHistory(repo, again.main)
    // one linear first-parent history with every task's merge exactly once
    expect([...h.merges.entries()].map(([id, ms]) => [id, ms.length]).sort()).toEqual([['a', 1], ['b', 1], ['c', 1], ['d', 1]])
    const firstParent = (await gitText(['rev-list', '--first-parent', again.main], { cwd: repo })).split('\n')
    expect(firstParent).toHaveLength(5)
    expect(await gitText(['ls-tree', '--name-only', again.main], { cwd: repo })).toBe('README.md\na.txt\nb.txt\nc.txt\nd.txt')
    // and the board re-derived from it agrees with the new commits
    const fixed = board.map(t => ({ ...t, mergeCommit: h.merges.get(t.id)?.[0]?.commit ?? null }))
    expect(reconcileMerged(fixed, h)).toEqual({ requeue: [], record: [] })
  })

  it('extendHistory after a batch lands is what `git log` reads at the new main (the leader does not read it again)', async () => {
    const a = await task('a')
    const b = await task('b')
    const c = await task('c')
    const land = async (): Promise<boolean> => true
    const first = await runBatch({ repo, worktreesDir: dir, base, items: [a], land })
    const known = await mainHistory(repo, first.main)
    const second = await runBatch({ repo, worktreesDir: dir, base: first.main, items: [b, c], land })
    const merged = second.outcomes.map(o => { if (o.kind !== 'merged') throw new Error(`${o.taskId} not merged`); return { taskId: o.taskId, commit: o.commit, head: o.taskId === 'b' ? b.head : c.head } })
    expect(extendHistory(known, merged)).toEqual(await mainHistory(repo, second.main))
  })

  it('reads merges made by `git merge` too (the ours/theirs decisions) and ignores commits without the trailer', async () => {
    const a = await task('a')
    await git(['merge', '--no-ff', '-q', '-m', 'Merge meshwork/a\n\nMeshwork-Task: a', a.head], { cwd: repo })
    await commitFiles(repo, { 'plain.txt': 'x\n' }, 'a plain commit')
    const head = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
    const h = await mainHistory(repo, head)
    expect([...h.merges.keys()]).toEqual(['a'])
    expect(h.merges.get('a')?.[0]?.head).toBe(a.head)
    expect(h.commits.size).toBe(3)
  })
})
