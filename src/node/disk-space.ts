import { statfs } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** Free space below which a file system the node writes to counts as full. @default 1 MiB */
export const MIN_FREE_BYTES = 1024 * 1024
/** How often free space is looked at (one statfs per watched directory). @default 2 s */
export const DISK_CHECK_MS = 2000

export interface DiskSpaceInit {
  /** What the node writes where: e.g. `{ what: 'worktrees', dir: '/var/lib/meshwork-worktrees' }`. */
  dirs: ReadonlyArray<{ what: string, dir: string }>
  logger: Logger
  /** @default MIN_FREE_BYTES */
  minFreeBytes?: number
  /** @default DISK_CHECK_MS */
  intervalMs?: number
}

/**
 * Watches the free space of the file systems a node writes to: its data dir,
 * its worktrees and its repository. A board write that fails on a full disk is
 * noticed by the board store; but runs write elsewhere (worktrees, git objects),
 * and a disk that filled there fails every run this node claims while its board
 * writes may still succeed (a removed worktree frees a little). Below
 * `minFreeBytes` on any of them the node is out of disk: `full` says why, the
 * scheduler claims nothing (health paused) until space returns.
 */
export class DiskSpace {
  readonly #init: DiskSpaceInit
  #full: string | null = null
  #timer: NodeJS.Timeout | null = null
  #checking = false

  constructor (init: DiskSpaceInit) {
    this.#init = init
  }

  /** Why the node is out of disk (`disk full: …`), or null. */
  get full (): string | null {
    return this.#full
  }

  /** Checks every `intervalMs` (checks never overlap; `await check()` first to know at once). Idempotent. */
  start (): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => { void this.check() }, this.#init.intervalMs ?? DISK_CHECK_MS)
    this.#timer.unref()
  }

  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Looks at every watched file system once; returns (and keeps) why the node is out of disk, or null. */
  async check (): Promise<string | null> {
    if (this.#checking) return this.#full
    this.#checking = true
    try {
      const min = this.#init.minFreeBytes ?? MIN_FREE_BYTES
      let full: string | null = null
      let at: { what: string, dir: string, free: number } | null = null
      // all at once: one trip to the thread pool and back wakes the event loop once, not once per directory
      const frees = await Promise.all(this.#init.dirs.map(async ({ dir }) => await freeBytes(dir).catch((err: unknown) => { this.#init.logger.debug('disk:check-failed', { dir, error: toError(err).message }); return null })))
      for (const [i, { what, dir }] of this.#init.dirs.entries()) {
        const free = frees[i] ?? null
        if (free === null || free >= min) continue
        full = `disk full: ${formatBytes(free)} free where the ${what} are (${dir})`
        at = { what, dir, free }
        break
      }
      if (full !== null && this.#full === null) this.#init.logger.warn('disk:full', { ...at, minFree: min, note: 'this node claims no work until space returns; running work goes on' })
      else if (full === null && this.#full !== null) this.#init.logger.info('disk:ok', { note: 'space returned' })
      this.#full = full
      return full
    } finally {
      this.#checking = false
    }
  }
}

/** Bytes this process may still write on the file system of `dir` (its nearest existing ancestor). */
async function freeBytes (dir: string): Promise<number> {
  for (let d = dir; ; d = dirname(d)) {
    try {
      const s = await statfs(d)
      // root may also write the blocks a file system keeps back for it
      return (process.getuid?.() === 0 ? s.bfree : s.bavail) * s.bsize
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(d) === d) throw err
    }
  }
}

function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}
