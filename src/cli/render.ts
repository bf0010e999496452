import type { StatusReport } from '../api/status.ts'
import { safeText } from '../util/text.ts'

const short = (s: string | null, n = 8): string => s === null ? '-' : s.length > n ? s.slice(0, n) : s
const peerShort = (p: string | null): string => p === null ? '-' : '…' + p.slice(-8)

function table (rows: string[][]): string[] {
  if (rows.length === 0) return []
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => (r[i] ?? '').length)))
  return rows.map(r => '  ' + r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join('  ').trimEnd())
}

function ago (ms: number | null): string {
  if (ms === null) return 'never'
  if (ms < 1000) return `${ms} ms`
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`
  return `${Math.round(ms / 60_000)} min`
}

/** Human-readable status (the default output of `meshwork status`). */
export function renderStatus (s: StatusReport, via: string): string {
  const out: string[] = []
  // peers by their --name where the mesh knows it, else the end of the peer id
  const names = new Map(s.nodes.filter(n => n.name !== '').map(n => [n.peerId, n.name]))
  const who = (p: string | null): string => p === null ? '-' : names.get(p) ?? peerShort(p)
  out.push(`mesh ${s.meshId} (via ${who(via)})`)
  out.push(`main ${short(s.main.head, 12)}  leader ${s.main.leader === null ? 'none' : who(s.main.leader)}  term ${s.main.term}`)
  const push = s.main.push
  if (push != null) {
    out.push(push.ok
      ? `pushed ${short(push.head, 12)} to ${push.remote}`
      : `PUSH REJECTED: ${short(push.head, 12)} to ${push.remote}: ${push.error ?? 'unknown error'}`)
  }
  const alive = s.nodes.filter(n => n.state === 'alive').length
  out.push('', `NODES ${alive} alive of ${s.nodes.length}`)
  out.push(...table([['NAME', 'STATE', 'SLOTS', 'RUNNING', 'LAST SEEN', 'PEER'], ...s.nodes.map(n => [n.name === '' ? '-' : n.name, n.state, String(n.slots), n.running.length === 0 ? '-' : n.running.join(','), ago(n.lastSeenMs), n.peerId])]))
  const byState = new Map<string, number>()
  for (const t of s.tasks) byState.set(t.state, (byState.get(t.state) ?? 0) + 1)
  const cost = s.tasks.reduce((sum, t) => sum + t.costUsd, 0)
  out.push('', `TASKS ${s.tasks.length}${byState.size > 0 ? ' (' + [...byState].map(([k, v]) => `${v} ${k}`).join(', ') + ')' : ''}  cost $${cost.toFixed(2)}`)
  out.push(...table(s.tasks.length === 0 ? [] : [['ID', 'STATE', 'ATTEMPTS', 'NODE', 'COST', 'DEPS'], ...s.tasks.map(t => [t.id, t.state, String(t.attempts), who(t.node), `$${t.costUsd.toFixed(2)}`, t.deps.join(',') || '-'])]))
  const open = s.conflicts.filter(c => c.state === 'open')
  if (s.conflicts.length > 0) {
    out.push('', `CONFLICTS ${open.length} open of ${s.conflicts.length}`)
    out.push(...table([['ID', 'TASK', 'STATE', 'FILES'], ...s.conflicts.map(c => [c.id, c.taskId, c.state, c.files.join(',')])]))
    // a decision that could not be carried out: the conflict waits for another one
    for (const c of open) if (c.error !== null && c.decision === null) out.push(`  ${c.id}: ${c.error.split('\n')[0] ?? ''}`)
  }
  // names, files, remotes and errors come from peers: no control character reaches the terminal
  return out.map(line => safeText(line)).join('\n')
}
