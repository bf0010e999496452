/**
 * CPU time of processes, read from /proc (Linux): what the benchmarks that
 * start real nodes report per process.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

/** Clock ticks per second, the unit of /proc/PID/stat's times. */
export const CLK_TCK = (() => {
  try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 }
})()

/**
 * CPU seconds of a process (`self`) and of its children (`children`): those it
 * reaped, from /proc/PID/stat, and those still running with everything under
 * them (a node's git helper, and the git processes the helper reaped). Null
 * when the process is gone.
 */
export function cpuOf (pid: number | 'self'): { self: number, children: number } | null {
  const own = statTimes(pid)
  if (own === null) return null
  let children = own.children
  for (const child of liveChildren(pid)) {
    const c = cpuOf(child)
    if (c !== null) children += c.self + c.children
  }
  return { self: own.self, children }
}

/** CPU seconds of this process's children that have ended and been reaped (not its running ones). */
export function reapedChildrenCpu (): number | null {
  return statTimes('self')?.children ?? null
}

function statTimes (pid: number | 'self'): { self: number, children: number } | null {
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

/** Pids of the running children of `pid` (of all its threads). */
function liveChildren (pid: number | 'self'): number[] {
  const out: number[] = []
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) if (c.trim() !== '') out.push(Number(c))
      } catch {}
    }
  } catch {}
  return out
}
