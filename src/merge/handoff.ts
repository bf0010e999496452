import * as lifecycle from '../crdt/lifecycle.ts'
import type { PeerIdString, Task, TaskId } from '../crdt/schema.ts'
import { HandoffError, handOff, type HandoffRequest } from '../git/transfer.ts'
import { taskBranch } from '../git/worktree.ts'
import type { LeaderNode } from '../node/components.ts'
import { toError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'

/**
 * How long the leader waits for its board to show the run a hand-off names
 * (the requester's `running` change may still be on its way). @default 5 s
 */
export const HANDOFF_BOARD_WAIT_MS = 5000
/**
 * How long a node waits for the leader to take its branch before it marks the
 * task done without. The run's slot does not wait: it takes the next task as
 * soon as the work is committed (the scheduler's `FINISHING_PER_SLOT`); only
 * the task's `done` does. A hand-off is one small fetch, well under a second
 * on an idle pair of nodes; on a host starved of CPU (bench:e2e at load
 * average 20-30 on 2 cores) they took 9-37 s, and with a 10 s wait a node
 * marked its task done just before the leader had the branch, so its death
 * right after cost a run. Long, on purpose: the wait only matters on a host
 * that slow, and there the guarantee is worth a later `done`.
 * @default 30 s
 */
export const HANDOFF_WAIT_MS = 30_000
/** A leader that did not speak the hand-off protocol is asked again after this long (it may have been upgraded). @default 10 min */
const UNSUPPORTED_RETRY_MS = 10 * 60_000

/**
 * Branch hand-off at `done` (see src/protocol/git-handoff.ts): the node that
 * finished a task gives its branch to the merge leader before it writes
 * `done`, and writes the leader as a second holder. The leader then merges it
 * as soon as the `done` change arrives (no collection round trip), and a death
 * of the node after `done` costs no run. A hand-off that fails for any reason
 * costs nothing but time: the task is marked done with this node as its only
 * holder, and the leader collects the branch as before (`BranchCollector`).
 */
export class BranchHandoff {
  #node: LeaderNode
  #log: Logger
  #timeoutMs: number
  /** Leaders that did not speak the protocol, and when that was found. */
  #unsupported = new Map<PeerIdString, number>()

  constructor (node: LeaderNode, logger: Logger, opts: { timeoutMs?: number } = {}) {
    this.#node = node
    this.#log = logger
    this.#timeoutMs = opts.timeoutMs ?? HANDOFF_WAIT_MS
  }

  /**
   * Hands the branch of run `t` (committed at `head`) to the merge leader;
   * resolves to the peers that now hold it besides this node (the leader, or
   * none). Never throws.
   */
  async handOff (t: Task, head: string, signal?: AbortSignal): Promise<PeerIdString[]> {
    const node = this.#node
    const leader = node.board.snapshot().main.leader
    if (leader === null || leader === node.peerId) return []
    if (node.membership.get(leader)?.state !== 'alive') return []
    const unsupportedAt = this.#unsupported.get(leader)
    if (unsupportedAt !== undefined && Date.now() - unsupportedAt < UNSUPPORTED_RETRY_MS) return []
    const req: HandoffRequest = { task: t.id, epoch: t.epoch, ref: `refs/heads/${taskBranch(t.id)}`, oid: head }
    const started = Date.now()
    try {
      await handOff(node, leader, req, { timeoutMs: this.#timeoutMs, ...(signal !== undefined ? { signal } : {}) })
      this.#unsupported.delete(leader)
      this.#log.info('branch:handed-off', { task: t.id, epoch: t.epoch, to: leader, head, ms: Date.now() - started })
      return [leader]
    } catch (err) {
      const code = err instanceof HandoffError ? err.code : 'failed'
      if (code === 'unsupported') this.#unsupported.set(leader, Date.now())
      this.#log.info('branch:handoff-failed', { task: t.id, epoch: t.epoch, to: leader, code, error: toError(err).message, note: 'the task is marked done all the same; the leader collects the branch from this node' })
      return []
    }
  }
}

/**
 * The leader's side: whether to take a hand-off of `req` from `peer` (null),
 * or why not. Taken only while this node is the merge leader, for the task
 * branch of a run the board says `peer` makes in that epoch (running, or done
 * at that commit). The board may not show the run yet: waits for it (for
 * board changes, up to `waitMs`).
 */
export async function acceptHandoff (node: LeaderNode, peer: string, req: HandoffRequest, signal: AbortSignal, waitMs = HANDOFF_BOARD_WAIT_MS): Promise<string | null> {
  if (req.ref !== `refs/heads/${taskBranch(req.task)}`) return `${req.ref} is not the branch of task ${req.task}`
  /** null: take it; `wait`: the board may not have caught up yet; else a final refusal. */
  const check = (): { final: boolean, reason: string } | null => {
    const snap = node.board.snapshot()
    if (snap.main.leader !== node.peerId) return { final: true, reason: 'this node is not the merge leader' }
    const t = snap.tasks.get(req.task as Task['id'])
    if (t === undefined) return { final: false, reason: `no task ${req.task} on this node's board` }
    if (t.epoch > req.epoch) return { final: true, reason: `task ${req.task} is at epoch ${t.epoch}, past the run of epoch ${req.epoch}` }
    if (t.epoch < req.epoch) return { final: false, reason: `this node's board has task ${req.task} at epoch ${t.epoch}, not ${req.epoch} yet` }
    if (t.node !== peer) return { final: t.state !== 'claimed' && t.state !== 'ready', reason: `task ${req.task} is ${t.state} on ${t.node ?? 'no node'}, not on ${peer}` }
    if (t.state === 'running') return null
    if (t.state === 'done' && t.head === req.oid) return null
    if (t.state === 'claimed' || t.state === 'ready') return { final: false, reason: `task ${req.task} is ${t.state}` }
    return { final: true, reason: `task ${req.task} is ${t.state}${t.state === 'done' ? ` at ${String(t.head)}` : ''}` }
  }
  const first = check()
  if (first === null) return null
  if (first.final) return first.reason
  let last = first
  return await new Promise<string | null>(resolve => {
    let unsubscribe = (): void => {}
    const finish = (v: string | null): void => {
      unsubscribe()
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      resolve(v)
    }
    const onAbort = (): void => { finish(`the board did not show the run in time: ${last.reason}`) }
    const timer = setTimeout(onAbort, waitMs)
    signal.addEventListener('abort', onAbort, { once: true })
    unsubscribe = node.board.subscribe(() => {
      const r = check()
      if (r === null) finish(null)
      else if (r.final) finish(r.reason)
      else last = r
    })
  })
}

/**
 * The leader took a hand-off (`oid` is on the task's branch here). When the
 * requester gave up waiting and marked the task done without it, the leader
 * records itself as a holder now, as the collector would after a fetch.
 */
export function recordTaken (node: LeaderNode, task: string, oid: string): void {
  const t = node.board.task(task as TaskId)
  if (t === undefined || t.state !== 'done' || t.head !== oid || t.holders.includes(node.peerId)) return
  node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, node.peerId) })
}
