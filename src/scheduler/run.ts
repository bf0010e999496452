/**
 * One run of a task on this node, apart from the scheduler that decides when
 * runs start: its stages (prepare, agent, finish) and the board writes of its
 * end. The scheduler owns the run's abort controller and the node-wide
 * state a run's end feeds (rate-limit back-off, health); everything here is a
 * function of the task, the run's signal and a narrow view of the node.
 */
import * as lifecycle from '../crdt/lifecycle.ts'
import type { BoardWriter } from '../node/components.ts'
import type { BoardWrite } from '../crdt/board.ts'
import type { BoardSnapshot, PeerIdString, Task } from '../crdt/schema.ts'
import { ZERO_TOKENS, clipSummary, type Agent, type AgentProgress, type AgentResult } from '../agent/types.ts'
import { retryBackoffMs } from './claims.ts'
import { budgetHold, budgetLeft, budgetView, describeHold, type BudgetView } from './budget.ts'
import type { Logger } from '../util/logger.ts'
import { MainUnavailableError, abortedByTimeout, toError } from '../util/errors.ts'

/** Wall-clock limit of a run (setup and agent) when the task's plan gives no `timeout` (`meshwork node --task-timeout`). @default 2 h */
export const DEFAULT_TASK_TIMEOUT_MS = 2 * 3_600_000
/**
 * Back-off after an infrastructure failure (worktree, fetching main, `--setup`,
 * the agent could not start, commit): the node where it happened leaves that
 * task alone this long (other nodes may take it at once, and the node keeps
 * claiming other tasks); doubles with every such failure of the task on the
 * node. @default 5 s
 */
export const INFRA_BACKOFF_MS = 5_000
/** Longest infrastructure back-off. @default 5 min */
export const MAX_INFRA_BACKOFF_MS = 5 * 60_000
/**
 * Infrastructure failures of one task, on all nodes together, that end it
 * `failed` with the reason instead of cycling for ever (an id or title no
 * node can use, a repository nobody can prepare). @default 3
 */
export const INFRA_FAILURE_LIMIT = 3
/** Distinct nodes on which a task's infrastructure failed that end it `failed` (the fault goes with the task, not a node). @default 2 */
export const INFRA_FAILURE_NODES = 2

/** Where a run failed that was no fault of the agent (such runs do not count against `maxAttempts`). */
export const INFRA_STAGES = ['prepare', 'agent-start', 'finish'] as const
export type InfraStage = typeof INFRA_STAGES[number]

/** How a run ended, as the scheduler records it. */
export type RunEnd =
  /** `holders`: peers the committed branch was handed to before the task is marked done (see `SchedulerInit.handOff`). */
  | { kind: 'agent', result: AgentResult, head: string | null, agentStarted: boolean, holders?: PeerIdString[] }
  /** `result` is set when the agent did run (its cost is kept); `agentStarted` decides whether the attempt counts. */
  | { kind: 'infra', stage: InfraStage, error: string, agentStarted: boolean, result: AgentResult | null }

/** The hooks a run's stages call (the scheduler's init), and what they need of the node. */
export interface RunHooks {
  agent: Agent
  me: PeerIdString
  snapshot: () => BoardSnapshot
  log: Logger
  /**
   * Prepares a run's working directory (worktree, `--setup`); default: none.
   * `signal` is the run's: aborted on timeout, cancel, a lost claim or node stop.
   * Whatever it throws is an infrastructure failure, never the agent's.
   */
  prepare?: ((task: Task, signal: AbortSignal) => Promise<string | undefined>) | undefined
  /** Called after a successful run, before the task is marked done; returns the branch head oid (null: the run's worktree is gone, an infrastructure failure). */
  finish?: ((task: Task, cwd: string | undefined) => Promise<string | null>) | undefined
  /** Called when the agent has ended with success, before `finish` commits its work: the run's slot may take the next task. */
  agentDone?: ((result: AgentResult) => void) | undefined
  /** The budgets a run is checked against after it prepared; default: the snapshot's (`budgetView`). */
  budgets?: (() => BudgetView) | undefined
  /** What to tell the agent besides the prompt; default: nothing. */
  context?: ((task: Task, snap: BoardSnapshot) => string) | undefined
  onProgress?: ((taskId: Task['id'], p: AgentProgress) => void) | undefined
  /** Commits the run's worktree to the task's checkpoint branch (see `Execution.checkpoint`); default: no checkpoints. */
  checkpoint?: ((task: Task) => Promise<string | null>) | undefined
  /** How often a run is checkpointed while its agent works; 0 or absent: never. */
  checkpointEveryMs?: number | undefined
  /** Puts a checkpoint on the board (with the run's last progress lines). */
  recordCheckpoint?: ((task: Task, head: string, recent: string[]) => void) | undefined
}

/** How often a run is checkpointed while its agent works (`meshwork node --checkpoint-every`). @default 5 min */
export const DEFAULT_CHECKPOINT_EVERY_MS = 5 * 60_000

/** Progress lines of a run kept for its checkpoint. */
const RECENT_LINES = 10

/**
 * Checkpoints a run every `everyMs` while its agent works; `stop` ends the
 * timer and waits for a checkpoint in progress, so none runs beside the
 * final commit. A failed checkpoint is logged and the next one tried.
 */
function checkpointTimer (hooks: RunHooks, t: Task, recent: string[]): { stop: () => Promise<void> } {
  const every = hooks.checkpointEveryMs ?? 0
  const take = hooks.checkpoint
  if (every <= 0 || take === undefined) return { stop: async () => {} }
  let running: Promise<void> | null = null
  const timer = setInterval(() => {
    if (running !== null) return
    running = (async () => {
      try {
        const head = await take(t)
        if (head !== null) hooks.recordCheckpoint?.(t, head, [...recent])
        hooks.log.info('task:checkpoint', { task: t.id, epoch: t.epoch, head })
      } catch (err) {
        hooks.log.warn('task:checkpoint-failed', { task: t.id, error: toError(err).message })
      }
    })().finally(() => { running = null })
  }, every)
  timer.unref()
  return { stop: async () => { clearInterval(timer); await running } }
}

/**
 * Prepare, agent, finish. Only what the agent itself did can be a failed
 * attempt: a throw from `prepare` or `finish`, or an agent that could not be
 * started, is an infrastructure failure; an abort is a release, except the
 * timeout (a failed attempt once the agent runs, an infrastructure failure
 * while still preparing).
 */
export async function runStages (hooks: RunHooks, t: Task, signal: AbortSignal): Promise<RunEnd> {
  const abortEnd = (agentStarted: boolean, result: AgentResult | null): RunEnd => {
    const reason = toError(signal.reason).message
    if (abortedByTimeout(signal)) {
      if (!agentStarted) return { kind: 'infra', stage: 'prepare', error: `${reason} before the agent started (preparing the worktree or running --setup)`, agentStarted, result }
      return { kind: 'agent', result: { ...(result ?? emptyResult()), outcome: 'failure', error: reason }, head: null, agentStarted }
    }
    return { kind: 'agent', result: { ...(result ?? emptyResult()), outcome: 'aborted', error: reason }, head: null, agentStarted }
  }
  let cwd: string | undefined
  try {
    cwd = await hooks.prepare?.(t, signal)
  } catch (err) {
    if (signal.aborted) return abortEnd(false, null)
    // the mesh main is on no live node: not the task's fault, and not this node's either; back without counting
    if (err instanceof MainUnavailableError) return { kind: 'agent', result: { ...emptyResult(), outcome: 'aborted', error: err.message }, head: null, agentStarted: false }
    return { kind: 'infra', stage: 'prepare', error: toError(err).message, agentStarted: false, result: null }
  }
  if (signal.aborted) return abortEnd(false, null)
  const budgets = hooks.budgets?.() ?? budgetView(hooks.snapshot())
  // spent while this run prepared: the run goes back without its agent (no attempt counted)
  const hold = budgetHold(t, budgets)
  if (hold !== null) return { kind: 'agent', result: { ...emptyResult(), outcome: 'aborted', error: describeHold(hold) }, head: null, agentStarted: false }
  const maxBudgetUsd = budgetLeft(t, budgets)
  let result: AgentResult
  const agentStart = Date.now()
  const recent: string[] = []
  const checkpoints = checkpointTimer(hooks, t, recent)
  try {
    const onProgress = hooks.onProgress
    const context = hooks.context?.(t, hooks.snapshot())
    result = await hooks.agent.run({
      ...(context !== undefined ? { context } : {}),
      ...(maxBudgetUsd !== null ? { maxBudgetUsd } : {}),
      task: t,
      attempt: t.attempts,
      node: hooks.me,
      signal,
      ...(cwd !== undefined ? { cwd } : {}),
      onProgress: (p: AgentProgress) => {
        recent.push(p.text)
        if (recent.length > RECENT_LINES) recent.shift()
        onProgress?.(t.id, p)
      }
    })
  } catch (err) {
    // agents return expected failures as values: a throw is the adapter's bug, judged like a failed run
    result = { ...emptyResult(), outcome: 'failure', error: toError(err).message }
  } finally {
    await checkpoints.stop()
  }
  const agentEnd = Date.now()
  if (result.outcome === 'unavailable') return { kind: 'infra', stage: 'agent-start', error: result.error ?? 'the agent could not be started', agentStarted: false, result }
  if (result.outcome !== 'success') return signal.aborted ? abortEnd(true, result) : { kind: 'agent', result, head: null, agentStarted: true }
  let head: string | null = null
  // the agent is done: the commit needs no slot
  if (!signal.aborted) hooks.agentDone?.(result)
  try {
    if (hooks.finish !== undefined) head = await hooks.finish(t, cwd)
  } catch (err) {
    return { kind: 'infra', stage: 'finish', error: toError(err).message, agentStarted: true, result }
  }
  // a run with no commit to show would be `done` with nothing to merge, and wait for its merge for ever
  if (hooks.finish !== undefined && head === null) return { kind: 'infra', stage: 'finish', error: 'the run\'s worktree was gone when its work was to be committed; the task runs again', agentStarted: true, result }
  // when the agent ran and when its work was committed, for the per-phase breakdown of a run
  hooks.log.info('task:committed', { task: t.id, epoch: t.epoch, head, agentStart, agentEnd })
  return { kind: 'agent', result, head, agentStarted: true }
}

/**
 * Writes the end of a run the agent finished (its outcome, usage and, on
 * success, the branch head) to the board. `current` is the task as the board
 * has it now, already checked to be this run's. Returns what came of the
 * write: a `withheld` end left the task running on the board (see
 * `Scheduler`, which then gives it back).
 */
export function writeAgentEnd (node: BoardWriter, current: Task, end: Extract<RunEnd, { kind: 'agent' }>, now: number, retryBaseMs: number | undefined): BoardWrite {
  const { result, head } = end
  const id = current.id
  const base = retryBackoffMs(current.failures + 1, retryBaseMs)
  return node.writeBoard(`task:${result.outcome}`, d => {
    if (d.tasks[id] === undefined) return
    lifecycle.addUsage(d, id, result)
    switch (result.outcome) {
      case 'success':
        lifecycle.complete(d, id, { peer: node.peerId, head, now, summary: result.summary !== undefined && result.summary.trim() !== '' ? clipSummary(result.summary) : null, ...(end.holders !== undefined ? { also: end.holders.filter(h => d.main.leader != null && String(d.main.leader) === h) } : {}) })
        break
      case 'failure': {
        // the next attempt starts afresh: a checkpoint is for a run that was lost, not for one that failed
        lifecycle.clearCheckpoint(d, id)
        const error = result.error ?? 'agent failed'
        if (result.final === true || current.failures + 1 >= current.maxAttempts) lifecycle.fail(d, id, error, { failure: true })
        else lifecycle.release(d, id, { now, notBefore: now + base, error, failure: true })
        break
      }
      case 'rate-limited':
        lifecycle.release(d, id, { now, notBefore: null, error: result.error ?? 'rate limited' })
        break
      case 'aborted':
        // stopped before its agent started (node stopping during --setup): no agent run to count
        lifecycle.release(d, id, { now, notBefore: null, uncountAttempt: !end.agentStarted })
        break
      case 'budget':
        // stopped at what was left of the mesh's or the plan's budget: not the agent's failure; the task
        // goes back to ready, where the spent budget holds it until someone raises it
        lifecycle.release(d, id, { now, notBefore: null, error: result.error ?? 'stopped at the budget' })
        break
      case 'paused':
        // the node's fault (credentials refused), not the task's: back to the mesh at once, no attempt used
        lifecycle.release(d, id, { now, notBefore: null, uncountAttempt: true, error: result.error ?? 'the node could not run its agent' })
        break
      case 'unavailable':
        // turned into an infrastructure end by runStages; kept for exhaustiveness
        lifecycle.release(d, id, { now, notBefore: null, error: result.error ?? 'the agent could not be started' })
        break
      default: {
        const never: never = result.outcome
        throw new Error(`unknown outcome ${String(never)}`)
      }
    }
  })
}

/**
 * An infrastructure failure: the task goes back to the mesh with the error on
 * the board, counting no failure (and no attempt when the agent never
 * started); this node leaves that task alone for a back-off that doubles with
 * each such failure of it here, and keeps claiming other tasks. Once the
 * task's infrastructure has failed `INFRA_FAILURE_LIMIT` times, or on
 * `INFRA_FAILURE_NODES` nodes, it ends `failed` with the reason: the fault
 * goes with the task, and retrying it for ever would only burn the mesh.
 */
export function writeInfraEnd (node: BoardWriter & { readonly name: string }, log: Logger, t: Task, epoch: number, end: Extract<RunEnd, { kind: 'infra' }>, now: number, backoffBaseMs: number | undefined): BoardWrite {
  const me = node.peerId
  const current = node.board.task(t.id)
  const mine = (current?.infraFailures[me]?.count ?? 0) + 1
  const wait = retryBackoffMs(mine, backoffBaseMs ?? INFRA_BACKOFF_MS, MAX_INFRA_BACKOFF_MS)
  const others = Object.entries(current?.infraFailures ?? {}).filter(([peer]) => peer !== me)
  const total = mine + others.reduce((n, [, f]) => n + f.count, 0)
  const nodes = others.length + 1
  const final = total >= INFRA_FAILURE_LIMIT || nodes >= INFRA_FAILURE_NODES
  const error = clipSummary(`${INFRA_TEXT[end.stage]} on node ${node.name !== '' ? node.name : me}: ${end.error}`)
  const finalError = clipSummary(`infrastructure failed ${total} time${total === 1 ? '' : 's'} on ${nodes} node${nodes === 1 ? '' : 's'}, so the task is not tried again (fix the cause, then \`meshwork retry ${t.id}\`); last: ${error}`)
  const written = node.writeBoard('task:infra-failed', d => {
    if (end.result !== null) lifecycle.addUsage(d, t.id, end.result)
    // attempts count agent runs started: a run that never got to its agent gives its number back
    lifecycle.infraFail(d, t.id, { peer: me, count: mine, until: now + wait, now, error: final ? finalError : error, final, uncountAttempt: !end.agentStarted })
  })
  if (written.kind === 'withheld') return written
  log.warn(final ? 'task:failed' : 'task:infra-failed', {
    task: t.id,
    epoch,
    stage: end.stage,
    error: end.error,
    attemptCounted: end.agentStarted,
    infraFailures: total,
    nodes,
    ...(final
      ? { note: 'the infrastructure failed too often for this task: it is failed, not retried' }
      : { retryInMs: wait, note: `not the agent's failure: counts nothing against maxAttempts; this node leaves this task alone for ${formatMs(wait)} and keeps claiming others` })
  })
  return written
}

/**
 * The wall-clock limit of a run: the task's own `timeout`, else the node's
 * default (`undefined`: `DEFAULT_TASK_TIMEOUT_MS`; null or 0: no limit, null).
 */
export function runTimeoutMs (t: Pick<Task, 'timeoutMs'>, nodeDefault: number | null | undefined): number | null {
  if (t.timeoutMs !== null) return t.timeoutMs
  const d = nodeDefault === undefined ? DEFAULT_TASK_TIMEOUT_MS : nodeDefault
  return d === null || d <= 0 ? null : d
}

/** How an infrastructure failure reads on the board, by stage. */
const INFRA_TEXT: Record<InfraStage, string> = {
  prepare: 'could not prepare the run (worktree, main or --setup)',
  'agent-start': 'could not start the agent',
  finish: 'could not commit the agent\'s work'
}

function emptyResult (): AgentResult {
  return { outcome: 'failure', error: null, costUsd: 0, tokens: { ...ZERO_TOKENS } }
}

/** `90 s`, `20 min`, `2 h`, `250 ms`. */
export function formatMs (ms: number): string {
  if (ms < 1000) return `${ms} ms`
  if (ms < 120_000) return `${+(ms / 1000).toFixed(1)} s`
  if (ms < 2 * 3_600_000) return `${+(ms / 60_000).toFixed(1)} min`
  return `${+(ms / 3_600_000).toFixed(1)} h`
}
