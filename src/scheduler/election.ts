import type { MainRef } from '../crdt/schema.ts'

/** How long a node must have been continuously alive before it can be elected. @default 3000 ms */
export const ELECTION_TIMEOUT_MS = 3000

/** A node as the election sees it (from the failure detector of the node that decides). */
export interface Candidate {
  peerId: string
  state: 'alive' | 'suspect' | 'dead' | 'left'
  eligible: boolean
  /** Wall-clock ms since which it has been alive without a break, or null. */
  aliveSince: number | null
}

/**
 * Leader election over the board (pure). A healthy leader is kept, even when a
 * node with a smaller id joins (no flapping). Otherwise the leader is the
 * eligible node with the smallest peer id that has been alive for
 * `timeoutMs`, with the term incremented; only that node writes the result, so
 * concurrent elections resolve on the board's last-writer-wins register, and
 * every action a leader takes carries its term (fencing).
 * Returns what to write, or null when nothing should change.
 */
export function electLeader (main: { leader: string | null, term: MainRef['term'] }, candidates: readonly Candidate[], now: number, timeoutMs = ELECTION_TIMEOUT_MS): { leader: string, term: number } | null {
  const current = main.leader === null ? undefined : candidates.find(c => c.peerId === main.leader)
  if (current !== undefined && current.eligible && (current.state === 'alive' || current.state === 'suspect')) return null
  const stable = candidates
    .filter(c => c.state === 'alive' && c.eligible && c.aliveSince !== null && now - c.aliveSince >= timeoutMs)
    .sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))
  const next = stable[0]
  if (next === undefined || next.peerId === main.leader) return null
  return { leader: next.peerId, term: main.term + 1 }
}
