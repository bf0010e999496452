import type { Task, Tokens } from '../crdt/schema.ts'

/**
 * How an agent run ended. Only `failure` counts against a task's `maxAttempts`.
 * `unavailable`: the agent could not be started at all (its executable is
 * missing or not runnable): a fault of the node, not of the task, so it burns no
 * attempt and the node backs off like for any other infrastructure failure.
 * `paused`: the node cannot run this agent now (its credentials were refused):
 * the task goes back to the mesh at once without using an attempt, and the node
 * pauses its runs until a later run shows the cause is gone.
 * `budget`: the run was stopped at what was left of the mesh's or its plan's
 * budget (`AgentRunInit.maxBudgetUsd`): not the agent's failure; the task goes
 * back to ready and waits, held by the spent budget, until it is raised.
 */
export const RUN_OUTCOMES = ['success', 'failure', 'rate-limited', 'aborted', 'unavailable', 'paused', 'budget'] as const
export type RunOutcome = typeof RUN_OUTCOMES[number]

/** The result of one agent run: expected failures are values, never throws. */
export interface AgentResult {
  outcome: RunOutcome
  error: string | null
  costUsd: number
  tokens: Tokens
  /** For rate limits: when the agent may be tried again (epoch ms), if known. */
  retryAt?: number
  /**
   * For failures: a retry would fail the same way at the same cost (the per-run
   * budget was spent), so the task ends `failed` at once whatever `maxAttempts` says.
   */
  final?: boolean
  /**
   * For successes: a short account of what the agent did (at most
   * `MAX_SUMMARY_CHARS`), stored on the board and given to dependent tasks.
   */
  summary?: string
}

/** Longest task summary kept on the board (board changes are gossiped: keep them small). @default 2000 */
export const MAX_SUMMARY_CHARS = 2000

/** Cuts a summary to `MAX_SUMMARY_CHARS`, marking the cut; trims surrounding blank space. */
export function clipSummary (text: string, max = MAX_SUMMARY_CHARS): string {
  const t = text.trim()
  return t.length > max ? t.slice(0, max - 1) + '…' : t
}

/** A progress event from a running agent (tool use, text, turn), for status and the TUI. */
export interface AgentProgress {
  kind: 'text' | 'tool' | 'turn' | 'info'
  text: string
}

export interface AgentRunInit {
  task: Task
  /** 1-based number of this run (the task's `attempts` after it started). */
  attempt: number
  /** Peer id of the node running the task. */
  node: string
  /**
   * What meshwork tells the agent besides the task prompt: task id, dependency
   * summaries, what else runs where (ids and titles only). Appended to the prompt.
   */
  context?: string
  /**
   * Names this run's files (transcripts) instead of `<task>-<attempt>`: a run
   * that is not one of the task's attempts (an agent-resolved merge) must not
   * overwrite one's.
   */
  runId?: string
  /** Extra environment for this run (e.g. MESHWORK_CONFLICT_ID when resolving a merge). */
  env?: Record<string, string>
  /** The task's worktree; absent for agents that touch no files. */
  cwd?: string
  /**
   * What is left of the tightest budget that applies to the task (the mesh's or
   * its plan's), in USD; absent when none applies. An agent that can cap its
   * spending stops there (claude: `--max-budget-usd`) and ends `budget`.
   */
  maxBudgetUsd?: number
  /** Aborted on timeout, cancel, a lost claim or node shutdown. */
  signal: AbortSignal
  onProgress?: (p: AgentProgress) => void
}

/** An agent adapter: claude, command or sim. */
export interface Agent {
  readonly kind: string
  run: (init: AgentRunInit) => Promise<AgentResult>
}

export const ZERO_TOKENS: Tokens = { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }
