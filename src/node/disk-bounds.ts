import { readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { git, gitText } from '../git/git.ts'
import { removeStaleTransferTemps } from '../git/transfer/quarantine.ts'
import { isTaskId, type BoardSnapshot } from '../crdt/schema.ts'
import type { Logger } from '../util/logger.ts'

/**
 * What a node leaves on disk is bounded: at start no run and no transfer is in
 * progress, so every per-run Claude config dir (`DATA/claude/<run>`) and what a
 * crash left of a transfer (`removeStaleTransferTemps`: a fetch's quarantine or
 * a serve's temp dir in the git dir, the `.keep` a fetch put on its pack) goes;
 * and the task branches of cancelled tasks, and of merged tasks whose work is
 * on the mesh main, are deleted (nothing will read them again).
 */
export async function sweepAtStart (dataDir: string, repo: string, logger: Logger): Promise<{ runDirs: number, transferTemps: number }> {
  let runDirs = 0
  for (const name of await readdir(join(dataDir, 'claude')).catch(() => [] as string[])) {
    await rm(join(dataDir, 'claude', name), { recursive: true, force: true })
    runDirs++
  }
  const transferTemps = await removeStaleTransferTemps(repo).catch(() => 0)
  if (runDirs + transferTemps > 0) logger.info('disk:swept', { runDirs, transferTemps, note: 'left by an earlier life of this node (no run or transfer is in progress at start)' })
  return { runDirs, transferTemps }
}

/** Claude run transcripts (`DATA/transcripts/*.jsonl`) older than this are deleted. @default 14 days */
export const TRANSCRIPT_MAX_AGE_MS = 14 * 24 * 3_600_000
/** Transcripts kept at most (the newest). @default 500 */
export const TRANSCRIPT_MAX_FILES = 500

/**
 * Keeps `DATA/transcripts` bounded: transcripts older than `maxAgeMs`, and
 * all but the newest `maxFiles`, are deleted. Returns how many went.
 */
export async function pruneTranscripts (dataDir: string, logger: Logger, opts: { maxAgeMs?: number, maxFiles?: number, now?: number } = {}): Promise<number> {
  const dir = join(dataDir, 'transcripts')
  const names = await readdir(dir).catch(() => [] as string[])
  const files: Array<{ path: string, mtime: number }> = []
  for (const name of names) {
    const path = join(dir, name)
    const st = await stat(path).catch(() => null)
    if (st?.isFile() === true) files.push({ path, mtime: st.mtimeMs })
  }
  files.sort((a, b) => b.mtime - a.mtime)
  const now = opts.now ?? Date.now()
  const maxAge = opts.maxAgeMs ?? TRANSCRIPT_MAX_AGE_MS
  const maxFiles = opts.maxFiles ?? TRANSCRIPT_MAX_FILES
  let removed = 0
  for (const [i, f] of files.entries()) {
    if (i < maxFiles && now - f.mtime < maxAge) continue
    await rm(f.path, { force: true })
    removed++
  }
  if (removed > 0) logger.info('disk:transcripts-pruned', { removed, kept: files.length - removed, note: `transcripts are kept ${Math.round(maxAge / 86_400_000)} days, at most ${maxFiles}` })
  return removed
}

/**
 * How long a task must have been merged before its branch may be deleted. A
 * merge only minutes old can still be undone: a main its leader died with is
 * put back (`--main-lost-after`), the losing side of a partition's merges are
 * requeued on heal; and a node that restarts reads its own board from before
 * that, so it would delete a branch the mesh needs again. @default 10 min
 */
export const PRUNE_MERGED_AFTER_MS = 10 * 60_000

/**
 * Deletes the local `meshwork/<id>` branches of cancelled tasks and of merged
 * tasks whose branch head is in the mesh main (the merge made it part of main's
 * history, so no requeue can need the branch) and that were merged
 * `PRUNE_MERGED_AFTER_MS` ago or more. Branches checked out somewhere
 * are left alone. Returns the task ids whose branch went.
 */
export async function pruneTaskBranches (repo: string, snap: BoardSnapshot, logger: Logger, now = Date.now()): Promise<string[]> {
  const main = snap.main.head
  const out = await gitText(['for-each-ref', '--format=%(refname:strip=2) %(objectname)', 'refs/heads/meshwork/'], { cwd: repo }).catch(() => '')
  const removed: string[] = []
  for (const line of out.split('\n')) {
    const [branch, oid] = line.split(' ')
    if (branch === undefined || oid === undefined || !branch.startsWith('meshwork/')) continue
    const id = branch.slice('meshwork/'.length)
    if (!isTaskId(id)) continue
    const t = snap.tasks.get(id)
    if (t === undefined) continue
    let drop = t.state === 'cancelled'
    if (!drop && t.state === 'merged' && main !== null && (t.mergedAt === null || now - t.mergedAt >= PRUNE_MERGED_AFTER_MS)) {
      drop = (await git(['merge-base', '--is-ancestor', oid, main], { cwd: repo, allowFail: true })).code === 0
    }
    if (!drop) continue
    const res = await git(['branch', '-D', '-q', branch], { cwd: repo, allowFail: true })
    if (res.code === 0) removed.push(id)
  }
  // checkpoints matter only while a task may still be run again
  const cps = await gitText(['for-each-ref', '--format=%(refname:strip=2)', 'refs/heads/meshwork-checkpoint/'], { cwd: repo }).catch(() => '')
  for (const branch of cps.split('\n')) {
    const id = branch.slice('meshwork-checkpoint/'.length)
    if (branch === '' || !isTaskId(id)) continue
    const t = snap.tasks.get(id)
    if (t !== undefined && ['pending', 'ready', 'claimed', 'running'].includes(t.state)) continue
    const res = await git(['branch', '-D', '-q', branch], { cwd: repo, allowFail: true })
    if (res.code === 0) removed.push(id)
  }
  if (removed.length > 0) logger.info('disk:branches-pruned', { tasks: removed.length, note: 'branches of cancelled tasks and of merged tasks whose work is on main, and checkpoints of tasks that will not run again' })
  return removed
}
