import type { TaskState } from '../../crdt/schema.ts'
import type { MemberState } from '../../node/membership.ts'
import type { Colour } from '../lines.ts'

/** Colour of each task state (white where nothing needs attention). */
export const STATE_COLOURS: Record<TaskState, Colour> = {
  pending: 'gray',
  ready: 'white',
  claimed: 'cyan',
  running: 'cyan',
  done: 'blue',
  merging: 'blue',
  merged: 'green',
  conflict: 'red',
  failed: 'red',
  cancelled: 'gray'
}

/** Colour of each node state. */
export const NODE_COLOURS: Record<MemberState | 'draining', Colour> = { alive: 'green', draining: 'yellow', suspect: 'yellow', dead: 'red', left: 'gray' }
