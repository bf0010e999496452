import { addTasks, asPlan, compactTasksRead, type NewTask } from '../crdt/ops.ts'
import * as lifecycle from '../crdt/lifecycle.ts'
import { expireAll } from '../crdt/approvals.ts'
import { parseConflictId, parseTaskId, type Conflict, type ConflictId, type Task, type TaskId } from '../crdt/schema.ts'
import { depsMerged } from '../scheduler/dag.ts'
import { UsageError } from '../util/errors.ts'
import { confirmWrite, type Client } from './client.ts'
import { nextStep, openConflictsOf } from './hints.ts'

/** A task id that is not on the board. */
export class UnknownTaskError extends UsageError {
  override name = 'UnknownTaskError'
}

/** A request that the task's current state does not allow. */
export class TaskStateError extends UsageError {
  override name = 'TaskStateError'
}

/** Makes sure the node the client reads through has our latest changes. */
async function confirm (client: Client): Promise<void> {
  await confirmWrite(client, 'the change', 'check the node and run the command again')
}

function taskOrThrow (client: Client, id: TaskId): Task {
  const t = client.node.board.snapshot().tasks.get(id)
  if (t === undefined) throw new UnknownTaskError(`no task "${id}" on the board. \`meshwork status\` lists the tasks.`)
  return t
}

/**
 * Adds a validated plan's tasks to the board in one change, as one plan (its
 * id is its first task's; `budgetUsd`, when given, is its budget), and waits
 * until the mesh node has it.
 */
export async function submitTasks (client: Client, tasks: NewTask[], budgetUsd: number | null = null): Promise<TaskId[]> {
  // compact records (the fields at their default left out) once every node reads them: 0.55x the operations
  const compact = compactTasksRead(client.node.board.snapshot().nodes)
  client.node.changeBoard(`plan:submit ${tasks.length} tasks`, addTasks(asPlan(tasks, budgetUsd), Date.now(), compact))
  await confirm(client)
  return tasks.map(t => t.id as TaskId)
}

/**
 * Cancels a task that has not merged; the node running it stops its agent. An
 * open conflict of the task is closed with it (decision `abandon`, by this
 * client's peer id, as every decision: peers refuse a decision signed with
 * another identity), so the inbox does not keep asking about a task nobody
 * wants any more.
 */
export async function cancelTask (client: Client, idText: string): Promise<Task['state']> {
  const by = client.node.peerId
  const id = parseTaskId(idText)
  const t = taskOrThrow(client, id)
  if (t.state === 'merged') throw new TaskStateError(`task "${id}" is already merged into main; it cannot be cancelled.`)
  if (t.state === 'cancelled') return t.state
  const open = [...client.node.board.snapshot().conflicts.values()].filter(c => c.taskId === id && c.state === 'open').map(c => c.id)
  const now = Date.now()
  client.node.changeBoard(`task:cancel ${id}`, d => {
    if (!lifecycle.cancel(d, id)) return
    for (const cid of open) lifecycle.resolve(d, cid, { decision: { action: 'abandon', by, at: now, note: 'the task was cancelled' } })
    // its run stops: nothing waits on its permission requests any more
    expireAll(d, id, now, 'the task was cancelled')
  })
  await confirm(client)
  return t.state
}

/** Puts a failed or cancelled task back in line with its attempt count reset. */
export async function retryTask (client: Client, idText: string): Promise<void> {
  const id = parseTaskId(idText)
  const t = taskOrThrow(client, id)
  const snap = client.node.board.snapshot()
  if (t.state === 'merged') throw new TaskStateError(`task "${id}" is already merged into main; there is nothing to retry.`)
  if (t.state === 'conflict') {
    const step = nextStep(t, snap)
    throw new TaskStateError(`task "${id}" waits on a conflict decision, so it cannot be retried${step !== null ? `: ${step.text}` : ''} (rerun runs the task again on the current main).`)
  }
  if (t.state !== 'failed' && t.state !== 'cancelled') {
    throw new TaskStateError(`task "${id}" is ${t.state}; only failed or cancelled tasks can be retried.`)
  }
  const now = Date.now()
  client.node.changeBoard(`task:retry ${id}`, d => { lifecycle.retry(d, id, { now, depsMerged: depsMerged(t, snap) }) })
  await confirm(client)
}

/** Actions of `meshwork resolve`. */
export const RESOLVE_ACTIONS = ['ours', 'theirs', 'rerun', 'agent', 'abandon'] as const
export type ResolveAction = typeof RESOLVE_ACTIONS[number]

/**
 * The conflict `id` names: a conflict id, or the id of a task with exactly one
 * open conflict.
 */
export function findConflict (client: Client, id: string): Conflict {
  const snap = client.node.board.snapshot()
  const c = snap.conflicts.get(parseConflictId(id))
  if (c !== undefined) return c
  const open = openConflictsOf(id, snap)
  if (open.length === 1) return open[0] as Conflict
  if (open.length > 1) throw new UsageError(`task "${id}" has ${open.length} open conflicts (${open.map(o => o.id).join(', ')}); name one: \`meshwork resolve ${open[0]?.id ?? ''} --action ...\`.`)
  const t = snap.tasks.get(id as TaskId)
  if (t !== undefined) {
    const closed = [...snap.conflicts.values()].filter(x => x.taskId === id)
    throw new UsageError(`task "${id}" has no open conflict (it is ${t.state}${closed.length > 0 ? `; its conflicts ${closed.map(x => x.id).join(', ')} are resolved` : ''}). \`meshwork status\` lists the open conflicts.`)
  }
  throw new UsageError(`no conflict or task "${id}" on the board. \`meshwork status\` lists the open conflicts.`)
}

/**
 * Records a human decision on an open conflict (named by its id, or by its
 * task's id when the task has exactly one open conflict); the merge leader
 * carries it out. The decision's `by` is the client's peer id (its
 * `--identity`), never a name the client asserts. Returns the conflict id.
 */
export async function resolveConflict (client: Client, conflictOrTask: string, action: ResolveAction, note: string): Promise<ConflictId> {
  const by = client.node.peerId
  const c = findConflict(client, conflictOrTask)
  const id = c.id
  if (c.state !== 'open') throw new TaskStateError(`conflict "${id}" is already resolved (${c.decision?.action ?? 'no decision'}).`)
  client.node.changeBoard(`conflict:decision ${id}`, d => { lifecycle.decide(d, id, { action, by, at: Date.now(), note }) })
  await confirm(client)
  return id
}
