import * as lifecycle from '../crdt/lifecycle.ts'
import { FINAL_TASK_STATES, type PeerIdString, type Task, type TaskId } from '../crdt/schema.ts'
import { fetchFromPeer } from '../git/transfer.ts'
import { branchOid, hasCommit } from '../git/merge.ts'
import { git } from '../git/git.ts'
import { checkpointBranch, taskBranch } from '../git/worktree.ts'
import { openTasks } from '../scheduler/dag.ts'
import { toError } from '../util/errors.ts'
import { dropOlderThan, dropUnless } from '../util/prune.ts'
import type { LeaderInit } from './context.ts'
import { BRANCH_WAITS } from './handoff.ts'
import { Background } from '../util/background.ts'

/** Branch fetches a leader runs at once. @default 2 */
export const MAX_PARALLEL_FETCHES = 2

/** A branch whose fetch failed is not fetched again for this long. @default 5000 */
export const COLLECT_RETRY_MS = 5000

/**
 * How long a done task the board says this leader holds may wait before the
 * leader checks that its branch is really here at the task's head (the merge
 * queue only takes branches it finds). A leader can be named a holder of a
 * branch it lost: a node that restarted on a board saying the task was merged
 * deleted the branch at start, and the merge was then undone (a lost main
 * put back, the losing side of a partition). @default 10 s
 */
export const HELD_CHECK_AFTER_MS = 10_000

/**
 * How long one of the leader's own runs (done, merging or in conflict, its
 * branch held on the leader alone) waits for its merge before the leader
 * hands its branch to a keeper, so that the leader's death costs no run. Most merge within a
 * second or two and are never handed on; those held back (behind a long
 * `--verify`, a conflict, a lost majority) are. @default 10 s
 */
export const BACKUP_AFTER_MS = 10_000
/** A backup that failed is tried again after this long. @default 30 s */
export const BACKUP_RETRY_MS = 30_000

/**
 * Branch collection, on the leader: fetches every finished task's branch from
 * a live node that holds it (over the git stream protocol), checks the oid and
 * records this node as a holder, so the work survives the node that made it.
 */
export class BranchCollector {
  #init: LeaderInit
  #wake: () => void
  #fetching = new Set<TaskId>()
  #failedAt = new Map<TaskId, number>()
  /** The holder a task's last failed fetch was from: the next one tries another live holder first. */
  #failedFrom = new Map<TaskId, string>()
  /** Done tasks this leader has seen on its board (task id → head, and when), to log each once. */
  #seenDone = new Map<TaskId, { head: string | null, at: number }>()
  /** Done tasks held here whose branch was found here at their head (task id → head): not checked again. */
  #heldOk = new Map<TaskId, string>()
  /** This leader's own runs waiting for their merge, held by no other live node (task id → head, since when, and when a backup was last tried). */
  #own = new Map<TaskId, { head: string, since: number, tried: number | null }>()
  #backingUp = false

  /**
   * `wake` runs the leader loop again soon: a branch that arrived is merged, and the next fetch starts, without waiting for the tick.
   * `bg` tracks the fetches, so stopping the leadership aborts them and waits for them.
   * `arrived` is told of each branch put here at a task's head (the merge queue then need not look it up).
   */
  constructor (init: LeaderInit, wake: () => void = () => {}, bg = new Background(), arrived: (task: TaskId, oid: string) => void = () => {}) {
    this.#init = init
    this.#wake = wake
    this.#bg = bg
    this.#arrived = arrived
  }

  #bg: Background
  #arrived: (task: TaskId, oid: string) => void

  /**
   * Task `id`'s branch was put here at `oid` by a hand-off: the task needs no
   * collection, and no check that its branch is here while it waits to merge.
   */
  handedOff (id: TaskId, oid: string): void {
    this.#heldOk.set(id, oid)
  }

  /**
   * Task `id`'s branch was found here naming a commit this repository does
   * not have (a merge could not read it): it is checked, and fetched again
   * from a holder, at the next collection.
   */
  lost (id: TaskId): void {
    this.#heldOk.delete(id)
    this.#recheck.add(id)
  }

  /** Tasks whose branch a merge found naming a missing commit (`lost`): checked at once, without waiting `heldCheckAfterMs`. */
  #recheck = new Set<TaskId>()

  /** Starts fetches of finished tasks' branches this node does not hold yet, then of running tasks' checkpoints (at most `MAX_PARALLEL_FETCHES` at once). */
  collect (): void {
    // per-task memory follows the board: back-offs that ran out, checkpoints of tasks that are over
    const tasks = this.#init.node.board.snapshot().tasks
    dropOlderThan(this.#failedAt, Date.now(), COLLECT_RETRY_MS)
    dropUnless(this.#failedFrom, id => tasks.get(id)?.state === 'done')
    // (a branch handed off arrives while its task still runs: kept until the task is over)
    dropUnless(this.#heldOk, id => { const t = tasks.get(id); return t !== undefined && !FINAL_TASK_STATES.has(t.state) })
    dropUnless(this.#checkpoints, id => { const t = tasks.get(id); return t !== undefined && !FINAL_TASK_STATES.has(t.state) })
    for (const id of this.#recheck) { const t = tasks.get(id); if (t === undefined || FINAL_TASK_STATES.has(t.state)) this.#recheck.delete(id) }
    this.#collectBranches()
    this.#collectCheckpoints()
    this.#backUpOwn()
  }

  /**
   * Hands one of this leader's own runs that waited `backupAfterMs` for its
   * merge, held by no other live node, to a keeper (one at a time; one still
   * held alone `BACKUP_RETRY_MS` later, the backup failed or its keeper died,
   * is tried again).
   */
  #backUpOwn (): void {
    const { node, logger, backUp } = this.#init
    if (backUp === undefined) return
    const me = node.peerId
    const now = Date.now()
    const snap = node.board.snapshot()
    const tasks = snap.tasks
    // held by no other live node (a keeper that took it and died since does not count)
    const alone = (t: Task | undefined): t is Task & { head: string } =>
      t !== undefined && BRANCH_WAITS.has(t.state) && t.node === me && t.head !== null &&
      t.holders.every(h => h === me || node.membership.get(h)?.state !== 'alive')
    dropUnless(this.#own, id => { const t = tasks.get(id); return alone(t) && t.head === this.#own.get(id)?.head })
    for (const t of openTasks(snap)) if (alone(t) && !this.#own.has(t.id)) this.#own.set(t.id, { head: t.head, since: now, tried: null })
    if (this.#backingUp) return
    const after = this.#init.backupAfterMs ?? BACKUP_AFTER_MS
    for (const [id, own] of this.#own) {
      // (one that a keeper took leaves this map once the keeper writes itself a holder; else it is tried again)
      if (now - own.since < after || (own.tried !== null && now - own.tried < BACKUP_RETRY_MS)) continue
      const t = tasks.get(id) as Task
      this.#backingUp = true
      own.tried = now
      void this.#bg.track((async () => {
        try {
          await backUp(t, own.head)
        } catch (err) {
          logger.warn('branch:backup-failed', { task: id, error: toError(err).message })
        } finally {
          this.#backingUp = false
        }
      })())
      return
    }
  }

  /** Checkpoints fetched here (task id → commit): the leader keeps each running task's last one, so it outlives the node running it. */
  #checkpoints = new Map<TaskId, string>()

  #collectCheckpoints (): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    for (const t of openTasks(node.board.snapshot())) {
      if (this.#fetching.size >= MAX_PARALLEL_FETCHES) return
      const cp = t.checkpoint
      if (t.state !== 'running' || cp == null || cp.node === me || this.#checkpoints.get(t.id) === cp.head || this.#fetching.has(t.id)) continue
      if (node.membership.get(cp.node)?.state !== 'alive') continue
      const ref = `refs/heads/${checkpointBranch(t.id)}`
      this.#fetching.add(t.id)
      void this.#bg.track((async () => {
        try {
          const res = await fetchFromPeer(node, cp.node, repo, ref, { intoRef: ref, timeoutMs: 5 * 60_000, logger, signal: this.#bg.signal })
          this.#checkpoints.set(t.id, res.oid)
          logger.info('checkpoint:collected', { task: t.id, from: cp.node, head: res.oid })
        } catch (err) {
          logger.debug('checkpoint:collect-failed', { task: t.id, from: cp.node, error: toError(err).message })
        } finally {
          this.#fetching.delete(t.id)
        }
      })())
    }
  }

  #collectBranches (): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    const snap = node.board.snapshot()
    const tasks = snap.tasks
    // when each done reached this leader, and whether its branch was here already (handed off at done)
    for (const [id, seen] of this.#seenDone) if (tasks.get(id)?.state !== 'done' || tasks.get(id)?.head !== seen.head) this.#seenDone.delete(id)
    for (const t of openTasks(snap)) {
      if (t.state !== 'done' || this.#seenDone.has(t.id)) continue
      this.#seenDone.set(t.id, { head: t.head, at: Date.now() })
      logger.info('task:done-seen', { task: t.id, head: t.head, held: t.holders.includes(me) })
    }
    for (const t of openTasks(snap)) {
      if (this.#fetching.size >= MAX_PARALLEL_FETCHES) return
      if (t.state !== 'done' || t.head === null || this.#fetching.has(t.id)) continue
      if (Date.now() - (this.#failedAt.get(t.id) ?? 0) < COLLECT_RETRY_MS) continue
      if (t.holders.includes(me)) {
        // held here, says the board: make sure, once it has waited a while (the queue takes only branches it finds)
        const due = this.#recheck.has(t.id) || Date.now() - (this.#seenDone.get(t.id)?.at ?? Date.now()) >= (this.#init.heldCheckAfterMs ?? HELD_CHECK_AFTER_MS)
        if (this.#heldOk.get(t.id) !== t.head && due) {
          this.#recheck.delete(t.id)
          this.#checkHeld(t)
        }
        continue
      }
      // its node gave up waiting for a hand-off this node is still fetching: that fetch makes this node a holder
      if (this.#init.handoffInFlight?.(t.id) === true) continue
      const holder = this.#pickHolder(t)
      if (holder === undefined) continue
      const head = t.head
      this.#fetching.add(t.id)
      void this.#bg.track((async () => {
        try {
          // handed off after all (the node gave up waiting just before this node had it): nothing to fetch
          if (await branchOid(repo, taskBranch(t.id)) === head) {
            this.#heldOk.set(t.id, head)
            this.#arrived(t.id, head)
            node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, me) })
            logger.info('branch:held', { task: t.id, head, note: 'handed off after its node stopped waiting' })
            return
          }
          const res = await this.#fetchHead(t.id, head, holder)
          this.#heldOk.set(t.id, head)
          this.#arrived(t.id, head)
          node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, me) })
          logger.info('branch:collected', { task: t.id, from: holder, head, bytes: res.bytes })
        } catch (err) {
          this.#failedAt.set(t.id, Date.now())
          this.#failedFrom.set(t.id, holder)
          logger.warn('branch:collect-failed', { task: t.id, from: holder, error: toError(err).message })
        } finally {
          this.#fetching.delete(t.id)
          this.#wake()
        }
      })())
    }
  }

  /** A live holder of the task's branch other than this node, not the one the last fetch failed from while there is another. */
  #pickHolder (t: Task): PeerIdString | undefined {
    const { node } = this.#init
    const live = t.holders.filter(h => h !== node.peerId && node.membership.get(h)?.state === 'alive')
    const failed = this.#failedFrom.get(t.id)
    return live.find(h => h !== failed) ?? live[0]
  }

  /**
   * Fetches the task's head commit from `holder` onto its branch here. By the
   * commit, not by the holder's branch: a holder serves any commit one of its
   * branches reaches, so the work is found even where the task branch itself
   * is gone (deleted at a restart on a board that said the task was merged;
   * main, or the branch a main put aside is kept on, still reaches it).
   */
  async #fetchHead (id: TaskId, head: string, holder: PeerIdString): Promise<{ bytes: number }> {
    const { node, repo, logger } = this.#init
    const res = await fetchFromPeer(node, holder, repo, head, { intoRef: `refs/heads/${taskBranch(id)}`, timeoutMs: 5 * 60_000, logger, signal: this.#bg.signal })
    if (res.oid !== head) throw new Error(`fetched ${res.oid} but the board says ${head}`)
    return res
  }

  /**
   * The board names this node a holder of done task `t`'s branch: checks that
   * the branch is here at the task's head, and if not, puts it back: from the
   * commit when this repository still has it, else fetched from another live
   * holder. When no live node has it, this node stops being named a holder,
   * and a task no other holder is left for goes back to ready without its
   * branch (it runs again), rather than waiting for a merge that can never come.
   */
  #checkHeld (t: Task): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    const head = t.head as string
    const ref = `refs/heads/${taskBranch(t.id)}`
    this.#fetching.add(t.id)
    void this.#bg.track((async () => {
      try {
        if (await branchOid(repo, taskBranch(t.id)) === head) { this.#heldOk.set(t.id, head); return }
        if (await hasCommit(repo, head)) {
          await git(['update-ref', '-m', 'meshwork: task branch put back', ref, head], { cwd: repo })
          this.#heldOk.set(t.id, head)
          logger.warn('branch:restored', { task: t.id, head, note: 'the board names this node a holder but its branch was gone (deleted at a restart while the task read merged, say): put back from the commit' })
          return
        }
        const holder = this.#pickHolder(t)
        if (holder !== undefined) {
          const res = await this.#fetchHead(t.id, head, holder)
          this.#heldOk.set(t.id, head)
          logger.warn('branch:collected', { task: t.id, from: holder, head, bytes: res.bytes, note: 'the board named this node a holder but the commit was not here' })
          return
        }
        const others = t.holders.filter(h => h !== me)
        const why = `the board names ${me} a holder of its branch at ${head.slice(0, 12)}, but that commit is not there`
        if (others.length > 0) {
          // the other holders are not alive: once none of them is, the task goes back to ready (the scheduler's rule)
          node.changeBoard('task:holder-dropped', d => { lifecycle.dropHolder(d, t.id, me, head) })
          logger.warn('branch:lost', { task: t.id, head, holders: others, reason: why, note: 'no longer named a holder; the task waits for its other holders (it runs again if none of them comes back)' })
        } else {
          const now = Date.now()
          node.changeBoard('task:branch-lost', d => {
            if (String(d.tasks[t.id]?.head) !== head || String(d.tasks[t.id]?.state) !== 'done') return
            lifecycle.release(d, t.id, { now, notBefore: null, dropBranch: true, error: `its branch is on no live node (${why}): run again` })
          })
          logger.warn('branch:lost', { task: t.id, head, reason: why, note: 'no other holder: the task goes back to ready and runs again' })
        }
      } catch (err) {
        this.#failedAt.set(t.id, Date.now())
        logger.warn('branch:check-failed', { task: t.id, head, error: toError(err).message })
      } finally {
        this.#fetching.delete(t.id)
        this.#wake()
      }
    })())
  }
}

/**
 * Why task `t`'s branch can be had from no node any more, or null while it
 * may be (here, or a holder alive or only suspect now): every node the board
 * names as a holder is dead or gone. Call after `ensureHead` said false.
 */
export function branchLost (init: LeaderInit, t: Task): string | null {
  const { node } = init
  if (t.holders.some(h => h === node.peerId || ['alive', 'suspect'].includes(node.membership.get(h)?.state ?? 'unknown'))) return null
  const held = t.holders.length === 0 ? 'no node holds it' : `its holders (${t.holders.map(h => `${h} ${node.membership.get(h)?.state ?? 'unknown'}`).join(', ')}) are gone`
  return `the task's branch at ${String(t.head).slice(0, 12)} is on no live node: ${held}; choose rerun or abandon`
}

/** Makes sure the task's branch head is in this repository (fetching it from a live holder); false if it cannot be yet. */
export async function ensureHead (init: LeaderInit, t: Task): Promise<boolean> {
  const { node, repo, logger } = init
  if (t.head === null) return false
  if (await hasCommit(repo, t.head)) return true
  const holder = t.holders.find(h => node.membership.get(h)?.state === 'alive')
  if (holder === undefined) return false
  // by the commit, which any branch of the holder may reach (see BranchCollector)
  await fetchFromPeer(node, holder, repo, t.head, { intoRef: `refs/heads/${taskBranch(t.id)}`, timeoutMs: 5 * 60_000, logger })
  return true
}
