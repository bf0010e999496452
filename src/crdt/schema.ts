import { z } from 'zod'
import { UsageError } from '../util/errors.ts'
import { approvalSchema } from './approval-schema.ts'

/**
 * The board's shape, validated at the read edge: whatever arrives over gossip or
 * sync is checked here before the scheduler, CLI or TUI sees it.
 */

/** A task's id (plan files and the board): `TASK_ID_PATTERN`. */
export type TaskId = string & { readonly __brand: 'TaskId' }
/**
 * A libp2p peer id in its string form, as the board, presence and claims hold
 * it. (libp2p's own `PeerId` is an object; this is its text.)
 */
export type PeerIdString = string & { readonly __brand: 'PeerIdString' }
export type ConflictId = string & { readonly __brand: 'ConflictId' }

/** The characters and length of a task id: `[a-z0-9][a-z0-9._-]{0,63}` (see `isValidTaskId` for the full rule). */
export const TASK_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/

/**
 * Whether `id` is a valid task id: `TASK_ID_PATTERN`, and usable as a git
 * branch name part (the task branch is `meshwork/<id>`), as
 * `git check-ref-format --branch` judges it: no "..", not ending in "." or
 * ".lock". A pure function: an id git would refuse must never reach the board,
 * where every node that claimed it would fail to make its worktree.
 */
export function isValidTaskId (id: string): boolean {
  return TASK_ID_PATTERN.test(id) && !id.includes('..') && !id.endsWith('.') && !id.endsWith('.lock')
}

/** C0 and C1 control characters and DEL (a NUL cannot even be passed to a child process). */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/

/** Whether a task title is acceptable: no control characters (it reaches terminals, environments and commit messages). */
export function isValidTitle (title: string): boolean {
  return !CONTROL_CHARS.test(title)
}

/** A git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters. */
export const OID_PATTERN = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/

/** Whether `s` is a git object id as meshwork writes them (see `OID_PATTERN`). */
export function isOid (value: unknown): value is string {
  return typeof value === 'string' && OID_PATTERN.test(value)
}

/** A nullable oid on the board: anything but an oid fails the schema, so the entry is quarantined, never passed to git. */
const nullableOid = z.string().regex(OID_PATTERN, 'not a git object id (40 or 64 hex characters)').nullable()

/** An id that does not have the form its kind requires. */
export class InvalidIdError extends UsageError {
  override name = 'InvalidIdError'
}

/** Whether `s` is a valid task id (`isValidTaskId`). */
export function isTaskId (s: string): s is TaskId {
  return isValidTaskId(s)
}

/** Parses a task id given by a user or a peer; throws `InvalidIdError` naming the rule. */
export function parseTaskId (s: string): TaskId {
  if (!isTaskId(s)) throw new InvalidIdError(`"${s}" is not a task id: ids are 1 to 64 of a-z, 0-9, ".", "_" and "-", starting with a letter or digit, with no ".." and not ending in "." or ".lock".`)
  return s
}

/**
 * A peer id's text as it comes from libp2p (`peerId.toString()`) or from a
 * message whose schema checked it: the only places a `PeerIdString` is made.
 */
export function asPeerId (s: string): PeerIdString {
  return s as PeerIdString
}

/** A conflict id as a user names it (`meshwork resolve ID`): any non-empty text; the board says whether it exists. */
export function parseConflictId (s: string): ConflictId {
  if (s === '') throw new InvalidIdError('a conflict id is required: `meshwork status` lists the open conflicts.')
  return s as ConflictId
}

/** The id of the `n`th conflict (1-based) of task `taskId`. */
export function conflictIdFor (taskId: TaskId, n: number): ConflictId {
  return `${taskId}-${n}` as ConflictId
}

const peerIdText = z.string().transform(asPeerId)

/** Every task state, in lifecycle order (the moves between them are in lifecycle.ts). */
export const TASK_STATES = ['pending', 'ready', 'claimed', 'running', 'done', 'merging', 'merged', 'conflict', 'failed', 'cancelled'] as const
export type TaskState = typeof TASK_STATES[number]

/** Task states from which nothing more happens without a human. */
export const FINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(['merged', 'failed', 'cancelled'])

export const tokensSchema = z.object({
  input: z.number().nonnegative(),
  output: z.number().nonnegative(),
  cacheRead: z.number().nonnegative(),
  cacheWrite: z.number().nonnegative()
})
export type Tokens = z.infer<typeof tokensSchema>

export const simSchema = z.object({
  durationMs: z.number().nonnegative(),
  write: z.record(z.string(), z.string()),
  append: z.record(z.string(), z.string()),
  fail: z.number().int().nonnegative(),
  /** An absolute path: after `durationMs` the run waits until this file exists (holds a run at a point, for tests and demos). */
  until: z.string().optional(),
  /** What each run reports it cost (USD), so budgets can be tried without a model; absent: 0. */
  costUsd: z.number().nonnegative().optional()
})
export type SimSpec = z.infer<typeof simSchema>

export const claimSchema = z.object({
  epoch: z.number().int().nonnegative(),
  at: z.number()
})
export type Claim = z.infer<typeof claimSchema>

const nullableString = z.string().nullable()

/**
 * The fields of a task whose value at its creation is a default (null, or
 * 0): the schema reads an absent one as that value, and a compact record
 * (ops.ts `newTaskRecord`) leaves them out until they hold something else. A
 * plan of 10,000 tasks is 380,000 operations with them and 210,000 without:
 * every node applies, checks and reads each of them. (`plan` and
 * `budgetUsd`, which the schema reads as absent rather than null, are
 * always written, so a task reads the same either way.)
 */
export const TASK_DEFAULTS = {
  priority: 0,
  timeoutMs: null,
  sim: null,
  epoch: 0,
  attempts: 0,
  failures: 0,
  node: null,
  head: null,
  mergeCommit: null,
  costUsd: 0,
  startedAt: null,
  doneAt: null,
  mergedAt: null,
  error: null,
  summary: null,
  readyAt: null,
  notBefore: null
} as const
const D = TASK_DEFAULTS

export const taskSchema = z.object({
  id: z.string().refine(isValidTaskId, 'not a valid task id (lowercase letters, digits, ".", "_", "-"; no ".."; not ending in "." or ".lock")').transform(s => s as TaskId),
  title: z.string().refine(isValidTitle, 'control characters in the title'),
  prompt: z.string().refine(s => !s.includes('\0'), 'a NUL character in the prompt'),
  deps: z.array(z.string().transform(s => s as TaskId)),
  files: z.array(z.string()),
  priority: z.number().default(D.priority),
  timeoutMs: z.number().positive().nullable().default(D.timeoutMs),
  maxAttempts: z.number().int().positive(),
  sim: simSchema.nullable().default(D.sim),
  state: z.enum(TASK_STATES),
  /** Incremented whenever the task is taken back (dead claimant, retry): results of older epochs are ignored. */
  epoch: z.number().int().nonnegative().default(D.epoch),
  /** Agent runs started (including the one running). */
  attempts: z.number().int().nonnegative().default(D.attempts),
  /** Runs the agent itself failed: these count against `maxAttempts`; lost, rate-limited and released runs do not. */
  failures: z.number().int().nonnegative().default(D.failures),
  node: peerIdText.nullable().default(D.node),
  branch: z.string(),
  head: nullableOid.default(D.head),
  mergeCommit: nullableOid.default(D.mergeCommit),
  costUsd: z.number().nonnegative().default(D.costUsd),
  tokens: tokensSchema,
  createdAt: z.number(),
  startedAt: z.number().nullable().default(D.startedAt),
  doneAt: z.number().nullable().default(D.doneAt),
  mergedAt: z.number().nullable().default(D.mergedAt),
  error: nullableString.default(D.error),
  /**
   * What the agent said it did in the run that made the task `done` (claude's
   * result text, a command's last stdout lines, the sim's files), at most 2 KB.
   * Null until a run succeeds; absent on boards written before it existed.
   */
  summary: z.string().nullable().default(D.summary),
  /** When the task last became ready (creation without deps, release, retry); null while pending. */
  readyAt: z.number().nullable().default(D.readyAt),
  /** Not to be claimed before this time (back-off after a failed attempt). */
  notBefore: z.number().nullable().default(D.notBefore),
  /**
   * Infrastructure failures of this task (worktree, main, `--setup`, agent
   * start, commit) per node: how many, and until when that node leaves the task
   * alone. Other nodes may take it at once. Absent on boards written before it
   * existed; reset by a retry.
   */
  infraFailures: z.record(z.string(), z.object({ count: z.number().int().positive(), until: z.number() })).default({}),
  /**
   * The plan the task came with: the id of that plan's first task (every task
   * of one `submit` shares it). Absent or null: none (boards written before
   * plans had ids).
   */
  plan: z.string().nullable().optional(),
  /**
   * On a plan's first task only: the plan's budget in USD (`budgetUsd` of the
   * plan file, raised with `meshwork budget --plan`); absent or null: none.
   */
  budgetUsd: z.number().nonnegative().nullable().optional(),
  /**
   * The last checkpoint of a run (its worktree committed while the agent
   * worked, on branch `meshwork/checkpoint/<id>` of `node`, then collected by
   * the leader): a run after that one's was lost starts from it. Absent: none.
   */
  checkpoint: z.object({
    head: z.string().regex(OID_PATTERN),
    at: z.number(),
    node: peerIdText,
    epoch: z.number().int().nonnegative(),
    /** The run's last progress lines, for the agent that goes on from it. */
    recent: z.array(z.string()).max(10)
  }).nullable().optional().catch(undefined),
  /** Peers known to hold the task's committed branch. */
  holders: z.array(peerIdText),
  /** One key per claimant so concurrent claims are all visible (never overwritten). */
  claims: z.record(z.string(), claimSchema),
  /**
   * Permission requests of this task's runs on nodes started with `--approvals`,
   * by request id (see approval-schema.ts). Absent until a run asks.
   */
  approvals: z.record(z.string(), approvalSchema).optional()
})
export type Task = z.infer<typeof taskSchema>

export const nodeRecordSchema = z.object({
  name: z.string(),
  slots: z.number().int().nonnegative(),
  startedAt: z.number(),
  leftAt: z.number().nullable(),
  /** When `meshwork drain` asked this node to leave (it drains if this is after its start); absent on older boards. */
  drainAt: z.number().nullable().optional(),
  /** When `meshwork forget` took this node out of the majority count (until it starts again); absent on older boards. */
  forgottenAt: z.number().nullable().optional(),
  /** The node reads task records that leave out fields at their default (ops.ts `compactTasksRead`); absent: a version before them. */
  readsCompactTasks: z.boolean().optional()
})
export type NodeRecord = z.infer<typeof nodeRecordSchema>

/**
 * One conflicting hunk of a merge, both sides with a little context, as a human needs it to decide.
 * `ours` is main's side, `theirs` the task's side. Texts are bounded by the writer (board messages are capped).
 */
export const conflictHunkSchema = z.object({
  file: z.string(),
  /** First line of the hunk in the merge result (1-based); 0 when unknown (binary, delete/modify). */
  line: z.number().int().nonnegative(),
  before: z.string(),
  ours: z.string(),
  theirs: z.string(),
  after: z.string()
})
export type ConflictHunk = z.infer<typeof conflictHunkSchema>

export const conflictSchema = z.object({
  id: z.string().transform(s => s as ConflictId),
  taskId: z.string().transform(s => s as TaskId),
  files: z.array(z.string()),
  /** Absent on records written before hunks existed. */
  hunks: z.array(conflictHunkSchema).default([]),
  /**
   * Conflicted file → the task whose merge last changed it on main since the
   * conflicting task's branch forked: who put main's side (`ours`) there, as
   * the merge leader read it from main's history. Only files it could name;
   * absent on older records (and dropped, not the record, when malformed).
   */
  oursFrom: z.record(z.string(), z.string().refine(isValidTaskId).transform(s => s as TaskId)).optional().catch(undefined),
  state: z.enum(['open', 'resolved']),
  decision: z.object({
    action: z.enum(['ours', 'theirs', 'rerun', 'agent', 'abandon']),
    by: z.string(),
    at: z.number(),
    note: z.string()
  }).nullable(),
  /** Why the last decision could not be carried out (the conflict then waits for another); absent on older records. */
  error: nullableString.default(null)
})
export type Conflict = z.infer<typeof conflictSchema>

/**
 * The merge leader's last push of main to its `--push` remote (absent on boards
 * of meshes whose leader never pushed). Informational: a malformed record is
 * read as absent, never invalidating main.
 */
export const pushReportSchema = z.object({
  remote: z.string(),
  head: z.string().regex(OID_PATTERN),
  ok: z.boolean(),
  at: z.number(),
  error: nullableString,
  /** The leader that pushed. */
  by: peerIdText
})
export type PushReportRecord = z.infer<typeof pushReportSchema>

/** The majority the leader last found for advancing main (written by the leader when it changes). */
export const quorumReportSchema = z.object({
  ok: z.boolean(),
  reachable: z.number().int().nonnegative(),
  voters: z.number().int().nonnegative(),
  /** Registered nodes the leader could not reach (peer ids; at most a few dozen are written). */
  missing: z.array(peerIdText),
  at: z.number(),
  by: peerIdText
})
export type QuorumReportRecord = z.infer<typeof quorumReportSchema>

/**
 * The mesh's spending cap (`meshwork budget --usd X`): all tasks' `costUsd`
 * together. `usd` null: the cap was removed. Absent on meshes that never set one.
 */
export const meshBudgetSchema = z.object({
  usd: z.number().nonnegative().nullable(),
  at: z.number(),
  /** Who set it (user@host of the client). */
  by: z.string()
})
export type MeshBudgetRecord = z.infer<typeof meshBudgetSchema>

export const mainSchema = z.object({
  head: nullableOid,
  leader: peerIdText.nullable(),
  term: z.number().int().nonnegative(),
  push: pushReportSchema.nullable().optional().catch(undefined),
  quorum: quorumReportSchema.nullable().optional().catch(undefined),
  /** Read leniently like `push`: a malformed record reads as no cap, never invalidating main. */
  budget: meshBudgetSchema.nullable().optional().catch(undefined)
})
export type MainRef = z.infer<typeof mainSchema>

/** Keys of the document root. Only the genesis change may write to the root. */
export const ROOT_KEYS = ['meshId', 'tasks', 'nodes', 'conflicts', 'main'] as const

/** The validated, plain view of a board that the rest of meshwork reads. */
export interface BoardSnapshot {
  meshId: string
  tasks: ReadonlyMap<TaskId, Task>
  nodes: ReadonlyMap<PeerIdString, NodeRecord>
  conflicts: ReadonlyMap<ConflictId, Conflict>
  main: MainRef
  /** Entries that failed the schema and were left out (counted, logged once). */
  invalid: readonly string[]
}
