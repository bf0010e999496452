/**
 * CPU time of processes, read from /proc (Linux): what the benchmarks that
 * start real nodes report per process.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

/** Clock ticks per second, the unit of /proc/PID/stat's times. */
export const CLK_TCK = (() => {
  try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 }
})()

/** CPU seconds of a process and of its reaped children, from /proc/PID/stat; null when it is gone. */
export function cpuOf (pid: number | 'self'): { self: number, children: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the fields after the command's closing parenthesis: utime, stime, cutime, cstime are the 12th to 15th
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
    const n = (i: number): number => Number(rest[i])
    return { self: (n(11) + n(12)) / CLK_TCK, children: (n(13) + n(14)) / CLK_TCK }
  } catch {
    return null
  }
}
