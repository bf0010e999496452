import type { MeshNode } from './mesh-node.ts'
import { str } from '../crdt/board.ts'
import { electLeader, ELECTION_TIMEOUT_MS, type Candidate } from '../scheduler/election.ts'
import { fetchFromPeer } from '../git/transfer.ts'
import { taskBranch } from '../git/worktree.ts'
import { advanceBranch, branchOid, hasCommit, mergeCommit, mergeTakingSide, runVerify, tryMerge } from '../git/merge.ts'
import { MAX_PLAIN_BATCH, MAX_VERIFY_BATCH, runBatch } from '../git/batch.ts'
import { mainHistory, reconcileMerged, type MainHistory } from '../git/history.ts'
import { releaseTask } from '../scheduler/scheduler.ts'
import { claimOrder, depsMerged, remainingCriticalPath } from '../scheduler/dag.ts'
import type { Conflict, Task } from '../crdt/schema.ts'
import { git } from '../git/git.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import { addUsage } from '../crdt/ops.ts'
import type { Agent } from '../agent/types.ts'
import { MainPusher, type PushReport } from './main-push.ts'
import { resolveWithAgent, type AgentResolveResult } from './agent-resolve.ts'

/** The board document inside a change. */
type BoardDraft = Parameters<Parameters<MeshNode['changeBoard']>[1]>[0]

/** An agent-resolved merge the leader runs in the background (one at a time), with its result once the agent is done. */
interface AgentJob {
  conflictId: string
  taskId: string
  /** The decision being carried out (`decision.at`): a newer decision drops this job. */
  decisionAt: number
  /** Main and the task head the merge was made of. */
  main: string
  head: string
  abort: AbortController
  result: AgentResolveResult | null
}

/** Period of the election and branch-collection loop. @default 500 ms */
export const LEADER_TICK_MS = 500
/** Branch fetches a leader runs at once. @default 2 */
export const MAX_PARALLEL_FETCHES = 2

export interface LeaderInit {
  node: MeshNode
  repo: string
  dataDir: string
  branch: string
  /** `--verify`: run on each candidate merge before main advances. */
  verify?: string
  /** `--verify-timeout`: a check still running then is killed with its process group and fails; null: none. @default DEFAULT_VERIFY_TIMEOUT_MS */
  verifyTimeoutMs?: number | null
  logger: Logger
  electionTimeoutMs?: number
  /** Merges verified together in one `--verify` run; 1 turns batching off. @default MAX_VERIFY_BATCH */
  batch?: number
  /** The node's agent: resolves conflicts decided with the `agent` action (without one, that action fails with a reason). */
  agent?: Agent
  /** `--setup`: run in the worktree of an agent-resolved merge before the agent starts. */
  setup?: string
  /** `--push REMOTE`: after each advance of main made here, push it there (never forced; see `MainPusher`). */
  push?: string
  /** Pause before a failed push is tried again. @default PUSH_RETRY_MS */
  pushRetryMs?: number
}

/**
 * Runs the election on every node and, on the elected leader, collects every
 * finished task's branch from a live node that holds it (over the git stream
 * protocol), verifies the oid and records itself as a holder, so the work
 * survives the node that made it. The merge queue builds on this.
 */
export class Leadership {
  #init: LeaderInit
  #timer: NodeJS.Timeout | null = null
  #fetching = new Set<string>()
  #failedAt = new Map<string, number>()
  #merging = false
  #syncing = false
  #agentJob: AgentJob | null = null
  /** The merge (batch or decided conflict) in progress: aborting it kills its `--verify` process group. */
  #mergeJob: { ids: string[], term: number, abort: AbortController } | null = null
  /** Main's first-parent merges at the last head read (task id → merge commit). */
  #history: { head: string, history: MainHistory } | null = null

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
  }

  /** Records a push's outcome as `main.push` on the board, for `status` and the TUI (only the current leader writes it). */
  #publishPush (r: PushReport): void {
    const { node, logger } = this.#init
    if (node.board.snapshot().main.leader !== node.peerId) { logger.info('main:push-unreported', { head: r.head, ok: r.ok, reason: 'this node no longer leads' }); return }
    node.changeBoard('main:push', d => {
      d.main.push = { remote: str(r.remote), head: str(r.head), ok: r.ok, at: r.at, error: r.error === null ? null : str(r.error), by: str(node.peerId) }
    })
  }

  /** Main advanced to `head` here: push it if `--push` is set (asynchronously, coalesced). */
  #advanced (head: string): void {
    this.pusher?.request(head)
  }

  start (): void {
    this.#timer ??= setInterval(() => { this.tick() }, LEADER_TICK_MS)
  }

  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    this.pusher?.stop()
    this.#agentJob?.abort.abort(new Error('the node is stopping'))
    this.#mergeJob?.abort.abort(new Error('the node is stopping'))
  }

  /** Starts tracking a merge of tasks `ids` in `term`; its signal is aborted by `#checkMergeJob` or `stop`. */
  #startMergeJob (ids: string[], term: number): AbortSignal {
    const job = { ids, term, abort: new AbortController() }
    this.#mergeJob = job
    return job.abort.signal
  }

  /** A merge whose tasks were cancelled, or whose leader lost its leadership or term, is stopped (its --verify killed). */
  #checkMergeJob (): void {
    const job = this.#mergeJob
    if (job === null || job.abort.signal.aborted) return
    const snap = this.#init.node.board.snapshot()
    let reason: string | null = null
    if (snap.main.leader !== this.#init.node.peerId || snap.main.term !== job.term) reason = `this node is no longer the merge leader of term ${job.term}`
    else {
      const cancelled = job.ids.find(id => snap.tasks.get(id as never)?.state === 'cancelled')
      if (cancelled !== undefined) reason = `task ${cancelled} was cancelled`
    }
    if (reason === null) return
    this.#init.logger.warn('merge:stopped', { tasks: job.ids, reason, note: 'its --verify, if running, is killed with its process group' })
    job.abort.abort(new Error(reason))
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

  tick (): void {
    const { node, logger } = this.#init
    const snap0 = (): ReturnType<typeof node.board.snapshot> => node.board.snapshot()
    const me = node.peerId
    const snap = node.board.snapshot()
    const candidates: Candidate[] = node.membership.members().map(m => ({ peerId: m.peerId, state: m.state, eligible: m.eligible, aliveSince: m.aliveSince }))
    candidates.push({ peerId: me, state: 'alive', eligible: node.eligible, aliveSince: node.startedAt })
    const next = electLeader(snap.main, candidates, Date.now(), this.#init.electionTimeoutMs ?? ELECTION_TIMEOUT_MS)
    if (next !== null && next.leader === me) {
      node.changeBoard('leader:elected', d => {
        d.main.leader = str(me)
        d.main.term = next.term
      })
      logger.info('leader:elected', { term: next.term, previous: snap.main.leader })
    }
    // an agent resolving a conflict for a leader that is no longer one works for nobody
    if (this.#agentJob !== null && this.#agentJob.result === null && snap.main.leader !== me) this.#agentJob.abort.abort(new Error('this node is no longer the merge leader'))
    this.#checkMergeJob()
    if (this.isLeader()) {
      this.#collect()
      if (!this.#merging) {
        // a task left "merging" by a previous leader (or by this one before a restart) is merged by nobody now
        const stuck = [...snap0().tasks.values()].filter(t => t.state === 'merging').map(t => t.id)
        if (stuck.length > 0) {
          node.changeBoard('task:merge-reset', d => { for (const id of stuck) { const rec = d.tasks[id]; if (rec !== undefined) rec.state = str('done') } })
          logger.info('merge:reset', { tasks: stuck, reason: 'left merging by an earlier leader' })
        }
        this.#merging = true
        void this.#mergeNext().catch(err => { logger.warn('merge:error', { error: toError(err).message }) }).finally(() => {
          this.#merging = false
          // keep the queue moving: the next merge need not wait for the next tick
          if (this.#timer !== null) setImmediate(() => { this.tick() })
        })
      }
    }
    if (!this.#syncing) {
      this.#syncing = true
      void this.syncMain().catch(err => { logger.warn('main:sync-failed', { error: toError(err).message }) }).finally(() => { this.#syncing = false })
    }
  }

  /**
   * Keeps this repository's main equal to the mesh main on the board: moves the
   * branch when the commit is here, else fetches it from the leader (or any
   * node that has merged), and brings a clean primary checkout along.
   */
  async syncMain (): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    const target = node.board.snapshot().main.head
    if (target === null) return
    const local = await branchOid(repo, branch)
    if (local === target) return
    if (!await hasCommit(repo, target)) {
      const leader = node.board.snapshot().main.leader
      const sources = [leader, ...node.membership.alive().map(m => m.peerId)].filter((p): p is string => p !== null && p !== node.peerId)
      let fetched = false
      for (const peer of sources) {
        try {
          await fetchFromPeer(node, peer, repo, target, { intoRef: 'refs/meshwork/main-incoming', timeoutMs: 5 * 60_000, logger })
          fetched = true
          break
        } catch (err) {
          logger.debug('main:fetch-failed', { from: peer, error: toError(err).message })
        }
      }
      if (!fetched) return
    }
    // main only moves forward: never rewind to a commit the local main already contains
    if (local !== null && (await git(['merge-base', '--is-ancestor', target, local], { cwd: repo, allowFail: true })).code === 0) return
    const how = await advanceBranch(repo, branch, local, target)
    if (how === 'lost-race') return
    if (how === 'dirty') logger.warn('main:checkout-dirty', { repo, head: target, note: `${branch} moved to the mesh main but the checked-out working tree has local changes: left alone; run \`git reset --keep ${target.slice(0, 12)}\` when ready` })
    logger.info('main:updated', { head: target, checkout: how })
  }

  /** Carries out the first human decision waiting on an open conflict; true if there was one. */
  async #decide (): Promise<boolean> {
    const { node, repo, branch, logger } = this.#init
    const job = this.#agentJob
    if (job !== null) {
      if (job.result === null && !this.#jobCurrent(job)) job.abort.abort(new Error('the decision on the conflict changed'))
      if (job.result !== null) return await this.#finishAgentJob(job)
    }
    const snap = node.board.snapshot()
    // while an agent resolves one conflict, other agent decisions wait; other actions go ahead
    const c = [...snap.conflicts.values()].find(x => x.state === 'open' && x.decision !== null && !(job !== null && (x.decision.action === 'agent' || (x.id === job.conflictId && x.decision.at === job.decisionAt))))
    if (c === undefined || c.decision === null) return false
    const t = snap.tasks.get(c.taskId)
    const { action, by } = c.decision
    const resolved = (d: Parameters<Parameters<typeof node.changeBoard>[1]>[0]): void => {
      const rec = d.conflicts[c.id]
      if (rec !== undefined) rec.state = str('resolved')
    }
    if (t === undefined || t.state !== 'conflict') {
      node.changeBoard('conflict:resolved', resolved)
      return true
    }
    const now = Date.now()
    switch (action) {
      case 'abandon':
        node.changeBoard('conflict:abandon', d => { resolved(d); const rec = d.tasks[t.id]; if (rec !== undefined) { rec.state = str('cancelled'); rec.error = str(`abandoned after a merge conflict (decision by ${by})`) } })
        break
      case 'rerun':
        node.changeBoard('conflict:rerun', d => {
          resolved(d)
          releaseTask(d, t.id, now, null)
          const rec = d.tasks[t.id]
          if (rec !== undefined) { rec.head = null; rec.holders = []; rec.error = str(`rerun on the current main after a merge conflict in ${c.files.join(', ')}`) }
        })
        break
      case 'agent': {
        const base = snap.main.head ?? await branchOid(repo, branch)
        if (base === null || t.head === null || !await this.#ensureHead(t)) return false
        if (this.#init.agent === undefined) {
          this.#decisionFailed(c, t.id, 'this merge leader has no agent to resolve conflicts with; choose ours, theirs, rerun or abandon')
          return true
        }
        this.#startAgentJob(c, t, base)
        return true
      }
      case 'ours':
      case 'theirs': {
        const base = snap.main.head ?? await branchOid(repo, branch)
        if (base === null || t.head === null) return false
        if (!await this.#ensureHead(t)) return false
        const unchanged = (): boolean => {
          const x = node.board.snapshot().conflicts.get(c.id)
          return x !== undefined && x.state === 'open' && x.decision?.action === action && x.decision.at === c.decision?.at
        }
        let candidate: string
        try {
          candidate = await mergeTakingSide(repo, this.#init.dataDir, base, t.head, action, t.id, t.title)
        } catch (err) {
          if (!unchanged()) return true
          this.#decisionFailed(c, t.id, toError(err).message)
          return true
        }
        const landed = await this.#landDecision(c, t, base, snap.main.term, candidate, 'the merge with main')
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
   * Lands a decided conflict's merge commit `candidate`, made on main `base`:
   * `--verify` on it, then the compare-and-swap of main fenced by this
   * leader's term and main's head. The conflict ends resolved, the task merged
   * (or failed with the check's output); `extra` joins either board change.
   * 'changed' when `current` says the decision changed during the verify run,
   * 'stale' when leadership or main moved (the next round tries again).
   */
  async #landDecision (c: Conflict, t: Task, base: string, term: number, candidate: string, what: string, extra?: (d: BoardDraft) => void, current?: () => boolean): Promise<'landed' | 'verify-failed' | 'changed' | 'stale'> {
    const { node, repo, branch, logger } = this.#init
    const resolve = (d: BoardDraft): void => {
      extra?.(d)
      const rec = d.conflicts[c.id]
      if (rec !== undefined) { rec.state = str('resolved'); rec.error = null }
    }
    if (this.#init.verify !== undefined) {
      let v: Awaited<ReturnType<typeof runVerify>>
      const signal = this.#startMergeJob([t.id], term)
      try {
        v = await runVerify(repo, this.#init.dataDir, candidate, this.#init.verify, { signal, timeoutMs: this.#init.verifyTimeoutMs })
      } catch (err) {
        if (!signal.aborted) throw err
        logger.warn('merge:verify-stopped', { task: t.id, conflict: c.id, reason: toError(signal.reason).message })
        return 'stale'
      } finally {
        this.#mergeJob = null
      }
      if (current !== undefined && !current()) return 'changed'
      if (!v.ok) {
        node.changeBoard('task:verify-failed', d => {
          resolve(d)
          const tr = d.tasks[t.id]
          if (tr !== undefined) { tr.state = str('failed'); tr.error = str(`--verify failed on ${what}:\n${v.output.slice(-4000)}`) }
        })
        logger.warn('merge:verify-failed', { task: t.id, conflict: c.id, action: c.decision?.action })
        return 'verify-failed'
      }
    }
    const s2 = node.board.snapshot()
    if (s2.main.leader !== node.peerId || s2.main.term !== term || (s2.main.head ?? base) !== base) return 'stale'
    const how = await advanceBranch(repo, branch, await branchOid(repo, branch), candidate)
    if (how === 'lost-race') return 'stale'
    const now = Date.now()
    node.changeBoard('main:advance', d => {
      resolve(d)
      d.main.head = str(candidate)
      const tr = d.tasks[t.id]
      if (tr !== undefined) { tr.state = str('merged'); tr.mergeCommit = str(candidate); tr.mergedAt = now; tr.error = null }
    })
    this.#advanced(candidate)
    logger.info('merge:done', { tasks: [t.id], main: candidate, term, checkout: how, conflict: c.id, action: c.decision?.action })
    return 'landed'
  }

  /** Makes sure the task's branch head is in this repository (fetching it from a live holder); false if it cannot be yet. */
  async #ensureHead (t: Task): Promise<boolean> {
    const { node, repo, logger } = this.#init
    if (t.head === null) return false
    if (await hasCommit(repo, t.head)) return true
    const holder = t.holders.find(h => node.membership.get(h)?.state === 'alive')
    if (holder === undefined) return false
    await fetchFromPeer(node, holder, repo, `refs/heads/${taskBranch(t.id)}`, { intoRef: `refs/heads/${taskBranch(t.id)}`, timeoutMs: 5 * 60_000, logger })
    return true
  }

  /** A decision that could not be carried out: the conflict stays open with no decision, and says why (as does its task). */
  #decisionFailed (c: Conflict, taskId: string, reason: string, extra?: (d: BoardDraft) => void): void {
    const { node, logger } = this.#init
    const action = c.decision?.action ?? 'none'
    node.changeBoard('conflict:decision-failed', d => {
      const rec = d.conflicts[c.id]
      if (rec !== undefined) { rec.decision = null; rec.error = str(`"${action}" failed: ${reason}`) }
      const tr = d.tasks[taskId]
      if (tr !== undefined) tr.error = str(`conflict ${c.id}: "${action}" failed: ${reason}`)
      extra?.(d)
    })
    logger.warn('conflict:decision-failed', { conflict: c.id, action, error: reason })
  }

  /** Whether the job's decision is still the conflict's, and the conflict still open on the same task head. */
  #jobCurrent (job: AgentJob): boolean {
    const snap = this.#init.node.board.snapshot()
    const c = snap.conflicts.get(job.conflictId as never)
    const t = snap.tasks.get(job.taskId as never)
    return c !== undefined && c.state === 'open' && c.decision?.action === 'agent' && c.decision.at === job.decisionAt && t?.state === 'conflict' && t.head === job.head
  }

  /** Starts the agent on the conflicted merge in the background; its result is landed by the merge loop (`#finishAgentJob`). */
  #startAgentJob (c: Conflict, t: Task, base: string): void {
    const { node, repo, branch, logger } = this.#init
    const agent = this.#init.agent as Agent
    const abort = new AbortController()
    const job: AgentJob = { conflictId: c.id, taskId: t.id, decisionAt: c.decision?.at ?? 0, main: base, head: t.head as string, abort, result: null }
    this.#agentJob = job
    const signal = t.timeoutMs === null ? abort.signal : AbortSignal.any([abort.signal, AbortSignal.timeout(t.timeoutMs)])
    logger.info('conflict:agent-started', { conflict: c.id, task: t.id, agent: agent.kind, main: base, head: t.head })
    void resolveWithAgent({
      repo,
      dataDir: this.#init.dataDir,
      branch,
      main: base,
      task: t,
      conflict: c,
      agent,
      peerId: node.peerId,
      ...(this.#init.setup !== undefined ? { setup: this.#init.setup } : {}),
      signal,
      onProgress: p => { try { node.publishProgress(t.id, p.kind, p.text) } catch { /* progress is best effort */ } }
    }).catch((err: unknown) => ({ commit: null, error: toError(err).message, costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 } })).then(r => {
      job.result = r
      logger.info('conflict:agent-finished', { conflict: c.id, task: t.id, ok: r.commit !== null, error: r.error, costUsd: r.costUsd })
      // land it now rather than at the next tick
      if (this.#timer !== null) setImmediate(() => { this.tick() })
    })
  }

  /**
   * Lands the result of an agent-resolved merge, on the merge loop: the merge
   * commit (re-made on main if main moved meanwhile and the resolution still
   * merges cleanly) goes through `--verify`, then main is compare-and-swapped
   * like any merge, fenced by the leader's term and main's head. The run's cost
   * goes on the task whatever the outcome. True if the board changed.
   */
  async #finishAgentJob (job: AgentJob): Promise<boolean> {
    const { node, repo, branch, logger } = this.#init
    const r = job.result as AgentResolveResult
    const addCost = (d: BoardDraft): void => {
      const rec = d.tasks[job.taskId]
      if (rec !== undefined) addUsage(rec as Record<string, unknown>, r)
    }
    const done = (): void => { if (this.#agentJob === job) this.#agentJob = null }
    const snap = node.board.snapshot()
    const c = snap.conflicts.get(job.conflictId as never)
    const t = snap.tasks.get(job.taskId as never)
    if (c === undefined || t === undefined || !this.#jobCurrent(job)) {
      done()
      node.changeBoard('conflict:agent-dropped', addCost)
      logger.info('conflict:agent-dropped', { conflict: job.conflictId, reason: 'the decision or the task changed while the agent worked' })
      return true
    }
    if (r.commit === null) {
      done()
      this.#decisionFailed(c, t.id, r.error ?? 'the agent gave no result', addCost)
      return true
    }
    const base = snap.main.head ?? await branchOid(repo, branch)
    if (base === null) return false
    let candidate = r.commit
    if (base !== job.main) {
      // main moved while the agent worked: the resolution is carried onto the new main if it still merges cleanly
      const again = await tryMerge(repo, base, r.commit)
      if (again.kind === 'conflict') {
        done()
        this.#decisionFailed(c, t.id, `main moved while the agent worked and its resolution no longer merges cleanly (${again.files.join(', ')}); choose an action again`, addCost)
        return true
      }
      candidate = await mergeCommit(repo, again.tree, base, job.head, t.id, `${t.title === '' ? t.id : t.title} (conflicts resolved by an agent)`)
    }
    const landed = await this.#landDecision(c, t, base, snap.main.term, candidate, 'the agent-resolved merge with main', addCost, () => this.#jobCurrent(job))
    if (landed === 'changed') return await this.#finishAgentJob(job)
    if (landed === 'stale') return false
    done()
    if (landed === 'verify-failed') return true
    logger.info('conflict:decided', { conflict: c.id, task: t.id, action: 'agent', by: c.decision?.by })
    return true
  }

  /**
   * Merges the next batch of ready tasks into main (the leader only; one batch
   * at a time): the queue's first tasks whose branches are here are stacked on
   * main, verified together and landed (see `runBatch`), each landing a
   * compare-and-swap of main fenced by this leader's term.
   */
  async #mergeNext (): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    const me = node.peerId
    if (await this.#decide()) return
    let snap = node.board.snapshot()
    const { term } = snap.main
    const base = snap.main.head ?? await branchOid(repo, branch)
    if (base === null) return
    if (snap.main.head !== null && await branchOid(repo, branch) !== base) {
      await this.syncMain()
      if (await branchOid(repo, branch) !== base) return
    }
    if (snap.main.head !== null && await this.#reconcile(base)) snap = node.board.snapshot()
    if (snap.main.head !== base && snap.main.head !== null) return
    const candidates: Task[] = []
    for (const t of snap.tasks.values()) {
      if (t.state !== 'done' || t.head === null || !t.holders.includes(me) || !depsMerged(t, snap)) continue
      if (Date.now() - (this.#failedAt.get(`merge:${t.id}`) ?? 0) < 5000) continue
      candidates.push(t)
    }
    const max = this.#init.verify === undefined ? MAX_PLAIN_BATCH : (this.#init.batch ?? MAX_VERIFY_BATCH)
    const batch: Task[] = []
    for (const t of claimOrder(candidates, remainingCriticalPath(snap.tasks))) {
      if (batch.length >= max) break
      if (await branchOid(repo, taskBranch(t.id)) !== t.head || !await hasCommit(repo, t.head as string)) continue
      batch.push(t)
    }
    if (batch.length === 0) return
    const heads = new Map(batch.map(t => [t.id as string, t.head as string]))
    /** Fencing: this node still leads in the same term, main is still `at`, and the tasks are still ours to merge. */
    const still = (at: string, ids: Iterable<string>): boolean => {
      const s = node.board.snapshot()
      if (s.main.leader !== me || s.main.term !== term || (s.main.head ?? base) !== at) return false
      for (const id of ids) { const t = s.tasks.get(id as never); if (t?.state !== 'merging' || t.head !== heads.get(id)) return false }
      return true
    }
    node.changeBoard('task:merging', d => { for (const t of batch) { const rec = d.tasks[t.id]; if (rec !== undefined) rec.state = str('merging') } })
    const ids = batch.map(t => t.id as string)
    try {
      const res = await runBatch({
        repo,
        dataDir: this.#init.dataDir,
        base,
        items: batch.map(t => ({ taskId: t.id, title: t.title, head: t.head as string })),
        verify: this.#init.verify,
        verifyTimeoutMs: this.#init.verifyTimeoutMs,
        signal: this.#startMergeJob(ids, term),
        onVerify: (commit, ok, ms, size) => { logger.info('merge:verified', { commit, ok, ms, merges: size, term }) },
        land: async (prev, tip, merged) => {
          if (!still(prev, merged.map(m => m.taskId))) { logger.warn('merge:abandoned', { tasks: merged.map(m => m.taskId), reason: 'leadership, term or main changed during the merge' }); return false }
          const how = await advanceBranch(repo, branch, await branchOid(repo, branch), tip)
          if (how === 'lost-race') throw new Error('local main moved during the merge')
          const now = Date.now()
          node.changeBoard('main:advance', d => {
            d.main.head = str(tip)
            for (const m of merged) {
              const rec = d.tasks[m.taskId]
              if (rec !== undefined) { rec.state = str('merged'); rec.mergeCommit = str(m.commit); rec.mergedAt = now; rec.error = null }
            }
          })
          logger.info('merge:done', { tasks: merged.map(m => m.taskId), main: tip, term, checkout: how })
          this.#advanced(tip)
          return true
        }
      })
      const current = res.main
      for (const o of res.outcomes) {
        switch (o.kind) {
          case 'merged':
            break
          case 'deferred':
            if (node.board.task(o.taskId)?.state === 'merging') node.changeBoard('task:merge-deferred', d => { const rec = d.tasks[o.taskId]; if (rec !== undefined) rec.state = str('done') })
            logger.info('merge:deferred', { task: o.taskId, reason: o.reason })
            break
          case 'conflict': {
            if (!still(current, [o.taskId])) break
            const n = [...node.board.snapshot().conflicts.values()].filter(c => c.taskId === o.taskId).length + 1
            const id = `${o.taskId}-${n}`
            node.changeBoard('task:conflict', d => {
              d.conflicts[id] = { id: str(id), taskId: str(o.taskId), files: o.files.map(str), hunks: o.hunks.map(h => ({ file: str(h.file), line: h.line, before: str(h.before), ours: str(h.ours), theirs: str(h.theirs), after: str(h.after) })), state: str('open'), decision: null, base: str(current), head: str(heads.get(o.taskId) as string), at: Date.now() }
              const rec = d.tasks[o.taskId]
              if (rec !== undefined) { rec.state = str('conflict'); rec.error = str(`merge conflict in ${o.files.join(', ')}`) }
            })
            logger.warn('merge:conflict', { task: o.taskId, conflict: id, files: o.files, hunks: o.hunks.length, term })
            break
          }
          case 'verify-failed':
            if (!still(current, [o.taskId])) break
            node.changeBoard('task:verify-failed', d => {
              const rec = d.tasks[o.taskId]
              if (rec !== undefined) { rec.state = str('failed'); rec.error = str(`--verify failed on the merge with main:\n${o.output.slice(-4000)}`) }
            })
            logger.warn('merge:verify-failed', { task: o.taskId })
            break
          default: {
            const never: never = o
            throw new Error(`unknown outcome ${String(never)}`)
          }
        }
      }
      logger.info('merge:batch', { tasks: ids.length, merged: res.outcomes.filter(o => o.kind === 'merged').length, verifyRuns: res.verifyRuns, term })
    } catch (err) {
      for (const id of ids) this.#failedAt.set(`merge:${id}`, Date.now())
      logger.warn('merge:failed', { tasks: ids, error: toError(err).message })
    } finally {
      this.#mergeJob = null
      const left = ids.filter(id => node.board.task(id)?.state === 'merging')
      if (left.length > 0) node.changeBoard('task:merge-retry', d => { for (const id of left) { const rec = d.tasks[id]; if (rec !== undefined) rec.state = str('done') } })
    }
  }

  /**
   * Makes the board's "merged" agree with main's history (`reconcileMerged`):
   * after a healed partition, tasks merged on the losing side's main go back in
   * the queue and tasks already on main are recorded merged. Runs between
   * batches on the leader, whose main is the board's; true if it changed the board.
   */
  async #reconcile (head: string): Promise<boolean> {
    const { node, repo, logger } = this.#init
    if (this.#history?.head !== head) this.#history = { head, history: await mainHistory(repo, head) }
    const snap = node.board.snapshot()
    if (snap.main.head !== head || snap.main.leader !== node.peerId) return false
    const repair = reconcileMerged(snap.tasks.values(), this.#history.history)
    if (repair.requeue.length === 0 && repair.record.length === 0) return false
    const now = Date.now()
    node.changeBoard('main:reconcile', d => {
      for (const r of repair.requeue) {
        const rec = d.tasks[r.id]
        if (rec === undefined) continue
        rec.state = str(r.to)
        rec.mergeCommit = null
        rec.mergedAt = null
        rec.error = str(`its merge ${r.lost === null ? '' : r.lost.slice(0, 12) + ' '}is not on main (made on the other side of a partition that lost); merging again`)
        if (r.to === 'ready') rec.readyAt = now
      }
      for (const r of repair.record) {
        const rec = d.tasks[r.id]
        if (rec === undefined) continue
        rec.state = str('merged')
        rec.mergeCommit = str(r.commit)
        rec.mergedAt ??= now
        rec.error = null
      }
    })
    logger.warn('main:reconciled', { main: head, requeued: repair.requeue.map(r => r.id), recorded: repair.record.map(r => r.id) })
    return true
  }

  #collect (): void {
    const { node, repo, logger } = this.#init
    const me = node.peerId
    for (const t of node.board.snapshot().tasks.values()) {
      if (this.#fetching.size >= MAX_PARALLEL_FETCHES) return
      if (t.state !== 'done' || t.head === null || t.holders.includes(me) || this.#fetching.has(t.id)) continue
      if (Date.now() - (this.#failedAt.get(t.id) ?? 0) < 5000) continue
      const holder = t.holders.find(h => node.membership.get(h)?.state === 'alive')
      if (holder === undefined) continue
      const head = t.head
      this.#fetching.add(t.id)
      void (async () => {
        try {
          const res = await fetchFromPeer(node, holder, repo, `refs/heads/${taskBranch(t.id)}`, { intoRef: `refs/heads/${taskBranch(t.id)}`, timeoutMs: 5 * 60_000, logger })
          if (res.oid !== head) throw new Error(`fetched ${res.oid} but the board says ${head}`)
          node.changeBoard('task:collected', d => {
            const rec = d.tasks[t.id]
            if (rec === undefined) return
            const holders = rec.holders as unknown[]
            if (!holders.some(h => String(h) === me)) holders.push(str(me))
          })
          logger.info('branch:collected', { task: t.id, from: holder, head, bytes: res.bytes })
        } catch (err) {
          this.#failedAt.set(t.id, Date.now())
          logger.warn('branch:collect-failed', { task: t.id, from: holder, error: toError(err).message })
        } finally {
          this.#fetching.delete(t.id)
        }
      })()
    }
  }
}
