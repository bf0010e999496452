import { str, type BoardDoc } from './board.ts'
import type { Transition } from './lifecycle.ts'
import type { BoardSnapshot, TaskId } from './schema.ts'
import { type Approval, type ApprovalId, type ApprovalState } from './approval-schema.ts'

/**
 * The permission-request lifecycle, as lifecycle.ts is the task's: every
 * write of a request's `state` is one of the named transitions below, made
 * inside a board change; each checks the state the request is in and writes
 * nothing (returning false) when the move is not allowed.
 *
 * Writers: the node whose run asks (`ask`, `timeOut`, `expire`), any client
 * (`decide`, through `meshwork approve` or the TUI) and `cancel` of the task
 * (`expireAll`). A decision and a node's timeout made at the same moment on
 * two machines are concurrent writes: the last writer wins on the board, and
 * the node answers the run with whatever it read first.
 */

export { APPROVAL_STATES, type Approval, type ApprovalId, type ApprovalState } from './approval-schema.ts'

/** The request transitions, in one place. */
export const APPROVAL_TRANSITIONS = {
  /** A human answers. */
  decide: { from: ['open'], to: ['allowed', 'denied'] },
  /** Nobody answered within `--approval-timeout`: denied, `by` null. */
  timeOut: { from: ['open'], to: ['denied'] },
  /** The run that asked is gone (cancelled, stopped, timed out): nothing waits any more. */
  expire: { from: ['open'], to: ['expired'] }
} as const satisfies Record<string, Transition<ApprovalState>>

export type ApprovalTransition = keyof typeof APPROVAL_TRANSITIONS

/** What a node writes when its run asks. */
export interface NewApproval {
  id: ApprovalId
  node: string
  attempt: number
  tool: string
  /** JSON text, already clipped (`clipToolInput`). */
  input: string
  at: number
}

/**
 * Puts a new open request on task `taskId`. Only while that run is the task's
 * current one (the task is `running` on `a.node`, attempt `a.attempt`: a run
 * being stopped, or one whose task went to another node, asks nobody) and the
 * id is new.
 */
export function ask (d: BoardDoc, taskId: TaskId, a: NewApproval): boolean {
  const rec = d.tasks[taskId]
  if (rec === undefined || String(rec.state) !== 'running' || String(rec.node) !== a.node || Number(rec.attempts ?? 0) !== a.attempt) return false
  rec.approvals ??= {}
  if (rec.approvals[a.id] !== undefined) return false
  rec.approvals[a.id] = { id: str(a.id), node: str(a.node), attempt: a.attempt, tool: str(a.tool), input: str(a.input), state: str('open'), at: a.at, by: null, decidedAt: null, note: str('') }
  return true
}

function move (d: BoardDoc, taskId: TaskId, id: ApprovalId, name: ApprovalTransition, to: ApprovalState, fields: { by: string | null, at: number, note: string }): boolean {
  const rec = d.tasks[taskId]?.approvals?.[id]
  if (rec === undefined) return false
  const t: Transition<ApprovalState> = APPROVAL_TRANSITIONS[name]
  if (!t.from.includes(String(rec.state) as ApprovalState) || !t.to.includes(to)) return false
  rec.state = str(to)
  rec.by = fields.by === null ? null : str(fields.by)
  rec.decidedAt = fields.at
  rec.note = str(fields.note)
  return true
}

/** A human allows or denies an open request; `by` is the deciding client's peer id. */
export function decide (d: BoardDoc, taskId: TaskId, id: ApprovalId, decision: { allow: boolean, by: string, at: number, note: string, alwaysForTask?: boolean }): boolean {
  const moved = move(d, taskId, id, 'decide', decision.allow ? 'allowed' : 'denied', decision)
  const rec = d.tasks[taskId]?.approvals?.[id]
  if (moved && decision.allow && decision.alwaysForTask === true && rec !== undefined) rec.always = true
  return moved
}

/** The request of `taskId` allowed with `--always-for-task` for `tool`, if any: later requests of that tool in the task need no human. */
export function standingApproval (task: { approvals?: Record<string, { tool: string, state: string, always?: boolean | undefined }> | undefined }, tool: string): string | null {
  for (const [id, a] of Object.entries(task.approvals ?? {})) if (a.state === 'allowed' && a.always === true && a.tool === tool) return id
  return null
}

/** Nobody answered in time: the request is denied without a human. */
export function timeOut (d: BoardDoc, taskId: TaskId, id: ApprovalId, at: number, note: string): boolean {
  return move(d, taskId, id, 'timeOut', 'denied', { by: null, at, note })
}

/** The run that asked is gone: the request expires. */
export function expire (d: BoardDoc, taskId: TaskId, id: ApprovalId, at: number, note: string): boolean {
  return move(d, taskId, id, 'expire', 'expired', { by: null, at, note })
}

/** Expires every open request of task `taskId` (its cancel); the number expired. */
export function expireAll (d: BoardDoc, taskId: TaskId, at: number, note: string): number {
  const all = d.tasks[taskId]?.approvals
  if (all === undefined) return 0
  let n = 0
  for (const id of Object.keys(all)) if (expire(d, taskId, id as ApprovalId, at, note)) n++
  return n
}

/** A request with the task it belongs to. */
export type TaskApproval = Approval & { taskId: TaskId }

/** What an open request whose run is gone reads as (see `listApprovals`). */
export const GONE_NOTE = 'its run is gone (the task no longer runs there)'

/**
 * Every request on the board, oldest first. An open request whose run is no
 * longer the task's current one (the task stopped running, or runs again
 * elsewhere or as another attempt: its node died, say) reads as `expired`:
 * derived on read, since a dead node cannot write it.
 */
export function listApprovals (snap: BoardSnapshot): TaskApproval[] {
  const out: TaskApproval[] = []
  for (const t of snap.tasks.values()) {
    const current = (a: Approval): boolean => t.state === 'running' && t.node === a.node && t.attempts === a.attempt
    for (const a of Object.values(t.approvals ?? {})) {
      out.push(a.state === 'open' && !current(a) ? { ...a, state: 'expired', note: GONE_NOTE, taskId: t.id } : { ...a, taskId: t.id })
    }
  }
  return out.sort((a, b) => a.at - b.at || a.id.localeCompare(b.id))
}

/** The request `id`, or undefined. */
export function findApproval (snap: BoardSnapshot, id: string): TaskApproval | undefined {
  return listApprovals(snap).find(a => a.id === id)
}

/** A new request id for task `taskId`: `<task id>-<6 hex>` from `random` (3 random bytes as hex). */
export function approvalIdFor (taskId: TaskId, random: string): ApprovalId {
  return `${taskId}-${random}` as ApprovalId
}
