import type { StatusNode } from './status.ts'
import type { MemberState } from '../node/membership.ts'

/**
 * A node's state as people read it (the status table, the TUI, the metrics):
 * `draining` for a live node being drained. `status --json` keeps the
 * contract's states (alive, suspect, dead, left) with `draining` beside them.
 */
export function shownState (n: Pick<StatusNode, 'state' | 'draining'>): MemberState | 'draining' {
  return n.draining && n.state === 'alive' ? 'draining' : n.state
}
