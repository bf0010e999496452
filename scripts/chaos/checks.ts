/**
 * What the chaos run checks after the faults, on the nodes' real git
 * repositories and on /proc: the task trailers on main's first-parent
 * history, every move of main in each repo's reflog, backup branches, and
 * processes left behind (found by the run's marker in their environment or
 * command line).
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, existsSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'

const git = (repo: string, args: string[]): string => execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 }).trim()
const gitOk = (repo: string, args: string[]): boolean => { try { execFileSync('git', ['-C', repo, ...args], { stdio: 'ignore' }); return true } catch { return false } }

export const revParse = (repo: string, ref: string): string | null => { try { return git(repo, ['rev-parse', '--verify', '-q', ref]) } catch { return null } }
export const isAncestor = (repo: string, a: string, b: string): boolean => gitOk(repo, ['merge-base', '--is-ancestor', a, b])

/** Task id → merge commits carrying its `Meshwork-Task` trailer on `head`'s first-parent history. */
export function trailersOnMain (repo: string, head: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  const text = git(repo, ['log', '--first-parent', '--format=%H%x1f%B%x1e', head])
  for (const rec of text.split('\x1e')) {
    const [oid, body] = rec.trim().split('\x1f')
    if (oid === undefined || oid === '' || body === undefined) continue
    for (const m of body.matchAll(/^Meshwork-Task:\s*(\S+)\s*$/gm)) {
      const id = m[1] as string
      out.set(id, [...(out.get(id) ?? []), oid])
    }
  }
  return out
}

export interface ReflogCheck {
  moves: number
  forward: number
  /** Moves back whose old head is kept on a `meshwork/local/*` branch (the product's documented exception). */
  keptAside: number
  /** Moves that are neither: `old → new` lines. */
  bad: string[]
  missing: boolean
}

/** Every move of `branch` in `repo`'s reflog: forward (old an ancestor of new), or kept aside on a backup branch. */
export function checkReflog (repo: string, branch: string): ReflogCheck {
  let gitDir = git(repo, ['rev-parse', '--git-dir'])
  if (!isAbsolute(gitDir)) gitDir = join(repo, gitDir)
  const file = join(gitDir, 'logs', 'refs', 'heads', branch)
  const res: ReflogCheck = { moves: 0, forward: 0, keptAside: 0, bad: [], missing: !existsSync(file) }
  if (res.missing) return res
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([0-9a-f]{40,64}) ([0-9a-f]{40,64}) [^\t]*\t?(.*)$/.exec(line)
    if (m === null) continue
    const [, old, next, msg] = m as unknown as [string, string, string, string]
    if (/^0+$/.test(old) || old === next) continue
    res.moves++
    if (isAncestor(repo, old, next)) { res.forward++; continue }
    const backups = git(repo, ['for-each-ref', '--contains', old, '--format=%(refname:short)', 'refs/heads/meshwork/local/'])
    if (backups !== '') { res.keptAside++; continue }
    res.bad.push(`${old.slice(0, 12)} → ${next.slice(0, 12)} (${msg})`)
  }
  return res
}

/** Backup branches `meshwork/local/*` of `repo`: name → oid. */
export function backupBranches (repo: string): Map<string, string> {
  const out = new Map<string, string>()
  const text = git(repo, ['for-each-ref', '--format=%(refname:short) %(objectname)', 'refs/heads/meshwork/local/'])
  for (const l of text.split('\n')) { const [n, o] = l.split(' '); if (n !== undefined && o !== undefined && n !== '') out.set(n, o) }
  return out
}

export const branchExists = (repo: string, name: string): boolean => revParse(repo, `refs/heads/${name}`) !== null

/** Processes (not this one) whose environment or command line holds `marker`: pid and command line. */
export function processesWith (marker: string): Array<{ pid: number, cmd: string }> {
  const out: Array<{ pid: number, cmd: string }> = []
  let pids: string[] = []
  try { pids = readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch {}
  for (const p of pids) {
    const pid = Number(p)
    if (pid === process.pid) continue
    let env = ''
    let cmd = ''
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() } catch { continue }
    try { env = readFileSync(`/proc/${p}/environ`, 'utf8') } catch {}
    if (env.includes(marker) || cmd.includes(marker)) out.push({ pid, cmd: cmd.slice(0, 200) })
  }
  return out
}
