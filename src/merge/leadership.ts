import * as lifecycle from '../crdt/lifecycle.ts'
import { Ticker } from '../node/service.ts'
import { electLeader, quorum, ELECTION_TIMEOUT_MS, type Candidate, type Quorum, type Voter } from '../scheduler/election.ts'
import { openTasks } from '../scheduler/dag.ts'
import { toError } from '../util/errors.ts'
import { MainPusher, type PushReport } from './main-push.ts'
import { FOLLOW_LAND_QUIET_MS, MainFollower } from './main-follower.ts'
import { BranchCollector } from './collect.ts'
import { MergeQueue } from './queue.ts'
import { Decisions } from './decisions.ts'
import { AgentResolution } from './agent-job.ts'
import type { LeaderInit, MergeContext } from './context.ts'
import { MergeJob } from './merge-job.ts'
import { Background } from '../util/background.ts'
import { spawnFromHelper } from '../git/spawner.ts'
import type { TaskId } from '../crdt/schema.ts'

export type { LeaderInit } from './context.ts'
export { MAX_PARALLEL_FETCHES } from './collect.ts'

/**
 * Period of the election and branch-collection loop when nothing happens (the
 * loop also runs on every board change, and again at once after a merge round
 * that did something or that a board change arrived during). @default 500 ms
 */
export const LEADER_TICK_MS = 500

/**
 * Period of the loop while the mesh is settled: no task open on the board, a
 * leader elected and alive, no merge round or main sync under way and no main
 * missing here. A board change or a peer's change of state (the leader
 * suspect or dead, a node back) runs the loop at once and brings the period
 * back to `LEADER_TICK_MS`, so nothing waits for it; it is left for what
 * changes without an event (the local main moved by hand, a disk filling).
 * @default 2000 ms
 */
export const LEADER_IDLE_TICK_MS = 2000

/**
 * The merge leader's loop, run on every node: the election; on every node the
 * main follower; on the elected leader branch collection, then one merge round
 * at a time (a waiting conflict decision first, else the next merge batch).
 * Each part lives in its own file of this folder; this class wires them.
 *
 * Woken by board changes, not only by its tick: a `done` whose branch the
 * leader already holds (handed off, see handoff.ts) is merged as soon as the
 * change arrives, batched with whatever else is ready, and a new main on the
 * board is fetched by every follower as soon as it arrives.
 */
export class Leadership {
  #init: LeaderInit
  /** The loop's periodic run: `LEADER_TICK_MS`, or `LEADER_IDLE_TICK_MS` while settled. */
  #ticker = new Ticker(() => { this.tick() })
  #unsubscribe: (() => void) | null = null
  /** A run of the loop is queued (setImmediate): wakes in between coalesce into it. */
  #wakeQueued = false
  /** The loop ran while a merge round or a main sync was in progress, so part of it was skipped: run again when that ends. */
  #missed = false
  #merging = false
  #syncing = false
  /** When the last main sync ended. */
  #syncEndedAt = 0
  /** Whether the last check found a majority (null before the first), to log only changes. */
  #hadQuorum: boolean | null = null
  #follower: MainFollower
  #collector: BranchCollector
  #agents: AgentResolution
  #decisions: Decisions
  #queue: MergeQueue
  #job: MergeJob
  /** Merge rounds, main syncs and branch fetches in progress: `stop` aborts them and waits for them. */
  #bg = new Background()

  /** Pushes main to `--push REMOTE` after each advance (null without `--push`). */
  readonly pusher: MainPusher | null

  constructor (init: LeaderInit) {
    this.#init = init
    this.pusher = init.push === undefined
      ? null
      : new MainPusher({
        repo: init.repo,
        remote: init.push,
        branch: init.branch,
        logger: init.logger,
        onResult: r => { this.#publishPush(r) },
        active: () => init.node.board.snapshot().main.leader === init.node.peerId,
        ...(init.pushRetryMs !== undefined ? { retryMs: init.pushRetryMs } : {})
      })
    this.#job = new MergeJob(init.node, init.logger)
    const ctx: MergeContext = {
      init,
      job: this.#job,
      // main advanced here: push it if `--push` is set (asynchronously, coalesced)
      advanced: head => { this.pusher?.request(head) },
      wake: () => { this.#wake() },
      syncMain: async () => { await this.syncMain() },
      majority: () => this.quorum().ok,
      branchMissing: task => { this.#collector.lost(task) },
      get main () { return follower }
    }
    const follower = new MainFollower(init, this.#bg.signal)
    this.#follower = follower
    this.#queue = new MergeQueue(ctx)
    this.#collector = new BranchCollector(init, ctx.wake, this.#bg, (task, oid) => { this.#queue.arrived(task, oid) })
    this.#agents = new AgentResolution(ctx)
    this.#decisions = new Decisions(ctx, this.#agents)
  }

  /** Records a push's outcome as `main.push` on the board, for `status` and the TUI (only the current leader writes it). */
  #publishPush (r: PushReport): void {
    const { node, logger } = this.#init
    if (node.board.snapshot().main.leader !== node.peerId) { logger.info('main:push-unreported', { head: r.head, ok: r.ok, reason: 'this node no longer leads' }); return }
    node.changeBoard('main:push', d => { lifecycle.recordPush(d, { remote: r.remote, head: r.head, ok: r.ok, at: r.at, error: r.error, by: node.peerId }) })
  }

  start (): void {
    if (!this.#ticker.running) this.#ticker.pace(LEADER_TICK_MS)
    if (this.#unsubscribe === null) {
      const { node } = this.#init
      // a board change (a task done, a new main, a decision) is acted on at once, not at the next tick
      const unsubscribe = node.board.subscribe(() => { this.#wake() })
      // and so is a peer's change of state (the leader dead: an election; a majority lost or found)
      const onState = (): void => { this.#wake() }
      node.addEventListener?.('peer:state', onState)
      this.#unsubscribe = () => { unsubscribe(); node.removeEventListener?.('peer:state', onState) }
    }
  }

  /** Runs the loop again soon (a hand-off fetch ended, say); no-op once stopped. */
  wake (): void {
    this.#wake()
  }

  /** Task `task`'s branch was put here at `oid` (a hand-off taken): neither the collector nor the merge queue looks it up again. */
  branchArrived (task: string, oid: string): void {
    this.#collector.handedOff(task as TaskId, oid)
    this.#queue.arrived(task as TaskId, oid)
  }

  /** Runs the loop again soon (once for any number of calls before it runs); no-op once stopped. */
  #wake (): void {
    if (!this.#ticker.running || this.#wakeQueued) return
    this.#wakeQueued = true
    setImmediate(() => {
      this.#wakeQueued = false
      if (this.#ticker.running) this.tick()
    })
  }

  /** Stops the loop and the push, aborts what is in progress (a merge's checks, fetches, an agent resolving), and waits for it to end. */
  async stop (): Promise<void> {
    this.#ticker.stop()
    if (this.#landTimer !== null) clearTimeout(this.#landTimer)
    this.#landTimer = null
    this.#unsubscribe?.()
    this.#unsubscribe = null
    this.pusher?.stop()
    this.#agents.job?.abort.abort(new Error('the node is stopping'))
    this.#job.stop()
    await this.#bg.stop('the node is stopping')
    await this.#queue.close()
  }

  /**
   * Whether this node acts as leader: the board names it, and it has been up
   * for an election timeout, so a restarted node does not act on a stale board
   * before it has heard from the mesh.
   */
  isLeader (): boolean {
    const { node } = this.#init
    if (Date.now() - node.startedAt < (this.#init.electionTimeoutMs ?? ELECTION_TIMEOUT_MS)) return false
    return node.board.snapshot().main.leader === node.peerId
  }

  /** Why this node stands down from leading (the last `standDown` answer), or null. */
  #standing: string | null = null

  /** Why this node does not stand for merge leader now (a full disk), or null. */
  get standingDown (): string | null {
    return this.#standing
  }

  /**
   * Stands down while `standDown` gives a reason: the node is not eligible in
   * its heartbeats (peers elect another leader: a leader that cannot write its
   * merges would only retry them), and a merge of its own in progress is
   * stopped. Stands again once the reason is gone (a healthy leader elected
   * meanwhile is kept). Logs each change.
   */
  #checkStanding (leading: boolean): string | null {
    const { node, logger } = this.#init
    const why = node.leaderEligible ? this.#init.standDown?.() ?? null : null
    if (why === this.#standing) return why
    const was = this.#standing
    this.#standing = why
    node.setLeaderHold(why)
    if (why !== null && was === null) {
      logger.warn('leader:stand-down', { reason: why, leading, note: 'this node does not stand for merge leader until the cause is gone; another eligible node leads meanwhile (if none, merges wait)' })
      this.#job.stop(`this node stands down from leading: ${why}`)
    } else if (why === null) {
      logger.info('leader:stand-again', { reason: `no longer: ${was ?? ''}`, note: 'eligible for merge leader again; a healthy leader elected meanwhile is kept' })
    }
    return why
  }

  tick (): void {
    const { node, logger } = this.#init
    const snap0 = (): ReturnType<typeof node.board.snapshot> => node.board.snapshot()
    const me = node.peerId
    const snap = node.board.snapshot()
    const standing = this.#checkStanding(snap.main.leader === me)
    // only registered nodes stand: a peer that never wrote its registration is no node of this mesh
    const candidates: Candidate[] = node.membership.members().filter(m => snap.nodes.has(m.peerId)).map(m => ({ peerId: m.peerId, state: m.state, eligible: m.eligible, aliveSince: m.aliveSince }))
    candidates.push({ peerId: me, state: 'alive', eligible: node.eligible, aliveSince: node.startedAt })
    const next = electLeader(snap.main, candidates, Date.now(), this.#init.electionTimeoutMs ?? ELECTION_TIMEOUT_MS)
    if (next !== null && next.leader === me) {
      node.changeBoard('leader:elected', d => { lifecycle.electLeader(d, me, next.term) })
      logger.info('leader:elected', { term: next.term, previous: snap.main.leader })
    }
    // an agent resolving a conflict for a leader that is no longer one works for nobody
    if (snap.main.leader !== me) this.#agents.abortRunning('this node is no longer the merge leader')
    this.#job.check()
    let mergeStarted = false
    // standing down (a full disk): the board may still name this node until a peer is elected; it merges nothing
    if (this.isLeader() && standing === null) {
      // the mesh waits on this event loop now: git is started off it (`meshwork node` does so from its start)
      spawnFromHelper()
      this.#collector.collect()
      if (this.#merging || this.#syncing) this.#missed = true
      // never beside a main sync: each moves the local main, and neither may see the other's move half done
      if (!this.#merging && !this.#syncing && this.#checkQuorum(snap)) {
        // a task left "merging" by a previous leader (or by this one before a restart) is merged by nobody now
        const stuck = openTasks(snap0()).filter(t => t.state === 'merging').map(t => t.id)
        if (stuck.length > 0) {
          node.changeBoard('task:merge-reset', d => { for (const id of stuck) lifecycle.deferMerge(d, id) })
          logger.info('merge:reset', { tasks: stuck, reason: 'left merging by an earlier leader' })
        }
        this.#merging = true
        mergeStarted = true
        let progressed = false
        void this.#bg.track(this.#mergeRound()).then(p => { progressed = p }, err => { logger.warn('merge:error', { error: toError(err).message }) }).finally(() => {
          this.#merging = false
          // keep the queue moving: the next merge need not wait for the next tick, nor does what arrived during this one
          if (progressed || this.#missed) { this.#missed = false; this.#wake() }
        })
      }
    }
    // on the leader a merge round moves main itself (its branch is ahead of the board for a moment)
    if (this.#syncing || this.#merging) {
      // a merge round started just now is no reason to come back: it moves main itself
      if (!mergeStarted) this.#missed = true
    } else if (this.#follower.missing() !== null && Date.now() - this.#syncEndedAt < LEADER_TICK_MS) {
      // a main no peer could give this node: asked for again at the tick's pace, not at every board change
    } else {
      this.#syncing = true
      // a node that does not lead fetches a new main at once and moves its branch and checkout once main is
      // still for a moment (its runs start from the fetched commit meanwhile); the leader never waits
      const defer = snap.main.leader !== me && !this.#follower.landDue()
      void this.#bg.track(this.syncMain({ defer })).catch(err => { logger.warn('main:sync-failed', { error: toError(err).message }) }).finally(() => {
        if (this.#follower.behind) this.#armLanding()
        this.#syncing = false
        this.#syncEndedAt = Date.now()
        // a new main (or a merge held back by this sync) that arrived meanwhile: at once (a main no peer
        // could give this node is tried again at the tick, not at every board change)
        if (this.#missed && !this.#merging && this.#follower.missing() === null) { this.#missed = false; this.#wake() }
      })
    }
    // settled: nothing open, a live leader, nothing under way here (a main sync started just now with the
    // local main trusted ends at once)
    const leader = snap.main.leader === null ? undefined : candidates.find(c => c.peerId === snap.main.leader)
    const led = leader !== undefined && leader.eligible && (leader.state === 'alive' || leader.state === 'suspect')
    // (a round started by this tick with nothing open finds nothing to merge; one that does merge wakes the loop when it ends)
    const settled = led && (!this.#merging || mergeStarted) && this.#follower.missing() === null && openTasks(snap).length === 0
    if (this.#ticker.running) this.#ticker.pace(settled ? LEADER_IDLE_TICK_MS : LEADER_TICK_MS)
  }

  /** The majority this node needs to advance main, as it sees the mesh now (see `quorum`). */
  quorum (snap = this.#init.node.board.snapshot()): Quorum {
    const { node } = this.#init
    const members = new Map(node.membership.members().map(m => [m.peerId as string, m]))
    const voters: Voter[] = [...snap.nodes].map(([peerId, rec]) => {
      const m = members.get(peerId)
      return { peerId, startedAt: rec.startedAt, leftAt: rec.leftAt, forgottenAt: rec.forgottenAt, state: m?.state, lastSeenAt: m?.lastSeenAt ?? null }
    })
    // a peer counts while heard within less than the time the others take to hold a silent node dead (never
    // widened): a leader cut off from the majority stops merging before the majority can elect another (see `quorum`)
    return quorum(node.peerId, voters, Date.now(), node.startedAt, this.#init.forgetAfterMs, node.membership.leaseMs)
  }

  /** True when main may advance; logs when the majority is lost or found again. */
  #checkQuorum (snap: ReturnType<LeaderInit['node']['board']['snapshot']>): boolean {
    const q = this.quorum(snap)
    const prev = snap.main.quorum
    if (prev == null ? !q.ok : prev.ok !== q.ok || prev.reachable !== q.reachable || prev.voters !== q.voters || prev.by !== this.#init.node.peerId) {
      const { node } = this.#init
      node.changeBoard('main:quorum', d => { lifecycle.recordQuorum(d, { ...q, at: Date.now(), by: node.peerId }) })
    }
    if (q.ok !== this.#hadQuorum) {
      const fields = { reachable: q.reachable, voters: q.voters, missing: q.missing }
      if (!q.ok) this.#init.logger.warn('merge:no-quorum', { ...fields, note: 'main advances only while a majority of the mesh\'s nodes is reachable; finished tasks wait. A node that is gone for good: `meshwork forget NODE`' })
      else if (this.#hadQuorum === false) this.#init.logger.info('merge:quorum', fields)
      this.#hadQuorum = q.ok
    }
    return q.ok
  }

  /** One round of the merge loop: a conflict decision waiting to be carried out goes first, else the next batch; true if it did something. */
  async #mergeRound (): Promise<boolean> {
    if (await this.#decisions.decide()) return true
    return await this.#queue.next(this.#agents.job !== null)
  }

  /**
   * Why no run should start from the mesh main now, or null: the board names a
   * main that no live peer could give this node (a run would fail to prepare).
   */
  mainUnavailable (): string | null {
    const m = this.#follower.missing()
    return m === null ? null : `the mesh main ${m.oid.slice(0, 12)} is on no live node this node can reach (its leader may have died right after publishing it); waiting for it, or for the leader to go back to the last main it has`
  }

  /** Commits surely here to announce as haves when fetching (see `MainFollower.recentMains`). */
  recentMains (): string[] {
    return this.#follower.recentMains()
  }

  /** Whether `oid` is the local main as last read or moved here (so the commit is here: no git process to ask). */
  holdsMain (oid: string): boolean {
    return this.#follower.holds(oid)
  }

  /** The main sync in progress, and the one queued behind it (callers that come meanwhile share it; a deferred one only if all asked for that). */
  #sync: { running: Promise<void> | null, queued: Promise<void> | null, queuedDefer: boolean } = { running: null, queued: null, queuedDefer: true }

  /**
   * Brings this repository's main to the mesh main on the board (see
   * `MainFollower`). One at a time: the loop, a run preparing its worktree and
   * the merge queue all ask for it, and two at once would fetch the same main
   * twice. A call during a sync waits for it and then syncs once more (the
   * board may have moved on), shared by every caller that came meanwhile.
   * `defer`: fetch only, move the branch later (the loop on a node that does
   * not lead, `MainFollower.sync`).
   */
  async syncMain (opts: { defer?: boolean } = {}): Promise<void> {
    const defer = opts.defer === true
    const s = this.#sync
    if (s.queued !== null) { if (!defer) s.queuedDefer = false; await s.queued; return }
    const start = (d: boolean): Promise<void> => {
      const p = this.#follower.sync({ defer: d }).finally(() => { if (s.running === p) s.running = null })
      s.running = p
      return p
    }
    if (s.running === null) { await start(defer); return }
    s.queuedDefer = defer
    const q = s.running.catch(() => {}).then(() => { const d = s.queuedDefer; s.queued = null; s.queuedDefer = true; return start(d) })
    s.queued = q
    await q
  }

  /** Wakes the loop when a main fetched without moving to it is due to be moved to (`FOLLOW_LAND_QUIET_MS`). */
  #landTimer: ReturnType<typeof setTimeout> | null = null
  #armLanding (): void {
    if (this.#landTimer !== null) clearTimeout(this.#landTimer)
    this.#landTimer = setTimeout(() => { this.#landTimer = null; this.#wake() }, FOLLOW_LAND_QUIET_MS + 10)
    this.#landTimer.unref()
  }
}
