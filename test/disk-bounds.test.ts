/** Disk bounds at node start: leftover run dirs and fetch quarantines go; branches of cancelled and merged-on-main tasks go. */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync } from 'node:fs'
import { mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './helpers/mesh.ts'
import { initRepo, commitFiles, createBranch } from './helpers/git.ts'
import { task, snapshot } from './helpers/tui.ts'
import { git, gitText } from '../src/git/git.ts'
import { PRUNE_MERGED_AFTER_MS, pruneTaskBranches, pruneTranscripts, sweepAtStart } from '../src/node/disk-bounds.ts'
import { KEEP_NOTE } from '../src/git/transfer/quarantine.ts'
import { createLogger } from '../src/util/logger.ts'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })
const silent = createLogger('t', { level: 'silent' })

describe('disk bounds', () => {
  it('sweepAtStart removes every DATA/claude/<run> dir, every meshwork-fetch-* quarantine and a fetch\'s stale keep file, nothing else', async () => {
    const dir = await tempDir('meshwork-sweep-')
    dirs.push(dir)
    const repo = await initRepo(join(dir, 'repo'))
    await commitFiles(repo, { 'a.txt': 'a\n' }, 'initial')
    const data = join(dir, 'data')
    for (const run of ['r1', 'r2']) { await mkdir(join(data, 'claude', run), { recursive: true }); await writeFile(join(data, 'claude', run, 'settings.json'), '{}') }
    await mkdir(join(data, 'transcripts'), { recursive: true })
    await mkdir(join(repo, '.git', 'meshwork-fetch-abc123', 'objects', 'pack'), { recursive: true })
    // a keep file a fetch that crashed left on its pack, and one of somebody else's
    await mkdir(join(repo, '.git', 'objects', 'pack'), { recursive: true })
    await writeFile(join(repo, '.git', 'objects', 'pack', `pack-${'a'.repeat(40)}.keep`), `${KEEP_NOTE} 1234 x\n`)
    await writeFile(join(repo, '.git', 'objects', 'pack', `pack-${'b'.repeat(40)}.keep`), 'mine\n')
    const r = await sweepAtStart(data, repo, silent)
    expect(r).toEqual({ runDirs: 2, transferTemps: 2 })
    expect(existsSync(join(repo, '.git', 'objects', 'pack', `pack-${'a'.repeat(40)}.keep`))).toBe(false)
    expect(existsSync(join(repo, '.git', 'objects', 'pack', `pack-${'b'.repeat(40)}.keep`))).toBe(true)
    expect(existsSync(join(data, 'claude', 'r1'))).toBe(false)
    expect(existsSync(join(repo, '.git', 'meshwork-fetch-abc123'))).toBe(false)
    expect(existsSync(join(data, 'transcripts'))).toBe(true)
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: repo })).toMatch(/^[0-9a-f]{40}$/)
  })

  it('pruneTaskBranches deletes the branches of cancelled tasks and of merged tasks on main (merged a while ago), keeps the rest', async () => {
    const dir = await tempDir('meshwork-prune-')
    dirs.push(dir)
    const repo = await initRepo(join(dir, 'repo'))
    await commitFiles(repo, { 'a.txt': 'a\n' }, 'initial')
    for (const id of ['landed', 'fresh', 'lost', 'dropped', 'busy']) {
      await createBranch(repo, `meshwork/${id}`, 'main')
      await git(['switch', '-q', `meshwork/${id}`], { cwd: repo })
      await commitFiles(repo, { [`${id}.txt`]: `${id}\n` }, id)
      await git(['switch', '-q', 'main'], { cwd: repo })
    }
    for (const id of ['landed', 'fresh']) await git(['merge', '-q', '--no-ff', '-m', `merge ${id}`, `meshwork/${id}`], { cwd: repo, env: { GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } })
    const main = await gitText(['rev-parse', 'main'], { cwd: repo })
    const snap = {
      ...snapshot([
        task('landed', { state: 'merged', mergedAt: Date.now() - PRUNE_MERGED_AFTER_MS }),
        // merged a moment ago: the merge may still be undone (a lost main put back, a partition's losing side), kept
        task('fresh', { state: 'merged', mergedAt: Date.now() - 1000 }),
        // "merged" on the board but not in this main (a healed partition may requeue it): kept
        task('lost', { state: 'merged' }),
        task('dropped', { state: 'cancelled' }),
        task('busy', { state: 'running' })
      ]),
      main: { head: main, leader: null, term: 1 }
    }
    const removed = await pruneTaskBranches(repo, snap, silent)
    expect(removed.sort()).toEqual(['dropped', 'landed'])
    const left = (await gitText(['for-each-ref', '--format=%(refname:strip=2)', 'refs/heads/'], { cwd: repo })).split('\n').sort()
    expect(left).toEqual(['main', 'meshwork/busy', 'meshwork/fresh', 'meshwork/lost'])
  })

  it('pruneTranscripts keeps the newest transcripts within the age limit and deletes the rest', async () => {
    const dir = await tempDir('meshwork-transcripts-')
    dirs.push(dir)
    const t = join(dir, 'transcripts')
    await mkdir(t, { recursive: true })
    const now = Date.now()
    const day = 86_400_000
    // ages in days: 0, 1, 2, 3 and 20
    for (const [i, age] of [0, 1, 2, 3, 20].entries()) {
      const f = join(t, `run${i}.jsonl`)
      await writeFile(f, '{}\n')
      await utimes(f, (now - age * day) / 1000, (now - age * day) / 1000)
    }
    expect(await pruneTranscripts(dir, silent, { now, maxAgeMs: 14 * day, maxFiles: 3 })).toBe(2)
    expect((await readdir(t)).sort()).toEqual(['run0.jsonl', 'run1.jsonl', 'run2.jsonl'])
    // no transcripts dir: nothing to do
    expect(await pruneTranscripts(join(dir, 'none'), silent)).toBe(0)
  })
})
