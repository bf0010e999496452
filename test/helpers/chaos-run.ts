/**
 * Runs `scripts/chaos.ts` as a child process for a test (chaos-short,
 * chaos-netns): bounded, its output kept for the failure message, its JSON
 * report read back, and the child stopped (SIGTERM, then SIGKILL) when a test
 * ends early. The script kills its nodes (and proxy, and namespaces) on
 * SIGTERM and on any exit of its own.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const SCRIPT = fileURLToPath(new URL('../../scripts/chaos.ts', import.meta.url))

export interface ChaosReport {
  seed: number
  netns?: boolean
  faults: Array<{ kind: string, target: string, detail: string }>
  checks: Array<{ name: string, ok: boolean, detail: string }>
  wallS: number
}

export interface ChaosRun {
  /** The script's exit code, or 'timeout' when it ran past the bound. */
  exit: number | null | 'timeout'
  /** The last 40,000 characters of its stdout and stderr. */
  out: string
  /** Its JSON report (null when it wrote none). */
  report: ChaosReport | null
  pid: number
}

/** Runs and cleans up chaos runs; call `stop()` in `afterAll`. */
export class ChaosRunner {
  #dir = ''
  #proc: ChildProcess | null = null

  /** Runs the script with `args` (plus `--no-docs --json FILE`), bounded by `boundMs`. */
  async run (args: string[], boundMs: number): Promise<ChaosRun> {
    this.#dir = await mkdtemp(join(tmpdir(), 'meshwork-chaos-test-'))
    const jsonFile = join(this.#dir, 'chaos.json')
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
    const child = spawn(process.execPath, [SCRIPT, ...args, '--no-docs', '--json', jsonFile], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.#proc = child
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-40_000) })
    child.stderr.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-40_000) })
    let timer: NodeJS.Timeout | undefined
    const exit = await Promise.race([
      new Promise<number | null>(resolve => { child.once('exit', code => { resolve(code) }) }),
      new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, boundMs) })
    ])
    clearTimeout(timer)
    const report = await readFile(jsonFile, 'utf8').then(text => JSON.parse(text) as ChaosReport, () => null)
    return { exit, out, report, pid: child.pid ?? 0 }
  }

  /** Stops a child still running (SIGTERM, SIGKILL after `graceMs`) and removes the run's dir. */
  async stop (graceMs = 15_000): Promise<void> {
    const proc = this.#proc
    if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM')
      await new Promise(resolve => { const t = setTimeout(resolve, graceMs); proc.once('exit', () => { clearTimeout(t); resolve(null) }) })
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    }
    if (this.#dir !== '') await rm(this.#dir, { recursive: true, force: true })
  }
}

/** The checks every chaos run reports. */
export const CORE_CHAOS_CHECKS = [
  'every valid task merged exactly once',
  'main identical on every node and equal to the board',
  'each node\'s main only moved forward (reflog)',
  'no task lost',
  'the partition: both sides ran, the minority merged nothing while cut off',
  'no process left behind'
]
