import { seg, type Line } from '../lines.ts'
import { formatCost, formatDuration, formatTokens, nodeName, shortPeer, type InboxItem, type Totals, type TuiData } from '../model.ts'
import type { UiState, ViewName } from '../keys.ts'
import { STATE_COLOURS } from './colours.ts'


/**
 * The top three lines: mesh, main and the inbox count (impossible to miss when
 * something waits on a human); the totals (tasks by state, cost, tokens, time
 * to finish); the view tabs.
 */
export function headerLines (data: TuiData, totals: Totals, inbox: readonly InboxItem[], ui: UiState, width: number): Line[] {
  const s = data.status
  const alive = s.nodes.filter(n => n.state === 'alive').length
  const link = data.link
  if (link !== undefined && link.lostSince !== null) {
    // the node read through stopped answering: nothing below is live, and the first line says so
    const asOf = new Date(link.lastOkAt).toISOString().slice(11, 19)
    const lost: Line = [
      seg('meshwork ', { bold: true }),
      seg(` LOST CONNECTION to ${link.lostPeer ?? 'its node'} `, { color: 'red', inverse: true, bold: true }),
      seg(` no answer for ${formatDuration(Math.max(0, data.now - link.lostSince))}; ${link.note}. `, { color: 'red' }),
      seg(`Below: last known facts from ${asOf} UTC, not live.`, { color: 'yellow', bold: true })
    ]
    const second: Line = [seg(`stale since ${asOf}`, { color: 'yellow', bold: true }), seg(`  ${formatCost(totals.costUsd)}  ${formatTokens(totals.tokens)} tok  tasks ${totals.total}`)]
    return [lost, second, tabs(ui.view, inbox.length, ui.taskId)]
  }
  const first: Line = [
    seg('meshwork ', { bold: true }),
    // first after the name, so that no width can cut it off
    inbox.length > 0
      ? seg(` INBOX ${inbox.length} waiting on you `, { color: 'red', inverse: true, bold: true })
      : seg('inbox 0', { color: 'green' }),
    seg(`  mesh ${s.meshId}  main ${s.main.head === null ? '-' : s.main.head.slice(0, 7)}  leader ${s.main.leader === null ? 'none' : nodeName(s, s.main.leader)}  nodes ${alive}/${s.nodes.length}`),
    // a refused push of main to --push REMOTE is for a human too: the remote moved or is unreachable
    s.main.push != null && !s.main.push.ok ? seg(`  push to ${s.main.push.remote} rejected`, { color: 'red', bold: true }) : seg(''),
    seg(width >= 120 ? `  via ${shortPeer(data.via)}` : '', { dim: true })
  ]
  const second: Line = [seg(etaText(totals), { bold: true }), seg(`  ${formatCost(totals.costUsd)}  ${formatTokens(totals.tokens)} tok  `), seg(`tasks ${totals.total}`, { bold: true })]
  if (totals.byState.length > 0) second.push(seg(': '))
  totals.byState.forEach(([state, n], i) => {
    if (i > 0) second.push(seg(' '))
    second.push(seg(`${n} ${state}`, { color: STATE_COLOURS[state] }))
  })
  return [first, second, tabs(ui.view, inbox.length, ui.taskId)]
}

function etaText (t: Totals): string {
  if (t.total === 0) return 'no tasks'
  const behind = t.blocked > 0 ? ` (+${t.blocked} blocked until you act)` : ''
  if (t.remaining === 0) return t.waiting > 0 ? `waiting on ${t.waiting} decision${t.waiting === 1 ? '' : 's'}${behind}` : 'all work done'
  if (t.etaMs === null) return 'ETA - (no live slots)'
  return `ETA ${formatDuration(t.etaMs)}${behind}`
}

const TAB_NAMES: Record<ViewName, string> = { tasks: 'Tasks', nodes: 'Nodes', inbox: 'Inbox', output: 'Output' }

function tabs (view: ViewName, inboxCount: number, taskId: string | null): Line {
  const line: Line = []
  const names: ViewName[] = ['tasks', 'nodes', 'inbox', 'output']
  names.forEach((v, i) => {
    let label = `${i + 1} ${TAB_NAMES[v]}`
    if (v === 'inbox') label += ` (${inboxCount})`
    if (v === 'output' && taskId !== null) label += `: ${taskId}`
    line.push(seg(` ${label} `, v === view ? { inverse: true, bold: true } : v === 'inbox' && inboxCount > 0 ? { color: 'red', bold: true } : { dim: true }))
    line.push(seg(' '))
  })
  return line
}
