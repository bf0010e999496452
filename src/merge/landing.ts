import { toError } from '../util/errors.ts'
import * as lifecycle from '../crdt/lifecycle.ts'
import type { Conflict, Task, TaskId } from '../crdt/schema.ts'
import { advanceBranch, runVerify } from '../git/merge.ts'
import type { BoardDraft, MergeContext } from './context.ts'

/*
 * Carrying out a decided conflict, shared by the ours/theirs decisions and the
 * agent resolution: one landing step (verify, fenced compare-and-swap of main,
 * conflict resolved and task merged) and one way to say a decision failed.
 */

/**
 * Lands a decided conflict's merge commit `candidate`, made on main `base`:
 * `--verify` on it, then the compare-and-swap of main fenced by this
 * leader's term and main's head. The conflict ends resolved, the task merged
 * (or failed with the check's output); `extra` joins either board change.
 * 'changed' when `current` says the decision changed during the verify run,
 * 'stale' when leadership or main moved (the next round tries again).
 */
export async function landDecision (ctx: MergeContext, c: Conflict, t: Task, base: string, term: number, candidate: string, what: string, extra?: (d: BoardDraft) => void, current?: () => boolean): Promise<'landed' | 'verify-failed' | 'changed' | 'stale'> {
  const { node, repo, branch, logger } = ctx.init
  const resolve = (d: BoardDraft): void => {
    extra?.(d)
    lifecycle.resolve(d, c.id, { clearError: true })
  }
  if (ctx.init.verify !== undefined) {
    let v: Awaited<ReturnType<typeof runVerify>>
    const signal = ctx.job.start([t.id], term)
    try {
      v = await runVerify(repo, ctx.init.worktreesDir, candidate, ctx.init.verify, { signal, timeoutMs: ctx.init.verifyTimeoutMs })
    } catch (err) {
      if (!signal.aborted) throw err
      logger.warn('merge:verify-stopped', { task: t.id, conflict: c.id, reason: toError(signal.reason).message })
      return 'stale'
    } finally {
      ctx.job.end()
    }
    if (current !== undefined && !current()) return 'changed'
    if (!v.ok) {
      node.changeBoard('task:verify-failed', d => {
        resolve(d)
        lifecycle.fail(d, t.id, `--verify failed on ${what}:\n${v.output.slice(-4000)}`)
      })
      logger.warn('merge:verify-failed', { task: t.id, conflict: c.id, action: c.decision?.action })
      return 'verify-failed'
    }
  }
  const s2 = node.board.snapshot()
  // fenced by term and main, and by the majority (it may have become unreachable during the verify run)
  if (s2.main.leader !== node.peerId || s2.main.term !== term || (s2.main.head ?? base) !== base || !ctx.majority()) return 'stale'
  // from the move of the local main until the board names it, no sync of it (`LocalMain.landing`)
  const how = await ctx.main.landing(async () => {
    ctx.main.moved(null)
    // compare-and-swap from the main the candidate was made on: a local main that moved (a commit made here) is a lost race, kept aside by the main follower
    const how = await advanceBranch(repo, branch, base, candidate)
    if (how === 'lost-race') return how
    const now = Date.now()
    node.changeBoard('main:advance', d => {
      resolve(d)
      lifecycle.advanceMain(d, candidate)
      lifecycle.merge(d, t.id, candidate, now)
    })
    return how
  })
  if (how === 'lost-race') return 'stale'
  ctx.advanced(candidate)
  logger.info('merge:done', { tasks: [t.id], main: candidate, term, checkout: how, conflict: c.id, action: c.decision?.action })
  return 'landed'
}

/** A decision that could not be carried out: the conflict stays open with no decision, and says why (as does its task). */
export function decisionFailed (ctx: MergeContext, c: Conflict, taskId: TaskId, reason: string, extra?: (d: BoardDraft) => void): void {
  const { node, logger } = ctx.init
  const action = c.decision?.action ?? 'none'
  node.changeBoard('conflict:decision-failed', d => {
    lifecycle.failDecision(d, c.id, `"${action}" failed: ${reason}`)
    lifecycle.noteError(d, taskId, `conflict ${c.id}: "${action}" failed: ${reason}`)
    extra?.(d)
  })
  logger.warn('conflict:decision-failed', { conflict: c.id, action, error: reason })
}
