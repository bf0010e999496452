/**
 * Statistics, machine facts, CPU accounting and the text / Markdown rendering of
 * the execution benchmark (`npm run bench:exec`). Self-contained: shares no
 * helpers with the other benchmarks.
 */

// ---------------------------------------------------------------------------
// statistics and formatting

import { bytes } from './lib/stats.ts'
import { writeSection as writeDocSection } from './lib/docs.ts'
import { cpuOf } from './lib/proc.ts'
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

/** CPU used so far (ms): this process (both in-process nodes) and its reaped child processes (git). */
export interface CpuSample { self: number, children: number }

export function cpuSample (): CpuSample {
  const u = process.cpuUsage()
  return { self: (u.user + u.system) / 1000, children: (cpuOf('self')?.children ?? 0) * 1000 }
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
