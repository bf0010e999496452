import { link, open, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DataDirLockedError } from '../util/errors.ts'
import { processAlive } from '../util/pid.ts'

/** Lock file in a node's data dir: the pid of the process using it. */
export const LOCK_FILE = 'node.lock'
/** Held (created exclusively) by the one process that may remove a stale lock file. */
export const LOCK_BREAKER_FILE = 'node.lock.break'
/** A breaker older than this was left by a process that died while holding it. @default 10 s */
const BREAKER_STALE_MS = 10_000

export interface Lock {
  release: () => Promise<void>
}

/** The pid in a lock file; null when it is empty or not a pid; 'missing' when there is no lock file. */
async function lockPid (file: string): Promise<number | null | 'missing'> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    text = ''
  }
  const pid = Number(text.trim())
  return Number.isInteger(pid) && pid > 0 ? pid : null
}

/**
 * Takes the data dir for this process. Two nodes on one data dir would write
 * one board file and share an identity; the second refuses to start. A lock
 * left by a dead process (kill -9) is taken over, by one process only: the
 * stale file is removed under a breaker file created exclusively, after
 * reading it again there, so two nodes starting at once on a stale lock cannot
 * both remove it (one of them the other's fresh lock) and both run.
 */
export async function acquireLock (dir: string): Promise<Lock> {
  const file = join(dir, LOCK_FILE)
  for (let attempt = 0; attempt < 3; attempt++) {
    // the lock appears with its pid in it (a hard link of a written file): never empty for a reader
    const tmp = `${file}.${process.pid}.tmp`
    await writeFile(tmp, String(process.pid), { mode: 0o600 })
    try {
      await link(tmp, file)
      return { release: async () => { await unlink(file).catch(() => {}) } }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = await lockPid(file)
      // gone meanwhile (its holder stopped, or a stale one was removed): try again
      if (pid === 'missing') continue
      if (pid !== null && pid !== process.pid && processAlive(pid)) {
        throw new DataDirLockedError(`the data dir ${dir} is in use by process ${pid}. Stop that node first, or give this one its own --data DIR.`)
      }
      await breakStaleLock(dir, file)
    } finally {
      await unlink(tmp).catch(() => {})
    }
  }
  throw new DataDirLockedError(`could not lock the data dir ${dir}: another process took it at the same moment. Stop that node first, or give this one its own --data DIR.`)
}

/** Removes the lock file if it still names a dead process, holding the breaker while it reads and removes. */
async function breakStaleLock (dir: string, file: string): Promise<void> {
  const breaker = join(dir, LOCK_BREAKER_FILE)
  let h
  try {
    h = await open(breaker, 'wx', 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    // someone else is breaking it; a breaker left by a dead process is removed once old
    const age = await stat(breaker).then(s => Date.now() - s.mtimeMs, () => 0)
    if (age > BREAKER_STALE_MS) await unlink(breaker).catch(() => {})
    return
  }
  try {
    await h.close()
    // no lock file: another breaker removed the stale one, and the file that may appear any moment now is a
    // fresh lock of a live process (removing it would let a second process take the data dir as well)
    const pid = await lockPid(file)
    if (pid === 'missing') return
    if (pid === null || (pid !== process.pid && !processAlive(pid))) await unlink(file).catch(() => {})
  } finally {
    await unlink(breaker).catch(() => {})
  }
}
