import type { BoardSnapshot, Conflict, Task } from '../crdt/schema.ts'

/**
 * The commands the CLI suggests, built from the board so that each one is
 * accepted in the state it names: a conflict is settled with `resolve` on its
 * conflict id, a failed or cancelled task with `retry`, and a merged task has
 * nothing left to do.
 */

/** The `resolve` actions, as written in hints. */
export const RESOLVE_ACTIONS_TEXT = 'ours|theirs|rerun|agent|abandon'

/** The open conflicts of a task. */
export function openConflictsOf (taskId: string, snap: BoardSnapshot): Conflict[] {
  return [...snap.conflicts.values()].filter(c => c.taskId === taskId && c.state === 'open')
}

/**
 * What a human can run to let `t` go on, or a sentence saying why nothing is
 * needed or possible; null for states that move by themselves.
 */
export function nextStep (t: Task, snap: BoardSnapshot): { command: string | null, text: string } | null {
  switch (t.state) {
    case 'failed':
    case 'cancelled':
      return { command: `meshwork retry ${t.id}`, text: `\`meshwork retry ${t.id}\` runs it again` }
    case 'conflict': {
      const c = openConflictsOf(t.id, snap)[0]
      if (c === undefined) return { command: null, text: 'its conflict is being opened by the merge leader; `meshwork status` lists it shortly' }
      if (c.decision !== null) return { command: null, text: `decision "${c.decision.action}" on ${c.id} is being carried out by the merge leader` }
      const cmd = `meshwork resolve ${c.id} --action ${RESOLVE_ACTIONS_TEXT}`
      return { command: cmd, text: `\`${cmd}\` settles it` }
    }
    case 'merged':
      return { command: null, text: 'it is merged into main; nothing to retry' }
    case 'pending':
    case 'ready':
    case 'claimed':
    case 'running':
    case 'done':
    case 'merging':
      return null
    default: {
      const never: never = t.state
      return never
    }
  }
}
