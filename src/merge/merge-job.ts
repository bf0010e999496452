import type { TaskId } from '../crdt/schema.ts'
import type { LeaderNode } from '../node/components.ts'
import type { Logger } from '../util/logger.ts'

/**
 * The merge in progress on the leader (a batch, or a decided conflict), with
 * the signal its `--verify` runs under: a merge whose tasks were cancelled, or
 * whose leader lost its leadership or term, is stopped, and so is every merge
 * when the node stops. Aborting the signal kills the check's process group.
 */
export class MergeJob {
  #node: LeaderNode
  #log: Logger
  #job: { ids: TaskId[], term: number, abort: AbortController } | null = null

  constructor (node: LeaderNode, log: Logger) {
    this.#node = node
    this.#log = log
  }

  /** Starts tracking a merge of tasks `ids` in `term`; the signal is aborted by `check` or `stop`. */
  start (ids: TaskId[], term: number): AbortSignal {
    const job = { ids, term, abort: new AbortController() }
    this.#job = job
    return job.abort.signal
  }

  /** Tasks `ids` joined the merge in progress (see `runBatch`'s `more`): their cancellation stops it too. */
  add (ids: readonly TaskId[]): void {
    this.#job?.ids.push(...ids)
  }

  /** The merge ended (landed, failed or stopped). */
  end (): void {
    this.#job = null
  }

  /** Stops the merge if its tasks were cancelled or this node no longer leads in its term. */
  check (): void {
    const job = this.#job
    if (job === null || job.abort.signal.aborted) return
    const snap = this.#node.board.snapshot()
    let reason: string | null = null
    if (snap.main.leader !== this.#node.peerId || snap.main.term !== job.term) reason = `this node is no longer the merge leader of term ${job.term}`
    else {
      const cancelled = job.ids.find(id => snap.tasks.get(id)?.state === 'cancelled')
      if (cancelled !== undefined) reason = `task ${cancelled} was cancelled`
    }
    if (reason === null) return
    this.#log.warn('merge:stopped', { tasks: job.ids, reason, note: 'its --verify, if running, is killed with its process group' })
    job.abort.abort(new Error(reason))
  }

  /** The node stops (or stands down from leading): whatever merge runs is stopped. */
  stop (reason = 'the node is stopping'): void {
    this.#job?.abort.abort(new Error(reason))
  }
}
