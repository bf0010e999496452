import * as lifecycle from '../crdt/lifecycle.ts'
import { FINAL_TASK_STATES, type Task, type TaskId } from '../crdt/schema.ts'
import { fetchFromPeer } from '../git/transfer.ts'
import { branchOid, hasCommit } from '../git/merge.ts'
import { checkpointBranch, taskBranch } from '../git/worktree.ts'
import { toError } from '../util/errors.ts'
import { dropOlderThan, dropUnless } from '../util/prune.ts'
import type { LeaderInit } from './context.ts'

/** Branch fetches a leader runs at once. @default 2 */
export const MAX_PARALLEL_FETCHES = 2

/** A branch whose fetch failed is not fetched again for this long. @default 5000 */
export const COLLECT_RETRY_MS = 5000

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
  /** Done tasks this leader has seen on its board (task id → head), to log each once. */
  #seenDone = new Map<TaskId, string | null>()

  /** `wake` runs the leader loop again soon: a branch that arrived is merged, and the next fetch starts, without waiting for the tick. */
  constructor (init: LeaderInit, wake: () => void = () => {}) {
    this.#init = init
    this.#wake = wake
  }

  /** Starts fetches of finished tasks' branches this node does not hold yet, then of running tasks' checkpoints (at most `MAX_PARALLEL_FETCHES` at once). */
  collect (): void {
    // per-task memory follows the board: back-offs that ran out, checkpoints of tasks that are over
    const tasks = this.#init.node.board.snapshot().tasks
    dropOlderThan(this.#failedAt, Date.now(), COLLECT_RETRY_MS)
    dropUnless(this.#checkpoints, id => { const t = tasks.get(id); return t !== undefined && !FINAL_TASK_STATES.has(t.state) })
    this.#collectBranches()
    this.#collectCheckpoints()
  }

  /** Checkpoints fetched here (task id → commit): the leader keeps each running task's last one, so it outlives the node running it. */
  #checkpoints = new Map<TaskId, string>()

  #collectCheckpoints (): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    for (const t of node.board.snapshot().tasks.values()) {
      if (this.#fetching.size >= MAX_PARALLEL_FETCHES) return
      const cp = t.checkpoint
      if (t.state !== 'running' || cp == null || cp.node === me || this.#checkpoints.get(t.id) === cp.head || this.#fetching.has(t.id)) continue
      if (node.membership.get(cp.node)?.state !== 'alive') continue
      const ref = `refs/heads/${checkpointBranch(t.id)}`
      this.#fetching.add(t.id)
      void (async () => {
        try {
          const res = await fetchFromPeer(node, cp.node, repo, ref, { intoRef: ref, timeoutMs: 5 * 60_000, logger })
          this.#checkpoints.set(t.id, res.oid)
          logger.info('checkpoint:collected', { task: t.id, from: cp.node, head: res.oid })
        } catch (err) {
          logger.debug('checkpoint:collect-failed', { task: t.id, from: cp.node, error: toError(err).message })
        } finally {
          this.#fetching.delete(t.id)
        }
      })()
    }
  }

  #collectBranches (): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    const tasks = node.board.snapshot().tasks
    // when each done reached this leader, and whether its branch was here already (handed off at done)
    for (const [id, head] of this.#seenDone) if (tasks.get(id)?.state !== 'done' || tasks.get(id)?.head !== head) this.#seenDone.delete(id)
    for (const t of tasks.values()) {
      if (t.state !== 'done' || this.#seenDone.has(t.id)) continue
      this.#seenDone.set(t.id, t.head)
      logger.info('task:done-seen', { task: t.id, head: t.head, held: t.holders.includes(me) })
    }
    for (const t of tasks.values()) {
      if (this.#fetching.size >= MAX_PARALLEL_FETCHES) return
      if (t.state !== 'done' || t.head === null || t.holders.includes(me) || this.#fetching.has(t.id)) continue
      if (Date.now() - (this.#failedAt.get(t.id) ?? 0) < COLLECT_RETRY_MS) continue
      // its node gave up waiting for a hand-off this node is still fetching: that fetch makes this node a holder
      if (this.#init.handoffInFlight?.(t.id) === true) continue
      const holder = t.holders.find(h => node.membership.get(h)?.state === 'alive')
      if (holder === undefined) continue
      const head = t.head
      this.#fetching.add(t.id)
      void (async () => {
        try {
          // handed off after all (the node gave up waiting just before this node had it): nothing to fetch
          if (await branchOid(repo, taskBranch(t.id)) === head) {
            node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, me) })
            logger.info('branch:held', { task: t.id, head, note: 'handed off after its node stopped waiting' })
            return
          }
          const res = await fetchFromPeer(node, holder, repo, `refs/heads/${taskBranch(t.id)}`, { intoRef: `refs/heads/${taskBranch(t.id)}`, timeoutMs: 5 * 60_000, logger })
          if (res.oid !== head) throw new Error(`fetched ${res.oid} but the board says ${head}`)
          node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, me) })
          logger.info('branch:collected', { task: t.id, from: holder, head, bytes: res.bytes })
        } catch (err) {
          this.#failedAt.set(t.id, Date.now())
          logger.warn('branch:collect-failed', { task: t.id, from: holder, error: toError(err).message })
        } finally {
          this.#fetching.delete(t.id)
          this.#wake()
        }
      })()
    }
  }
}

/** Makes sure the task's branch head is in this repository (fetching it from a live holder); false if it cannot be yet. */
export async function ensureHead (init: LeaderInit, t: Task): Promise<boolean> {
const { node, repo, logger } = init
  if (t.head === null) return false
  if (await hasCommit(repo, t.head)) return true
  const holder = t.holders.find(h => node.membership.get(h)?.state === 'alive')
  if (holder === undefined) return false
  await fetchFromPeer(node, holder, repo, `refs/heads/${taskBranch(t.id)}`, { intoRef: `refs/heads/${taskBranch(t.id)}`, timeoutMs: 5 * 60_000, logger })
  return true
}
