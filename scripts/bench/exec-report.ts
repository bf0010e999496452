/**
 * Statistics, machine facts, CPU accounting and the text / Markdown rendering of
 * the execution benchmark (`npm run bench:exec`). Self-contained: shares no
 * helpers with the other benchmarks.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

// ---------------------------------------------------------------------------
// statistics and formatting

import { bytes } from './lib/stats.ts'
import { writeSection as writeDocSection } from './lib/docs.ts'
export { median, percentile, mdTable, textTable } from './lib/stats.ts'

export const fmtMs = (v: number | null | undefined): string => v === null || v === undefined ? 'n/a' : v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`
export const fmtMiB = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`
export const fmtRate = (bytes: number, ms: number): string => ms <= 0 ? 'n/a' : `${(bytes / 1048576 / (ms / 1000)).toFixed(1)} MiB/s`

export const fmtBytes = (v: number): string => bytes(v)

// ---------------------------------------------------------------------------
// machine

export { currentLoad, machine, type Machine } from './lib/docs.ts'

// ---------------------------------------------------------------------------
// CPU accounting

const CLK_TCK = Number(getconf('CLK_TCK') ?? '100') || 100

function getconf (name: string): string | null {
  try {
    return execFileSync('getconf', [name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

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

/** Writes the execution section of `file`, leaving the other sections as they are. */
export async function writeSection (file: string, section: string): Promise<void> {
  await writeDocSection(file, SECTION, section)
}
