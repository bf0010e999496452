import * as lifecycle from '../crdt/lifecycle.ts'
import { conflictIdFor, FINAL_TASK_STATES, type BoardSnapshot, type Task, type TaskId } from '../crdt/schema.ts'
import { advanceBranch, branchOids } from '../git/merge.ts'
import { MAX_PLAIN_BATCH, MAX_VERIFY_BATCH, runBatch, type BatchItem } from '../git/batch.ts'
import { BatchProcesses } from '../git/merge-session.ts'
import { extendHistory, mainHistory, reconcileMerged, type MainHistory } from '../git/history.ts'
import { taskBranch } from '../git/worktree.ts'
import { git } from '../git/git.ts'
import { claimOrder, depsMerged, openTasks, remainingCriticalPath } from '../scheduler/dag.ts'
import { toError } from '../util/errors.ts'
import { dropOlderThan, dropUnless } from '../util/prune.ts'
import { MAIN_LOST_MS, type MergeContext } from './context.ts'
import { existsSync } from 'node:fs'

/**
 * Test hook (fault injection), read once when this module loads:
 * `MESHWORK_FAULT=leader-crash-after-main-move` makes the leader kill itself
 * with SIGKILL right after it moved its local main for a merge and before the
 * board records it: the crash the main follower's "kept aside" path exists for
 * (`npm run chaos`). With `MESHWORK_FAULT_ARM=FILE` it fires only once FILE
 * exists, so a test can choose the moment. Never set it in production.
 */
const FAULT = process.env.MESHWORK_FAULT === 'leader-crash-after-main-move' ? { arm: process.env.MESHWORK_FAULT_ARM ?? null } : null

/** The test hook above: SIGKILLs this process when the fault is set (and armed). */
function crashAfterMainMoveIfInjected (): void {
  if (FAULT === null || (FAULT.arm !== null && !existsSync(FAULT.arm))) return
  process.kill(process.pid, 'SIGKILL')
}

/**
 * The merge queue, on the leader: done tasks whose branches are here, in
 * claim order, merged onto main in batches, each landing fenced by the
 * leader's term and main's head; and the repair that keeps the board's
 * "merged" equal to main's history.
 */
/**
 * With the board unchanged since a merge pass found nothing to do, the next
 * pass is skipped until this much time has passed (retry back-offs expire).
 * @default 5000
 */
export const IDLE_RECHECK_MS = 5000

/** A batch that failed is not tried again for this long. @default 5000 */
export const MERGE_RETRY_MS = 5000

/**
 * A batch's tasks are marked merging on the board once it has merged this
 * long without landing (with `--verify`, at once): a batch that lands sooner
 * takes its tasks from done to merged in one board change, one change fewer
 * for every node of the mesh to apply (about a fifth of a task's changes: most
 * batches land in a few hundred milliseconds). Whether marked or not, the
 * landing is fenced the same way (`still`), and a task left done by a batch
 * that did not land is simply next in the queue. @default 500 ms
 */
export const MERGING_MARK_AFTER_MS = 500

/**
 * Longest a ready batch is held back to let more tasks join it (see
 * `MergeQueue.holdFor`). @default 2000
 */
export const MAX_HOLD_MS = 2000

export class MergeQueue {
  #ctx: MergeContext
  #failedAt = new Map<TaskId, number>()
  /** The board version at which the last pass found nothing to do, and when. */
  #idle: { version: string, at: number } | null = null
  /**
   * Task branches known here at a commit (task id → oid): found by a pass, or
   * put here by a hand-off or a collection (`arrived`). A task whose head is
   * its entry is merged without reading its branch again.
   */
  #branchSeen = new Map<TaskId, string>()
  /** Main's first-parent merges at the last head read (task id → merge commit). */
  #history: { head: string, history: MainHistory } | null = null
  /** How long the last move of main took here (ms): what a task that misses a batch waits for once more. */
  #advanceMs: number | null = null
  /** When main last moved here (`performance.now()`) and how long that round took from its start: the pace of main under load (see `#holdFor`). */
  #lastRound: { landedAt: number, ms: number } | null = null
  /** The wake-up of the leader loop once a held batch may go (see `#holdFor`), and when that is (`performance.now()`). */
  #holdTimer: NodeJS.Timeout | null = null
  #holdUntil = 0
  /** The git processes the batches share (a merge session and a commit writer), ended after a while without a batch. */
  readonly #processes: BatchProcesses

  constructor (ctx: MergeContext) {
    this.#ctx = ctx
    this.#processes = new BatchProcesses(ctx.init.repo)
  }

  /** Ends the git processes kept for the next batch (the node is stopping). */
  async close (): Promise<void> {
    await this.#processes.close()
  }

  /**
   * Merges the next batch of ready tasks into main (the leader only; one batch
   * at a time; decided conflicts go first, see `Leadership`): the queue's first tasks whose branches are here are stacked on
   * main, verified together and landed (see `runBatch`), each landing a
   * compare-and-swap of main fenced by this leader's term. Resolves true if it
   * merged something (the queue may have more at once). `busy`: an agent
   * resolution runs, so an unchanged board is no reason to skip the pass.
   */
  async next (busy = false): Promise<boolean> {
    const { node, repo, branch, logger } = this.#ctx.init
    const me = node.peerId
    // where a round spends its wall time (ms per phase, logged with merge:batch)
    const started = performance.now()
    const ms: Record<string, number> = {}
    let lapAt = started
    const lap = (phase: string): void => { const now = performance.now(); ms[phase] = Math.round((ms[phase] ?? 0) + now - lapAt); lapAt = now }
    // nothing changed on the board since a pass that found nothing to do: no git until IDLE_RECHECK_MS passed
    const version = node.board.heads().join(',')
    if (!busy && this.#idle?.version === version && Date.now() - this.#idle.at < IDLE_RECHECK_MS) return false
    const idle = (): false => { this.#idle = { version, at: Date.now() }; return false }
    // a batch is held (see #holdFor): the board changes that wake the loop meanwhile need no pass of their own
    const heldFor = this.#holdUntil - performance.now()
    if (heldFor > 0) {
      this.#wakeIn(Math.ceil(heldFor))
      return false
    }
    const main = this.#ctx.main
    let snap = node.board.snapshot()
    const { term } = snap.main
    // before the first merge the board names no main: the local one, read without git while it is unchanged
    const base = snap.main.head ?? main.trusted() ?? await main.read()
    if (base === null) return idle()
    if (snap.main.head !== null && main.trusted() !== base && await main.read() !== base) {
      await this.#ctx.syncMain()
      if (await main.read() !== base) {
        await this.#rollBackLostMain(base, term)
        return false
      }
    }
    if (snap.main.head !== null && await this.#reconcile(base)) snap = node.board.snapshot()
    if (snap.main.head !== base && snap.main.head !== null) return idle()
    // per-task memory follows the board: back-offs that ran out, branches of tasks no longer waiting to merge
    dropOlderThan(this.#failedAt, Date.now(), MERGE_RETRY_MS)
    dropUnless(this.#branchSeen, id => { const t = snap.tasks.get(id); return t !== undefined && !FINAL_TASK_STATES.has(t.state) })
    const max = this.#ctx.init.verify === undefined ? MAX_PLAIN_BATCH : (this.#ctx.init.batch ?? MAX_VERIFY_BATCH)
    const ordered = this.#ready(snap)
    // while tasks keep arriving, main moves at most once per round: the batch waits for what arrives meanwhile
    const hold = this.#holdFor(ordered, max, snap)
    if (hold > 0) {
      this.#holdUntil = performance.now() + hold
      this.#wakeIn(hold)
      return false
    }
    // branches not seen here at their head yet: all looked up in one git process
    const unseen = ordered.filter(t => this.#branchSeen.get(t.id) !== t.head)
    lap('prepare')
    const oids = await branchOids(repo, unseen.map(t => taskBranch(t.id)))
    unseen.forEach((t, i) => { const oid = oids[i]; if (oid != null && oid === t.head) this.#branchSeen.set(t.id, oid) })
    const batch: Task[] = []
    for (const t of ordered) {
      if (batch.length >= max) break
      if (this.#branchSeen.get(t.id) === t.head) batch.push(t)
    }
    if (batch.length === 0) return idle()
    const heads = new Map(batch.map(t => [t.id, t.head as string]))
    /** Fencing: this node still leads in the same term, main is still `at`, and the tasks are still ours to merge. */
    const still = (at: string, ids: Iterable<TaskId>): boolean => {
      const s = node.board.snapshot()
      if (s.main.leader !== me || s.main.term !== term || (s.main.head ?? base) !== at) return false
      for (const id of ids) { const t = s.tasks.get(id); if ((t?.state !== 'merging' && t?.state !== 'done') || t.head !== heads.get(id)) return false }
      return true
    }
    lap('lookup')
    const ids = batch.map(t => t.id)
    // the tasks are marked merging once the batch has taken a while (`MERGING_MARK_AFTER_MS`), never after it
    // landed: landing clears the timer (`stopMarking`)
    let marked = false
    const mark = (these: readonly TaskId[]): void => {
      const s = node.board.snapshot()
      const due = these.filter(id => { const t = s.tasks.get(id); return t?.state === 'done' && t.head === heads.get(id) })
      if (due.length > 0) node.changeBoard('task:merging', d => { for (const id of due) lifecycle.startMerge(d, id) })
    }
    const markAll = (): void => { marked = true; mark(ids) }
    const markAfter = this.#ctx.init.verify !== undefined ? 0 : this.#ctx.init.markMergingAfterMs ?? MERGING_MARK_AFTER_MS
    const markTimer = markAfter <= 0 ? null : setTimeout(markAll, markAfter).unref()
    if (markTimer === null) markAll()
    const stopMarking = (): void => { if (markTimer !== null) clearTimeout(markTimer) }
    lap('mark')
    /**
     * Tasks done while the batch was stacked, whose branches are known here
     * (handed off, collected, or found by an earlier pass): they join it
     * rather than wait for the whole next round, when that is worth it. Each
     * task that joins saves itself a move of main and costs the batch's own
     * tasks the time of its merge, which is about what each of theirs took:
     * so they join only while the batch's merges so far took less than the
     * last move of main, once per batch, and at most as many as it had (asked
     * until none were left, a batch of bench:e2e's 100 instant tasks grew for
     * 80 s while tasks kept coming, and nothing landed meanwhile). Only while
     * this node leads in the same term on the same main, and the batch has room.
     */
    let extended = false
    const stackStart = performance.now()
    const more = async (): Promise<BatchItem[]> => {
      const s = node.board.snapshot()
      if (extended || ids.length >= max || s.main.leader !== me || s.main.term !== term || (s.main.head ?? base) !== base) return []
      if (this.#advanceMs !== null && performance.now() - stackStart > this.#advanceMs) return []
      extended = true
      const extra = this.#ready(s).filter(t => !heads.has(t.id) && this.#branchSeen.get(t.id) === t.head).slice(0, Math.min(max - ids.length, batch.length))
      if (extra.length === 0) return []
      lap('stack')
      for (const t of extra) { heads.set(t.id, t.head as string); ids.push(t.id) }
      // the batch is marked already: they join it marked too (else the batch's mark takes them with it)
      if (marked) mark(extra.map(t => t.id))
      lap('mark')
      this.#ctx.job.add(extra.map(t => t.id))
      return extra.map(t => ({ taskId: t.id, title: t.title, head: t.head as string }))
    }
    try {
      const res = await runBatch({
        repo,
        worktreesDir: this.#ctx.init.worktreesDir,
        base,
        items: batch.map(t => ({ taskId: t.id, title: t.title, head: t.head as string })),
        verify: this.#ctx.init.verify,
        verifyTimeoutMs: this.#ctx.init.verifyTimeoutMs,
        signal: this.#ctx.job.start([...ids], term),
        processes: this.#processes,
        more,
        onVerify: (commit, ok, ms, size) => { logger.info('merge:verified', { commit, ok, ms, merges: size, term }) },
        land: async (prev, tip, merged) => {
          lap('stack')
          stopMarking()
          if (!still(prev, merged.map(m => m.taskId))) { logger.warn('merge:abandoned', { tasks: merged.map(m => m.taskId), reason: 'leadership, term or main changed during the merge' }); return false }
          // the majority may have become unreachable while the batch was verified: a minority's leader moves nothing
          if (!this.#ctx.majority()) { logger.warn('merge:abandoned', { tasks: merged.map(m => m.taskId), reason: 'the majority of the mesh became unreachable during the merge' }); return false }
          // from the move of the local main until the board names it, no sync of it (`LocalMain.landing`)
          const how = await main.landing(async () => {
            main.moved(null)
            // compare-and-swap from the main the batch was stacked on: a local main that moved (a commit made here) is a lost race, kept aside by the main follower
            const advanceStart = performance.now()
            const how = await advanceBranch(repo, branch, prev, tip)
            this.#advanceMs = performance.now() - advanceStart
            lap('advance')
            if (how === 'lost-race') throw new Error('local main moved during the merge')
            crashAfterMainMoveIfInjected()
            main.moved(tip)
            this.#extendHistory(prev, tip, merged.map(m => ({ taskId: m.taskId, commit: m.commit, head: heads.get(m.taskId) as string })))
            for (const m of merged) this.#branchSeen.delete(m.taskId)
            const now = Date.now()
            node.changeBoard('main:advance', d => {
              lifecycle.advanceMain(d, tip)
              for (const m of merged) lifecycle.merge(d, m.taskId, m.commit, now)
            })
            return how
          })
          lap('publish')
          const landedAt = performance.now()
          this.#lastRound = { landedAt, ms: landedAt - started }
          logger.info('merge:done', { tasks: merged.map(m => m.taskId), main: tip, term, checkout: how })
          this.#ctx.advanced(tip)
          return true
        }
      })
      const current = res.main
      for (const o of res.outcomes) {
        switch (o.kind) {
          case 'merged':
            break
          case 'deferred':
            if (node.board.task(o.taskId)?.state === 'merging') node.changeBoard('task:merge-deferred', d => { lifecycle.deferMerge(d, o.taskId) })
            logger.info('merge:deferred', { task: o.taskId, reason: o.reason })
            break
          case 'missing': {
            // the branch names a commit this repository lost: the collector fetches it again from a holder
            this.#branchSeen.delete(o.taskId)
            if (node.board.task(o.taskId)?.state === 'merging') node.changeBoard('task:merge-deferred', d => { lifecycle.deferMerge(d, o.taskId) })
            await git(['update-ref', '-d', `refs/heads/${taskBranch(o.taskId)}`, o.head], { cwd: repo, allowFail: true })
            this.#ctx.branchMissing(o.taskId)
            logger.warn('merge:branch-missing', { task: o.taskId, head: o.head, note: 'its branch names a commit that is not in this repository; fetched again from a node that holds it' })
            break
          }
          case 'conflict': {
            if (!still(current, [o.taskId])) break
            const n = [...node.board.snapshot().conflicts.values()].filter(c => c.taskId === o.taskId).length + 1
            const id = conflictIdFor(o.taskId, n)
            node.changeBoard('task:conflict', d => { lifecycle.openConflict(d, o.taskId, { id, files: o.files, hunks: o.hunks, oursFrom: o.oursFrom }) })
            logger.warn('merge:conflict', { task: o.taskId, conflict: id, files: o.files, hunks: o.hunks.length, oursFrom: o.oursFrom, term })
            break
          }
          case 'verify-failed':
            if (!still(current, [o.taskId])) break
            node.changeBoard('task:verify-failed', d => { lifecycle.fail(d, o.taskId, `--verify failed on the merge with main:\n${o.output.slice(-4000)}`) })
            logger.warn('merge:verify-failed', { task: o.taskId })
            break
          default: {
            const never: never = o
            throw new Error(`unknown outcome ${String(never)}`)
          }
        }
      }
      lap('after')
      logger.info('merge:batch', { tasks: ids.length, merged: res.outcomes.filter(o => o.kind === 'merged').length, verifyRuns: res.verifyRuns, term, ms: { ...ms, total: Math.round(performance.now() - started) } })
    } catch (err) {
      for (const id of ids) { this.#failedAt.set(id, Date.now()); this.#branchSeen.delete(id) }
      main.moved(null)
      logger.warn('merge:failed', { tasks: ids, error: toError(err).message })
    } finally {
      stopMarking()
      this.#ctx.job.end()
      const left = ids.filter(id => node.board.task(id)?.state === 'merging')
      if (left.length > 0) node.changeBoard('task:merge-retry', d => { for (const id of left) lifecycle.deferMerge(d, id) })
    }
    return true
  }

  /**
   * How long to hold back a batch of `ordered` (the tasks ready to merge, in
   * queue order) before merging it, in ms; 0: merge now. A move of main costs
   * about the same whatever the batch's size: on the leader the round's fixed
   * part (two board changes, the checkout moved) and on every other node a
   * fetch of the new main (six git processes there, three here to serve it).
   * Merging the moment anything is ready, as the leader did, a busy mesh
   * moved main once per round with the one or two tasks done during the last
   * one (bench:e2e, 100 instant tasks: 49 moves of 2.0 tasks, 1.16 merges/s).
   * So while tasks keep arriving, main moves at most once per round time: a
   * batch found sooner than the last round's duration after the last move
   * waits out the rest of it, and whatever is done meanwhile merges with it.
   * It does not wait when the mesh is idle otherwise (no task running or
   * claimed anywhere: nothing more is coming), when main last moved longer
   * ago than that, when the batch is full, or when a task of it has a
   * dependent (the DAG waits on its merge): all judged when the hold starts,
   * which then runs its course (at most `MAX_HOLD_MS`) without a pass of the
   * queue at each board change.
   */
  #holdFor (ordered: readonly Task[], max: number, snap: BoardSnapshot): number {
    const last = this.#lastRound
    if (last === null || ordered.length === 0 || ordered.length >= max) return 0
    const left = Math.min(last.ms, MAX_HOLD_MS) - (performance.now() - last.landedAt)
    if (left <= 0) return 0
    const ids = new Set<TaskId>(ordered.map(t => t.id))
    let arriving = false
    for (const t of openTasks(snap)) {
      if (t.state === 'running' || t.state === 'claimed') arriving = true
      // a task the batch would merge is a dependency of one not yet merged: that one waits for it
      else if (t.state === 'pending' && t.deps.some(d => ids.has(d))) return 0
    }
    return arriving ? Math.ceil(left) : 0
  }

  /** Runs the leader loop again in `ms` (a held batch may go then); one wake-up pending at a time. */
  #wakeIn (ms: number): void {
    if (this.#holdTimer !== null) return
    this.#holdTimer = setTimeout(() => {
      this.#holdTimer = null
      this.#ctx.wake()
    }, ms)
    this.#holdTimer.unref()
  }

  /**
   * The done tasks this leader may merge now, in queue order: held here,
   * dependencies merged, not in a retry back-off. Whether each branch is
   * here at its head is for the caller to check.
   */
  #ready (snap: BoardSnapshot): Task[] {
    const me = this.#ctx.init.node.peerId
    const candidates: Task[] = []
    for (const t of openTasks(snap)) {
      if (t.state !== 'done' || t.head === null || !t.holders.includes(me) || !depsMerged(t, snap)) continue
      if (Date.now() - (this.#failedAt.get(t.id) ?? 0) < MERGE_RETRY_MS) continue
      candidates.push(t)
    }
    // the critical paths walk the whole board: only when there is something to order
    return candidates.length === 0 ? candidates : claimOrder(candidates, remainingCriticalPath(snap.tasks))
  }

  /**
   * Task `id`'s branch is here at `oid` now: this node fetched it (a hand-off
   * taken, often before the task is done on the board, or a collection). The
   * pass that merges it need not look the branch up with a git process.
   */
  arrived (id: TaskId, oid: string): void {
    this.#branchSeen.set(id, oid)
  }

  /**
   * The board names a main (`lost`) that no live peer has had for
   * `MAIN_LOST_MS`: its leader died right after publishing it. This leader
   * puts main back to the last main it has; the reconcile pass then sends the
   * tasks merged only into the lost main back to the queue, so they merge
   * again and nothing stalls. If the old leader comes back, its main is kept
   * on a backup branch by its main follower.
   */
  async #rollBackLostMain (lost: string, term: number): Promise<void> {
    const { node, logger } = this.#ctx.init
    const m = this.#ctx.main.missing()
    if (m === null || m.oid !== lost || Date.now() - m.since < (this.#ctx.init.mainLostMs ?? MAIN_LOST_MS)) return
    const local = await this.#ctx.main.read()
    if (local === null || local === lost) return
    const changed = node.changeBoard('main:rollback', d => {
      if (String(d.main.head) !== lost || String(d.main.leader) !== node.peerId || d.main.term !== term) return
      lifecycle.advanceMain(d, local)
    })
    if (changed) logger.warn('main:rolled-back', { lost, main: local, term, note: `the mesh main ${lost.slice(0, 12)} is on no live node (its leader died before anyone fetched it): main goes back to ${local.slice(0, 12)} and the tasks merged into the lost main are merged again` })
  }

  /**
   * Main moved here from `prev` to `tip` by the merge commits `merged` (each
   * on the one before, the first on `prev`, the task head its second parent):
   * main's history at `tip` is the one at `prev` plus these, so the next
   * reconcile pass need not read it again with `git log`.
   */
  #extendHistory (prev: string, tip: string, merged: ReadonlyArray<{ taskId: TaskId, commit: string, head: string }>): void {
    const h = this.#history
    if (h?.head !== prev || merged.at(-1)?.commit !== tip) { this.#history = null; return }
    this.#history = { head: tip, history: extendHistory(h.history, merged) }
  }

  /**
   * Makes the board's "merged" agree with main's history (`reconcileMerged`):
   * after a healed partition, tasks merged on the losing side's main go back in
   * the queue and tasks already on main are recorded merged. Runs between
   * batches on the leader, whose main is the board's; true if it changed the board.
   */
  async #reconcile (head: string): Promise<boolean> {
    const { node, repo, logger } = this.#ctx.init
    if (this.#history?.head !== head) this.#history = { head, history: await mainHistory(repo, head) }
    const snap = node.board.snapshot()
    if (snap.main.head !== head || snap.main.leader !== node.peerId) return false
    const repair = reconcileMerged(snap.tasks.values(), this.#history.history)
    if (repair.requeue.length === 0 && repair.record.length === 0) return false
    const now = Date.now()
    node.changeBoard('main:reconcile', d => {
      for (const r of repair.requeue) {
        lifecycle.requeue(d, r.id, { to: r.to, now, error: `its merge ${r.lost === null ? '' : r.lost.slice(0, 12) + ' '}is not on main (made on the other side of a partition that lost); merging again` })
      }
      for (const r of repair.record) lifecycle.recordMerged(d, r.id, r.commit, now)
    })
    logger.warn('main:reconciled', { main: head, requeued: repair.requeue.map(r => r.id), recorded: repair.record.map(r => r.id) })
    return true
  }
}
