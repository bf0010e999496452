import * as approvals from '../crdt/approvals.ts'
import type { TaskApproval } from '../crdt/approvals.ts'
import { parseToolInput, type ApprovalId, type ApprovalState } from '../crdt/approval-schema.ts'
import type { BoardSnapshot } from '../crdt/schema.ts'
import { UsageError } from '../util/errors.ts'
import { confirmWrite, type Client } from './client.ts'

/** A request id that is not on the board (nor a task with one open request). */
export class UnknownApprovalError extends UsageError {
  override name = 'UnknownApprovalError'
}

/** A request that was already answered, or expired. */
export class ApprovalClosedError extends UsageError {
  override name = 'ApprovalClosedError'
}

/** One request in `status --json` (`approvals`). */
export interface StatusApproval {
  id: string
  taskId: string
  /** The peer id of the node whose run asks. */
  node: string
  tool: string
  /** The tool's input (clipped to 2000 characters of JSON; `{ clipped }` when cut). */
  input: Record<string, unknown>
  state: ApprovalState
  /** When the run asked (epoch ms). */
  at: number
  /** The client that answered; null while open, on a timeout and on an expiry. */
  by: string | null
  decidedAt: number | null
  note: string
}

/** The board's requests in the `status --json` shape, oldest first. */
export function statusApprovals (snap: BoardSnapshot): StatusApproval[] {
  return approvals.listApprovals(snap).map(a => ({ id: a.id, taskId: a.taskId, node: a.node, tool: a.tool, input: parseToolInput(a.input), state: a.state, at: a.at, by: a.by, decidedAt: a.decidedAt, note: a.note }))
}

/**
 * The request `id` names: a request id, or the id of a task with exactly one
 * open request.
 */
export function findApprovalRequest (snap: BoardSnapshot, id: string): TaskApproval {
  const a = approvals.findApproval(snap, id)
  if (a !== undefined) return a
  const all = approvals.listApprovals(snap).filter(x => x.taskId === id)
  const open = all.filter(x => x.state === 'open')
  if (open.length === 1) return open[0] as TaskApproval
  if (open.length > 1) throw new UsageError(`task "${id}" has ${open.length} open permission requests (${open.map(o => o.id).join(', ')}); name one: \`meshwork approve ${open[0]?.id ?? ''} --allow\`.`)
  if (snap.tasks.has(id as TaskApproval['taskId'])) {
    throw new UnknownApprovalError(`task "${id}" has no open permission request${all.length > 0 ? ` (its requests ${all.map(x => `${x.id} ${x.state}`).join(', ')})` : ''}. \`meshwork status\` lists them.`)
  }
  throw new UnknownApprovalError(`no permission request or task "${id}" on the board. \`meshwork status --json\` lists them under "approvals".`)
}

/**
 * Answers an open permission request (named by its id, or by its task's id
 * when the task has exactly one open request) as this client: the node whose
 * run waits on it reads the answer from the board and lets the tool run, or
 * not. Returns the request id.
 */
export async function answerApproval (client: Client, idOrTask: string, allow: boolean, note: string, alwaysForTask = false): Promise<ApprovalId> {
  const a = findApprovalRequest(client.node.board.snapshot(), idOrTask)
  if (a.state !== 'open') throw new ApprovalClosedError(`permission request "${a.id}" is already ${a.state}${a.by !== null ? ` (by ${a.by})` : ''}${a.note !== '' ? `: ${a.note}` : ''}.`)
  const by = client.node.peerId
  const ok = client.node.changeBoard(`approval:${allow ? 'allow' : 'deny'} ${a.id}`, d => { approvals.decide(d, a.taskId, a.id, { allow, by, at: Date.now(), note, alwaysForTask }) })
  if (!ok) throw new ApprovalClosedError(`permission request "${a.id}" is no longer open.`)
  await confirmWrite(client, 'the answer', 'check the node and run the command again')
  return a.id
}
