import * as lifecycle from '../crdt/lifecycle.ts'
import type { PeerIdString, Task, TaskId } from '../crdt/schema.ts'
import { HandoffError, handOff, type HandoffRequest } from '../git/transfer.ts'
import { taskBranch } from '../git/worktree.ts'
import type { LeaderNode } from '../node/components.ts'
import { toError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { rendezvousScore } from '../scheduler/claims.ts'

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
 * of the node after `done` costs no run. While no leader is alive (it died and
 * no other is elected yet, or none may lead), the branch goes to another live
 * node instead, a keeper (spread over the nodes by task, as claims are), so
 * that the node's death before a leader collects it costs no run either. A
 * hand-off that fails for any reason costs nothing but time: the task is
 * marked done with this node as its only holder, and the leader collects the
 * branch as before (`BranchCollector`).
 */
export class BranchHandoff {
  #node: LeaderNode
  #log: Logger
  #timeoutMs: number
  /** Peers that did not speak the protocol, and when that was found. */
  #unsupported = new Map<PeerIdString, number>()

  constructor (node: LeaderNode, logger: Logger, opts: { timeoutMs?: number } = {}) {
    this.#node = node
    this.#log = logger
    this.#timeoutMs = opts.timeoutMs ?? HANDOFF_WAIT_MS
  }

  /**
   * Hands the branch of run `t` (committed at `head`) to the merge leader,
   * or to a keeper while no leader is alive; resolves to the peers this node
   * writes as holders beside itself (the leader that took it, or none: a
   * keeper writes itself). Never throws.
   */
  async handOff (t: Task, head: string, signal?: AbortSignal): Promise<PeerIdString[]> {
    const node = this.#node
    const leader = node.board.snapshot().main.leader
    // the leader's own run: its branch is where it merges (one that waits long for its merge is backed up: `backUp`)
    if (leader === node.peerId) return []
    // a suspect leader is still asked (under load a live leader is often suspect for a moment): its hand-off times out if it is gone
    const state = leader === null ? undefined : node.membership.get(leader)?.state
    const to = leader !== null && (state === 'alive' || state === 'suspect') ? leader : this.#keeper(t.id)
    if (to === undefined || !this.#speaks(to)) return []
    const as = to === leader ? 'leader' : 'keeper'
    const note = as === 'keeper' ? `no merge leader is alive (${leader ?? 'none elected'}): a keeper holds the branch until one collects it` : undefined
    const given = await this.#give(t, head, to, as, note, signal)
    // a runner names only the leader as a holder (peers refuse any other: crdt/authors.ts); a keeper names itself (`TakenBranches`)
    return given && as === 'leader' ? [to] : []
  }

  /**
   * Hands the branch of this leader's own run `t` (done, merging or in
   * conflict at `head`, held here alone) to a keeper, which writes itself a
   * holder: whether one took it. Never throws.
   */
  async backUp (t: Task, head: string): Promise<boolean> {
    const to = this.#keeper(t.id)
    if (to === undefined) return false
    return await this.#give(t, head, to, 'backup', 'a run of the leader\'s own, waiting for its merge: a keeper holds its branch too')
  }

  /** Asks `to` to take run `t`'s branch at `head`: whether it did (logged either way). */
  async #give (t: Task, head: string, to: PeerIdString, as: 'leader' | 'keeper' | 'backup', note: string | undefined, signal?: AbortSignal): Promise<boolean> {
    const req: HandoffRequest = { task: t.id, epoch: t.epoch, ref: `refs/heads/${taskBranch(t.id)}`, oid: head }
    const started = Date.now()
    try {
      await handOff(this.#node, to, req, { timeoutMs: this.#timeoutMs, ...(signal !== undefined ? { signal } : {}) })
      this.#unsupported.delete(to)
      this.#log.info('branch:handed-off', { task: t.id, epoch: t.epoch, to, as, head, ms: Date.now() - started, ...(note !== undefined ? { note } : {}) })
      return true
    } catch (err) {
      const code = err instanceof HandoffError ? err.code : 'failed'
      if (code === 'unsupported') this.#unsupported.set(to, Date.now())
      this.#log.info('branch:handoff-failed', {
        task: t.id, epoch: t.epoch, to, as, code, error: toError(err).message,
        ...(as !== 'backup' ? { note: 'the task is marked done all the same; the leader collects the branch from this node' } : {})
      })
      return false
    }
  }

  /** Whether `peer` is not known to lack the protocol (asked again after a while: it may have been upgraded). */
  #speaks (peer: PeerIdString): boolean {
    const at = this.#unsupported.get(peer)
    return at === undefined || Date.now() - at >= UNSUPPORTED_RETRY_MS
  }

  /** The live peer that keeps task `id`'s branch while no leader is alive: the one rendezvous hashing picks for it. */
  #keeper (id: TaskId): PeerIdString | undefined {
    const me = this.#node.peerId
    let best: { peer: PeerIdString, score: number } | undefined
    for (const m of this.#node.membership.alive()) {
      if (m.peerId === me || !this.#speaks(m.peerId)) continue
      const score = rendezvousScore(id, m.peerId)
      if (best === undefined || score > best.score) best = { peer: m.peerId, score }
    }
    return best?.peer
  }
}

/**
 * The taking side: whether to take a hand-off of `req` from `peer` (null),
 * or why not. Taken while this node is the merge leader, or as a keeper while
 * no leader is alive here or from the leader itself (see `BranchHandoff`),
 * and only for the task branch of a run the board says `peer` makes in that
 * epoch (running, or done, merging or in conflict at that commit). The board
 * may not show the run yet: waits for it (for board changes, up to `waitMs`).
 */
export async function acceptHandoff (node: LeaderNode, peer: string, req: HandoffRequest, signal: AbortSignal, waitMs = HANDOFF_BOARD_WAIT_MS): Promise<string | null> {
  if (req.ref !== `refs/heads/${taskBranch(req.task)}`) return `${req.ref} is not the branch of task ${req.task}`
  /** null: take it; `wait`: the board may not have caught up yet; else a final refusal. */
  const check = (): { final: boolean, reason: string } | null => {
    const snap = node.board.snapshot()
    const leader = snap.main.leader
    // (the leader itself may ask: it backs up a run of its own that waits for its merge)
    if (leader !== null && leader !== node.peerId && leader !== peer && node.membership.get(leader)?.state === 'alive') return { final: true, reason: `this node is not the merge leader (${leader} is, and alive)` }
    const t = snap.tasks.get(req.task as Task['id'])
    if (t === undefined) return { final: false, reason: `no task ${req.task} on this node's board` }
    if (t.epoch > req.epoch) return { final: true, reason: `task ${req.task} is at epoch ${t.epoch}, past the run of epoch ${req.epoch}` }
    if (t.epoch < req.epoch) return { final: false, reason: `this node's board has task ${req.task} at epoch ${t.epoch}, not ${req.epoch} yet` }
    if (t.node !== peer) return { final: t.state !== 'claimed' && t.state !== 'ready', reason: `task ${req.task} is ${t.state} on ${t.node ?? 'no node'}, not on ${peer}` }
    if (t.state === 'running') return null
    if (BRANCH_WAITS.has(t.state) && t.head === req.oid) return null
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
 * The states in which a finished run's branch waits for its merge: done,
 * merging, or in conflict (a human's decision merges it, or takes its side).
 */
export const BRANCH_WAITS: ReadonlySet<Task['state']> = new Set(['done', 'merging', 'conflict'])

/** How long a taken branch waits for the board to show its task done before this node forgets it. @default 10 min */
export const TAKEN_WAIT_MS = 10 * 60_000

/**
 * Branches this node took by hand-off, until the board shows their tasks done
 * (or merging, or in conflict: `BRANCH_WAITS`) at the commit taken: then this
 * node writes itself as a holder, unless the runner named it already (a
 * leader it handed to; a keeper is never named by the runner, whom peers
 * allow to name only the leader). A take usually
 * comes before the `done` it is for (the runner writes done once the branch
 * is taken); when the runner gave up waiting first, the done is there at once.
 */
export class TakenBranches {
  #node: LeaderNode
  #log: Logger
  #taken = new Map<TaskId, { epoch: number, oid: string, at: number }>()
  #queued = false

  constructor (node: LeaderNode, logger: Logger) {
    this.#node = node
    this.#log = logger
  }

  /** This node took task `task`'s branch at `oid`, for the run of `epoch`. */
  taken (task: string, epoch: number, oid: string): void {
    this.#taken.set(task as TaskId, { epoch, oid, at: Date.now() })
    this.settle()
  }

  /** Forgets every taken branch: nothing is written from now on. */
  stop (): void {
    this.#taken.clear()
  }

  /** How many taken branches wait for their done (tests). */
  get waiting (): number {
    return this.#taken.size
  }

  /** Looks at the board again soon (once for any number of calls before it does): call on every board change. */
  boardChanged (): void {
    if (this.#queued || this.#taken.size === 0) return
    this.#queued = true
    setImmediate(() => { this.#queued = false; this.settle() })
  }

  /** Writes this node as a holder of each taken branch whose task the board shows waiting for its merge at it (`BRANCH_WAITS`); forgets those whose run is over otherwise. */
  settle (): void {
    const node = this.#node
    const me = node.peerId
    const tasks = node.board.snapshot().tasks
    for (const [id, k] of this.#taken) {
      const t = tasks.get(id)
      if (t === undefined || t.epoch > k.epoch || Date.now() - k.at > TAKEN_WAIT_MS) { this.#taken.delete(id); continue }
      // the board has not caught up with the run yet
      if (t.epoch < k.epoch || t.state === 'running' || t.state === 'claimed' || t.state === 'ready') continue
      this.#taken.delete(id)
      if (!BRANCH_WAITS.has(t.state) || t.head !== k.oid || t.holders.includes(me)) continue
      node.changeBoard('task:collected', d => { lifecycle.addHolder(d, t.id, me) })
      this.#log.info('branch:held', { task: id, head: k.oid, note: 'taken by hand-off: this node is a holder of the branch' })
    }
  }
}
