import type { StatusReport } from '../api/status.ts'
import { renderStatus } from '../cli/render.ts'
import { inbox, type InboxItem } from './model.ts'
import { safeText } from '../util/text.ts'

/**
 * The TUI without a terminal: the `status --watch` rendering plus what waits
 * on a human, printed only when something a reader cares about changed (never
 * a frame per second of "last seen" ticking).
 */

const KIND: Record<InboxItem['kind'], string> = { approval: 'APPROVE?', conflict: 'CONFLICT', failed: 'FAILED', budget: 'BUDGET' }

/** The inbox as plain lines (empty when nothing waits). */
export function renderInbox (s: StatusReport): string {
  const items = inbox(s)
  if (items.length === 0) return ''
  return [
    `INBOX ${items.length} waiting on a human (meshwork approve / resolve / retry / cancel)`,
    ...items.map(i => { const id = i.approval?.id ?? i.conflictId; return safeText(`  ${KIND[i.kind]} ${id ?? i.taskId}${id !== null ? ` (task ${i.taskId})` : ''}: ${i.summary}`) })
  ].join('\n')
}

/** One plain frame: the status as `meshwork status` prints it, then the inbox. */
export function renderPlain (s: StatusReport, via: string): string {
  const box = renderInbox(s)
  return renderStatus(s, via) + (box === '' ? '' : '\n\n' + box)
}

/** What makes a plain frame worth printing again: states, placements, costs, main, conflicts; not clocks. */
export function plainSignature (s: StatusReport): string {
  return JSON.stringify([
    s.main,
    s.nodes.map(n => [n.peerId, n.state, n.slots, n.running]),
    s.tasks.map(t => [t.id, t.state, t.attempts, t.node, t.costUsd.toFixed(2), t.error]),
    s.conflicts.map(c => [c.id, c.state, c.files, c.hunks.length]),
    s.approvals.map(a => [a.id, a.state])
  ])
}
