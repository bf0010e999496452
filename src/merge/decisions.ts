import * as lifecycle from '../crdt/lifecycle.ts'
import type { Conflict, Task } from '../crdt/schema.ts'
import { branchOid, mergeTakingSide } from '../git/merge.ts'
import { toError } from '../util/errors.ts'
import type { AgentResolution } from './agent-job.ts'
import { branchLost, ensureHead } from './collect.ts'
import type { BoardDraft, MergeContext } from './context.ts'
import { decisionFailed, landDecision } from './landing.ts'

/**
 * Human decisions on conflicts, carried out by the leader between merge
 * batches: abandon, rerun, ours/theirs (a merge taking one side, landed like
 * any merge) and agent (handed to `AgentResolution`).
 */
export class Decisions {
  #ctx: MergeContext
  #agents: AgentResolution

  constructor (ctx: MergeContext, agents: AgentResolution) {
    this.#ctx = ctx
    this.#agents = agents
  }

  /** Carries out the first human decision waiting on an open conflict; true if there was one. */
  async decide (): Promise<boolean> {
    const { node, repo, branch, logger } = this.#ctx.init
    const job = this.#agents.job
    if (job !== null) {
      if (job.result === null && !this.#agents.current(job)) job.abort.abort(new Error('the decision on the conflict changed'))
      if (job.result !== null) return await this.#agents.finish(job)
    }
    const snap = node.board.snapshot()
    // while an agent resolves one conflict, other agent decisions wait; other actions go ahead
    const c = [...snap.conflicts.values()].find(x => x.state === 'open' && x.decision !== null && !(job !== null && (x.decision.action === 'agent' || (x.id === job.conflictId && x.decision.at === job.decisionAt))))
    if (c === undefined || c.decision === null) return false
    const t = snap.tasks.get(c.taskId)
    const { action, by } = c.decision
    const resolved = (d: BoardDraft): void => { lifecycle.resolve(d, c.id) }
    if (t === undefined || t.state !== 'conflict') {
      node.changeBoard('conflict:resolved', resolved)
      return true
    }
    const now = Date.now()
    switch (action) {
      case 'abandon':
        node.changeBoard('conflict:abandon', d => { resolved(d); lifecycle.cancel(d, t.id, `abandoned after a merge conflict (decision by ${by})`) })
        break
      case 'rerun':
        node.changeBoard('conflict:rerun', d => {
          resolved(d)
          lifecycle.release(d, t.id, { now, notBefore: null, dropBranch: true, error: `rerun on the current main after a merge conflict in ${c.files.join(', ')}` })
        })
        break
      case 'agent': {
        const base = snap.main.head ?? await branchOid(repo, branch)
        if (base === null || t.head === null) return false
        if (!await ensureHead(this.#ctx.init, t)) return this.#lost(c, t)
        if (this.#ctx.init.agent === undefined) {
          decisionFailed(this.#ctx, c, t.id, 'this merge leader has no agent to resolve conflicts with; choose ours, theirs, rerun or abandon')
          return true
        }
        this.#agents.start(c, t, base)
        return true
      }
      case 'ours':
      case 'theirs': {
        const base = snap.main.head ?? await branchOid(repo, branch)
        if (base === null || t.head === null) return false
        if (!await ensureHead(this.#ctx.init, t)) return this.#lost(c, t)
        const unchanged = (): boolean => {
          const x = node.board.snapshot().conflicts.get(c.id)
          return x !== undefined && x.state === 'open' && x.decision?.action === action && x.decision.at === c.decision?.at
        }
        let candidate: string
        try {
          candidate = await mergeTakingSide(repo, this.#ctx.init.worktreesDir, base, t.head, action, t.id, t.title)
        } catch (err) {
          if (!unchanged()) return true
          decisionFailed(this.#ctx, c, t.id, toError(err).message)
          return true
        }
        const landed = await landDecision(this.#ctx, c, t, base, snap.main.term, candidate, 'the merge with main')
        if (landed === 'stale') return false
        if (landed === 'verify-failed') return true
        break
      }
      default: {
        const never: never = action
        throw new Error(`unknown action ${String(never)}`)
      }
    }
    logger.info('conflict:decided', { conflict: c.id, task: t.id, action, by })
    return true
  }

  /**
   * The decision needs the task's branch, which is not here: when no node
   * that could give it is left, the decision fails back to the inbox saying
   * so (true); while one may still (a holder only suspect now), it waits (false).
   */
  #lost (c: Conflict, t: Task): boolean {
    const why = branchLost(this.#ctx.init, t)
    if (why === null) return false
    decisionFailed(this.#ctx, c, t.id, why)
    return true
  }
}
