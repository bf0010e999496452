import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { runBatch, type BatchItem, type BatchOutcome } from '../src/git/batch.ts'
import { casBranch } from '../src/git/merge.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import type { TaskId } from '../src/crdt/schema.ts'

let dir = ''
let repo = ''
let base = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-batch-'))
  repo = await initRepo(join(dir, 'repo'))
  base = await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

/** A task branch `meshwork/<id>` from `from` that writes `files`. */
async function task (id: string, files: Record<string, string>, from = base): Promise<BatchItem> {
  await git(['checkout', '-q', '-B', `meshwork/${id}`, from], { cwd: repo })
  const head = await commitFiles(repo, files, id)
  await git(['checkout', '-q', 'main'], { cwd: repo })
  return { taskId: id as TaskId, title: id, head }
}

/** A `land` that moves refs/heads/main by compare-and-swap and records each call. */
function lander (calls: Array<{ prev: string, tip: string, ids: string[] }>, refuse = false) {
  return async (prev: string, tip: string, merged: ReadonlyArray<{ taskId: string, commit: string }>): Promise<boolean> => {
    calls.push({ prev, tip, ids: merged.map(m => m.taskId) })
    if (refuse) return false
    // main is not checked out in the test repo's sense: move the ref only
    return await casBranch(repo, 'landed', tip, prev === base ? null : prev)
  }
}

async function firstParentTasks (rev: string): Promise<string[]> {
  const out = await gitText(['log', '--first-parent', '--format=%(trailers:key=Meshwork-Task,valueonly)', `${base}..${rev}`], { cwd: repo })
  return out.split('\n').map(l => l.trim()).filter(l => l !== '').reverse()
}

const kinds = (os: BatchOutcome[]): string[] => os.map(o => `${o.taskId}:${o.kind}`)

describe('runBatch on real git', () => {
  it('no verify: stacks every merge and lands them in one step, one merge commit per task in queue order', async () => {
    const items = [await task('a', { 'a.txt': 'a\n' }), await task('b', { 'b.txt': 'b\n' }), await task('c', { 'c.txt': 'c\n' })]
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const r = await runBatch({ repo, worktreesDir: dir, base, items, land: lander(calls) })
    expect(kinds(r.outcomes)).toEqual(['a:merged', 'b:merged', 'c:merged'])
    expect(calls).toEqual([{ prev: base, tip: r.main, ids: ['a', 'b', 'c'] }])
    expect(r.verifyRuns).toBe(0)
    expect(await firstParentTasks(r.main)).toEqual(['a', 'b', 'c'])
    // each merge commit: first parent the previous main, second the task head
    for (const [i, o] of r.outcomes.entries()) {
      if (o.kind !== 'merged') throw new Error('not merged')
      expect(await gitText(['rev-parse', `${o.commit}^2`], { cwd: repo })).toBe(items[i]!.head)
    }
    expect(await gitText(['ls-tree', '--name-only', r.main], { cwd: repo })).toBe('README.md\na.txt\nb.txt\nc.txt')
  })

  it('tasks that became ready while the batch was stacked go on top and land in the same step, verified with it', async () => {
    const items = [await task('a', { 'a.txt': 'a\n' }), await task('b', { 'b.txt': 'b\n' })]
    const late = [[await task('c', { 'c.txt': 'c\n' })], [await task('d', { 'd.txt': 'd\n' }), await task('e', { 'e.txt': 'e\n' })]]
    const asked: number[] = []
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const r = await runBatch({
      repo,
      worktreesDir: dir,
      base,
      items,
      verify: 'test -e a.txt -a -e b.txt -a -e c.txt -a -e d.txt -a -e e.txt',
      // asked once the stack is built, again after each extension, until it gives nothing
      more: async () => { asked.push(asked.length); return late.shift() ?? [] },
      land: lander(calls)
    })
    expect(asked).toEqual([0, 1, 2])
    expect(kinds(r.outcomes)).toEqual(['a:merged', 'b:merged', 'c:merged', 'd:merged', 'e:merged'])
    expect(r.verifyRuns).toBe(1)
    expect(calls).toEqual([{ prev: base, tip: r.main, ids: ['a', 'b', 'c', 'd', 'e'] }])
    expect(await firstParentTasks(r.main)).toEqual(['a', 'b', 'c', 'd', 'e'])
  })

  it('a passing verify runs once for the whole batch', async () => {
    const items = [await task('a', { 'a.txt': 'a\n' }), await task('b', { 'b.txt': 'b\n' }), await task('c', { 'c.txt': 'c\n' }), await task('d', { 'd.txt': 'd\n' })]
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    // the check sees the whole stack: every file of the batch is in the worktree it runs in
    const r = await runBatch({ repo, worktreesDir: dir, base, items, verify: 'test -e a.txt -a -e b.txt -a -e c.txt -a -e d.txt', land: lander(calls) })
    expect(kinds(r.outcomes)).toEqual(['a:merged', 'b:merged', 'c:merged', 'd:merged'])
    expect(r.verifyRuns).toBe(1)
    expect(calls).toHaveLength(1)
  })

  it('a failing verify bisects: the merges before the culprit land, the culprit fails with the output, the rest are deferred', async () => {
    const items: BatchItem[] = []
    for (const id of ['a', 'b', 'c', 'd', 'e', 'f']) items.push(await task(id, { [`${id}.txt`]: `${id}\n` }))
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const seen: number[] = []
    const r = await runBatch({ repo, worktreesDir: dir, base, items, verify: 'if test -e d.txt; then echo "d.txt breaks the build"; exit 1; fi', land: lander(calls), onVerify: (_c, _ok, _ms, size) => { seen.push(size) } })
    expect(kinds(r.outcomes)).toEqual(['a:merged', 'b:merged', 'c:merged', 'd:verify-failed', 'e:deferred', 'f:deferred'])
    const failed = r.outcomes[3]
    expect(failed?.kind === 'verify-failed' ? failed.output : '').toBe('d.txt breaks the build')
    // top of the stack (6 merges), then a, b, c (3), then d alone on top of them: 3 runs instead of 4 one by one
    expect(r.verifyRuns).toBe(3)
    expect(seen).toEqual([6, 3, 1])
    expect(calls.map(c => c.ids)).toEqual([['a', 'b', 'c']])
    expect(await firstParentTasks(r.main)).toEqual(['a', 'b', 'c'])
    // the deferred ones go again on the new main, without the culprit
    const again = await runBatch({ repo, worktreesDir: dir, base: r.main, items: items.slice(4), verify: 'test ! -e d.txt', land: lander(calls) })
    expect(kinds(again.outcomes)).toEqual(['e:merged', 'f:merged'])
    expect(await firstParentTasks(again.main)).toEqual(['a', 'b', 'c', 'e', 'f'])
  })

  it('the culprit first: nothing lands and main is unchanged', async () => {
    const items = [await task('bad', { 'bad.txt': 'x\n' }), await task('b', { 'b.txt': 'b\n' }), await task('c', { 'c.txt': 'c\n' })]
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const r = await runBatch({ repo, worktreesDir: dir, base, items, verify: 'test ! -e bad.txt', land: lander(calls) })
    expect(kinds(r.outcomes)).toEqual(['bad:verify-failed', 'b:deferred', 'c:deferred'])
    expect(calls).toEqual([])
    expect(r.main).toBe(base)
  })

  it('a failure that only two merges together cause is charged to the later one', async () => {
    const items = [await task('x', { 'x.txt': 'x\n' }), await task('y', { 'y.txt': 'y\n' })]
    const r = await runBatch({ repo, worktreesDir: dir, base, items, verify: 'if test -e x.txt -a -e y.txt; then exit 1; fi', land: lander([]) })
    expect(kinds(r.outcomes)).toEqual(['x:merged', 'y:verify-failed'])
  })

  it('a conflict with main is reported with its hunks; one only with an earlier item of the batch is deferred; the others still merge', async () => {
    const main2 = await commitFiles(repo, { 'shared.txt': 'main\n' }, 'main writes shared')
    const items = [
      await task('clash', { 'shared.txt': 'clash\n' }),
      await task('first', { 'twice.txt': 'first\n' }, main2),
      await task('second', { 'twice.txt': 'second\n' }, main2),
      await task('ok', { 'ok.txt': 'ok\n' }, main2)
    ]
    const r = await runBatch({ repo, worktreesDir: dir, base: main2, items, verify: 'true', land: async () => true })
    expect(kinds(r.outcomes)).toEqual(['clash:conflict', 'first:merged', 'second:deferred', 'ok:merged'])
    const c = r.outcomes[0]
    expect(c?.kind === 'conflict' ? c.hunks : []).toEqual([{ file: 'shared.txt', line: 1, before: '', ours: 'main\n', theirs: 'clash\n', after: '' }])
    // main's side came from a commit of no task: no task is named for it
    expect(c?.kind === 'conflict' ? c.oursFrom : null).toEqual({})
    expect(await firstParentTasks(r.main)).toEqual(['first', 'ok'])
  })

  it('a task whose head commit is not in the repository is reported missing, not a conflict of no files; the others merge', async () => {
    const items = [await task('a', { 'a.txt': 'a\n' }), await task('b', { 'b.txt': 'b\n' })]
    // b's commit is gone from the repository (a gc deleted the pack it came in), its branch still naming it
    const gone = '0123456789abcdef0123456789abcdef01234567'
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const r = await runBatch({ repo, worktreesDir: dir, base, items: [items[0]!, { ...items[1]!, head: gone }, await task('c', { 'c.txt': 'c\n' })], land: lander(calls) })
    expect(kinds(r.outcomes)).toEqual(['a:merged', 'b:missing', 'c:merged'])
    expect(r.outcomes[1]).toEqual({ kind: 'missing', taskId: 'b', head: gone })
    expect(await firstParentTasks(r.main)).toEqual(['a', 'c'])
  })

  it('a conflict names, for each file, the task whose merge last changed it on main since the task forked', async () => {
    // before blue forks, early changes color.txt: not what blue conflicts with
    const e = await runBatch({ repo, worktreesDir: dir, base, items: [await task('early', { 'color.txt': 'early\n' })], land: async () => true })
    const fork = e.main
    const blue = await task('blue', { 'color.txt': 'blue\n', 'size.txt': 'blue\n', 'note.txt': 'blue\n' }, fork)
    // after: red writes color.txt, big size.txt, late another file; then crimson writes color.txt again
    const a = await runBatch({ repo, worktreesDir: dir, base: fork, items: [await task('red', { 'color.txt': 'red\n' }, fork), await task('big', { 'size.txt': 'big\n' }, fork), await task('late', { 'other.txt': 'late\n' }, fork)], land: async () => true })
    expect(kinds(a.outcomes)).toEqual(['red:merged', 'big:merged', 'late:merged'])
    const b = await runBatch({ repo, worktreesDir: dir, base: a.main, items: [await task('crimson', { 'color.txt': 'crimson\n' }, a.main)], land: async () => true })
    expect(kinds(b.outcomes)).toEqual(['crimson:merged'])
    // and a human commits note.txt straight onto main: no task to name
    await git(['checkout', '-q', '-B', 'main', b.main], { cwd: repo })
    const main = await commitFiles(repo, { 'note.txt': 'human\n' }, 'a human edits note.txt')
    const r = await runBatch({ repo, worktreesDir: dir, base: main, items: [blue], land: async () => true })
    const c = r.outcomes[0]
    if (c?.kind !== 'conflict') throw new Error(`expected a conflict, got ${JSON.stringify(c)}`)
    expect([...c.files].sort()).toEqual(['color.txt', 'note.txt', 'size.txt'])
    expect(c.oursFrom).toEqual({ 'color.txt': 'crimson', 'size.txt': 'big' })
  })

  it('when main cannot be advanced (leadership or main changed), nothing is reported merged', async () => {
    const items = [await task('a', { 'a.txt': 'a\n' }), await task('b', { 'b.txt': 'b\n' })]
    const calls: Array<{ prev: string, tip: string, ids: string[] }> = []
    const r = await runBatch({ repo, worktreesDir: dir, base, items, verify: 'true', land: lander(calls, true) })
    expect(kinds(r.outcomes)).toEqual(['a:deferred', 'b:deferred'])
    expect(r.main).toBe(base)
    expect(calls).toHaveLength(1)
  })
})
