/*
 * Over 400 lines, on purpose: this is the one place where a task's or a
 * conflict's state is written. The transition tables and every transition
 * stay together so a reviewer reads the whole lifecycle in one file.
 */
import { str, type BoardDoc, type ConflictRecord, type TaskRecord } from './board.ts'
import { TASK_STATES, type Conflict, type ConflictId, type PeerIdString, type TaskId, type TaskState, type Tokens } from './schema.ts'

/**
 * The task lifecycle: every write of a task's `state` (and of a conflict's) is
 * one of the named transitions below, made inside a board change. Each checks
 * the state the record is in against `TASK_TRANSITIONS` (or
 * `CONFLICT_TRANSITIONS`) and, when the move is not allowed, writes nothing
 * and returns false; otherwise it writes the transition's fields (all of them
 * schema fields, typed by `TaskRecord`) and returns true. Scheduler, merge
 * leader, API and benchmarks call only these.
 *
 * The checks read the record inside the change, so they see the state this
 * node's board holds at that moment; a concurrent write of a peer may still
 * win last-writer-wins afterwards, which is what epochs and fencing are for.
 */

/** One named move: the states it may start from and the states it may leave the task in. */
export interface Transition<S extends string> {
  readonly from: readonly S[]
  readonly to: readonly S[]
}

const ALL_STATES = TASK_STATES

/**
 * The task transitions, in one place. A stored `pending` task whose
 * dependencies are merged reads as ready (readiness is derived, never
 * written), so the moves a ready task may make are also allowed from `pending`.
 */
export const TASK_TRANSITIONS = {
  /** A node claims a ready task (or one whose claims all lost their claimant); concurrent claims all stay visible. */
  claim: { from: ['pending', 'ready', 'claimed'], to: ['claimed'] },
  /** A node takes its claim back (lost the settle, stopping, scope overlap); ready again once no claim of the epoch is left. */
  withdraw: { from: ['pending', 'ready', 'claimed'], to: ['pending', 'ready', 'claimed'] },
  /**
   * The winner of a settled claim starts the run. From ready or pending too: a
   * peer's withdraw may have written `ready` concurrently with our claim, and the
   * claim still wins.
   */
  start: { from: ['pending', 'ready', 'claimed'], to: ['running'] },
  /** The run succeeded and its branch is committed. */
  complete: { from: ['running'], to: ['done'] },
  /** The agent failed for the last time, or `--verify` failed on the merge. */
  fail: { from: ['running', 'merging', 'conflict'], to: ['failed'] },
  /** The task goes back to the mesh with a new epoch: dead or stale claimant, a run that ended without a result, a rerun decision. */
  release: { from: ['claimed', 'running', 'done', 'conflict'], to: ['ready'] },
  /** A human puts a failed or cancelled task back in line (pending while a dependency is not merged). */
  retry: { from: ['failed', 'cancelled'], to: ['ready', 'pending'] },
  /** The merge leader takes a done task into a merge batch. */
  startMerge: { from: ['done'], to: ['merging'] },
  /** A merge that did not land (deferred, failed, left by an earlier leader): back in the merge queue. */
  deferMerge: { from: ['merging'], to: ['done'] },
  /** The task's merge is on main (from done: a batch that landed before it was marked merging). */
  merge: { from: ['done', 'merging', 'conflict'], to: ['merged'] },
  /** Main's history does not have the task's merge (it was made on the losing side of a partition): merge again, or run again without a branch. */
  requeue: { from: ['merged'], to: ['done', 'ready'] },
  /** Main's history has the task's merge: record it, whatever the board said (main is the truth). */
  recordMerged: { from: ALL_STATES, to: ['merged'] },
  /** The merge with main conflicted: a human decides. */
  openConflict: { from: ['done', 'merging'], to: ['conflict'] },
  /** Cancelled by a human, or abandoned after a conflict. */
  cancel: { from: ['pending', 'ready', 'claimed', 'running', 'done', 'merging', 'conflict', 'failed'], to: ['cancelled'] }
} as const satisfies Record<string, Transition<TaskState>>

export type TaskTransition = keyof typeof TASK_TRANSITIONS

/** The conflict transitions: a human decides, a failed decision waits for another, the leader resolves. */
export const CONFLICT_TRANSITIONS = {
  decide: { from: ['open'], to: ['open'] },
  failDecision: { from: ['open'], to: ['open'] },
  resolve: { from: ['open'], to: ['resolved'] }
} as const satisfies Record<string, Transition<Conflict['state']>>

export type ConflictTransition = keyof typeof CONFLICT_TRANSITIONS

/** Which state may go to which, derived from `TASK_TRANSITIONS`. */
export const TASK_STATE_MOVES: ReadonlyMap<TaskState, ReadonlySet<TaskState>> = (() => {
  const out = new Map<TaskState, Set<TaskState>>(TASK_STATES.map(s => [s, new Set<TaskState>()]))
  for (const t of Object.values(TASK_TRANSITIONS) as Array<Transition<TaskState>>) {
    for (const f of t.from) for (const to of t.to) out.get(f)?.add(to)
  }
  return out
})()

/** Whether transition `name` may start from `state`. */
export function mayStart (name: TaskTransition, state: TaskState): boolean {
  return (TASK_TRANSITIONS[name].from as readonly TaskState[]).includes(state)
}

function stateOf (rec: { state: unknown }): string {
  return String(rec.state)
}

/**
 * A task record's epoch: 0 when the record leaves it out (a compact record,
 * schema.ts `TASK_DEFAULTS`: every field there is read with its default).
 */
export function epochOf (rec: TaskRecord): number
export function epochOf (rec: TaskRecord | undefined): number | undefined
export function epochOf (rec: TaskRecord | undefined): number | undefined {
  return rec === undefined ? undefined : Number(rec.epoch ?? 0)
}

/** The task record `id` if its state allows `name`, else undefined. */
function taskFor (d: BoardDoc, id: TaskId, name: TaskTransition): TaskRecord | undefined {
  const rec = d.tasks[id]
  if (rec === undefined) return undefined
  return mayStart(name, stateOf(rec) as TaskState) ? rec : undefined
}

function conflictFor (d: BoardDoc, id: ConflictId, name: ConflictTransition): ConflictRecord | undefined {
  const rec = d.conflicts[id]
  if (rec === undefined) return undefined
  return (CONFLICT_TRANSITIONS[name].from as readonly string[]).includes(stateOf(rec)) ? rec : undefined
}

const text = (s: string | null): ReturnType<typeof str> | null => s === null ? null : str(s)

/** Adds `peer`'s claim for the task's current epoch and marks it claimed. */
export function claim (d: BoardDoc, id: TaskId, peer: PeerIdString, epoch: number, at: number): boolean {
  const rec = taskFor(d, id, 'claim')
  if (rec === undefined) return false
  rec.claims[peer] = { epoch, at }
  rec.state = str('claimed')
  return true
}

/** Removes `peer`'s claim; a claimed task with no claim of its epoch left is ready again. */
export function withdraw (d: BoardDoc, id: TaskId, peer: PeerIdString): boolean {
  const rec = taskFor(d, id, 'withdraw')
  if (rec === undefined) return false
  delete rec.claims[peer]
  const epoch = epochOf(rec)
  if (stateOf(rec) === 'claimed' && !Object.values(rec.claims).some(c => c.epoch === epoch)) rec.state = str('ready')
  return true
}

/** `peer` starts run number `attempt` of the task. */
export function start (d: BoardDoc, id: TaskId, peer: PeerIdString, attempt: number, now: number): boolean {
  const rec = taskFor(d, id, 'start')
  if (rec === undefined) return false
  rec.state = str('running')
  rec.node = str(peer)
  rec.startedAt = now
  rec.attempts = attempt
  rec.error = null
  rec.summary = null
  return true
}

/** The run succeeded: `peer` holds the committed branch at `head`, and so do the peers in `also` (it was handed to them). */
export function complete (d: BoardDoc, id: TaskId, done: { peer: PeerIdString, head: string | null, summary: string | null, now: number, also?: readonly PeerIdString[] }): boolean {
  const rec = taskFor(d, id, 'complete')
  if (rec === undefined) return false
  rec.state = str('done')
  rec.doneAt = done.now
  rec.head = text(done.head)
  rec.holders = [...new Set([done.peer, ...(done.head !== null ? done.also ?? [] : [])])].map(p => str(p))
  rec.error = null
  rec.summary = text(done.summary)
  return true
}

/** Options of `fail` and `release` that a run's end adds. */
export interface RunEndOptions {
  /** The agent itself failed: counts against `maxAttempts`. */
  failure?: boolean
  /** The run never got to its agent: its attempt number is given back. */
  uncountAttempt?: boolean
}

/** The task ends failed with `error`. */
export function fail (d: BoardDoc, id: TaskId, error: string, opts: RunEndOptions = {}): boolean {
  const rec = taskFor(d, id, 'fail')
  if (rec === undefined) return false
  endRun(rec, opts)
  rec.state = str('failed')
  rec.error = str(error)
  return true
}

export interface ReleaseOptions extends RunEndOptions {
  now: number
  /** Not to be claimed before this time (back-off), or null. */
  notBefore: number | null
  /** Recorded as the task's error; undefined leaves the error as it is. */
  error?: string | null
  /** Forget the task's branch (a rerun after a conflict): it runs again from the current main. */
  dropBranch?: boolean
}

/**
 * Gives a task back to the mesh: a new epoch (older results are ignored), no
 * claims, ready again.
 */
export function release (d: BoardDoc, id: TaskId, opts: ReleaseOptions): boolean {
  const rec = taskFor(d, id, 'release')
  if (rec === undefined) return false
  endRun(rec, opts)
  requeueRecord(rec, opts.now, opts.notBefore)
  if (opts.dropBranch === true) {
    rec.head = null
    rec.holders = []
  }
  if (opts.error !== undefined) rec.error = text(opts.error)
  return true
}

function endRun (rec: TaskRecord, opts: RunEndOptions): void {
  if (opts.failure === true) rec.failures = Number(rec.failures ?? 0) + 1
  if (opts.uncountAttempt === true) rec.attempts = Math.max(0, Number(rec.attempts ?? 0) - 1)
}

function requeueRecord (rec: TaskRecord, now: number, notBefore: number | null): void {
  rec.epoch = epochOf(rec) + 1
  rec.claims = {}
  rec.state = str('ready')
  rec.readyAt = now
  rec.notBefore = notBefore
}

/** Options of `infraFail`. */
export interface InfraFailOptions {
  /** The node the run failed on, its count of such failures for this task, and until when it leaves the task alone. */
  peer: PeerIdString
  count: number
  until: number
  now: number
  error: string
  /** The limit is reached: the task ends failed instead of going back to the mesh. */
  final: boolean
  /** The run never got to its agent: its attempt number is given back. */
  uncountAttempt: boolean
}

/**
 * A run failed outside the agent (worktree, `--setup`, commit): counted per
 * node on the task. Under the limit the task goes back to the mesh at once
 * (only the failing node leaves it alone until `until`); at the limit it ends
 * failed with the reason.
 */
export function infraFail (d: BoardDoc, id: TaskId, opts: InfraFailOptions): boolean {
  const rec = taskFor(d, id, opts.final ? 'fail' : 'release')
  if (rec === undefined) return false
  endRun(rec, { uncountAttempt: opts.uncountAttempt })
  rec.infraFailures ??= {}
  rec.infraFailures[opts.peer] = { count: opts.count, until: opts.until }
  if (opts.final) {
    rec.state = str('failed')
    rec.claims = {}
  } else {
    requeueRecord(rec, opts.now, null)
  }
  rec.error = str(opts.error)
  return true
}

/** A failed or cancelled task goes back in line with its attempt count reset: ready, or pending while a dependency is not merged. */
export function retry (d: BoardDoc, id: TaskId, opts: { now: number, depsMerged: boolean }): boolean {
  const rec = taskFor(d, id, 'retry')
  if (rec === undefined) return false
  requeueRecord(rec, opts.now, null)
  if (!opts.depsMerged) {
    rec.state = str('pending')
    rec.readyAt = null
  }
  rec.attempts = 0
  rec.failures = 0
  rec.infraFailures = {}
  rec.error = null
  return true
}

/** The merge leader takes the task into a merge batch. */
export function startMerge (d: BoardDoc, id: TaskId): boolean {
  const rec = taskFor(d, id, 'startMerge')
  if (rec === undefined) return false
  rec.state = str('merging')
  return true
}

/** A merge that did not land: the task waits in the merge queue again. */
export function deferMerge (d: BoardDoc, id: TaskId): boolean {
  const rec = taskFor(d, id, 'deferMerge')
  if (rec === undefined) return false
  rec.state = str('done')
  return true
}

/** The task's merge commit `commit` is on main. */
export function merge (d: BoardDoc, id: TaskId, commit: string, now: number): boolean {
  const rec = taskFor(d, id, 'merge')
  if (rec === undefined) return false
  rec.state = str('merged')
  rec.mergeCommit = str(commit)
  rec.mergedAt = now
  rec.error = null
  return true
}

/** A merged task whose merge is not on main goes back to `to` (done with its branch, ready without) and says why. */
export function requeue (d: BoardDoc, id: TaskId, opts: { to: 'done' | 'ready', error: string, now: number }): boolean {
  const rec = taskFor(d, id, 'requeue')
  if (rec === undefined) return false
  rec.state = str(opts.to)
  rec.mergeCommit = null
  rec.mergedAt = null
  rec.error = str(opts.error)
  if (opts.to === 'ready') rec.readyAt = opts.now
  return true
}

/** Main's history has the task's merge `commit`: the board says so (keeping an earlier `mergedAt`). */
export function recordMerged (d: BoardDoc, id: TaskId, commit: string, now: number): boolean {
  const rec = taskFor(d, id, 'recordMerged')
  if (rec === undefined) return false
  rec.state = str('merged')
  rec.mergeCommit = str(commit)
  rec.mergedAt ??= now
  rec.error = null
  return true
}

/** What a new conflict record holds besides its id and task. */
export interface NewConflict {
  id: ConflictId
  files: readonly string[]
  hunks: Conflict['hunks']
  /** Conflicted file → the task whose merge last changed it on main (see `Conflict['oursFrom']`); omitted or empty: none known. */
  oursFrom?: Readonly<Record<string, TaskId>> | undefined
}

/** The merge of the task conflicted: a new open conflict record, and the task waits for a human. */
export function openConflict (d: BoardDoc, taskId: TaskId, c: NewConflict): boolean {
  const rec = taskFor(d, taskId, 'openConflict')
  if (rec === undefined) return false
  // Automerge stores no undefined: the field is left out when nothing is known
  const from = Object.entries(c.oursFrom ?? {})
  d.conflicts[c.id] = {
    id: str(c.id),
    taskId: str(taskId),
    files: c.files.map(str),
    hunks: c.hunks.map(h => ({ file: str(h.file), line: h.line, before: str(h.before), ours: str(h.ours), theirs: str(h.theirs), after: str(h.after) })),
    ...(from.length > 0 ? { oursFrom: Object.fromEntries(from.map(([file, id]) => [file, str(id)])) } : {}),
    state: str('open'),
    decision: null,
    error: null
  }
  rec.state = str('conflict')
  rec.error = str(`merge conflict in ${c.files.join(', ')}`)
  return true
}

/** The task is cancelled (its claims dropped); `error`, when given, says why. */
export function cancel (d: BoardDoc, id: TaskId, error?: string): boolean {
  const rec = taskFor(d, id, 'cancel')
  if (rec === undefined) return false
  rec.state = str('cancelled')
  rec.claims = {}
  if (error !== undefined) rec.error = str(error)
  return true
}

/** A human decision on a conflict. */
export type Decision = NonNullable<Conflict['decision']>

/** Records a human decision on an open conflict (clearing the error of an earlier one). */
export function decide (d: BoardDoc, conflictId: ConflictId, decision: Decision): boolean {
  const rec = conflictFor(d, conflictId, 'decide')
  if (rec === undefined) return false
  rec.decision = { action: str(decision.action), by: str(decision.by), at: decision.at, note: str(decision.note) }
  rec.error = null
  return true
}

/** A decision could not be carried out: the conflict stays open without one, saying why. */
export function failDecision (d: BoardDoc, conflictId: ConflictId, error: string): boolean {
  const rec = conflictFor(d, conflictId, 'failDecision')
  if (rec === undefined) return false
  rec.decision = null
  rec.error = str(error)
  return true
}

/**
 * Closes an open conflict. `decision` records one made on the spot (a cancel
 * closes the task's conflicts as abandoned); `clearError` drops a failed
 * decision's error (the conflict's merge landed).
 */
export function resolve (d: BoardDoc, conflictId: ConflictId, opts: { decision?: Decision, clearError?: boolean } = {}): boolean {
  const rec = conflictFor(d, conflictId, 'resolve')
  if (rec === undefined) return false
  rec.state = str('resolved')
  if (opts.decision !== undefined) rec.decision = { action: str(opts.decision.action), by: str(opts.decision.by), at: opts.decision.at, note: str(opts.decision.note) }
  if (opts.clearError === true) rec.error = null
  return true
}

/** Sets the task's error text without moving it (a failed conflict decision says why on its task too). */
export function noteError (d: BoardDoc, id: TaskId, error: string): void {
  const rec = d.tasks[id]
  if (rec !== undefined) rec.error = str(error)
}

/** Adds a run's cost and tokens to the task (they sum every run of the task, the agent resolution's too). */
export function addUsage (d: BoardDoc, id: TaskId, usage: { costUsd: number, tokens: Tokens }): void {
  const rec = d.tasks[id]
  if (rec === undefined) return
  rec.costUsd = Number(rec.costUsd ?? 0) + usage.costUsd
  const tok = rec.tokens as Tokens | undefined
  if (tok === undefined) return
  for (const k of ['input', 'output', 'cacheRead', 'cacheWrite'] as const) tok[k] = Number(tok[k] ?? 0) + usage.tokens[k]
}

/** Records `peer` as a holder of the task's committed branch (once). */
export function addHolder (d: BoardDoc, id: TaskId, peer: PeerIdString): void {
  const rec = d.tasks[id]
  if (rec === undefined) return
  if (!rec.holders.some(h => String(h) === peer)) rec.holders.push(str(peer))
}

/** `peer` no longer holds the task's branch at `head` (it lost the commit): it is taken off the holders. */
export function dropHolder (d: BoardDoc, id: TaskId, peer: PeerIdString, head: string): void {
  const rec = d.tasks[id]
  if (rec === undefined || String(rec.head) !== head) return
  const i = rec.holders.findIndex(h => String(h) === peer)
  if (i >= 0) rec.holders.splice(i, 1)
}

/**
 * `peer` leads the mesh's merges from `term` on (past the stored term in any
 * case: peers refuse an election that does not raise it, and the stored term
 * can be ahead of a snapshot that kept its last valid main).
 */
export function electLeader (d: BoardDoc, peer: PeerIdString, term: number): void {
  d.main.leader = str(peer)
  const stored = Number(d.main.term)
  d.main.term = Number.isInteger(stored) && stored >= term ? stored + 1 : term
}

/** Main's new head. */
export function advanceMain (d: BoardDoc, head: string): void {
  d.main.head = str(head)
}

/** The leader's last push of main to its `--push` remote. */
export function recordPush (d: BoardDoc, push: { remote: string, head: string, ok: boolean, at: number, error: string | null, by: PeerIdString }): void {
  d.main.push = { remote: str(push.remote), head: str(push.head), ok: push.ok, at: push.at, error: text(push.error), by: str(push.by) }
}

/** The leader's majority check, for `status` and the TUI (written when its outcome or counts change). */
export function recordQuorum (d: BoardDoc, q: { ok: boolean, reachable: number, voters: number, missing: readonly string[], at: number, by: PeerIdString }): void {
  d.main.quorum = { ok: q.ok, reachable: q.reachable, voters: q.voters, missing: q.missing.slice(0, 32).map(p => str(p)), at: q.at, by: str(q.by) }
}

/** A running task's checkpoint (not a state change): written by the node running it, if it still does. */
export function recordCheckpoint (d: BoardDoc, id: TaskId, cp: { head: string, at: number, node: PeerIdString, epoch: number, recent: readonly string[] }): boolean {
  const rec = d.tasks[id]
  if (rec === undefined || String(rec.state) !== 'running' || epochOf(rec) !== cp.epoch || String(rec.node) !== cp.node) return false
  rec.checkpoint = { head: str(cp.head), at: cp.at, node: str(cp.node), epoch: cp.epoch, recent: cp.recent.slice(-10).map(l => str(l.slice(0, 300))) }
  return true
}

/** Drops a task's checkpoint (its run failed: the next attempt starts from main). */
export function clearCheckpoint (d: BoardDoc, id: TaskId): void {
  const rec = d.tasks[id]
  if (rec !== undefined && rec.checkpoint != null) rec.checkpoint = null
}
