/*
 * Over 400 lines, on purpose: this file is the one owner of a node's run
 * state (claims settling, runs in flight, their abort controllers, the
 * rate-limit and health pauses), which every part of it reads and writes in
 * the same tick. What needs none of that state lives beside it: dag.ts and
 * claims.ts (pure), run.ts (a run's stages and the board writes of its end);
 * every board write goes through src/crdt/lifecycle.ts.
 */
import type { SchedulerNode } from '../node/components.ts'
import type { Presence } from '../protocol/presence.ts'
import * as lifecycle from '../crdt/lifecycle.ts'
import { Ticker } from '../node/service.ts'
import { NodeHealth, type HealthState } from '../node/health.ts'
import { FINAL_TASK_STATES, asPeerId, type BoardSnapshot, type PeerIdString, type Task, type TaskId } from '../crdt/schema.ts'
import type { Agent, AgentProgress } from '../agent/types.ts'
import { DEFAULT_CHECKPOINT_EVERY_MS, formatMs, runStages, runTimeoutMs, writeAgentEnd, writeInfraEnd, type RunEnd } from './run.ts'
import { claimOrder, claimRank, effectiveState, openTasks, readySince, remainingCriticalPath, scopesOverlap } from './dag.ts'
import { assignOwners, claimWinner, lostAlready, ownFirst, rendezvousOwner, retryBackoffMs, winningClaim, type Capacity } from './claims.ts'
import { budgetHold, budgetView, describeHold, holdLogger, withUnwritten, type BudgetView } from './budget.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { TimeoutError, toError } from '../util/errors.ts'

/**
 * Bounds of the minimum settle window (the wait between a claim and starting
 * the run). The acknowledgements are what make a claim safe: a peer's
 * heartbeat heads contain the claim and this board has every change those
 * heads name, so any claim the peer made before it saw ours is here too. The
 * window adds no safety of its own; it only has to cover the round trip those
 * need anyway. (It was 100 ms at least, plus 50 ms over the round trip: on 4
 * nodes whose acknowledgements came back in 40-70 ms, every claim idled its
 * slot about 40 ms longer, a second of a 200-task DAG on 8 slots.) Since
 * acknowledgements go to the claimant directly, they often come back sooner
 * than the gossip round trip the window is made of: a claim whose
 * acknowledgements are all in starts then, window or not.
 */
export const MIN_SETTLE_MS = 20
export const MAX_SETTLE_MS = 3000
/**
 * A claim waits this long at most for every live peer's acknowledgement before
 * it starts anyway (a peer that heartbeats but cannot take our changes). Long on
 * purpose: starting without every acknowledgement is what lets a task run twice
 * on an overloaded host. @default 30 s
 */
export const ACK_TIMEOUT_MS = 30_000
/**
 * A claim that has not turned into a run after this long is stale and may be
 * taken over. Longer than `ACK_TIMEOUT_MS`, so a claim still waiting for
 * acknowledgements is never released under its claimant. @default 45 s
 */
export const CLAIM_TTL_MS = ACK_TIMEOUT_MS + 15_000
/** How long a ready task waits for its preferred owner before another node may steal it. @default 2000 ms */
export const DEFAULT_STEAL_AFTER_MS = 2000

/** How long non-janitor nodes wait before releasing a dead node's tasks themselves. @default 5000 ms */
export const JANITOR_GRACE_MS = 5000

/**
 * How long a done task whose branch's holders all look dead waits before it
 * goes back to ready, on the janitor too. Nodes that learn of a finished task
 * only as a partition heals (the board syncs before the cut-off holder's
 * heartbeats arrive) still count its holder dead for a moment, and running a
 * finished task again costs a whole agent run: in test/leader-partition the
 * majority's janitor re-ran all three of the cut-off node's finished tasks
 * within 0.6 s of the heal. @default 3000 ms
 */
export const HOLDERS_GONE_GRACE_MS = 3000
/**
 * How long the board may say this node runs a task that no run here holds
 * before the node gives the task back (its end was withheld and could not be
 * written, say): the watchdog that keeps such a task from staying `running`
 * for good. A run's start and end are written in the same tick as the local
 * run is added and removed, so any wait is enough; this one rides out a tick.
 * @default 2000 ms
 */
export const STUCK_RUN_GRACE_MS = 2000
/** Scheduler tick period (it also runs on every board or membership change). @default 250 ms */
export const TICK_MS = 250
/**
 * Tick period while nothing is in flight: no task open on the board, none
 * claimed, running or finishing here. Every task arrives as a board change,
 * which runs the scheduler at once (and brings the tick back to `TICK_MS`), so
 * the slower tick delays no claim; it is left for what changes without an
 * event (a disk filling, logged as `node:paused`). @default 2000 ms
 */
export const IDLE_TICK_MS = 2000
/** Back-off after a rate-limited run when the agent gave no reset time; doubles on repeats. @default 60 s */
export const RATE_LIMIT_BACKOFF_MS = 60_000
/** Longest rate-limit back-off without a reset time. @default 15 min */
export const MAX_RATE_LIMIT_BACKOFF_MS = 15 * 60_000
/** Heartbeat periods a new node waits before its first claim. @default 3 */
export const STARTUP_QUIET_HEARTBEATS = 3
/** Default grace for running agents on a graceful stop. @default 30 s */
export const DEFAULT_STOP_GRACE_MS = 30_000
/**
 * Finished runs per slot that may commit their work, hand their branch to the
 * leader and write `done` in the background, their slot already running the
 * next task. Past
 * that, a finished run keeps its slot until its hand-off ends: the leader takes
 * at most a few hand-offs at once, and a node that piled up more would only
 * see them time out (and fall back to collection) there. @default 1
 */
export const FINISHING_PER_SLOT = 1
/**
 * Heartbeats per peer kept while claims settle. A peer acknowledges a claim
 * with heads that contain it, but a busy mesh's next heartbeat often also
 * names a change (of that peer or a third) still on its way here, which this
 * board cannot judge yet; an earlier heartbeat that contained the claim and
 * whose changes are all here is acknowledgement enough (everything that peer
 * had claimed before it saw ours is then here too). @default 4
 */
export const ACK_HEARTBEATS_KEPT = 4
/** The health cause of a node that claims and starts nothing for now (`pausedFor`): peers do not wait for its acknowledgements. */
const HOLD_CAUSE = 'hold'

export interface SchedulerInit {
  node: SchedulerNode
  agent: Agent
  slots: number
  logger?: Logger
  /** Fixed settle window; default: adaptive from the observed gossip delay. */
  settleMs?: number
  stealAfterMs?: number
  retryBaseMs?: number
  /** First back-off after an infrastructure failure. @default INFRA_BACKOFF_MS */
  infraBackoffMs?: number
  /**
   * Wall-clock limit of a run (prepare, setup and agent) for tasks whose plan
   * gives no `timeout`; null or 0: none. @default DEFAULT_TASK_TIMEOUT_MS
   */
  defaultTimeoutMs?: number | null
  /**
   * Prepares a run's working directory (worktree, `--setup`); default: none.
   * `signal` is the run's: aborted on timeout, cancel, a lost claim or node stop.
   * Whatever it throws is an infrastructure failure, never the agent's.
   */
  prepare?: (task: Task, signal: AbortSignal) => Promise<string | undefined>
  /**
   * Starts the run's working directory the moment the task is claimed (no
   * `--setup`), so that it is made while the claim settles; the run's
   * `prepare` then finds it made. `signal` aborts when the claim is let go,
   * and `dropEarly` then undoes what it made. Whatever it throws is for
   * `prepare` to meet again. Default: none (`prepare` does it all).
   */
  prepareEarly?: (task: Task, signal: AbortSignal) => Promise<void>
  /** Undoes what `prepareEarly` made for the claim of `id` at `epoch` (the claim was let go), once that has stopped. */
  dropEarly?: (id: TaskId, epoch: number) => Promise<void>
  /** Called after a successful run, before the task is marked done; returns the branch head oid. */
  finish?: (task: Task, cwd: string | undefined) => Promise<string | null>
  /**
   * Gives a successful run's committed branch to the merge leader before the
   * task is marked done (`BranchHandoff`), while the worktree is removed;
   * resolves to the peers that took it, written as holders beside this node.
   * Runs after the run's slot is free (see `FINISHING_PER_SLOT`); `signal` is
   * the run's (a lost claim, or a stop past its grace, ends the wait).
   */
  handOff?: (task: Task, head: string, signal: AbortSignal) => Promise<PeerIdString[]>
  /** Called after every run, whatever its outcome (remove the worktree). */
  cleanup?: (task: Task) => Promise<void>
  /** What to tell the agent besides the prompt; default: nothing. */
  context?: (task: Task, snap: BoardSnapshot) => string
  /** Commits a run's worktree to its checkpoint branch (`Execution.checkpoint`); default: no checkpoints. */
  checkpoint?: (task: Task) => Promise<string | null>
  /** How often a run is checkpointed while its agent works (`--checkpoint-every`); 0: never. @default DEFAULT_CHECKPOINT_EVERY_MS */
  checkpointEveryMs?: number
  /** Observes every run start (tests count executions with it). */
  onRunStart?: (taskId: TaskId, epoch: number) => void
  onProgress?: (taskId: TaskId, p: AgentProgress) => void
  /** Whether this node can run agents; a run whose credentials were refused pauses it. Default: a fresh one. */
  health?: NodeHealth
  /**
   * A fingerprint of the agent's credentials (a hash, never the secret): a
   * usage limit hit here pauses every node announcing the same one until the
   * reset, and one announced by a peer pauses this node. Absent: not shared.
   */
  credential?: string
  /** Why this node should start no run now although it could (the mesh main is on no live node), or null. */
  holdClaims?: () => string | null
}

interface PendingClaim { epoch: number, at: number, settleAt: number, stolen: boolean, hash: string | null }
interface Run {
  epoch: number
  abort: AbortController
  done: Promise<void>
  /**
   * What the run's agent spent, from its success until the run's `done` puts
   * it on the board (the commit and hand-off come first): its slot takes the
   * next task meanwhile, which the budgets it spent must hold (`#budgets`).
   */
  unwritten?: { plan: string | null, costUsd: number } | null
}

/**
 * One node's scheduler: claims ready tasks (priority, then longest remaining
 * critical path), settles concurrent claims, steals work a busy or vanished
 * owner left waiting, recovers the tasks of dead nodes and runs the agent.
 *
 * Safety rests on the board: a run is valid only while the task's `epoch` is
 * the one it started with and its `node` is this peer; a node that sees
 * otherwise stops the run (claim lost), and results of older epochs are ignored.
 */
export class Scheduler {
  readonly node: SchedulerNode
  readonly agent: Agent
  slots: number
  #init: SchedulerInit
  #log: Logger
  #pending = new Map<TaskId, PendingClaim>()
  /** The early starts of pending claims' worktrees (`prepareEarly`), by task. */
  #early = new Map<TaskId, { epoch: number, abort: AbortController }>()
  /** Runs that hold a slot: preparing, or their agent working. */
  #runs = new Map<TaskId, Run>()
  /**
   * Runs whose agent succeeded, committing their work, handing their branch
   * to the leader and writing `done` (and removing their worktree): they hold
   * no slot, up to `FINISHING_PER_SLOT` per slot.
   */
  #finishing = new Map<TaskId, Run>()
  /** The periodic tick: `TICK_MS`, or `IDLE_TICK_MS` while nothing is in flight. */
  #ticker = new Ticker(() => { this.#schedule() })
  /** Whether the last tick found nothing in flight (the heartbeats then go out further apart). */
  #calm = false
  /**
   * Per ready task another node owns in this node's view: that owner, and
   * since when this node has seen it as the owner, over consecutive claim
   * passes (`#claim`): the steal wait counts from then.
   */
  #ownerSeen = new Map<TaskId, { owner: string, at: number }>()
  /** When the last claim pass that looked at the tasks ran (its entries in `#ownerSeen` are fresh only right after). */
  #lastClaimPass = 0
  #scheduled = false
  #stopped = true
  #claiming = false
  #gossipDelayMs = 50
  #orphanSince = new Map<TaskId, number>()
  #backoffUntil: number | null = null
  #rateLimitStreak = 0
  #lowered = false
  #unsubs: Array<() => void> = []
  /**
   * Hand-offs in progress from this node (at most one per slot, as many as
   * when each held its slot: more would only queue, and time out, at the
   * leader), and the finished runs waiting for a turn.
   */
  #handoffs = 0
  #handoffTurns: Array<() => void> = []
  /** The last `ACK_HEARTBEATS_KEPT` heartbeat heads of each peer, newest first, kept while claims settle. */
  #recentHeads = new Map<PeerIdString, string[][]>()
  /**
   * Claims withdrawn during a tick, written at its end: with the tick's new
   * claims when it makes any (one board change for both: a node that lost a
   * claim usually claims another task at once), else in a change of their own.
   */
  #withdrawals: Array<{ id: TaskId, reason: string }> = []
  #holdWithdrawals = false
  #logHeld: (held: string | null) => void
  /** Whether this node can run agents now (paused: it claims nothing but a trial run once the pause ends). */
  readonly health: NodeHealth

  constructor (init: SchedulerInit) {
    this.node = init.node
    this.health = init.health ?? new NodeHealth()
    this.agent = init.agent
    this.slots = init.slots
    this.#init = init
    this.#log = init.logger ?? silentLogger
    this.#logHeld = holdLogger(this.#log)
  }

  /**
   * Minimum settle window: fixed, or a gossip round trip (two observed
   * one-way delays), bounded. A claim settles after this window once every
   * live peer has acknowledged it (alive or suspect: a peer is no longer
   * waited for once it is dead), or after `ACK_TIMEOUT_MS` regardless. (Until
   * the new-node quiet period existed the floor was 200 ms + 3 delays: it hid
   * joiners that claimed before anyone waited for them.)
   */
  get settleMs (): number {
    if (this.#init.settleMs !== undefined) return this.#init.settleMs
    return Math.min(MAX_SETTLE_MS, Math.max(MIN_SETTLE_MS, 2 * this.#gossipDelayMs))
  }

  /**
   * A peer's heads arrived (its heartbeat, or an acknowledgement sent here
   * alone): they may be the last acknowledgement a pending claim waits for, so
   * settle now, not at the next tick.
   */
  #acknowledgement (peer: PeerIdString, heads: string[]): void {
    if (this.#pending.size === 0) return
    const kept = this.#recentHeads.get(peer) ?? []
    this.#recentHeads.set(peer, [heads, ...kept].slice(0, ACK_HEARTBEATS_KEPT))
    this.#schedule()
  }

  /** Tasks this node has claimed or is running (finished runs still handing their branch off included). */
  busy (): TaskId[] {
    return [...this.#pending.keys(), ...this.#runs.keys(), ...this.#finishing.keys()]
  }

  start (): void {
    if (!this.#stopped) return
    this.#stopped = false
    this.#claiming = true
    this.node.setPresenceExtras(() => ({ running: this.busy(), backoffUntil: this.#backoffUntil !== null && this.#backoffUntil > Date.now() ? this.#backoffUntil : null, health: this.#healthNow(), calm: this.#calm }))
    const onUpdate = (): void => { this.#schedule() }
    const onPresence = (evt: CustomEvent<Presence>): void => {
      const sent = evt.detail.sentAt
      if (sent === undefined) return
      const d = Math.min(2000, Math.max(0, Date.now() - sent))
      this.#gossipDelayMs = 0.9 * this.#gossipDelayMs + 0.1 * d
      this.#acknowledgement(evt.detail.peerId, evt.detail.heads)
    }
    // a peer's heads sent to this node alone (src/node/claim-acks.ts)
    const onAck = (evt: CustomEvent<{ peerId: string, heads: string[] }>): void => { this.#acknowledgement(asPeerId(evt.detail.peerId), evt.detail.heads) }
    this.node.addEventListener('board:update', onUpdate)
    this.node.addEventListener('peer:state', onUpdate)
    this.node.addEventListener('presence', onPresence)
    this.node.addEventListener('ack', onAck)
    this.#unsubs.push(
      () => { this.node.removeEventListener('ack', onAck) },
      () => { this.node.removeEventListener('board:update', onUpdate) },
      () => { this.node.removeEventListener('peer:state', onUpdate) },
      () => { this.node.removeEventListener('presence', onPresence) }
    )
    this.#releaseLeftovers()
    this.#ticker.pace(TICK_MS)
    this.#schedule()
  }

  /**
   * Graceful stop: claims nothing more, lets running agents finish (and
   * finished runs hand their branch to the leader and write `done`) for up to
   * `graceMs`, then stops the rest and gives their tasks back to the mesh (a
   * hand-off stopped so marks its task done with this node as its holder).
   */
  async stop (graceMs = DEFAULT_STOP_GRACE_MS): Promise<void> {
    if (this.#stopped) return
    this.#claiming = false
    this.#withdrawalsTogether(() => { for (const id of [...this.#pending.keys()]) this.#withdraw(id, 'node stopping') })
    const deadline = Date.now() + graceMs
    while (this.#runs.size + this.#finishing.size > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
    const left = [...this.#runs.values(), ...this.#finishing.values()]
    for (const run of left) run.abort.abort(new Error('node stopping'))
    await Promise.all(left.map(async r => { await r.done }))
    this.#stopped = true
    this.#ticker.stop()
    for (const u of this.#unsubs) u()
    this.#unsubs = []
  }

  #schedule (): void {
    if (this.#scheduled || this.#stopped) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      if (this.#stopped) return
      try {
        this.#tick()
      } catch (err) {
        this.#log.error('scheduler:tick-failed', { error: toError(err).message })
      }
    })
  }

  #me (): PeerIdString {
    return this.node.peerId
  }

  #alive (peer: PeerIdString): boolean {
    if (peer === this.#me()) return true
    const s = this.node.membership.get(peer)?.state
    return s === 'alive' || s === 'suspect'
  }

  #tick (): void {
    const snap = this.node.board.snapshot()
    const now = Date.now()
    this.#checkRuns(snap)
    this.#recover(snap, now)
    this.#withdrawalsTogether(() => {
      this.#settle(snap, now)
      if (this.#claiming) this.#claim(snap, now)
    })
    const idle = openTasks(snap).length === 0 && this.#pending.size + this.#runs.size + this.#finishing.size + this.#orphanSince.size === 0
    // an idle node is calm: its heartbeats go out further apart (Heartbeats); the next one after a task
    // arrives is still at most one calm period away, and a claim's acknowledgement is sent at once anyway
    this.#calm = idle
    if (!this.#stopped) this.#ticker.pace(idle ? IDLE_TICK_MS : TICK_MS)
  }

  /** Stops runs (and finished runs' hand-offs) whose claim was lost, superseded or cancelled. */
  #checkRuns (snap: BoardSnapshot): void {
    for (const [id, run] of [...this.#runs, ...this.#finishing]) {
      const t = snap.tasks.get(id)
      let reason: string | null = null
      if (t === undefined) reason = 'task vanished'
      else if (t.state === 'cancelled') reason = 'cancelled'
      else if (t.epoch !== run.epoch) reason = `epoch moved to ${t.epoch}`
      else if (t.node !== this.#me()) reason = `task now belongs to ${t.node ?? 'nobody'}`
      if (reason !== null && !run.abort.signal.aborted) {
        this.#log.warn('task:lost', { task: id, epoch: run.epoch, reason })
        run.abort.abort(new Error(`claim lost: ${reason}`))
      }
    }
  }

  /** Gives the tasks of dead nodes back to the mesh (epoch + 1). */
  #recover (snap: BoardSnapshot, now: number): void {
    const me = this.#me()
    const alivePeers = [me, ...this.node.membership.alive().map(m => m.peerId)].sort()
    const janitor = alivePeers[0] === me
    const releases: Array<{ id: TaskId, reason: string, epoch: number, own: boolean }> = []
    // a task over (merged, failed, cancelled) is nobody's to release
    for (const id of this.#orphanSince.keys()) { const t = snap.tasks.get(id); if (t === undefined || FINAL_TASK_STATES.has(t.state)) this.#orphanSince.delete(id) }
    for (const t of openTasks(snap)) {
      let reason: string | null = null
      let holdersGone = false
      // the watchdog: the board says this node runs the task, but no run here holds it (the run's end was
      // withheld and could not be written, say): nobody else will release it, since this node is alive
      // (a run finishing in the background, its hand-off and `done` still to come, holds it too)
      const own = t.state === 'running' && t.node === me && !this.#pending.has(t.id) && !this.#runs.has(t.id) && !this.#finishing.has(t.id)
      if (own) {
        reason = 'the board says this node runs it, but no run here holds it (the end of its run was not written)'
      } else if (t.state === 'running' && t.node !== null && t.node !== me && !this.#alive(t.node)) {
        reason = `node ${t.node} is ${this.node.membership.get(t.node)?.state ?? 'gone'}`
      } else if (t.state === 'claimed') {
        const w = winningClaim(t)
        if (w === null) reason = 'no live claim'
        else if (w.peer !== me && !this.#alive(w.peer)) reason = `claimant ${w.peer} is ${this.node.membership.get(w.peer)?.state ?? 'gone'}`
        else if (w.peer !== me && now - w.at > CLAIM_TTL_MS) reason = `claim by ${w.peer} went stale`
      } else if (t.state === 'done' && t.holders.length > 0 && t.holders.every(h => !this.#alive(h))) {
        reason = `every holder of the branch is gone (${t.holders.join(', ')})`
        holdersGone = true
      }
      if (reason === null) {
        this.#orphanSince.delete(t.id)
        continue
      }
      if (holdersGone && !this.#orphanSince.has(t.id)) this.#log.info('task:holders-gone', { task: t.id, holders: t.holders, releaseInMs: janitor ? HOLDERS_GONE_GRACE_MS : JANITOR_GRACE_MS, note: 'runs again unless a holder comes back meanwhile' })
      const since = this.#orphanSince.get(t.id) ?? now
      this.#orphanSince.set(t.id, since)
      const grace = own ? STUCK_RUN_GRACE_MS : !janitor ? JANITOR_GRACE_MS : holdersGone ? HOLDERS_GONE_GRACE_MS : 0
      if (now - since >= grace) releases.push({ id: t.id, reason, epoch: t.epoch, own })
    }
    if (releases.length === 0) return
    const written = this.node.writeBoard('tasks:release', d => {
      for (const r of releases) {
        // the watchdog's own tasks say on the board why they went back; a dead node's need no word
        if (r.own && lifecycle.epochOf(d.tasks[r.id]) !== r.epoch) continue
        lifecycle.release(d, r.id, { now, notBefore: null, ...(r.own ? { error: `given back by its node: ${r.reason}` } : {}) })
      }
    })
    for (const r of releases) {
      this.#orphanSince.delete(r.id)
      if (written.kind === 'withheld') this.#log.error('task:release-withheld', { task: r.id, reason: r.reason, withheld: written.reason, note: 'peers would refuse this release; tried again in a few seconds' })
      else if (r.own) this.#log.warn('task:released', { task: r.id, epoch: r.epoch, reason: r.reason, note: 'stuck running on the board with no run here: given back to the mesh (a new epoch)' })
      else this.#log.info('task:released', { task: r.id, reason: r.reason })
    }
  }

  /** At a node start: tasks this peer held in a previous life go back to the mesh. */
  #releaseLeftovers (): void {
    const me = this.#me()
    const ids: TaskId[] = []
    for (const t of this.node.board.snapshot().tasks.values()) {
      if ((t.state === 'running' && t.node === me) || (t.state === 'claimed' && claimWinner(t) === me)) ids.push(t.id)
    }
    if (ids.length === 0) return
    const now = Date.now()
    this.node.changeBoard('tasks:release', d => { for (const id of ids) lifecycle.release(d, id, { now, notBefore: null }) })
    for (const id of ids) this.#log.info('task:released', { task: id, reason: 'this node restarted while holding it' })
  }

  /** Until when this node starts no agent (it was rate-limited), or null. */
  get backoffUntil (): number | null {
    return this.#backoffUntil !== null && this.#backoffUntil > Date.now() ? this.#backoffUntil : null
  }

  /**
   * Slots this node may use now: none while it backs off from a rate limit; half
   * (at least one) while any live node of the mesh does, since agents usually
   * share one account.
   */
  effectiveSlots (now = Date.now()): number {
    if (this.#backoffUntil !== null && this.#backoffUntil > now) return 0
    const meshLimited = this.node.membership.alive().some(m => m.backoffUntil !== null && m.backoffUntil > now)
    if (meshLimited !== this.#lowered) {
      this.#lowered = meshLimited
      if (meshLimited) this.#log.warn('mesh:concurrency-lowered', { slots: Math.max(1, Math.floor(this.slots / 2)), reason: 'a node of the mesh is backing off from a rate limit' })
      else this.#log.info('mesh:concurrency-restored', { slots: this.slots })
    }
    return meshLimited ? Math.max(1, Math.floor(this.slots / 2)) : this.slots
  }

  /** Slots for new claims: finished runs handing their branch off take one only past `FINISHING_PER_SLOT` per slot. */
  #freeSlots (): number {
    const overflow = Math.max(0, this.#finishing.size - FINISHING_PER_SLOT * Math.max(1, this.slots))
    return Math.max(0, this.effectiveSlots() - this.#pending.size - this.#runs.size - overflow)
  }

  /** The health this node announces: paused for a full disk or a mesh main it cannot get (until that ends), else the agent's health. */
  #healthNow (): HealthState {
    const why = this.pausedFor
    return why !== null ? { state: 'paused', reason: why, until: null, cause: HOLD_CAUSE } : this.health.state
  }

  /** Why this node claims nothing now (a full disk), or null; logged when it starts and ends. */
  get pausedFor (): string | null {
    // the node's own reason first: it may say more (a full disk that also keeps it from leading merges)
    const held = this.#init.holdClaims?.() ?? null
    if (this.node.diskFull && !(held?.startsWith('disk full') ?? false)) return 'disk full: board changes cannot be written'
    return held
  }

  #pausedLogged: string | null = null

  /** A peer using the same credentials hit their usage limit: this node pauses until the same reset. */
  #sharedUsageLimit (now: number): void {
    const mine = this.#init.credential
    if (mine === undefined || this.health.paused) return
    for (const m of this.node.membership.alive()) {
      const h = m.health
      if (h?.state !== 'paused' || h.cause !== 'usage-limit' || h.credential !== mine || h.until === null || h.until <= now) continue
      this.health.setPaused(`usage limit reached with the same credentials on ${m.name !== '' ? m.name : m.peerId}; resets ${new Date(h.until).toISOString()}`, h.until, 'usage-limit', true, mine)
      this.#log.warn('node:rate-limited', { from: m.peerId, until: new Date(h.until).toISOString(), note: 'a peer with the same credentials hit their usage limit: this node starts no agent until the reset' })
      return
    }
  }

  #claim (snap: BoardSnapshot, now: number): void {
    this.#sharedUsageLimit(now)
    const paused = this.pausedFor
    if (paused !== this.#pausedLogged) {
      if (paused !== null) this.#log.warn('node:paused', { reason: paused, note: 'claims no work until the cause is gone; running work goes on' })
      else this.#log.info('node:resumed', { reason: `no longer: ${this.#pausedLogged ?? ''}` })
      this.#pausedLogged = paused
    }
    if (paused !== null) return
    const free = this.#freeSlots()
    if (free === 0) return
    // a paused node (credentials refused, disk full…) claims nothing; once the pause ends, one trial run at a time
    if (!this.health.mayRun(now) || (this.health.paused && this.#pending.size + this.#runs.size + this.#finishing.size > 0)) return
    // a node that just started claims nothing until its heartbeats have reached the mesh: peers
    // that have not heard of it would not wait for its acknowledgement and could run the same task
    if (now - this.node.startedAt < STARTUP_QUIET_HEARTBEATS * this.node.membership.heartbeatMs) return
    const me = this.#me()
    const candidates: Task[] = []
    const budgets = this.#budgets(snap)
    let held: string | null = null
    for (const t of openTasks(snap)) {
      // a finished run of the task still hands its branch off here (its worktree is being removed): not again meanwhile
      if (this.#pending.has(t.id) || this.#runs.has(t.id) || this.#finishing.has(t.id)) continue
      const s = effectiveState(t, snap)
      if (s !== 'ready' && !(s === 'claimed' && claimWinner(t) === null)) continue
      if (t.notBefore !== null && t.notBefore > now) continue
      // after an infrastructure failure of this task here, this node leaves it alone for a while (only this task)
      if ((t.infraFailures[me]?.until ?? 0) > now) continue
      // a spent budget holds the task ready: no claim, no attempt, until the budget is raised (src/scheduler/budget.ts)
      const hold = budgetHold(t, budgets)
      if (hold !== null) { held ??= describeHold(hold); continue }
      candidates.push(t)
    }
    this.#logHeld(held)
    if (candidates.length === 0) return
    const cp = remainingCriticalPath(snap.tasks)
    const ordered = claimOrder(candidates, cp)
    // other nodes' load comes from the board (gossiped at once), not from presence (a heartbeat old)
    const load = new Map<string, number>()
    for (const t of openTasks(snap)) {
      const holder = t.state === 'running' ? t.node : t.state === 'claimed' ? claimWinner(t) : null
      if (holder !== null) load.set(holder, (load.get(holder) ?? 0) + 1)
    }
    // slots free here that the others cannot see yet: a run that ended and hands its branch off is `running` on
    // the board until its `done` arrives. Counted by capacity, two nodes whose runs end together each saw only
    // themselves with room and both owned the head of the queue (8 nodes on a 2-core host: a claim in three lost
    // so, the two claims about 30 ms apart). The owners are worked out with the room the others see; the hidden
    // room takes only tasks nobody with room gets that the mesh's rendezvous gives this node (below)
    const shown = Math.max(0, this.slots - (load.get(me) ?? 0))
    const hidden = Math.max(0, free - shown)
    const capacity: Capacity[] = [{ peerId: me, free: free - hidden }]
    /** The nodes that run tasks, whatever their load: between them, the mesh's rendezvous shares out tasks ranked alike. */
    const runners: string[] = [me]
    for (const m of this.node.membership.alive()) {
      if (m.backoffUntil !== null && m.backoffUntil > now) continue
      if (m.health?.state === 'paused') continue
      capacity.push({ peerId: m.peerId, free: Math.max(0, m.slots - (load.get(m.peerId) ?? 0)) })
      if (m.slots > 0) runners.push(m.peerId)
    }
    // tasks ranked alike go by the mesh's rendezvous first: nodes claiming at once go for different ones
    const rank = (t: Task): string => claimRank(t, cp)
    const leader = snap.main.leader !== null && runners.includes(String(snap.main.leader)) ? String(snap.main.leader) : null
    const owners = assignOwners(ordered, capacity, { rank, runners, leader })
    const active = openTasks(snap).filter(t => t.files.length > 0 && (t.state === 'running' || (t.state === 'claimed' && claimWinner(t) !== null)))
    const picked: Array<{ task: Task, stolen: boolean, hidden?: true }> = []
    // a steal waits for the owner from when this node saw it as the owner, in passes one after another, not from
    // when the task became ready: a task that waited for a slot anywhere is no owner's delay, and its owner, free
    // a moment ago, is about to claim it (a steal at once collided with that claim)
    const seenBefore = now - this.#lastClaimPass <= 4 * TICK_MS ? this.#ownerSeen : new Map<TaskId, { owner: string, at: number }>()
    const seen = new Map<TaskId, { owner: string, at: number }>()
    this.#ownerSeen = seen
    this.#lastClaimPass = now
    const stealAfter = this.#init.stealAfterMs ?? DEFAULT_STEAL_AFTER_MS
    /** Whether `t`, owned by `owner` in this node's view (a label), has waited for it long enough to be stolen. */
    const stealable = (t: Task, owner: string): boolean => {
      const before = seenBefore.get(t.id)
      const since = before !== undefined && before.owner === owner ? before.at : now
      seen.set(t.id, { owner, at: since })
      return now - Math.max(since, readySince(t, snap)) >= stealAfter
    }
    /** Whether `t` may not run beside what runs or is picked already (their files scopes overlap). */
    const overlaps = (t: Task): boolean => t.files.length > 0 && [...active, ...picked.map(p => p.task)].some(o => o.id !== t.id && scopesOverlap(o.files, t.files))
    for (const t of ownFirst(ordered, rank, t => owners.get(t.id) === me)) {
      if (picked.length >= free - hidden) break
      const owner = owners.get(t.id)
      const mine = owner === me
      if (!mine && !stealable(t, owner ?? '')) continue
      if (overlaps(t)) continue
      picked.push({ task: t, stolen: !mine })
    }
    // the hidden room: among the head of the queue (a task a runner, as many as it has hidden slots, and every
    // task ranked alike with the first), the tasks no node with room gets whose rendezvous owner among all
    // runners is this node; two nodes with hidden room pick apart, and a node with room the others see keeps
    // what it owns. Any other task is stolen after the usual wait, as the pass above steals
    if (hidden > 0) {
      const window = runners.length * hidden
      // tasks ranked alike with the head of the queue (a plan of independent tasks) all come first: its own
      // among them anywhere, not only in the window
      const headRank = ordered.length > 0 ? rank(ordered[0] as Task) : null
      let taken = 0
      for (let k = 0; k < ordered.length && taken < hidden; k++) {
        const t = ordered[k] as Task
        const assigned = owners.get(t.id)
        if (assigned === me || picked.some(p => p.task.id === t.id)) continue
        const owner = rendezvousOwner(t.id, runners)
        const mine = assigned === undefined && owner === me && (k < window || rank(t) === headRank)
        // the same wait as the pass above for a task a node with room owns; its own for one nobody gets
        if (!mine && !stealable(t, assigned ?? `all:${owner ?? ''}`)) continue
        if (overlaps(t)) continue
        picked.push({ task: t, stolen: !mine, hidden: true })
        taken++
      }
    }
    if (picked.length === 0) return
    // the claims lost in this tick's settle go back in the same change
    const withdrawn = this.#withdrawals.splice(0)
    const hash = this.node.changeBoardHash('tasks:claim', d => {
      for (const w of withdrawn) lifecycle.withdraw(d, w.id, me)
      for (const { task } of picked) lifecycle.claim(d, task.id, me, task.epoch, now)
    })
    // a change that was not made (withheld) takes the withdrawals with it: they go on their own
    if (hash === null) this.#withdrawals.unshift(...withdrawn)
    else for (const w of withdrawn) this.#log.info('task:released', { task: w.id, reason: w.reason })
    const settleMs = this.settleMs
    // look again the moment the settle window ends rather than at the next tick
    const wake = setTimeout(() => { this.#schedule() }, settleMs + 1)
    wake.unref()
    for (const { task, stolen, hidden: unseen } of picked) {
      this.#pending.set(task.id, { epoch: task.epoch, at: now, settleAt: now + settleMs, stolen, hash })
      this.#startEarly(task)
      const owner = owners.get(task.id)
      if (stolen) this.#log.info('task:stolen', { task: task.id, epoch: task.epoch, reason: owner === undefined ? 'no node had room for it in this node\'s view' : `preferred node ${owner} left it waiting ${now - Math.max(seen.get(task.id)?.at ?? now, readySince(task, snap))} ms` })
      else this.#log.info('task:claimed', { task: task.id, epoch: task.epoch, reason: unseen === true ? 'rendezvous owner among all runners (a slot the others do not see free yet)' : 'preferred owner (rendezvous)' })
    }
    this.#schedule()
  }

  #settle (snap: BoardSnapshot, now: number): void {
    const me = this.#me()
    // suspect peers too: a peer that is only slow (an overloaded host misses heartbeats) may be claiming
    // the same task right now; a peer that is really gone stops being waited for once it is dead
    // a peer that announces it claims nothing (disk full, no mesh main) is not waited for: it withdraws what it had
    // and only nodes registered on the board: a claim of a peer that never registered cannot reach this
    // board before its registration (a node registers before it heartbeats or claims), so there is nothing to wait for
    const peers = this.node.membership.members().filter(m => (m.state === 'alive' || m.state === 'suspect') && m.health?.cause !== HOLD_CAUSE && snap.nodes.has(m.peerId))
    // this node claims nothing now: what it was settling goes back (a claim made a moment before its disk filled)
    const held = this.pausedFor
    if (held !== null) {
      for (const id of [...this.#pending.keys()]) this.#withdraw(id, held)
      return
    }
    if (this.#pending.size === 0) { this.#recentHeads.clear(); return }
    /** Whether `peer` has seen change `hash` here: its latest heads, or one of its last heartbeats, contain it and this board has all they name. */
    const acknowledged = (peer: { peerId: PeerIdString, heads: string[] }, hash: string): boolean =>
      this.node.board.seenBy(peer.heads, hash) === true || (this.#recentHeads.get(peer.peerId) ?? []).some(h => this.node.board.seenBy(h, hash) === true)
    for (const [id, claim] of [...this.#pending]) {
      const t = snap.tasks.get(id)
      // a claim already beaten (an earlier claim of another node, or a run another node started) is let go at
      // once, not at the end of its window: nothing that arrives later can make it win, and the slot claims again
      const lost = lostAlready(t, claim.epoch, me)
      // settle once every live peer has seen the claim (its heads contain it): a concurrent claim
      // of theirs is then in our board too, so all claimants compute the same winner
      const hash = claim.hash
      const waiting = lost || hash === null ? [] : peers.filter(p => !acknowledged(p, hash))
      // the acknowledgements are what make it safe: once all are in, the window (the round trip they were
      // expected to take) is not waited out; a claim whose change has no hash has only the window
      if (!lost && claim.settleAt > now && (hash === null || waiting.length > 0)) continue
      if (waiting.length > 0 && now - claim.at < ACK_TIMEOUT_MS) continue
      if (waiting.length > 0) this.#log.warn('task:settle-timeout', { task: id, unacknowledged: waiting.map(p => p.peerId), note: `started without every acknowledgement after ${ACK_TIMEOUT_MS / 1000} s` })
      if (t === undefined || t.epoch !== claim.epoch || (t.state !== 'claimed' && t.state !== 'ready' && t.state !== 'pending')) {
        this.#pending.delete(id)
        this.#dropEarly(id)
        this.#log.info('task:released', { task: id, reason: t === undefined ? 'task vanished' : `superseded (state ${t.state}, epoch ${t.epoch})` })
        continue
      }
      const winner = claimWinner(t)
      if (winner !== me) {
        this.#withdraw(id, `lost the claim to ${winner ?? 'nobody'}`)
        continue
      }
      const mine = t.claims[me]
      const blocker = t.files.length === 0
        ? undefined
        : openTasks(snap).find(o => {
            if (o.id === id || o.files.length === 0 || !scopesOverlap(o.files, t.files)) return false
            if (o.state === 'running') return true
            const w = o.state === 'claimed' ? winningClaim(o) : null
            return w !== null && mine !== undefined && (w.at < mine.at || (w.at === mine.at && w.peer < me))
          })
      if (blocker !== undefined) {
        this.#withdraw(id, `files scope overlaps ${blocker.id}`)
        continue
      }
      // the budget may have been reached while the claim settled (another run ended)
      const hold = budgetHold(t, this.#budgets(snap))
      if (hold !== null) {
        this.#withdraw(id, describeHold(hold))
        continue
      }
      this.#pending.delete(id)
      this.#startRun(t, now)
    }
  }

  #withdraw (id: TaskId, reason: string): void {
    this.#pending.delete(id)
    this.#dropEarly(id)
    this.#withdrawals.push({ id, reason })
    if (!this.#holdWithdrawals) this.#writeWithdrawals()
  }

  /** Runs `fn` with its withdrawals held back, then writes those a claim change did not take as one change. */
  #withdrawalsTogether (fn: () => void): void {
    this.#holdWithdrawals = true
    try {
      fn()
    } finally {
      this.#holdWithdrawals = false
      this.#writeWithdrawals()
    }
  }

  /** Writes the withdrawals not yet written (see `#withdrawals`) as one change. */
  #writeWithdrawals (): void {
    if (this.#withdrawals.length === 0) return
    const me = this.#me()
    const withdrawn = this.#withdrawals.splice(0)
    this.node.changeBoard('tasks:withdraw', d => { for (const w of withdrawn) lifecycle.withdraw(d, w.id, me) })
    for (const w of withdrawn) this.#log.info('task:released', { task: w.id, reason: w.reason })
  }

  /** The budgets of `snap`, with what this node's finishing runs spent and the board does not show yet (`Run.unwritten`). */
  #budgets (snap: BoardSnapshot): BudgetView {
    return withUnwritten(budgetView(snap), [...this.#finishing.values()].flatMap(r => r.unwritten ?? []))
  }

  /**
   * The worktree of a claim made now is started at once (`prepareEarly`):
   * made while the claim settles (a gossip round trip or two) rather than
   * after, which took both out of the slot's time before its agent starts.
   */
  #startEarly (task: Task): void {
    const early = this.#init.prepareEarly
    if (early === undefined) return
    const abort = new AbortController()
    void early(task, abort.signal).catch(() => {})
    this.#early.set(task.id, { epoch: task.epoch, abort })
  }

  /** The claim of `id` is let go: its early start is stopped and what it made undone (`dropEarly` waits for it). */
  #dropEarly (id: TaskId): void {
    const e = this.#early.get(id)
    if (e === undefined) return
    this.#early.delete(id)
    e.abort.abort(new Error('the claim was let go'))
    const drop = this.#init.dropEarly
    if (drop === undefined) return
    void drop(id, e.epoch).catch(err => {
      this.#log.warn('task:cleanup-failed', { task: id, error: toError(err).message, note: 'the worktree made while the claim settled' })
    })
  }

  #startRun (t: Task, now: number): void {
    const me = this.#me()
    const attempt = t.attempts + 1
    const started = this.node.writeBoard('task:start', d => { lifecycle.start(d, t.id, me, attempt, now) })
    if (started.kind === 'withheld') {
      // the board does not say this node runs it: a run now would be one nobody can end
      this.#withdraw(t.id, `its start was withheld (${started.reason})`)
      return
    }
    const abort = new AbortController()
    // the run's prepare takes what the claim's early start made, and the run's end (a cancel, a timeout) stops it
    const early = this.#early.get(t.id)
    this.#early.delete(t.id)
    if (early !== undefined) abort.signal.addEventListener('abort', () => { early.abort.abort(abort.signal.reason) }, { once: true })
    const timeoutMs = runTimeoutMs(t, this.#init.defaultTimeoutMs)
    if (timeoutMs !== null && timeoutMs > 0) {
      const source = t.timeoutMs !== null ? 'the task\'s timeout' : 'the node\'s --task-timeout'
      // a TimeoutError reason: agents and #runStages read it as a failed attempt, not a release
      const timer = setTimeout(() => { abort.abort(new TimeoutError(`timed out after ${formatMs(timeoutMs)} (${source})`)) }, timeoutMs)
      timer.unref()
      abort.signal.addEventListener('abort', () => { clearTimeout(timer) }, { once: true })
    }
    this.#init.onRunStart?.(t.id, t.epoch)
    this.#log.info('task:started', { task: t.id, epoch: t.epoch, attempt })
    const run: Run = { epoch: t.epoch, abort, done: Promise.resolve() }
    run.done = this.#execute({ ...t, attempts: attempt }, run).finally(() => {
      this.#runs.delete(t.id)
      this.#finishing.delete(t.id)
      this.#schedule()
    })
    this.#runs.set(t.id, run)
  }

  async #execute (t: Task, run: Run): Promise<void> {
    const end = await runStages({
      ...this.#init,
      agent: this.agent,
      me: this.#me(),
      snapshot: () => this.node.board.snapshot(),
      log: this.#log,
      // the agent succeeded: its slot takes the next task while the work is committed and handed off
      agentDone: (result) => {
        run.unwritten = { plan: t.plan ?? null, costUsd: result.costUsd }
        this.#finish(t.id, run)
      },
      budgets: () => this.#budgets(this.node.board.snapshot()),
      checkpointEveryMs: this.#init.checkpointEveryMs ?? DEFAULT_CHECKPOINT_EVERY_MS,
      recordCheckpoint: (task, head, recent) => {
        const me = this.#me()
        this.node.changeBoard('task:checkpoint', d => { lifecycle.recordCheckpoint(d, task.id, { head, at: Date.now(), node: me, epoch: task.epoch, recent }) })
      }
    }, t, run.abort.signal)
    // a run that committed left its slot when its agent succeeded (`agentDone`): the slot runs the next task
    // while the branch goes to the leader, the worktree is removed and done is written (--slots still bounds agents)
    const committed = end.kind === 'agent' && end.result.outcome === 'success' && !run.abort.signal.aborted ? { head: end.head } : null
    // the leader takes the branch before the board says done (a death of this node after done costs no run),
    // while the worktree is removed; done does not wait for the removal (a large checkout takes a while to
    // delete), and the task stays this node's finishing run, claimed by nobody here, until it is gone
    const handOff = this.#init.handOff
    const handing = committed?.head != null && handOff !== undefined
      ? this.#handOffInTurn(handOff, t, committed.head, run.abort.signal)
      : Promise.resolve([])
    const cleaning = (async () => {
      try {
        await this.#init.cleanup?.(t)
      } catch (err) {
        this.#log.warn('task:cleanup-failed', { task: t.id, error: toError(err).message })
      }
    })()
    const holders = await handing.catch(() => [])
    this.#record(t, run, end.kind === 'agent' && holders.length > 0 ? { ...end, holders } : end)
    // the cost is on the board now (or the run's end was not this node's to write)
    run.unwritten = null
    await cleaning
  }

  /**
   * Hands a finished run's branch off once fewer than one hand-off per slot
   * is in progress here (the turn passes straight to the next waiting run);
   * a run stopped while it waits hands nothing off.
   */
  async #handOffInTurn (handOff: NonNullable<SchedulerInit['handOff']>, t: Task, head: string, signal: AbortSignal): Promise<PeerIdString[]> {
    if (signal.aborted) return []
    if (this.#handoffs < Math.max(1, this.slots)) {
      this.#handoffs++
    } else {
      const turn = await new Promise<boolean>(resolve => {
        const go = (): void => { signal.removeEventListener('abort', stop); resolve(true) }
        const stop = (): void => { const i = this.#handoffTurns.indexOf(go); if (i >= 0) this.#handoffTurns.splice(i, 1); resolve(false) }
        this.#handoffTurns.push(go)
        signal.addEventListener('abort', stop, { once: true })
      })
      if (!turn) return []
    }
    try {
      return await handOff(t, head, signal)
    } finally {
      const next = this.#handoffTurns.shift()
      // the turn passes on as it is, or is given back
      if (next !== undefined) next()
      else this.#handoffs--
    }
  }

  /** Run `id`'s agent succeeded: it leaves its slot for the next claim and finishes (commit, hand-off, done) in the background. */
  #finish (id: TaskId, run: Run): void {
    if (this.#runs.get(id) !== run) return
    this.#runs.delete(id)
    this.#finishing.set(id, run)
    this.#schedule()
  }

  /** Writes a run's end, if the run still owns the task (fencing by epoch and node). */
  #record (t: Task, run: Run, end: RunEnd): void {
    const me = this.#me()
    const now = Date.now()
    const current = this.node.board.task(t.id)
    const valid = current !== undefined && current.epoch === run.epoch && current.node === me && current.state === 'running'
    const outcome = end.kind === 'infra' ? 'infra-failed' : end.result.outcome
    if (!valid) {
      this.#log.info('task:result-ignored', { task: t.id, epoch: run.epoch, outcome, reason: current === undefined ? 'task vanished' : `task is ${current.state} at epoch ${current.epoch} on ${current.node ?? 'nobody'}` })
      return
    }
    if (end.kind === 'infra') {
      const w = writeInfraEnd(this.node, this.#log, t, run.epoch, end, now, this.#init.infraBackoffMs)
      if (w.kind === 'withheld') this.#giveBack(t.id, run.epoch, outcome, w.reason)
      return
    }
    const { result } = end
    let w = writeAgentEnd(this.node, current, end, now, this.#init.retryBaseMs)
    if (w.kind === 'withheld' && end.holders !== undefined && end.holders.length > 0) {
      // the leader named as a holder is what peers refused once (a runner may name only the leader of the
      // board it writes on): done with this node alone as the holder, and the leader collects the branch
      this.#log.warn('task:end-withheld', { task: t.id, epoch: run.epoch, outcome, reason: w.reason, note: 'written again without the holders it was handed to' })
      w = writeAgentEnd(this.node, current, { kind: 'agent', result: end.result, head: end.head, agentStarted: end.agentStarted }, now, this.#init.retryBaseMs)
    }
    if (w.kind === 'withheld') this.#giveBack(t.id, run.epoch, outcome, w.reason)
    if (result.outcome === 'rate-limited') {
      this.#rateLimitStreak++
      const wait = retryBackoffMs(this.#rateLimitStreak, RATE_LIMIT_BACKOFF_MS, MAX_RATE_LIMIT_BACKOFF_MS)
      this.#backoffUntil = Math.max(this.#backoffUntil ?? 0, result.retryAt ?? now + wait)
      this.#log.warn('node:rate-limited', { task: t.id, until: new Date(this.#backoffUntil).toISOString(), note: 'this node starts no agent until then; the attempt does not count; the mesh lowers its concurrency meanwhile' })
      // a usage limit with a reset time: the node is paused until then (health in status and the TUI)
      if (result.retryAt !== undefined && result.retryAt > now) this.health.setPaused(`usage limit reached; resets ${new Date(result.retryAt).toISOString()}`, result.retryAt, 'usage-limit', true, this.#init.credential)
    } else if (result.outcome === 'success') {
      this.#rateLimitStreak = 0
    }
    if (result.outcome === 'paused') {
      const until = this.health.pauseWithBackoff(result.error ?? 'the agent could not use its credentials', 'credentials', now)
      this.#log.warn('node:paused', { task: t.id, reason: result.error, until: new Date(until).toISOString(), note: 'this node claims nothing until then, then tries one run; the attempt does not count' })
      this.#schedule()
    } else if ((result.outcome === 'success' || result.outcome === 'failure') && this.health.paused) {
      // the agent got past its credentials and its limit: those causes are gone
      this.health.clear('credentials')
      this.health.clear('usage-limit')
      if (!this.health.paused) this.#log.info('node:resumed', { task: t.id })
    }
    const fields = { task: t.id, epoch: run.epoch, attempt: t.attempts, ...(result.error !== null ? { error: result.error } : {}) }
    // a withheld end was given back (logged there)
    if (w.kind === 'withheld') return
    if (result.outcome === 'success') this.#log.info('task:done', fields)
    else if (result.outcome === 'failure') this.#log.warn(this.node.board.task(t.id)?.state === 'failed' ? 'task:failed' : 'task:retry', { ...fields, ...(result.final === true ? { note: 'not retried: a retry would fail the same way' } : {}) })
    else this.#log.info('task:released', { ...fields, reason: result.outcome })
  }

  /**
   * The end of this node's run of `id` (epoch `epoch`) was withheld (peers
   * would refuse it, `reason`): the task would stay `running` on the board for
   * good while no run here holds it. Gives it back to the mesh instead (a new
   * epoch, ready, the reason on the board), so it runs again. If the release
   * is withheld too, the watchdog in `#recover` tries again.
   */
  #giveBack (id: TaskId, epoch: number, outcome: string, reason: string): void {
    const error = `the end of its run on ${this.node.name !== '' ? this.node.name : this.#me()} (${outcome}) was withheld, as peers would refuse it: ${reason}; given back to run again`
    const w = this.node.writeBoard('task:give-back', d => {
      if (lifecycle.epochOf(d.tasks[id]) !== epoch) return
      lifecycle.release(d, id, { now: Date.now(), notBefore: null, error })
    })
    if (w.kind === 'written') this.#log.warn('task:released', { task: id, epoch, reason: `end withheld: ${reason}`, note: 'given back to the mesh (a new epoch) rather than left running on the board' })
    else if (w.kind === 'withheld') this.#log.error('task:end-unwritten', { task: id, epoch, outcome, reason, withheld: w.reason, note: 'neither the end of this run nor its release could be written; the watchdog gives the task back' })
    // unchanged: the task moved on meanwhile (a new epoch): nothing of this run is left to end
  }

}
