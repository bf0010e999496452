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

/**
 * How long a registered node may be unreachable before it stops counting
 * toward the majority the merge leader needs (`meshwork node --forget-after`).
 * @default 1 h
 */
export const FORGET_AFTER_MS = 3_600_000

/** A registered node as the quorum sees it: its board record and what this node's failure detector says of it. */
export interface Voter {
  peerId: string
  /** When the node last started, left and was forgotten (board record). */
  startedAt: number
  leftAt: number | null
  forgottenAt?: number | null | undefined
  /** This node's view: undefined when never heard since this node started. */
  state: Candidate['state'] | undefined
  /** Wall-clock ms this node last heard it, or null. */
  lastSeenAt: number | null
}

export interface Quorum {
  /** Nodes that count: registered, not left, not forgotten, not unreachable for longer than the forget time. */
  voters: number
  /** Voters reachable from this node (itself included). */
  reachable: number
  /** A strict majority of the voters is reachable. */
  ok: boolean
  /** The voters this node cannot reach (peer ids). */
  missing: string[]
}

/**
 * The majority the merge leader needs before main advances (pure). Every node
 * registered on the board counts, except one that left gracefully, one a
 * person forgot (`meshwork forget`, until it starts again) and one this node
 * has not heard for `forgetAfterMs` (counted from this node's own start when
 * it never heard it). A node is reachable when this node's failure detector
 * has it alive or suspect, and, given `leaseMs`, heard within it. With a
 * strict majority only one side of a partition can advance main; the
 * minority keeps running agents and its finished tasks merge after the heal.
 *
 * The lease is what keeps a leader cut off from the majority from merging
 * on while the majority elects another: its failure detector holds the
 * others alive, then suspect, for `deadAfter` and more (it widens its
 * timeouts with lag), and the majority may elect a new leader once it holds
 * this one dead, `deadAfter` after the cut at the earliest (or 1.5 of the
 * heartbeat periods the leader announced, in a large mesh). A lease shorter
 * than that (`Membership.leaseMs`: half of `deadAfter`, or 1.25 of the
 * leader's own announced period when that is longer; never widened) makes
 * the old leader stop first.
 */
export function quorum (me: string, voters: readonly Voter[], now: number, myStartedAt: number, forgetAfterMs = FORGET_AFTER_MS, leaseMs: number | null = null): Quorum {
  let count = 0
  let reachable = 0
  const missing: string[] = []
  for (const v of voters) {
    if (v.leftAt !== null && v.leftAt >= v.startedAt) continue
    if (v.forgottenAt != null && v.forgottenAt >= v.startedAt) continue
    const heard = v.peerId === me || leaseMs === null || (v.lastSeenAt !== null && now - v.lastSeenAt < leaseMs)
    if (v.peerId === me || ((v.state === 'alive' || v.state === 'suspect') && heard)) {
      count++
      reachable++
      continue
    }
    if (v.state === 'left') continue
    const silentSince = Math.max(v.lastSeenAt ?? 0, myStartedAt, v.startedAt)
    if (now - silentSince >= forgetAfterMs) continue
    count++
    missing.push(v.peerId)
  }
  if (!voters.some(v => v.peerId === me)) { count++; reachable++ }
  return { voters: count, reachable, ok: reachable * 2 > count, missing }
}
