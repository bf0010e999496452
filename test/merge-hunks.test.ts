import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { tryMerge } from '../src/git/merge.ts'
import { hunksFromMarkers, MAX_HUNKS, MAX_SIDE_BYTES, truncate } from '../src/git/conflict.ts'
import { conflictSchema } from '../src/crdt/schema.ts'
import { commitFiles, createBranch, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-hunks-'))
  repo = await initRepo(join(dir, 'repo'))
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const lines = (n: number, f: (i: number) => string): string => Array.from({ length: n }, (_, i) => f(i + 1) + '\n').join('')

/** base on main, then `task` from base with `taskFiles`, then main with `mainFiles`; returns both heads. */
async function diverge (base: Record<string, string | Uint8Array>, mainChange: (repo: string) => Promise<void>, taskChange: (repo: string) => Promise<void>): Promise<{ main: string, task: string }> {
  await commitFiles(repo, base, 'base')
  await createBranch(repo, 'task')
  await taskChange(repo)
  const task = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
  await git(['checkout', '-q', 'main'], { cwd: repo })
  await mainChange(repo)
  const main = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
  return { main, task }
}

describe('conflict hunks from real merges', () => {
  it('a textual conflict: both sides of each hunk with context and the line in the merged file', async () => {
    const base = lines(20, i => `line ${i}`)
    const { main, task } = await diverge(
      { 'f.txt': base },
      async r => { await commitFiles(r, { 'f.txt': base.replace('line 5\n', 'main five\n').replace('line 15\n', 'main fifteen\nmain extra\n') }, 'main') },
      async r => { await commitFiles(r, { 'f.txt': base.replace('line 5\n', 'task five\n').replace('line 15\n', 'task fifteen\n') }, 'task') }
    )
    const m = await tryMerge(repo, main, task)
    expect(m.kind).toBe('conflict')
    if (m.kind !== 'conflict') return
    expect(m.files).toEqual(['f.txt'])
    expect(m.hunks).toHaveLength(2)
    const [a, b] = m.hunks
    expect(a).toEqual({ file: 'f.txt', line: 5, before: 'line 2\nline 3\nline 4\n', ours: 'main five\n', theirs: 'task five\n', after: 'line 6\nline 7\nline 8\n' })
    expect(b?.ours).toBe('main fifteen\nmain extra\n')
    expect(b?.theirs).toBe('task fifteen\n')
    expect(b?.before).toBe('line 12\nline 13\nline 14\n')
    // line of the second "<<<<<<<" in the marked-up file: 14 lines + the first hunk's 5 lines (3 markers, 2 sides)
    expect(b?.line).toBe(19)
    // what the leader writes validates against the board schema
    expect(() => conflictSchema.parse({ id: 't-1', taskId: 't', files: m.files, hunks: m.hunks, state: 'open', decision: null })).not.toThrow()
  })

  it('rename on main vs edit in the task merges cleanly (the edit follows the rename)', async () => {
    const base = lines(10, i => `row ${i}`)
    const { main, task } = await diverge(
      { 'old.txt': base },
      async r => { await git(['mv', 'old.txt', 'new.txt'], { cwd: r }); await git(['commit', '-qm', 'rename'], { cwd: r }) },
      async r => { await commitFiles(r, { 'old.txt': base.replace('row 3\n', 'row three\n') }, 'edit') }
    )
    const m = await tryMerge(repo, main, task)
    expect(m.kind).toBe('clean')
    const text = await gitText(['cat-file', 'blob', `${m.tree}:new.txt`], { cwd: repo })
    expect(text).toContain('row three')
    expect((await git(['cat-file', '-e', `${m.tree}:old.txt`], { cwd: repo, allowFail: true })).code).not.toBe(0)
  })

  it('rename with an edit on main vs an edit of the same line in the task: the hunk is reported on the new path', async () => {
    const base = lines(10, i => `row ${i}`)
    const { main, task } = await diverge(
      { 'old.txt': base },
      async r => {
        await git(['mv', 'old.txt', 'new.txt'], { cwd: r })
        await commitFiles(r, { 'new.txt': base.replace('row 3\n', 'main three\n') }, 'rename and edit')
      },
      async r => { await commitFiles(r, { 'old.txt': base.replace('row 3\n', 'task three\n') }, 'edit') }
    )
    const m = await tryMerge(repo, main, task)
    expect(m.kind).toBe('conflict')
    if (m.kind !== 'conflict') return
    expect(m.files).toEqual(['new.txt'])
    expect(m.hunks).toEqual([{ file: 'new.txt', line: 3, before: 'row 1\nrow 2\n', ours: 'main three\n', theirs: 'task three\n', after: 'row 4\nrow 5\nrow 6\n' }])
  })

  it('a file deleted on main and edited by the task: one hunk at line 0 saying so, with the task\'s content', async () => {
    const { main, task } = await diverge(
      { 'gone.txt': 'keep\n', 'other.txt': 'x\n' },
      async r => { await git(['rm', '-q', 'gone.txt'], { cwd: r }); await git(['commit', '-qm', 'delete'], { cwd: r }) },
      async r => { await commitFiles(r, { 'gone.txt': 'keep\nedited by the task\n' }, 'edit') }
    )
    const m = await tryMerge(repo, main, task)
    expect(m.kind).toBe('conflict')
    if (m.kind !== 'conflict') return
    expect(m.files).toEqual(['gone.txt'])
    expect(m.hunks).toHaveLength(1)
    const h = m.hunks[0]!
    expect(h.file).toBe('gone.txt')
    expect(h.line).toBe(0)
    expect(h.ours).toBe('[deleted on main]\n')
    expect(h.theirs).toBe('keep\nedited by the task\n')
    expect(h.before).toMatch(/CONFLICT \(modify\/delete\)/)
  })

  it('a file the task deleted while main edited it: the other way round', async () => {
    const { main, task } = await diverge(
      { 'gone.txt': 'keep\n' },
      async r => { await commitFiles(r, { 'gone.txt': 'keep\nedited on main\n' }, 'edit') },
      async r => { await git(['rm', '-q', 'gone.txt'], { cwd: r }); await git(['commit', '-qm', 'delete'], { cwd: r }) }
    )
    const m = await tryMerge(repo, main, task)
    if (m.kind !== 'conflict') throw new Error('expected a conflict')
    expect(m.hunks).toEqual([expect.objectContaining({ file: 'gone.txt', line: 0, ours: 'keep\nedited on main\n', theirs: '[deleted by the task]\n' })])
  })

  it('a binary file changed on both sides: line 0 and a description of each side', async () => {
    const { main, task } = await diverge(
      { 'img.bin': Buffer.from([0, 1, 2, 3]) },
      async r => { await commitFiles(r, { 'img.bin': Buffer.from([0, 9, 9]) }, 'main') },
      async r => { await commitFiles(r, { 'img.bin': Buffer.from([0, 7, 7, 7, 7]) }, 'task') }
    )
    const m = await tryMerge(repo, main, task)
    if (m.kind !== 'conflict') throw new Error('expected a conflict')
    expect(m.hunks).toHaveLength(1)
    expect(m.hunks[0]).toMatchObject({ file: 'img.bin', line: 0 })
    expect(m.hunks[0]!.ours).toMatch(/^\[binary, 3 bytes, blob [0-9a-f]{12}\]/)
    expect(m.hunks[0]!.theirs).toMatch(/^\[binary, 5 bytes, blob [0-9a-f]{12}\]/)
  })

  it('many conflicting hunks are bounded: at most MAX_HUNKS records, the last one saying how many were left out, sides truncated', async () => {
    // 40 conflicting lines with 4 untouched lines between each: 40 hunks, one long enough to be truncated
    const base = lines(200, i => `l${i}`)
    const edit = (who: string): string => base.split('\n').map((l, i) => (i % 5 === 0 && i < 200 ? (i === 0 ? `${who} ${'y'.repeat(5000)}` : `${who} ${l}`) : l)).join('\n')
    const { main, task } = await diverge(
      { 'big.txt': base },
      async r => { await commitFiles(r, { 'big.txt': edit('main') }, 'main') },
      async r => { await commitFiles(r, { 'big.txt': edit('task') }, 'task') }
    )
    const m = await tryMerge(repo, main, task)
    if (m.kind !== 'conflict') throw new Error('expected a conflict')
    expect(m.hunks).toHaveLength(MAX_HUNKS)
    expect(Buffer.byteLength(m.hunks[0]!.ours)).toBeLessThan(MAX_SIDE_BYTES + 100)
    expect(m.hunks[0]!.ours).toMatch(/more bytes not shown/)
    expect(m.hunks.at(-1)!.ours).toMatch(/^\[21 more conflicted hunk\(s\) not shown, in big\.txt\]/)
    expect(JSON.stringify(m.hunks).length).toBeLessThan(100 * 1024)
  })
})

describe('hunksFromMarkers (pure)', () => {
  it('leaves out a diff3 base section; context never reaches into a neighbouring hunk', () => {
    const text = 'a\n<<<<<<< ours\nO1\n||||||| base\nB\n=======\nT1\n>>>>>>> theirs\nb\n<<<<<<< ours\nO2\n=======\nT2\n>>>>>>> theirs\nc\n'
    expect(hunksFromMarkers('f', text)).toEqual([
      { file: 'f', line: 2, before: 'a\n', ours: 'O1\n', theirs: 'T1\n', after: 'b\n' },
      { file: 'f', line: 10, before: 'b\n', ours: 'O2\n', theirs: 'T2\n', after: 'c\n' }
    ])
  })

  it('an unterminated marker is not a hunk; an empty side is an empty string', () => {
    expect(hunksFromMarkers('f', 'x\n<<<<<<< a\ny\n')).toEqual([])
    expect(hunksFromMarkers('f', '<<<<<<< a\n=======\nnew\n>>>>>>> b\n')).toEqual([{ file: 'f', line: 1, before: '', ours: '', theirs: 'new\n', after: '' }])
  })

  it('truncate cuts on a character boundary and says how much is left', () => {
    const t = truncate('é'.repeat(10), 5)
    expect(t.startsWith('éé')).toBe(true)
    expect(t).toMatch(/\[… 16 more bytes not shown\]/)
    expect(truncate('short', 5)).toBe('short')
  })
})
