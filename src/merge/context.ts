import type { MeshNode } from '../node/mesh-node.ts'
import type { Agent } from '../agent/types.ts'
import type { Logger } from '../util/logger.ts'

/** The board document inside a change. */
export type BoardDraft = Parameters<Parameters<MeshNode['changeBoard']>[1]>[0]

/** What the merge leader (and the main follower every node runs) is given. */
export interface LeaderInit {
  node: MeshNode
  repo: string
  dataDir: string
  branch: string
  /** `--verify`: run on each candidate merge before main advances. */
  verify?: string
  logger: Logger
  electionTimeoutMs?: number
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
}
