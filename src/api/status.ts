import { forgotten } from './forget.ts'
import type { BoardSnapshot, ConflictHunk, PushReportRecord, QuorumReportRecord, Task, TaskState, Tokens } from '../crdt/schema.ts'
import type { MembersView } from '../protocol/members.ts'
import type { MemberState } from '../node/membership.ts'
import { HEALTH_OK, type HealthState } from '../node/health.ts'
import { budgetReport, type BudgetReport } from './budget.ts'
import { heldByBudget, type BudgetHold } from '../scheduler/budget.ts'
import { statusApprovals, type StatusApproval } from './approvals.ts'

/** One node in `status --json`. */
export interface StatusNode {
  peerId: string
  name: string
  state: MemberState
  /** Asked to drain (`meshwork drain`) and still alive: it claims nothing new, finishes and leaves. */
  draining: boolean
  slots: number
  running: string[]
  lastSeenMs: number | null
  /** Whether the node can run agents: paused with the reason and when it tries again (epoch ms). */
  health: HealthState
  /** Taken out of the majority count with `meshwork forget` (until it starts again). */
  forgotten?: boolean
  /**
   * The meshwork version the node announces (a rolling upgrade shows old and
   * new side by side); null when unknown: not heard from, or a version before
   * nodes announced it, or read through such a node.
   */
  version: string | null
}

/** One task in `status --json`. */
export interface StatusTask {
  id: string
  title: string
  state: TaskState
  deps: string[]
  attempts: number
  node: string | null
  branch: string
  head: string | null
  mergeCommit: string | null
  costUsd: number
  tokens: Tokens
  createdAt: number
  startedAt: number | null
  doneAt: number | null
  mergedAt: number | null
  error: string | null
  /** What the agent said it did in the run that made the task done (at most 2 KB); null before that. */
  summary: string | null
  /** The agent's latest progress event, as the node read through has heard it (ephemeral). */
  progress: { kind: string, text: string, at: number } | null
  /** The plan the task came with (its first task's id), or null on tasks submitted before plans were recorded. */
  plan: string | null
  /**
   * Why a ready task does not start: `budget` while the mesh's or its plan's
   * budget is spent (it starts by itself once the budget is raised); else null.
   */
  held: 'budget' | null
}

/** The object `meshwork status --json` prints (a stable format: fields may be added, never renamed). */
export interface StatusReport {
  meshId: string
  /** `push`: the leader's last push of main to its `--push` remote (null if none was made). */
  main: { head: string | null, leader: string | null, term: number, push: PushReportRecord | null, quorum?: QuorumReportRecord | null }
  nodes: StatusNode[]
  tasks: StatusTask[]
  conflicts: Array<{ id: string, taskId: string, files: string[], hunks: ConflictHunk[], oursFrom?: Record<string, string>, state: 'open' | 'resolved', decision: { action: string, by: string, at: number, note: string } | null, error: string | null }>
  /** The mesh's spending cap and the plans' budgets, what each has spent and the tasks each holds back. */
  budget: BudgetReport
  /** Permission requests of runs on nodes started with `--approvals`, oldest first (answered ones stay in the list). */
  approvals: StatusApproval[]
  /** Board changes the node read through refused for their author (not on its `--allow`, or a write the author's role does not allow): author (peer id, else actor tag) → count. A forgery (another peer's actor without its signature) counts against the peer that sent it. */
  refused: Record<string, number>
  /** Authors the node no longer counts one by one in `refused` (it keeps the most recently refused), and their refused changes; absent when none. */
  refusedForgotten?: { authors: number, changes: number }
}

function statusTask (t: Task, progress: MembersView['progress'], hold: BudgetHold | undefined): StatusTask {
  const p = progress?.[t.id]
  return {
    id: t.id,
    title: t.title,
    state: t.state,
    deps: [...t.deps],
    attempts: t.attempts,
    node: t.node,
    branch: t.branch,
    head: t.head,
    mergeCommit: t.mergeCommit,
    costUsd: t.costUsd,
    tokens: { ...t.tokens },
    createdAt: t.createdAt,
    startedAt: t.startedAt,
    doneAt: t.doneAt,
    mergedAt: t.mergedAt,
    error: t.error,
    summary: t.summary,
    progress: p === undefined ? null : { kind: p.kind, text: p.text, at: p.at },
    plan: t.plan ?? null,
    held: hold !== undefined ? 'budget' : null
  }
}

/**
 * Builds the status report from a board snapshot and a node's membership view.
 * Nodes known only from the board's registry (never heard by the viewing node)
 * are included with the state the failure detector gave them.
 */
export function buildStatus (snap: BoardSnapshot, view: MembersView | null): StatusReport {
  const nodes: StatusNode[] = []
  const seen = new Set<string>()
  for (const m of view?.members ?? []) {
    seen.add(m.peerId)
    const rec = snap.nodes.get(m.peerId)
    // a graceful stop is on the board too: a lost "leaving" heartbeat must not turn it into "dead"
    const leftOnBoard = rec !== undefined && rec.leftAt !== null && rec.leftAt >= rec.startedAt && (m.state === 'suspect' || m.state === 'dead')
    const draining = rec !== undefined && (rec.drainAt ?? null) !== null && (rec.drainAt ?? 0) >= rec.startedAt && m.state === 'alive'
    nodes.push({ peerId: m.peerId, name: m.name !== '' ? m.name : rec?.name ?? '', state: leftOnBoard ? 'left' : m.state, draining, slots: m.slots, running: m.running, lastSeenMs: m.lastSeenAt === null ? null : Math.round(m.silentMs), health: { ...(m.health ?? HEALTH_OK) }, version: m.version ?? null, ...(rec !== undefined && forgotten(rec) && m.state === 'dead' ? { forgotten: true } : {}) })
  }
  for (const [peerId, rec] of snap.nodes) {
    if (seen.has(peerId)) continue
    nodes.push({ peerId, name: rec.name, state: rec.leftAt !== null ? 'left' : 'dead', draining: false, slots: rec.slots, running: [], lastSeenMs: null, health: { ...HEALTH_OK }, version: null, ...(forgotten(rec) ? { forgotten: true } : {}) })
  }
  const holds = heldByBudget(snap)
  const tasks = [...snap.tasks.values()].sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id)).map(t => statusTask(t, view?.progress, holds.get(t.id)))
  const conflicts = [...snap.conflicts.values()].map(c => ({ id: c.id, taskId: c.taskId, files: [...c.files], hunks: c.hunks.map(h => ({ ...h })), ...(c.oursFrom === undefined ? {} : { oursFrom: { ...c.oursFrom } }), state: c.state, decision: c.decision === null ? null : { ...c.decision }, error: c.error }))
  const { head, leader, term, push, quorum } = snap.main
  return { meshId: snap.meshId, main: { head, leader, term, push: push == null ? null : { ...push }, quorum: quorum == null || quorum.by !== leader ? null : { ...quorum, missing: [...quorum.missing] } }, nodes, tasks, conflicts, budget: budgetReport(snap), approvals: statusApprovals(snap), refused: { ...(view?.refused ?? {}) }, ...(view?.refusedForgotten !== undefined ? { refusedForgotten: { ...view.refusedForgotten } } : {}) }
}
