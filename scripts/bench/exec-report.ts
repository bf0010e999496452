/**
 * Statistics, machine facts, CPU accounting and the text / Markdown rendering of
 * the execution benchmark (`npm run bench:exec`). Self-contained: shares no
 * helpers with the other benchmarks.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'
import { dirname } from 'node:path'

// ---------------------------------------------------------------------------
// statistics and formatting

/** Nearest-rank percentile (p in 0..100); null when empty. */
export function percentile (values: number[], p: number): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1] ?? null
}

export const median = (values: number[]): number | null => percentile(values, 50)

export const fmtMs = (v: number | null | undefined): string => v === null || v === undefined ? 'n/a' : v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`
export const fmtMiB = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`
export const fmtRate = (bytes: number, ms: number): string => ms <= 0 ? 'n/a' : `${(bytes / 1048576 / (ms / 1000)).toFixed(1)} MiB/s`

export function fmtBytes (v: number): string {
  if (v < 10 * 1024) return `${Math.round(v)} B`
  if (v < 10 * 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`
  return `${(v / 1048576).toFixed(1)} MiB`
}

/** A plain-text table with aligned columns. */
export function textTable (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(head), widths.map(w => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** A Markdown table. */
export function mdTable (head: string[], rows: string[][]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  return [`| ${head.map(esc).join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map(r => `| ${r.map(esc).join(' | ')} |`)].join('\n')
}

// ---------------------------------------------------------------------------
// machine

export interface Machine {
  cpu: string
  cores: number
  memBytes: number
  node: string
  kernel: string
  git: string
  /** File system type of the temp dir the repositories live in. */
  tmpFs: string
}

function run (cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

export function machine (tmp: string): Machine {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memBytes: totalmem(),
    node: process.version,
    kernel: run('uname', ['-r']) ?? release(),
    git: (run('git', ['--version']) ?? 'unknown').replace(/^git version /, ''),
    tmpFs: run('findmnt', ['-n', '-o', 'FSTYPE', '-T', tmp]) ?? run('stat', ['-f', '-c', '%T', tmp]) ?? 'unknown'
  }
}

export const currentLoad = (): number[] => loadavg().map(v => Math.round(v * 100) / 100)

// ---------------------------------------------------------------------------
// CPU accounting

const CLK_TCK = Number(run('getconf', ['CLK_TCK']) ?? '100') || 100

/** CPU used so far (ms): this process (both in-process nodes) and its reaped child processes (git). */
export interface CpuSample { self: number, children: number }

export function cpuSample (): CpuSample {
  const u = process.cpuUsage()
  let children = 0
  try {
    // /proc/self/stat: fields after the command's closing parenthesis; cutime and cstime are the 14th and 15th
    const stat = readFileSync('/proc/self/stat', 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    children = (Number(rest[13]) + Number(rest[14])) * 1000 / CLK_TCK
  } catch {}
  return { self: (u.user + u.system) / 1000, children }
}

export function cpuSince (start: CpuSample): CpuSample {
  const now = cpuSample()
  return { self: now.self - start.self, children: now.children - start.children }
}

// ---------------------------------------------------------------------------
// docs

export const SECTION = '## Execution (npm run bench:exec)'

/**
 * Replaces the section `SECTION` of `file` (up to the next `## ` heading) with
 * `section`, or appends it; creates the file with `# Benchmarks` if missing. The
 * file is read right before it is written: other sections are left as they are.
 */
export async function writeSection (file: string, section: string): Promise<void> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    text = '# Benchmarks\n'
  }
  const lines = text.split('\n')
  const start = lines.findIndex(l => l.trim() === SECTION)
  const body = section.trimEnd().split('\n')
  let out: string[]
  if (start === -1) {
    out = [...text.trimEnd().split('\n'), '', ...body, '']
  } else {
    let end = lines.findIndex((l, i) => i > start && /^##\s/.test(l))
    if (end === -1) end = lines.length
    const after = lines.slice(end)
    out = [...lines.slice(0, start), ...body, ...(after.length > 0 ? ['', ...after] : [''])]
  }
  await mkdir(dirname(file), { recursive: true })
  await writeFile(file, out.join('\n'))
}
