/**
 * The local side of a transfer: facts about the repository (looked up once),
 * the quarantine a fetched pack waits in, and moving it into the repository.
 *
 * `repoInfos` is a module-global cache, on purpose: every fetch and every
 * served request needs the repository's git dir, and a `git rev-parse` per
 * transfer was a measurable part of a small fetch. It is keyed by the
 * resolved directory and checked (the git dir must still exist) before use, so
 * a repository removed and made again is looked up afresh.
 */
import { randomUUID } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { git } from '../git.ts'
import { gitCommonDir } from '../repo.ts'

/**
 * Packs in `objects/pack` above which a fetch runs `git maintenance run --auto`
 * (git's own `gc.autoPackLimit` default; git then decides by its config, as
 * after a `git fetch`).
 */
const AUTO_MAINTENANCE_PACKS = 50

/**
 * Least time between two `git maintenance run --auto` started by fetches into
 * one repository: when git declines (its gc is already running detached, or
 * off after a failure), every fetch would start one again. @default 30 s
 */
export const AUTO_MAINTENANCE_GAP_MS = 30_000

/** When a fetch last started maintenance, by pack dir. */
const maintainedAt = new Map<string, number>()

/**
 * What git's gc leaves in `gc.log` when it raced a worktree being added:
 * `git worktree add` writes a null HEAD in the worktree's admin dir before it
 * checks out, and a repack that reads it then fails. While that log is there
 * git runs no automatic gc for a day (`gc.logExpiry`), and packs pile up (a
 * fetch adds one); a node adds worktrees all day, so it meets this race.
 */
const RACED_WORKTREE_GC = /^fatal: bad object worktrees\/[^/\n]+\/HEAD$/
const FAILED_REPACK = 'fatal: failed to run repack'

export interface RepoInfo { commonDir: string, bare: boolean }

const repoInfos = new Map<string, RepoInfo>()

/**
 * The repository's common git dir and whether it is bare, from one `git
 * rev-parse`, remembered per directory while that git dir exists.
 */
export async function repoInfo (repoDir: string, signal?: AbortSignal): Promise<RepoInfo> {
  const key = resolve(repoDir)
  const cached = repoInfos.get(key)
  if (cached !== undefined && await stat(cached.commonDir).then(s => s.isDirectory(), () => false)) return cached
  repoInfos.delete(key)
  const res = await git(['rev-parse', '--path-format=absolute', '--git-common-dir', '--is-bare-repository'], { cwd: repoDir, ...(signal !== undefined ? { signal } : {}) })
  const [dir, bare] = res.stdout.toString('utf8').trim().split('\n')
  if (dir === undefined || dir === '') throw new Error(`git rev-parse printed no git dir for ${repoDir}`)
  const info = { commonDir: isAbsolute(dir) ? dir : resolve(repoDir, dir), bare: bare === 'true' }
  repoInfos.set(key, info)
  return info
}

/**
 * Full ref names of branches checked out in any worktree of the repository:
 * the `HEAD` files of the main worktree (unless bare) and of each linked one,
 * which is what `git worktree list` reads, without starting git (and without
 * waiting behind the worktree commands `git()` runs one at a time).
 */
export async function checkedOutBranches (info: RepoInfo): Promise<Set<string>> {
  const heads = info.bare ? [] : [join(info.commonDir, 'HEAD')]
  const linked = await readdir(join(info.commonDir, 'worktrees')).catch(() => [] as string[])
  for (const name of linked) heads.push(join(info.commonDir, 'worktrees', name, 'HEAD'))
  const refs = new Set<string>()
  for (const file of heads) {
    const text = await readFile(file, 'utf8').catch(() => '')
    const m = /^ref: (refs\/\S+)\s*$/.exec(text)
    if (m !== null) refs.add(m[1] as string)
  }
  return refs
}

/**
 * `git cat-file --batch-check` of `names` (full oids, one process): for each,
 * its oid and type, or null when the repository lacks it.
 */
export async function batchCheck (repoDir: string, names: string[], signal: AbortSignal, env?: NodeJS.ProcessEnv): Promise<Array<{ oid: string, type: string } | null>> {
  if (names.length === 0) return []
  const res = await git(['cat-file', '--batch-check=%(objectname) %(objecttype)'], { cwd: repoDir, input: names.join('\n') + '\n', signal, ...(env !== undefined ? { env } : {}) })
  const lines = res.stdout.toString('utf8').split('\n')
  return names.map((_, i) => {
    const m = /^([0-9a-f]{40}|[0-9a-f]{64}) ([a-z]+)$/.exec(lines[i] ?? '')
    return m === null ? null : { oid: m[1] as string, type: m[2] as string }
  })
}

/** `rename`, or a copy when `objects/` is on another file system than the git dir (a symlink). */
export async function moveFile (from: string, to: string): Promise<void> {
  try {
    await rename(from, to)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
    await copyFile(from, `${to}.meshwork-tmp`)
    await rename(`${to}.meshwork-tmp`, to)
  }
}

/**
 * Every fetch adds a pack, as `git fetch` of a bundle does; past git's pack
 * limit, let git's own auto maintenance decide (its gc runs in the foreground,
 * one at a time with worktree commands: the fetch does not wait for it).
 * Failures here are not the transfer's.
 */
export async function autoMaintenance (repoDir: string, packDir: string): Promise<void> {
  const packs = (await readdir(packDir).catch(() => [] as string[])).filter(f => f.endsWith('.idx')).length
  if (packs <= AUTO_MAINTENANCE_PACKS) return
  const now = Date.now()
  if (now - (maintainedAt.get(packDir) ?? -Infinity) < AUTO_MAINTENANCE_GAP_MS) return
  maintainedAt.set(packDir, now)
  await runMaintenance(repoDir, join(packDir, '..', '..'))
}

/**
 * git's auto maintenance of `repoDir` (git dir `gitDir`), as a node starts it
 * (after fetches, and after every so many task commits): git decides whether
 * anything is due. Its gc runs in the foreground, in the queue of worktree
 * commands (src/git/git.ts: its worktree prune would race a worktree being
 * added), after a `gc.log` of that race is cleared (`clearRacedGcLog`). Never
 * rejects: maintenance is never a run's or a transfer's failure.
 */
export async function runMaintenance (repoDir: string, gitDir: string): Promise<void> {
  await clearRacedGcLog(gitDir).catch(() => false)
  await git(['-c', 'gc.autoDetach=false', 'maintenance', 'run', '--auto', '--quiet'], { cwd: repoDir, allowFail: true }).catch(() => {})
}

/**
 * Removes `gitDir`'s `gc.log` when all it says is that gc raced a worktree
 * being added (`RACED_WORKTREE_GC`), so git's automatic gc runs again; any
 * other complaint is left for a person to read. Whether it removed one.
 */
export async function clearRacedGcLog (gitDir: string): Promise<boolean> {
  const file = join(gitDir, 'gc.log')
  const text = await readFile(file, 'utf8').catch(() => null)
  if (text === null) return false
  const lines = text.split('\n').filter(l => l.trim() !== '')
  if (!lines.some(l => RACED_WORKTREE_GC.test(l)) || !lines.every(l => RACED_WORKTREE_GC.test(l) || l === FAILED_REPACK)) return false
  await rm(file, { force: true })
  return true
}

/** What a fetch writes in the `.keep` file that holds its pack (`keepPack`); a stale one is known by it. */
export const KEEP_NOTE = 'meshwork: fetch'

/**
 * Writes `pack-<hash>.keep` in `packDir` before a fetched pack moves in, and
 * returns what removes it once the ref that reaches the pack's objects is set
 * (as git's own fetch and receive-pack do with `index-pack --keep`). A
 * repack lists the `.pack` files there and deletes every one it did not keep
 * once its new pack is written, and it did not put in that new pack what it
 * could not see (a pack whose `.idx` was not there yet, objects no ref
 * reached yet): a gc that ran beside a fetch (one the node started after
 * another fetch, or anyone's) deleted a branch a leader had just been
 * handed, and its merge found the commit gone (bench:e2e, 8 nodes). A kept
 * pack is left alone.
 */
export async function keepPack (packDir: string, packHash: string): Promise<() => Promise<void>> {
  const file = join(packDir, `pack-${packHash}.keep`)
  const note = `${KEEP_NOTE} ${process.pid} ${randomUUID()}\n`
  await writeFile(file, note)
  return async () => {
    // (one of another fetch of the same pack, written since, is that fetch's to remove)
    if (await readFile(file, 'utf8').catch(() => null) === note) await rm(file, { force: true })
  }
}

/** Makes a quarantine dir (with `objects/pack`) for one fetch in the repository's git dir. */
export async function makeQuarantine (commonDir: string): Promise<string> {
  const dir = await mkdtemp(join(commonDir, 'meshwork-fetch-'))
  await mkdir(join(dir, 'objects', 'pack'), { recursive: true })
  return dir
}

/** Removes a quarantine dir; never throws. */
export async function removeQuarantine (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true }).catch(() => {})
}

/**
 * Removes `meshwork-fetch-*` / `meshwork-serve-*` temp dirs a crashed process
 * left in a repository's git dir, and the `.keep` files its fetches left on
 * their packs (`keepPack`; git would never repack those packs). Call at
 * startup, before serving or fetching.
 */
export async function removeStaleTransferTemps (repoDir: string): Promise<number> {
  const gitDir = await gitCommonDir(repoDir)
  let n = 0
  for (const entry of await readdir(gitDir)) {
    if (/^meshwork-(?:fetch|serve)-/.test(entry)) {
      await rm(join(gitDir, entry), { recursive: true, force: true })
      n++
    }
  }
  const packDir = join(gitDir, 'objects', 'pack')
  for (const entry of await readdir(packDir).catch(() => [] as string[])) {
    if (!/^pack-[0-9a-f]+\.keep$/.test(entry)) continue
    const file = join(packDir, entry)
    if ((await readFile(file, 'utf8').catch(() => '')).startsWith(KEEP_NOTE + ' ')) {
      await rm(file, { force: true })
      n++
    }
  }
  return n
}
