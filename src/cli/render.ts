import type { StatusReport, StatusTask } from '../api/status.ts'
import { meshTotals, renderTotals } from '../api/totals.ts'
import { safeText } from '../util/text.ts'
import { shownState } from '../api/shown-state.ts'

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

const firstLine = (text: string, n = 100): string => {
  const line = text.split('\n').find(l => l.trim() !== '')?.trim() ?? ''
  return line.length > n ? line.slice(0, n - 1) + '…' : line
}

/**
 * Why a task is where it is, for the WHY column: a failed task's reason, the
 * conflict a task waits on and the command that settles it, and for a pending
 * task the dependency that holds it (one waiting on a human first).
 */
export function taskNote (t: StatusTask, s: StatusReport): string {
  const byId = new Map(s.tasks.map(x => [x.id, x]))
  switch (t.state) {
    case 'failed':
      return `${firstLine(t.error ?? 'no reason recorded')} (\`meshwork retry ${t.id}\`)`
    case 'cancelled':
      return t.error !== null ? firstLine(t.error) : ''
    case 'conflict': {
      const c = s.conflicts.find(x => x.taskId === t.id && x.state === 'open')
      if (c === undefined) return 'conflict being opened by the merge leader'
      if (c.decision !== null) return `${c.id}: "${c.decision.action}" being carried out`
      return `\`meshwork resolve ${c.id} --action ours|theirs|rerun|agent|abandon\``
    }
    case 'ready': {
      if (t.held === 'budget') {
        const plan = s.budget.plans.find(p => p.held.includes(t.id))
        return plan !== undefined ? `held: plan ${plan.plan}'s budget is spent (\`meshwork budget --plan ${plan.plan} --usd X\`)` : 'held: the mesh budget is spent (`meshwork budget --usd X`)'
      }
      return t.error !== null ? `retrying after: ${firstLine(t.error, 80)}` : ''
    }
    case 'pending': {
      // the first dependency (direct or not) that waits on a human, else the direct ones not merged yet
      const seen = new Set<string>()
      const stack = [...t.deps]
      while (stack.length > 0) {
        const id = stack.pop() as string
        if (seen.has(id)) continue
        seen.add(id)
        const d = byId.get(id)
        if (d === undefined || d.state === 'merged') continue
        if (d.state === 'failed' || d.state === 'cancelled') return `blocked: ${d.id} is ${d.state} (\`meshwork retry ${d.id}\`)`
        if (d.state === 'conflict') {
          const c = s.conflicts.find(x => x.taskId === d.id && x.state === 'open')
          return `blocked: ${d.id} is in conflict${c !== undefined && c.decision === null ? ` (\`meshwork resolve ${c.id} --action ...\`)` : ''}`
        }
        stack.push(...d.deps)
      }
      const waiting = t.deps.filter(d => byId.get(d)?.state !== 'merged')
      return waiting.length > 0 ? `waits for ${waiting.join(', ')}` : ''
    }
    default:
      return ''
  }
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
  out.push(...renderTotals(meshTotals(s)))
  const b = s.budget
  if (b.usd !== null || b.plans.length > 0) {
    const caps = [...(b.usd !== null ? [`mesh $${b.usd.toFixed(2)}${b.spentUsd >= b.usd ? ' REACHED' : ''}`] : []), ...b.plans.map(p => `plan ${p.plan} $${(p.usd ?? 0).toFixed(2)} (spent $${p.spentUsd.toFixed(2)})${p.usd !== null && p.spentUsd >= p.usd ? ' REACHED' : ''}`)]
    const held = s.tasks.filter(t => t.held === 'budget').length
    out.push(`budget: ${caps.join('; ')}${held > 0 ? `; ${held} ready task${held === 1 ? '' : 's'} held` : ''}`)
  }
  // forged or unlisted board changes the node refused, by author
  const refused = Object.entries(s.refused ?? {})
  const forgotten = s.refusedForgotten
  if (refused.length > 0 || forgotten !== undefined) out.push(`REFUSED board changes: ${refused.map(([a, n]) => `${who(a)} ${n}`).join(', ')}${forgotten !== undefined ? `${refused.length > 0 ? '; ' : ''}${forgotten.changes} more by ${forgotten.authors} other author${forgotten.authors === 1 ? '' : 's'}` : ''}`)
  const alive = s.nodes.filter(n => n.state === 'alive').length
  out.push('', `NODES ${alive} alive of ${s.nodes.length}`)
  out.push(...table([['NAME', 'STATE', 'SLOTS', 'RUNNING', 'LAST SEEN', 'VERSION', 'PEER'], ...s.nodes.map(n => [n.name === '' ? '-' : n.name, shownState(n), String(n.slots), n.running.length === 0 ? '-' : n.running.join(','), ago(n.lastSeenMs), n.version ?? '-', n.peerId])]))
  // a node that cannot run agents says why, and when it tries again
  for (const n of s.nodes) {
    const h = n.health
    if (h === undefined || h.state !== 'paused' || n.state === 'dead' || n.state === 'left') continue
    const when = h.until === null ? '' : h.until > Date.now() ? ` (tries again in ${Math.ceil((h.until - Date.now()) / 1000)}s)` : ' (trying again)'
    out.push(`  ${n.name === '' ? n.peerId : n.name}: PAUSED${when}: ${(h.reason ?? 'no reason given').split('\n')[0]}`)
  }
  // main advances only while the leader reaches a majority of the registered nodes (the leader's own count)
  const q = s.main.quorum
  if (q != null && !q.ok) {
    const names = q.missing.map(p => { const n = s.nodes.find(x => x.peerId === p); return n === undefined || n.name === '' ? p : n.name })
    out.push(`  NO MAJORITY: the leader reaches ${q.reachable} of ${q.voters} nodes, so main does not advance (finished tasks wait). A node gone for good: \`meshwork forget ${names[0] ?? 'NODE'}\`${names.length > 1 ? ` (also ${names.slice(1).join(', ')})` : ''}; it stops counting by itself after --forget-after (default 1 h).`)
  }
  const byState = new Map<string, number>()
  for (const t of s.tasks) byState.set(t.state, (byState.get(t.state) ?? 0) + 1)
  const cost = s.tasks.reduce((sum, t) => sum + t.costUsd, 0)
  out.push('', `TASKS ${s.tasks.length}${byState.size > 0 ? ' (' + [...byState].map(([k, v]) => `${v} ${k}`).join(', ') + ')' : ''}  cost $${cost.toFixed(2)}`)
  out.push(...table(s.tasks.length === 0 ? [] : [['ID', 'STATE', 'ATTEMPTS', 'NODE', 'COST', 'DEPS', 'WHY'], ...s.tasks.map(t => [t.id, t.state, String(t.attempts), who(t.node), `$${t.costUsd.toFixed(2)}`, t.deps.join(',') || '-', taskNote(t, s) || '-'])]))
  const open = s.conflicts.filter(c => c.state === 'open')
  if (s.conflicts.length > 0) {
    out.push('', `CONFLICTS ${open.length} open of ${s.conflicts.length}`)
    // who decided: the name a node registered, else the identity's peer id (what `meshwork whoami` prints)
    const decision = (d: StatusReport['conflicts'][number]['decision']): string => d === null ? '-' : `${d.action} by ${names.get(d.by) ?? d.by}`
    out.push(...table([['ID', 'TASK', 'STATE', 'FILES', 'DECISION'], ...s.conflicts.map(c => [c.id, c.taskId, c.state, c.files.join(','), decision(c.decision)])]))
    // a decision that could not be carried out: the conflict waits for another one
    for (const c of open) if (c.error !== null && c.decision === null) out.push(`  ${c.id}: ${c.error.split('\n')[0] ?? ''}`)
  }
  const asking = s.approvals.filter(a => a.state === 'open')
  if (asking.length > 0) {
    out.push('', `APPROVALS ${asking.length} waiting (\`meshwork approve ID --allow|--deny\`)`)
    out.push(...table([['ID', 'TASK', 'NODE', 'TOOL', 'INPUT'], ...asking.map(a => [a.id, a.taskId, who(a.node), a.tool, firstLine(approvalInputText(a.input), 80)])]))
  }
  // names, files, remotes and errors come from peers: no control character reaches the terminal
  return out.map(line => safeText(line)).join('\n')
}

/** A tool input in one line: a Bash command or a file path as such, anything else as JSON. */
export function approvalInputText (input: Record<string, unknown>): string {
  for (const k of ['command', 'file_path', 'path', 'url', 'pattern']) {
    const v = input[k]
    if (typeof v === 'string') return v
  }
  return JSON.stringify(input)
}
