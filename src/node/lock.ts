import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { DataDirLockedError } from '../util/errors.ts'

/** Lock file in a node's data dir: the pid of the process using it. */
export const LOCK_FILE = 'node.lock'

export interface Lock {
  release: () => Promise<void>
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the data dir for this process. Two nodes on one data dir would write
 * one board file and share an identity; the second refuses to start. A lock
 * left by a dead process (kill -9) is taken over.
 */
export async function acquireLock (dir: string): Promise<Lock> {
  const file = join(dir, LOCK_FILE)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const h = await open(file, 'wx', 0o600)
      await h.write(String(process.pid))
      await h.close()
      return { release: async () => { await unlink(file).catch(() => {}) } }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new DataDirLockedError(`the data dir ${dir} is in use by process ${pid}. Stop that node first, or give this one its own --data DIR.`)
      }
      await unlink(file).catch(() => {})
    }
  }
  throw new DataDirLockedError(`could not lock the data dir ${dir}`)
}
