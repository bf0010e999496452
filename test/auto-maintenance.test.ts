/**
 * A fetch's automatic maintenance: git's gc runs again after it raced a
 * worktree being added (its `gc.log` would keep automatic gc off for a day
 * while every fetch adds a pack), other complaints stay, and fetches in a row
 * start at most one maintenance per `AUTO_MAINTENANCE_GAP_MS`. A fetched pack
 * is kept from a gc until the ref that reaches it is set. Real git.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './helpers/mesh.ts'
import { initRepo } from './helpers/git.ts'
import { git, inWorktreeQueue, objectWritersWaiting } from '../src/git/git.ts'
import { waitFor } from '../src/util/wait.ts'
import { autoMaintenance, clearRacedGcLog, keepPack, KEEP_NOTE, removeStaleTransferTemps } from '../src/git/transfer/quarantine.ts'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

const RACED = 'fatal: bad object worktrees/l04-t018/HEAD\nfatal: failed to run repack\n'

/**
 * Makes git's pre-auto-gc hook of `repo` hold each gc until the test lets it
 * go: the hook creates `gc-started` in `repo` and waits for the file whose
 * path this returns.
 */
async function holdGc (repo: string): Promise<string> {
  const started = join(repo, 'gc-started')
  const release = join(repo, 'gc-release')
  const hook = join(repo, '.git', 'hooks', 'pre-auto-gc')
  await writeFile(hook, `#!/bin/sh\ntouch '${started}'\nwhile [ ! -f '${release}' ]; do sleep 0.05; done\nexit 0\n`)
  await chmod(hook, 0o755)
  return release
}

/** A repository with `n` packs of one object each. */
async function repoWithPacks (name: string, n: number): Promise<{ repo: string, packDir: string }> {
  const dir = await tempDir('meshwork-maint-')
  dirs.push(dir)
  const repo = await initRepo(join(dir, name))
  await addPacks(repo, n)
  return { repo, packDir: join(repo, '.git', 'objects', 'pack') }
}

async function addPacks (repo: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    // a pack of one new object, as a fetch adds one (plumbing: no automatic gc of its own)
    const blob = (await git(['hash-object', '-w', '--stdin'], { cwd: repo, input: `${Date.now()}-${i}-${Math.random()}\n` })).stdout.toString().trim()
    await git(['pack-objects', '-q', join('.git', 'objects', 'pack', 'pack')], { cwd: repo, input: `${blob}\n` })
  }
}

async function packCount (packDir: string): Promise<number> {
  return (await readdir(packDir)).filter(f => f.endsWith('.idx')).length
}

describe('a fetch\'s automatic maintenance', { timeout: 120_000 }, () => {
  it('clears a gc.log of the worktree race so gc runs, and starts no second maintenance within the gap', async () => {
    const { repo, packDir } = await repoWithPacks('raced', 52)
    await writeFile(join(repo, '.git', 'gc.log'), RACED)
    // git itself declines while the log is there (its gc detaches, as by default)
    const declined = await git(['gc', '--auto'], { cwd: repo })
    expect(declined.stderr.toString()).toContain('bad object worktrees/l04-t018/HEAD')
    expect(await packCount(packDir)).toBeGreaterThan(50)
    await autoMaintenance(repo, packDir)
    expect(existsSync(join(repo, '.git', 'gc.log'))).toBe(false)
    let packs = -1
    await waitFor(async () => { packs = await packCount(packDir); return packs <= 2 && !existsSync(join(repo, '.git', 'gc.pid')) }, { timeoutMs: 60_000, message: () => `git's detached gc did not pack the repository: ${packs} packs` })
    // packs pile up again at once: the next fetch starts no maintenance until the gap has passed (gc in
    // the foreground now, so one started would have packed them before the call returns)
    await git(['config', 'gc.autoDetach', 'false'], { cwd: repo })
    await addPacks(repo, 52)
    await autoMaintenance(repo, packDir)
    expect(await packCount(packDir)).toBeGreaterThan(50)
    // another repository has a gap of its own
    const other = await repoWithPacks('other-gap', 52)
    await git(['config', 'gc.autoDetach', 'false'], { cwd: other.repo })
    await autoMaintenance(other.repo, other.packDir)
    expect(await packCount(other.packDir)).toBeLessThanOrEqual(2)
  })

  it('runs its gc in the foreground, one at a time with worktree commands: nothing is added beside a gc that prunes worktrees', async () => {
    const { repo, packDir } = await repoWithPacks('turns', 52)
    const release = await holdGc(repo)
    const maintained = autoMaintenance(repo, packDir)
    await waitFor(() => existsSync(join(repo, 'gc-started')), { timeoutMs: 30_000, message: 'the maintenance run never reached gc' })
    let ran = false
    const queued = inWorktreeQueue(repo, async () => { ran = true })
    // a free queue runs it at once (before the next turn of the event loop)
    await new Promise(resolve => setImmediate(resolve))
    expect(ran, 'a worktree command ran beside the gc').toBe(false)
    await writeFile(release, '')
    await maintained
    await queued
    expect(ran).toBe(true)
    // the gc ran to its end before the call returned (in the foreground)
    expect(await packCount(packDir)).toBeLessThanOrEqual(2)
  })

  it('writes no object beside its gc (whose repack removes the object directories it empties): a task commit waits for the gc', async () => {
    const { repo, packDir } = await repoWithPacks('writers', 52)
    const release = await holdGc(repo)
    const order: string[] = []
    const maintained = autoMaintenance(repo, packDir).then(() => order.push('gc'))
    await waitFor(() => existsSync(join(repo, 'gc-started')), { timeoutMs: 30_000, message: 'the maintenance run never reached gc' })
    await writeFile(join(repo, 'work.txt'), 'the agent\'s work\n')
    const added = git(['add', '-A'], { cwd: repo }).then(() => order.push('add'))
    const hashed = git(['hash-object', '-w', '--stdin'], { cwd: repo, input: 'an object\n' }).then(() => order.push('hash-object'))
    // a read goes on beside the gc
    expect((await git(['rev-parse', '--git-dir'], { cwd: repo })).code).toBe(0)
    await waitFor(() => objectWritersWaiting() === 2, { timeoutMs: 30_000, message: `the writers did not wait for the gc (waiting: ${objectWritersWaiting()}, done: ${order.join(', ')})` })
    await writeFile(release, '')
    await Promise.all([maintained, added, hashed])
    expect(order[0]).toBe('gc')
    expect(order.slice(1).sort()).toEqual(['add', 'hash-object'])
    expect((await git(['diff', '--cached', '--name-only'], { cwd: repo })).stdout.toString()).toContain('work.txt')
  })

  it('keeps a fetched pack from a repack until its ref is set, and removes only its own stale keep files', async () => {
    const { repo, packDir } = await repoWithPacks('keep', 3)
    /** A pack of one new object, made outside `objects/pack` as a fetch's quarantine holds it; the loose object removed. */
    const fetchedPack = async (name: string): Promise<{ blob: string, hash: string, dir: string }> => {
      const dir = join(repo, '.git', `quarantine-${name}`)
      await mkdir(dir)
      const blob = (await git(['hash-object', '-w', '--stdin'], { cwd: repo, input: `${name} ${Math.random()}\n` })).stdout.toString().trim()
      const hash = (await git(['pack-objects', '-q', join(dir, 'pack')], { cwd: repo, input: `${blob}\n` })).stdout.toString().trim()
      await rm(join(repo, '.git', 'objects', blob.slice(0, 2), blob.slice(2)))
      expect((await git(['cat-file', '-e', blob], { cwd: repo, allowFail: true })).code).not.toBe(0)
      return { blob, hash, dir }
    }
    /** The fetch's move, stopped where a gc found it: the .pack in, its .idx not yet, no ref. */
    const halfMoved = async (p: { hash: string, dir: string }): Promise<void> => {
      await rename(join(p.dir, `pack-${p.hash}.pack`), join(packDir, `pack-${p.hash}.pack`))
    }
    const idxIn = async (p: { hash: string, dir: string }): Promise<void> => {
      await rename(join(p.dir, `pack-${p.hash}.idx`), join(packDir, `pack-${p.hash}.idx`))
    }

    // unkept, a repack at that point deletes the pack: the object is lost (what a leader met)
    const lost = await fetchedPack('lost')
    await halfMoved(lost)
    await git(['repack', '-a', '-d', '-q'], { cwd: repo })
    expect(existsSync(join(packDir, `pack-${lost.hash}.pack`))).toBe(false)

    // kept, the same repack leaves it, and the object is there once the .idx is in
    const kept = await fetchedPack('kept')
    const unkeep = await keepPack(packDir, kept.hash)
    await halfMoved(kept)
    await git(['repack', '-a', '-d', '-q'], { cwd: repo })
    await idxIn(kept)
    // and a gc that prunes what no ref reaches at once (gc.pruneExpire=now) leaves it too
    await git(['-c', 'gc.pruneExpire=now', 'gc', '-q'], { cwd: repo })
    expect((await git(['cat-file', '-e', kept.blob], { cwd: repo, allowFail: true })).code).toBe(0)
    await git(['update-ref', 'refs/heads/kept', (await git(['commit-tree', (await git(['mktree'], { cwd: repo, input: `100644 blob ${kept.blob}\tkept.txt\n` })).stdout.toString().trim(), '-m', 'kept'], { cwd: repo })).stdout.toString().trim()], { cwd: repo })
    await unkeep()
    expect(existsSync(join(packDir, `pack-${kept.hash}.keep`))).toBe(false)
    // reached by a ref now, the object survives the next gc without the keep
    await git(['-c', 'gc.pruneExpire=now', 'gc', '-q'], { cwd: repo })
    expect((await git(['cat-file', '-e', kept.blob], { cwd: repo, allowFail: true })).code).toBe(0)

    // a keep file a crashed fetch left goes at the next start; a keep of anyone else's stays
    const stale = await fetchedPack('stale')
    await keepPack(packDir, stale.hash)
    await writeFile(join(packDir, 'pack-0123456789abcdef0123456789abcdef01234567.keep'), 'kept by a person\n')
    expect(await readFile(join(packDir, `pack-${stale.hash}.keep`), 'utf8')).toMatch(new RegExp(`^${KEEP_NOTE} `))
    expect(await removeStaleTransferTemps(repo)).toBe(1)
    expect(existsSync(join(packDir, `pack-${stale.hash}.keep`))).toBe(false)
    expect(existsSync(join(packDir, 'pack-0123456789abcdef0123456789abcdef01234567.keep'))).toBe(true)
  })

  it('leaves any other gc.log for a person to read', async () => {
    const { repo } = await repoWithPacks('other', 0)
    const other = 'warning: There are too many unreachable loose objects; run \'git prune\' to remove them.\n'
    await writeFile(join(repo, '.git', 'gc.log'), other)
    expect(await clearRacedGcLog(join(repo, '.git'))).toBe(false)
    expect(existsSync(join(repo, '.git', 'gc.log'))).toBe(true)
    // the race's lines with another complaint: kept too
    await writeFile(join(repo, '.git', 'gc.log'), RACED + other)
    expect(await clearRacedGcLog(join(repo, '.git'))).toBe(false)
    await writeFile(join(repo, '.git', 'gc.log'), RACED)
    expect(await clearRacedGcLog(join(repo, '.git'))).toBe(true)
    expect(existsSync(join(repo, '.git', 'gc.log'))).toBe(false)
    expect(await clearRacedGcLog(join(repo, '.git'))).toBe(false)
  })
})
