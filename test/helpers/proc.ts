import { existsSync, readFileSync } from 'node:fs'

/** Whether `pid` is alive and not a zombie (a container's init may not reap orphans). */
export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
    return state !== 'Z' && state !== 'X'
  } catch {
    return !existsSync('/proc/self') // no /proc: trust kill(0)
  }
}
