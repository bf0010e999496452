/**
 * What `submit --wait` shows of each task it follows (`FollowEntry`, see
 * ../protocol/follow.ts), read from a board: a node builds these for the
 * client that follows a plan through it (./follow-service.ts), and a client
 * whose node does not serve `/meshwork/follow/1` builds them from its own
 * board replica.
 */
import type { BoardSnapshot, TaskId } from '../crdt/schema.ts'
import type { FollowEntry } from '../protocol/follow.ts'
import { blockedByAll } from '../scheduler/dag.ts'
import { waitingOnBudget } from '../scheduler/budget.ts'
import { nextStep } from './hints.ts'

/** The entries of the tasks of `ids` on the board, in the order of `ids` (an id not on the board has none). */
export function followEntries (snap: BoardSnapshot, ids: readonly string[]): FollowEntry[] {
  const blockers = blockedByAll(snap)
  const onBudget = waitingOnBudget(snap)
  const out: FollowEntry[] = []
  for (const id of ids) {
    const t = snap.tasks.get(id as TaskId)
    if (t === undefined) continue
    const by = blockers.get(t.id)
    const dep = by !== undefined ? snap.tasks.get(by.id) : undefined
    out.push({
      id: t.id,
      state: t.state,
      attempts: t.attempts,
      node: t.node,
      nodeName: t.node === null ? '-' : snap.nodes.get(t.node)?.name ?? t.node.slice(-8),
      error: t.error,
      blockedBy: by === undefined ? null : { id: by.id, state: by.state, step: dep !== undefined ? nextStep(dep, snap)?.text ?? null : null },
      held: onBudget.has(t.id)
    })
  }
  return out
}
