import type { LeaderNode } from '../node/components.ts'
import type { Agent } from '../agent/types.ts'
import type { Logger } from '../util/logger.ts'
import type { MergeJob } from './merge-job.ts'
import type { Task, TaskId } from '../crdt/schema.ts'

export type { BoardDraft } from '../node/components.ts'

/** What the merge leader (and the main follower every node runs) is given. */
export interface LeaderInit {
  node: LeaderNode
  repo: string
  /** Where the leader's worktrees go (`--verify`, sides taken, agent-resolved merges): outside the data dir. */
  worktreesDir: string
  branch: string
  /** `--verify`: run on each candidate merge before main advances. */
  verify?: string
  /** How long a batch merges before its tasks are marked merging on the board (tests: 0, at once). @default MERGING_MARK_AFTER_MS (at once with `verify`) */
  markMergingAfterMs?: number
  /** `--verify-timeout`: a check still running then is killed with its process group and fails; null: none. @default DEFAULT_VERIFY_TIMEOUT_MS */
  verifyTimeoutMs?: number | null
  logger: Logger
  electionTimeoutMs?: number
  /** A registered node unreachable this long stops counting toward the majority main needs. @default FORGET_AFTER_MS */
  forgetAfterMs?: number
  /** How long a mesh main on no live node is waited for before main goes back to the last one here. @default MAIN_LOST_MS */
  mainLostMs?: number
  /** Merges verified together in one `--verify` run; 1 turns batching off. @default MAX_VERIFY_BATCH */
  batch?: number
  /** The node's agent: resolves conflicts decided with the `agent` action (without one, that action fails with a reason). */
  agent?: Agent
  /** `--setup`: run in the worktree of an agent-resolved merge before the agent starts. */
  setup?: string
  /** `--push REMOTE`: after each advance of main made here, push it there (never forced; see `MainPusher`). */
  push?: string
  /** Pause before a failed push is tried again. @default PUSH_RETRY_MS */
  pushRetryMs?: number
  /** How long a done task the board says this leader holds waits before its branch here is checked. @default HELD_CHECK_AFTER_MS */
  heldCheckAfterMs?: number
  /** Whether a hand-off of this task's branch is being fetched here now (the collector leaves it alone meanwhile). */
  handoffInFlight?: (task: string) => boolean
  /**
   * Hands the branch of one of this leader's own runs (done, merging or in
   * conflict, held here alone) to a keeper, another live node; resolves to
   * whether one took it. Called once such a run has waited `backupAfterMs` for its merge.
   * Without it, the leader's own runs are held here alone until merged.
   */
  backUp?: (t: Task, head: string) => Promise<boolean>
  /** How long one of the leader's own runs waits for its merge before its branch is handed to a keeper. @default BACKUP_AFTER_MS */
  backupAfterMs?: number
  /**
   * Why this node should not lead now (a full disk where merges write: its
   * repository, worktrees or board), or null. While it gives a reason the node
   * stands down: not eligible in its heartbeats (peers elect another leader),
   * no merges or collection here; it stands again once the reason is gone.
   */
  standDown?: () => string | null
}

/** What the parts of the merge leader share: the init, and the hooks `Leadership` wires them with. */
export interface MergeContext {
  init: LeaderInit
  /** Main advanced to `head` on this node (pushes it with `--push`). */
  advanced: (head: string) => void
  /** Runs the leader loop again soon rather than at its next tick (no-op once stopped). */
  wake: () => void
  /** Brings this repository's main to the board's (`MainFollower.sync`). */
  syncMain: () => Promise<void>
  /** The merge in progress and the signal its `--verify` runs under. */
  job: MergeJob
  /** This repository's main branch as last read or moved here (`MainFollower`): read without a git process while fresh. */
  main: LocalMain
  /**
   * Whether main may advance now: a majority of the mesh reachable (`Leadership.quorum`). Asked
   * again right before main moves: a merge round (a `--verify`) can outlast the majority.
   */
  majority: () => boolean
  /** Task `task`'s branch was found naming a commit this repository does not have: the collector looks for it again. */
  branchMissing: (task: TaskId) => void
}

/**
 * The local main branch as this node last read or moved it. While the board's
 * main is that commit the loops trust it instead of running `git rev-parse`
 * every tick: it is read again when the files git keeps the branch in change
 * (a commit made in the repository, say), and at least every `MAIN_RECHECK_MS`.
 */
export interface LocalMain {
  /** The oid last read or moved to, if the branch's files are unchanged since and that was less than `MAIN_RECHECK_MS` ago; else null. */
  trusted: () => string | null
  /** Reads the branch (one git process) and remembers it. */
  read: () => Promise<string | null>
  /** This node moved the branch to `oid` (null: it may have moved, read it again). */
  moved: (oid: string | null) => void
  /** The board's main when no live peer could give it to this node, and since when; else null. */
  missing: () => { oid: string, since: number } | null
  /**
   * Runs `fn`, the leader's landing of a merge: it moves the local main ahead
   * of the board's and then names the new main on the board. A sync of the
   * local main meanwhile would take that main for a stray commit and keep it
   * aside: it waits until `fn` is done.
   */
  landing: <T>(fn: () => Promise<T>) => Promise<T>
}

/**
 * How long the merge leader waits for a mesh main that no live peer has
 * (published by a leader that died before anyone fetched it) before it puts
 * main back to the last main it has; the lost main's tasks are merged again.
 * @default 15 s
 */
export const MAIN_LOST_MS = 15_000

/**
 * How long the last read of the local main branch is trusted while the files
 * git keeps it in (the loose ref, packed-refs, a reftable's table list) are
 * unchanged: a safety net, since any move of the branch changes one of them.
 * An idle node starts no git process in between. @default 5 min
 */
export const MAIN_RECHECK_MS = 5 * 60_000

/** The same where those files cannot be found (the repository's git dir is unknown). @default 10 s */
export const MAIN_RECHECK_BLIND_MS = 10_000
