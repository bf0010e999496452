/*
 * Over 400 lines, on purpose: the TUI's whole view model (rows, critical
 * path, inbox, totals, ETA) as pure functions of one snapshot, so that every
 * view reads the same derived facts and all of them are unit-tested here.
 */
import type { StatusReport, StatusTask } from '../api/status.ts'
import { spentBudgets } from '../api/budget.ts'
import type { BoardSnapshot, ConflictHunk, TaskState } from '../crdt/schema.ts'
import type { MembersView } from '../protocol/members.ts'
import type { MemberState } from '../node/membership.ts'
import { WAITING_ON_HUMAN, dependentsOf, estimateMs, postOrder, topoOrder } from '../scheduler/dag.ts'
import { approvalItems, type InboxApproval } from './approvals.ts'
import { shownState } from '../api/shown-state.ts'

/**
 * The TUI's view model: pure functions from a board snapshot, a membership view
 * and the progress lines heard so far to what the screen shows (rows, critical
 * path, inbox, totals, ETA). No I/O, no React: every function here is unit-tested.
 */

/** One line of an agent's stream, as heard over progress gossip. */
export interface ProgressLine {
  kind: string
  text: string
  at: number
}

/** Progress lines kept per task (the oldest go first). @default 200 */
export const MAX_PROGRESS_LINES = 200

/** Board facts of a task that `status --json` does not carry but the TUI shows. */
export interface TaskDetail {
  prompt: string
  files: string[]
  priority: number
  /** Estimated run time from the plan (sim duration, timeout / 4, else 60 s). */
  estimateMs: number
  /** The plan gave a duration (sim or timeout): better than any observed mean. */
  estimated: boolean
}

/** Presence facts of a node that `status --json` does not carry. */
export interface NodeExtra {
  load: number
  backoffUntil: number | null
}

/**
 * The client's link to the node it reads through. While `lost` is set the
 * board and membership facts are the last ones heard, not live.
 */
export interface LinkState {
  /** Since when (epoch ms) the node has not answered, or null while it does. */
  lostSince: number | null
  /** The node that stopped answering (its name where known). */
  lostPeer: string | null
  /** What the TUI does about it, e.g. "trying beta". */
  note: string
  /** When the node it reads through last answered (epoch ms). */
  lastOkAt: number
}

/** Everything one frame is drawn from. */
export interface TuiData {
  /** The link to the node read through; absent means live. */
  link?: LinkState
  status: StatusReport
  tasks: ReadonlyMap<string, TaskDetail>
  nodes: ReadonlyMap<string, NodeExtra>
  /** Agent output per task id, oldest first. */
  progress: ReadonlyMap<string, readonly ProgressLine[]>
  /** The mesh node the client reads through. */
  via: string
  /** Wall clock of this frame (epoch ms). */
  now: number
}

/** Task states that need no more agent work. */
const NO_WORK: ReadonlySet<TaskState> = new Set(['done', 'merging', 'merged', 'cancelled', 'failed', 'conflict'])

/** Builds the frame data from what the client knows; `status` comes from `buildStatus` of the same snapshot. */
export function tuiData (status: StatusReport, snap: BoardSnapshot, view: MembersView | null, progress: ReadonlyMap<string, readonly ProgressLine[]>, via: string, now: number, link?: LinkState): TuiData {
  const tasks = new Map<string, TaskDetail>()
  for (const t of snap.tasks.values()) {
    tasks.set(t.id, { prompt: t.prompt, files: [...t.files], priority: t.priority, estimateMs: estimateMs(t), estimated: t.sim !== null || t.timeoutMs !== null })
  }
  const nodes = new Map<string, NodeExtra>()
  for (const m of view?.members ?? []) nodes.set(m.peerId, { load: m.load, backoffUntil: m.backoffUntil })
  return { status, tasks, nodes, progress, via, now, ...(link !== undefined ? { link } : {}) }
}

/**
 * Adds the latest progress events of a membership view (or single gossiped
 * events) to a per-task log, skipping ones already there; returns true when
 * something was added. Keeps at most `MAX_PROGRESS_LINES` per task.
 */
export function appendProgress (log: Map<string, ProgressLine[]>, taskId: string, p: ProgressLine): boolean {
  const lines = log.get(taskId) ?? []
  const last = lines[lines.length - 1]
  if (last !== undefined && (p.at < last.at || (p.at === last.at && p.text === last.text))) return false
  lines.push({ kind: p.kind, text: p.text, at: p.at })
  if (lines.length > MAX_PROGRESS_LINES) lines.splice(0, lines.length - MAX_PROGRESS_LINES)
  log.set(taskId, lines)
  return true
}

/** Mean wall time of the finished runs on the board (doneAt - startedAt), or null. */
export function observedRunMs (tasks: readonly StatusTask[]): number | null {
  const runs = tasks.filter(t => t.startedAt !== null && t.doneAt !== null && t.doneAt >= t.startedAt).map(t => (t.doneAt as number) - (t.startedAt as number))
  return runs.length === 0 ? null : runs.reduce((a, b) => a + b, 0) / runs.length
}

/**
 * Agent time a task still needs: 0 when it needs no more agent work, the rest
 * of its estimate when running, its whole estimate otherwise. Without a plan
 * estimate, the mean of the runs observed so far is the better guess.
 */
export function remainingWorkMs (t: StatusTask, d: TaskDetail | undefined, observed: number | null, now: number): number {
  return remainingWork(t, d, observed, now)
}

function remainingWork (t: StatusTask, d: TaskDetail | undefined, observed: number | null, now: number): number {
  if (NO_WORK.has(t.state)) return 0
  const est = d !== undefined && d.estimated ? d.estimateMs : observed ?? d?.estimateMs ?? 60_000
  if (t.state === 'running' && t.startedAt !== null) return Math.max(0, est - (now - t.startedAt))
  return est
}

/**
 * Tasks that cannot start until a human acts: a dependency, direct or not, is
 * failed, cancelled or in conflict (`WAITING_ON_HUMAN`). They count no work in
 * the ETA. One iterative walk (`postOrder`): plans may be deep chains.
 */
export function blockedTasks (tasks: readonly StatusTask[]): Set<string> {
  const byId = new Map(tasks.map(t => [t.id, t]))
  const blocked = new Set<string>()
  const roots = tasks.filter(t => t.state === 'pending' || t.state === 'ready').map(t => t.id)
  const live = (id: string): boolean => { const t = byId.get(id); return t !== undefined && t.state !== 'merged' }
  postOrder(roots, id => (byId.get(id)?.deps ?? []).filter(live), id => {
    const t = byId.get(id)
    if (t === undefined || t.state === 'merged') return
    if (t.deps.some(d => { const dep = byId.get(d); return dep !== undefined && (WAITING_ON_HUMAN.has(dep.state) || blocked.has(d)) })) blocked.add(id)
  })
  return new Set(roots.filter(id => blocked.has(id)))
}

/**
 * The critical path of what is left: the chain of dependent tasks with the most
 * remaining agent time, first task first. Tasks that need no more work are left
 * out; empty when nothing remains.
 */
export function criticalPath (data: TuiData): { ids: string[], ms: number } {
  const tasks = data.status.tasks
  const byId = new Map(tasks.map(t => [t.id, t]))
  const observed = observedRunMs(tasks)
  const stuck = blockedTasks(tasks)
  const remainingWorkMs = (t: StatusTask, d: TaskDetail | undefined, o: number | null, now: number): number => stuck.has(t.id) ? 0 : remainingWork(t, d, o, now)
  const dependents = dependentsOf(tasks)
  const memo = new Map<string, { ms: number, next: string | null }>()
  // iterative post-order over the dependents (any depth): each task is valued after everything below it
  postOrder(tasks.map(t => t.id), id => (dependents.get(id) ?? []).filter(c => byId.has(c)), id => {
    let best: { ms: number, next: string | null } = { ms: 0, next: null }
    for (const child of dependents.get(id) ?? []) {
      const l = memo.get(child) ?? { ms: 0, next: null }
      if (l.ms > best.ms) best = { ms: l.ms, next: child }
    }
    memo.set(id, { ms: remainingWorkMs(byId.get(id)!, data.tasks.get(id), observed, data.now) + best.ms, next: best.next })
  })
  const level = (id: string): { ms: number, next: string | null } => memo.get(id) ?? { ms: 0, next: null }
  let start: string | null = null
  let ms = 0
  for (const t of tasks) {
    if (remainingWorkMs(t, data.tasks.get(t.id), observed, data.now) === 0) continue
    const l = level(t.id)
    if (l.ms > ms) { ms = l.ms; start = t.id }
  }
  const ids: string[] = []
  const seen = new Set<string>()
  for (let id = start; id !== null && !seen.has(id); id = memo.get(id)?.next ?? null) {
    seen.add(id)
    // a finished task between two that are not keeps the chain, not a place on it
    if (remainingWorkMs(byId.get(id)!, data.tasks.get(id), observed, data.now) > 0) ids.push(id)
  }
  return { ids, ms }
}

/** What waits on a human. */
export const INBOX_KINDS = ['approval', 'conflict', 'failed', 'budget'] as const
export type InboxKind = typeof INBOX_KINDS[number]

/** One thing waiting on a human decision. */
export interface InboxItem {
  /** Stable while the item waits: `conflict:<id>`, `failed:<task>`, `budget:mesh` or `budget:plan:<plan>`. */
  key: string
  kind: InboxKind
  taskId: string
  /** Set for conflicts. */
  conflictId: string | null
  title: string
  /** One line: the conflicted files or the error. */
  summary: string
  files: string[]
  hunks: ConflictHunk[]
  /** Conflicted file → the task whose merge put main's side there, as the merge leader recorded it (empty when not recorded). */
  oursFrom: Readonly<Record<string, string>>
  /** Set for permission requests (`approval:<id>`): what the run asks to do. */
  approval?: InboxApproval
}

/**
 * Open permission requests first (a run waits on each, oldest first), then open
 * conflicts (board order), then failed tasks (a failure that mentions the
 * budget is a `budget` item), then each spent budget that holds ready tasks
 * back (`budget:mesh`, `budget:plan:<id>`; its task is the first held).
 */
export function inbox (status: StatusReport): InboxItem[] {
  const title = (id: string): string => status.tasks.find(t => t.id === id)?.title ?? ''
  const items: InboxItem[] = approvalItems(status, title)
  for (const c of status.conflicts) {
    if (c.state !== 'open' || c.decision !== null) continue
    items.push({ key: `conflict:${c.id}`, kind: 'conflict', taskId: c.taskId, conflictId: c.id, title: title(c.taskId), summary: `conflicts with main in ${c.files.join(', ') || '(no files listed)'}${c.error === null ? '' : `; ${firstLine(c.error)}`}`, files: [...c.files], hunks: c.hunks, oursFrom: { ...c.oursFrom } })
  }
  for (const t of status.tasks) {
    if (t.state !== 'failed') continue
    const error = t.error ?? 'failed'
    items.push({ key: `failed:${t.id}`, kind: /budget/i.test(error) ? 'budget' : 'failed', taskId: t.id, conflictId: null, title: t.title, summary: firstLine(error), files: [], hunks: [], oursFrom: {} })
  }
  for (const h of spentBudgets(status.budget)) {
    items.push({ key: h.key, kind: 'budget', taskId: h.held[0] as string, conflictId: null, title: title(h.held[0] as string), summary: h.text, files: [], hunks: [], oursFrom: {} })
  }
  return items
}

/**
 * The task whose merge put main's side (`ours`) of a conflict in `file` there,
 * as the merge leader read it from main's history when it opened the conflict;
 * null when it did not record one (an older record, a file last changed by a
 * commit of no task).
 */
export function oursFrom (item: Pick<InboxItem, 'oursFrom'>, file: string): string | null {
  return Object.hasOwn(item.oursFrom, file) ? item.oursFrom[file] ?? null : null
}

/** Keys present in `next` but not in `prev`: the items that should ring the bell. */
export function newInboxKeys (prev: ReadonlySet<string>, next: readonly InboxItem[]): string[] {
  return next.filter(i => !prev.has(i.key)).map(i => i.key)
}

/** Totals of the header. */
export interface Totals {
  total: number
  byState: Array<[TaskState, number]>
  costUsd: number
  tokens: number
  /** Estimated ms until every remaining task has run, or null when nothing can run (no live slots) or nothing is left. */
  etaMs: number | null
  /** Tasks still needing agent work. */
  remaining: number
  /** Items waiting on a human (they stop the plan from finishing). */
  waiting: number
  /** Tasks that cannot start until a human acts on a dependency (left out of the ETA). */
  blocked: number
}

const STATE_ORDER: readonly TaskState[] = ['running', 'claimed', 'ready', 'pending', 'done', 'merging', 'merged', 'conflict', 'failed', 'cancelled']

/**
 * Tasks by state, cost and tokens so far, and the time to finish: the longer of
 * the critical path and the remaining agent time spread over the live slots.
 */
export function totals (data: TuiData): Totals {
  const tasks = data.status.tasks
  const counts = new Map<TaskState, number>()
  for (const t of tasks) counts.set(t.state, (counts.get(t.state) ?? 0) + 1)
  const observed = observedRunMs(tasks)
  // a task blocked behind a failure or a conflict does not run until a human acts: no time for it
  const stuck = blockedTasks(tasks)
  const remainingWorkMs = (t: StatusTask, d: TaskDetail | undefined, o: number | null, now: number): number => stuck.has(t.id) ? 0 : remainingWork(t, d, o, now)
  const work = tasks.reduce((sum, t) => sum + remainingWorkMs(t, data.tasks.get(t.id), observed, data.now), 0)
  const remaining = tasks.filter(t => t.state === 'running' || remainingWorkMs(t, data.tasks.get(t.id), observed, data.now) > 0).length
  const slots = data.status.nodes.filter(n => n.state === 'alive').reduce((s, n) => s + n.slots, 0)
  const cp = criticalPath(data).ms
  const etaMs = remaining === 0 || slots === 0 ? null : Math.max(cp, work / slots)
  return {
    total: tasks.length,
    byState: STATE_ORDER.filter(s => counts.has(s)).map(s => [s, counts.get(s)!]),
    costUsd: tasks.reduce((s, t) => s + t.costUsd, 0),
    tokens: tasks.reduce((s, t) => s + t.tokens.input + t.tokens.output + t.tokens.cacheRead + t.tokens.cacheWrite, 0),
    etaMs,
    remaining,
    waiting: inbox(data.status).length,
    blocked: stuck.size
  }
}

/** One row of the task DAG view. */
export interface TaskRow {
  id: string
  title: string
  state: TaskState
  /** Longest chain of dependencies above the task (0 for roots): the indentation. */
  depth: number
  deps: string[]
  /** The task waits for several tasks on the board (a join in the DAG): drawn once, marked, with all of them named. */
  join: boolean
  critical: boolean
  node: string
  attempts: number
  /** Wall time of the latest run: running so far, or start to done; null before the first run. */
  elapsedMs: number | null
  costUsd: number
  tokens: number
  /** The agent's latest line, or the error of a failed task. */
  note: string
}

/** Which task rows to show: merged ones fold away unless asked for; a filter keeps ids or titles containing it. */
export interface RowOptions {
  showMerged?: boolean
  filter?: string
}

/**
 * Tasks in dependency order (each after its dependencies), indented by depth,
 * with the critical path marked. With `opts`, merged rows fold away (unless
 * `showMerged`) and only rows whose id or title contain `filter` are kept.
 */
export function taskRows (data: TuiData, opts?: RowOptions): TaskRow[] {
  const all = allTaskRows(data)
  if (opts === undefined) return all
  const needle = (opts.filter ?? '').toLowerCase()
  return all.filter(r => (opts.showMerged === true || r.state !== 'merged') && (needle === '' || r.id.toLowerCase().includes(needle) || r.title.toLowerCase().includes(needle)))
}

function allTaskRows (data: TuiData): TaskRow[] {
  const tasks = data.status.tasks
  const byId = new Map(tasks.map(t => [t.id, t]))
  const cp = new Set(criticalPath(data).ids)
  const depth = new Map<string, number>()
  const order = topoOrder(tasks)
  for (const id of order) {
    const t = byId.get(id)!
    depth.set(id, t.deps.reduce((d, dep) => Math.max(d, byId.has(dep) ? (depth.get(dep) ?? 0) + 1 : 0), 0))
  }
  return order.map(id => {
    const t = byId.get(id)!
    const lines = data.progress.get(id)
    const latest = lines?.[lines.length - 1] ?? t.progress
    const end = t.state === 'running' ? data.now : t.doneAt
    const elapsedMs = t.startedAt === null || end === null ? null : Math.max(0, end - t.startedAt)
    const waitsFor = t.deps.filter(d => byId.has(d))
    const decided = decisionNote(data.status, t.id, t.state)
    const note = t.held === 'budget'
      ? 'held: budget spent (meshwork budget)'
      : decided !== null
      ? decided
      : t.state === 'failed' || (t.error !== null && t.state !== 'merged' && t.state !== 'running')
      ? firstLine(t.error ?? '')
      : t.state === 'running' || t.state === 'claimed'
        ? (latest?.text ?? '')
        : t.state === 'pending' && waitsFor.length > 1 ? `joins ${waitsFor.join(' + ')}` : ''
    return {
      id,
      title: t.title,
      state: t.state,
      depth: depth.get(id) ?? 0,
      deps: [...t.deps],
      join: t.deps.filter(d => byId.has(d)).length > 1,
      critical: cp.has(id),
      node: nodeName(data.status, t.node),
      attempts: t.attempts,
      elapsedMs,
      costUsd: t.costUsd,
      tokens: t.tokens.input + t.tokens.output + t.tokens.cacheRead + t.tokens.cacheWrite,
      note: firstLine(note)
    }
  })
}

/** One row of the nodes view. */
export interface NodeRow {
  peerId: string
  name: string
  state: MemberState | 'draining'
  used: number
  slots: number
  running: string[]
  /** 1-minute load per core, or null when not heard. */
  load: number | null
  /** Rate-limit back-off left in ms, or 0. */
  backoffMs: number
  lastSeenMs: number | null
  /** Why the node runs no agent (credentials refused, disk full…), or null when it can; `pauseMs`: until it tries again. */
  paused: string | null
  pauseMs: number
}

/** Nodes: live ones first, then by name. */
export function nodeRows (data: TuiData): NodeRow[] {
  const rank: Record<MemberState | 'draining', number> = { alive: 0, draining: 1, suspect: 1, dead: 2, left: 3 }
  return [...data.status.nodes]
    .sort((a, b) => rank[shownState(a)] - rank[shownState(b)] || a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
    .map(n => {
      const x = data.nodes.get(n.peerId)
      return {
        peerId: n.peerId,
        name: n.name === '' ? shortPeer(n.peerId) : n.name,
        state: shownState(n),
        used: n.running.length,
        slots: n.slots,
        running: [...n.running],
        load: x === undefined ? null : x.load,
        backoffMs: x?.backoffUntil == null ? 0 : Math.max(0, x.backoffUntil - data.now),
        lastSeenMs: n.lastSeenMs,
        paused: n.health?.state === 'paused' ? (n.health.reason ?? 'paused') : null,
        pauseMs: n.health?.state === 'paused' && n.health.until !== null ? Math.max(0, n.health.until - data.now) : 0
      }
    })
}

/**
 * Who decided task `id`'s conflict, and what: for a task still in conflict
 * whose decision the merge leader is carrying out, or a merged task whose
 * last conflict was settled by one. Null otherwise (an open conflict waits in
 * the inbox). Teammates on other screens see the question leave their inbox;
 * this row says who answered it.
 */
function decisionNote (status: StatusReport, id: string, state: TaskState): string | null {
  if (state !== 'conflict' && state !== 'merged') return null
  const c = status.conflicts.filter(x => x.taskId === id && x.decision !== null).at(-1)
  if (c?.decision == null) return null
  const who = `"${c.decision.action}" by ${nodeName(status, c.decision.by)}`
  if (state === 'conflict' && c.state === 'open') return `decided ${who}: the merge leader carries it out`
  return state === 'merged' && c.state === 'resolved' ? `conflict ${c.id} settled ${who}` : null
}

/** A node's name from the status (or the tail of its peer id). */
export function nodeName (status: StatusReport, peer: string | null): string {
  if (peer === null) return '-'
  const n = status.nodes.find(x => x.peerId === peer)
  return n !== undefined && n.name !== '' ? n.name : shortPeer(peer)
}

/** The last 8 characters of a peer id, marked as shortened. */
export function shortPeer (peer: string): string {
  return '…' + peer.slice(-8)
}

/** `950ms`, `12s`, `3m05s`, `1h02m`. */
export function formatDuration (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`
}

/** `812`, `12.3k`, `4.5M`. */
export function formatTokens (n: number): string {
  if (n < 1000) return String(n)
  if (n < 1_000_000) return `${(n / 1000).toFixed(1)}k`
  return `${(n / 1_000_000).toFixed(1)}M`
}

/** `$0.42`. */
export function formatCost (usd: number): string {
  return `$${usd.toFixed(2)}`
}

/** The first line of a text, without trailing spaces. */
export function firstLine (text: string): string {
  return (text.split('\n').find(l => l.trim() !== '') ?? '').trimEnd()
}

/** Cuts `text` to `width` columns, marking the cut with `…`. */
export function fit (text: string, width: number): string {
  if (width <= 0) return ''
  return text.length <= width ? text : text.slice(0, Math.max(0, width - 1)) + '…'
}
