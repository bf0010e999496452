/**
 * The child registry every benchmark uses: each child process it starts is
 * registered here and SIGKILLed when the benchmark ends, fails or is
 * interrupted, so nothing outlives it.
 */
import type { ChildProcess } from 'node:child_process'
import { setTimeout as delay } from 'node:timers/promises'

const children = new Set<ChildProcess>()

/** Registers `child`: killed with the benchmark, forgotten when it exits. */
export function register (child: ChildProcess): void {
  children.add(child)
  child.once('exit', () => { children.delete(child) })
}

/** SIGKILLs every child still running (synchronous: safe in an 'exit' handler). */
export function killAllChildren (): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try { c.kill('SIGKILL') } catch {}
    }
  }
}

let guardsInstalled = false
/** Kills every child on exit, on SIGINT/SIGTERM/SIGHUP and on an uncaught error; `label` prefixes the message. */
export function installExitGuards (label = 'bench'): void {
  if (guardsInstalled) return
  guardsInstalled = true
  process.on('exit', killAllChildren)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      const n = children.size
      killAllChildren()
      process.stderr.write(`\n${label}: ${sig}, killed ${n} child process(es)\n`)
      process.exit(130)
    })
  }
  process.on('uncaughtException', err => {
    killAllChildren()
    process.stderr.write(`${label}: uncaught ${err.stack ?? String(err)}\n`)
    process.exit(1)
  })
  process.on('unhandledRejection', err => {
    killAllChildren()
    process.stderr.write(`${label}: unhandled rejection ${(err as Error)?.stack ?? String(err)}\n`)
    process.exit(1)
  })
}

/** Pids of every child the benchmark is running now. */
export function childPids (): number[] {
  return [...children].map(c => c.pid).filter((p): p is number => p !== undefined)
}

/** Polls `cond` every `intervalMs` until it holds (true) or `timeoutMs` passes (false). Never a fixed sleep. */
export async function pollUntil (cond: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return true
    if (Date.now() >= deadline) return false
    await delay(intervalMs)
  }
}
