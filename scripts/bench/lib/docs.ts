/**
 * What every benchmark writes into docs/benchmarks.md: the machine it ran on
 * and its own section of the file.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'
import { dirname } from 'node:path'

export interface Machine {
  cpu: string
  cores: number
  memBytes: number
  memGiB: number
  node: string
  kernel: string
  git: string
  /** File system type of `tmp` (where the repositories live), when asked for. */
  tmpFs: string
  loadAtStart: number[]
}

function run (cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

export const currentLoad = (): number[] => loadavg().map(v => Math.round(v * 100) / 100)

/** The machine a benchmark runs on; `tmp`: the directory whose file system type to report. */
export function machine (tmp?: string): Machine {
  const tmpFs = tmp === undefined ? 'unknown' : run('findmnt', ['-n', '-o', 'FSTYPE', '-T', tmp]) ?? run('stat', ['-f', '-c', '%T', tmp]) ?? 'unknown'
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    memBytes: totalmem(),
    memGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    node: process.version,
    kernel: run('uname', ['-r']) ?? release(),
    git: (run('git', ['--version']) ?? 'unknown').replace(/^git version /, ''),
    tmpFs,
    loadAtStart: currentLoad()
  }
}

/**
 * Replaces the section of `file` headed `title` (up to the next `## `
 * heading) with `section`, or appends it; creates the file with
 * `# Benchmarks` if missing. The file is read right before it is written:
 * each benchmark owns one section and leaves the others as they are.
 */
export async function writeSection (file: string, title: string, section: string): Promise<void> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    text = '# Benchmarks\n'
  }
  const lines = text.split('\n')
  const start = lines.findIndex(l => l.trim() === title)
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
