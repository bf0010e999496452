import type { StatusReport } from '../api/status.ts'
import { approvalInputText } from '../cli/render.ts'
import type { InboxItem } from './model.ts'

/** What the inbox shows of a permission request. */
export interface InboxApproval {
  id: string
  tool: string
  input: Record<string, unknown>
  /** The node whose run asks (peer id). */
  node: string
  /** When it asked (epoch ms). */
  at: number
}

/** The open permission requests as inbox items (`approval:<id>`), oldest first. */
export function approvalItems (status: StatusReport, title: (taskId: string) => string): InboxItem[] {
  return status.approvals.filter(a => a.state === 'open').map(a => ({
    key: `approval:${a.id}`,
    kind: 'approval' as const,
    taskId: a.taskId,
    conflictId: null,
    title: title(a.taskId),
    summary: `${a.tool}: ${approvalInputText(a.input).replace(/\s+/g, ' ').trim()}`,
    files: [],
    hunks: [],
    oursFrom: {},
    approval: { id: a.id, tool: a.tool, input: a.input, node: a.node, at: a.at }
  }))
}
