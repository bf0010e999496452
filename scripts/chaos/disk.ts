/**
 * A full disk for one node: its --data on a small tmpfs (root only), filled to
 * the brim with a filler file and freed later. Unmounted when the run ends.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'

const mounted = new Set<string>()

export function mountTmpfs (dir: string, size: string): void {
  mkdirSync(dir, { recursive: true })
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
  mounted.add(dir)
}

/** Lazily unmounts every tmpfs this run mounted (synchronous: safe in an 'exit' handler). */
export function unmountAll (): void {
  for (const dir of mounted) {
    try { execFileSync('umount', ['-l', dir], { stdio: 'pipe' }) } catch {}
    mounted.delete(dir)
  }
}

/** Fills the file system of `dir` to the brim with `dir/chaos-filler`; returns its path and size. */
export function fill (dir: string): { file: string, bytes: number } {
  const file = join(dir, 'chaos-filler')
  const fd = openSync(file, 'w')
  let bytes = 0
  try {
    for (const size of [1 << 20, 65536, 4096, 512, 1]) {
      const buf = Buffer.alloc(size, 1)
      for (;;) {
        try {
          const n = writeSync(fd, buf)
          bytes += n
          if (n < size) break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
          throw err
        }
      }
    }
  } finally {
    closeSync(fd)
  }
  return { file, bytes }
}

export function free (file: string): void {
  rmSync(file, { force: true })
}
