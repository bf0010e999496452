import * as lifecycle from '../crdt/lifecycle.ts'
import type { Conflict, ConflictId, Task, TaskId } from '../crdt/schema.ts'
import { branchOid, mergeCommit, tryMerge } from '../git/merge.ts'
import type { Agent } from '../agent/types.ts'
import { toError } from '../util/errors.ts'
import { resolveWithAgent, type AgentResolveResult } from './agent-resolve.ts'
import type { BoardDraft, MergeContext } from './context.ts'
import { decisionFailed, landDecision } from './landing.ts'

/** An agent-resolved merge the leader runs in the background (one at a time), with its result once the agent is done. */
export interface AgentJob {
  conflictId: ConflictId
  taskId: TaskId
  /** The decision being carried out (`decision.at`): a newer decision drops this job. */
  decisionAt: number
  /** Main and the task head the merge was made of. */
  main: string
  head: string
  abort: AbortController
  result: AgentResolveResult | null
}

/**
 * Conflicts decided with the `agent` action: the agent works in the
 * background, one job at a time, while the merge loop goes on; its result is
 * landed by the merge loop like any decided merge.
 */
export class AgentResolution {
  #ctx: MergeContext
  #job: AgentJob | null = null

  constructor (ctx: MergeContext) {
    this.#ctx = ctx
  }

  /** The job in progress or waiting to be landed, or null. */
  get job (): AgentJob | null {
    return this.#job
  }

  /** Stops the agent of a job still running (the node stops, or no longer leads). */
  abortRunning (reason: string): void {
    if (this.#job !== null && this.#job.result === null) this.#job.abort.abort(new Error(reason))
  }

  /** Whether the job's decision is still the conflict's, and the conflict still open on the same task head. */
  current (job: AgentJob): boolean {
    const snap = this.#ctx.init.node.board.snapshot()
    const c = snap.conflicts.get(job.conflictId)
    const t = snap.tasks.get(job.taskId)
    return c !== undefined && c.state === 'open' && c.decision?.action === 'agent' && c.decision.at === job.decisionAt && t?.state === 'conflict' && t.head === job.head
  }

  /** Starts the agent on the conflicted merge in the background; its result is landed by the merge loop (`#finishAgentJob`). */
  start (c: Conflict, t: Task, base: string): void {
    const { node, repo, branch, logger } = this.#ctx.init
    const agent = this.#ctx.init.agent as Agent
    const abort = new AbortController()
    const job: AgentJob = { conflictId: c.id, taskId: t.id, decisionAt: c.decision?.at ?? 0, main: base, head: t.head as string, abort, result: null }
    this.#job = job
    const signal = t.timeoutMs === null ? abort.signal : AbortSignal.any([abort.signal, AbortSignal.timeout(t.timeoutMs)])
    logger.info('conflict:agent-started', { conflict: c.id, task: t.id, agent: agent.kind, main: base, head: t.head })
    void resolveWithAgent({
      repo,
      worktreesDir: this.#ctx.init.worktreesDir,
      branch,
      main: base,
      task: t,
      conflict: c,
      agent,
      peerId: node.peerId,
      ...(this.#ctx.init.setup !== undefined ? { setup: this.#ctx.init.setup } : {}),
      signal,
      onProgress: p => { try { node.publishProgress(t.id, p.kind, p.text) } catch { /* progress is best effort */ } }
    }).catch((err: unknown) => ({ commit: null, error: toError(err).message, costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 } })).then(r => {
      job.result = r
      logger.info('conflict:agent-finished', { conflict: c.id, task: t.id, ok: r.commit !== null, error: r.error, costUsd: r.costUsd })
      // land it now rather than at the next tick
      this.#ctx.wake()
    })
  }

  /**
   * Lands the result of an agent-resolved merge, on the merge loop: the merge
   * commit (re-made on main if main moved meanwhile and the resolution still
   * merges cleanly) goes through `--verify`, then main is compare-and-swapped
   * like any merge, fenced by the leader's term and main's head. The run's cost
   * goes on the task whatever the outcome. True if the board changed.
   */
  async finish (job: AgentJob): Promise<boolean> {
    const { node, repo, branch, logger } = this.#ctx.init
    const r = job.result as AgentResolveResult
    const addCost = (d: BoardDraft): void => { lifecycle.addUsage(d, job.taskId, r) }
    const done = (): void => { if (this.#job === job) this.#job = null }
    const snap = node.board.snapshot()
    const c = snap.conflicts.get(job.conflictId)
    const t = snap.tasks.get(job.taskId)
    if (c === undefined || t === undefined || !this.current(job)) {
      done()
      node.changeBoard('conflict:agent-dropped', addCost)
      logger.info('conflict:agent-dropped', { conflict: job.conflictId, reason: 'the decision or the task changed while the agent worked' })
      return true
    }
    if (r.commit === null) {
      done()
      decisionFailed(this.#ctx, c, t.id, r.error ?? 'the agent gave no result', addCost)
      return true
    }
    const base = snap.main.head ?? await branchOid(repo, branch)
    if (base === null) return false
    let candidate = r.commit
    if (base !== job.main) {
      // main moved while the agent worked: the resolution is carried onto the new main if it still merges cleanly
      const again = await tryMerge(repo, base, r.commit)
      if (again.kind === 'conflict') {
        done()
        decisionFailed(this.#ctx, c, t.id, `main moved while the agent worked and its resolution no longer merges cleanly (${again.files.join(', ')}); choose an action again`, addCost)
        return true
      }
      candidate = await mergeCommit(repo, again.tree, base, job.head, t.id, `${t.title === '' ? t.id : t.title} (conflicts resolved by an agent)`)
    }
    const landed = await landDecision(this.#ctx, c, t, base, snap.main.term, candidate, 'the agent-resolved merge with main', addCost, () => this.current(job))
    if (landed === 'changed') return await this.finish(job)
    if (landed === 'stale') return false
    done()
    if (landed === 'verify-failed') return true
    logger.info('conflict:decided', { conflict: c.id, task: t.id, action: 'agent', by: c.decision?.by })
    return true
  }
}
