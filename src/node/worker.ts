import type { MeshNode } from './mesh-node.ts'
import { Execution, inspectRepo, initRepo, taskContext } from './exec.ts'
import { Scheduler } from '../scheduler/scheduler.ts'
import type { NodeHealth } from './health.ts'
import type { Agent } from '../agent/types.ts'
import { serveGit, serveHandoffs, cloneFromPeer, fetchFromPeer } from '../git/transfer.ts'
import { GIT_PROTOCOL } from '../git/transfer.ts'
import { Leadership } from '../merge/leadership.ts'
import { BranchHandoff, TakenBranches, acceptHandoff } from '../merge/handoff.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import type { PeerIdString, Task } from '../crdt/schema.ts'
import { checkpointBranch } from '../git/worktree.ts'
import { pruneTaskBranches, pruneTranscripts, sweepAtStart } from './disk-bounds.ts'
import { defaultWorktreesDir, removeLegacyWorktrees } from '../git/worktree.ts'
import { DiskSpace } from './disk-space.ts'

/** Why a node whose board cannot be written claims nothing and does not lead (its store retries the write). */
const BOARD_DISK_FULL = 'disk full: board changes cannot be written'

/** How often a node deletes the branches of cancelled tasks and of merged tasks on main. @default 10 min */
export const BRANCH_PRUNE_MS = 10 * 60_000

export interface WorkerInit {
  node: MeshNode
  agent: Agent
  repo: string
  dataDir: string
  /** Where task and merge worktrees live (`--worktrees`), outside the data dir. @default defaultWorktreesDir(dataDir) */
  worktreesDir?: string
  branch: string
  slots: number
  setup?: string
  verify?: string
  /** `--verify-timeout`; null: none. @default DEFAULT_VERIFY_TIMEOUT_MS */
  verifyTimeoutMs?: number | null
  /** `--push REMOTE`: as leader, push main there after each advance. */
  push?: string
  /** `--forget-after`: an unreachable node stops counting toward the majority main needs after this long. */
  forgetAfterMs?: number
  /** How long the leader waits for a mesh main on no live node before going back to its own (tests shorten it). */
  mainLostMs?: number
  /** How long the leader waits before checking that a branch the board says it holds is here (tests shorten it). */
  heldCheckAfterMs?: number
  /** `--checkpoint-every`: how often a run's worktree is checkpointed; 0: never. */
  checkpointEveryMs?: number
  /** A fingerprint of the agent's credentials: nodes on the same ones share a usage limit. */
  credential?: string
  /** Wall-clock limit of a run whose task gives no `timeout`; null: none (`--task-timeout`). */
  taskTimeoutMs?: number | null
  /** Whether this node was given peers to join (else it may start a new history in an empty repo). */
  hasBootstrap: boolean
  logger: Logger
  /** Whether this node can run agents (paused when its credentials are refused). */
  health?: NodeHealth
}

/**
 * A node's working side: its repository (cloned from the mesh when empty), git
 * serving to peers, worktrees, and the scheduler running the agent. `start()`
 * returns at once; the scheduler starts as soon as the repository is usable.
 */
export class Worker {
  scheduler: Scheduler | null = null
  leadership: Leadership | null = null
  #init: WorkerInit
  #stopped = false
  #ready: Promise<void> = Promise.resolve()
  #pruneTimer: NodeJS.Timeout | null = null
  /** Stops writing this node as a holder of branches handed to it (see `TakenBranches`). */
  #stopTaken = (): void => {}
  /** The periodic prune of branches and transcripts in progress, or null. */
  #pruning: Promise<void> | null = null
  #exec: Execution | null = null
  #disk: DiskSpace | null = null

  constructor (init: WorkerInit) {
    this.#init = init
  }

  /** Where this node's worktrees live. */
  get worktreesDir (): string {
    return this.#init.worktreesDir ?? defaultWorktreesDir(this.#init.dataDir)
  }

  /** Resolves once the repository is usable and the scheduler runs. */
  get ready (): Promise<void> {
    return this.#ready
  }

  async start (): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    // no free slots to advertise until the repository is usable and the scheduler runs
    node.setSlots(0)
    const state = await inspectRepo(repo, branch)
    if (state === 'empty' && !this.#init.hasBootstrap) {
      const head = await initRepo(repo, branch)
      logger.info('repo:created', { repo, branch, head, note: 'empty --repo and no peers to clone from: started a new history' })
    }
    this.#ready = (async () => {
      if (state === 'empty' && this.#init.hasBootstrap) await this.#cloneFromMesh()
      if (this.#stopped) return
      // the mains this node was at lately are on its main: a request for one (a new main, haves) needs no lookup
      const gitServer = await serveGit(node, repo, { logger, known: () => this.leadership?.recentMains() ?? [] })
      // the merge leader (or a keeper, while no leader is alive) takes finished branches handed to it at done (see src/merge/handoff.ts)
      const handoffsInFlight = new Set<string>()
      const taken = new TakenBranches(node, logger)
      const unsubscribe = node.board.subscribe(() => { taken.boardChanged() })
      this.#stopTaken = () => { unsubscribe(); taken.stop() }
      await serveHandoffs(node, repo, {
        accept: async (peer, req, signal) => await acceptHandoff(node, peer, req, signal),
        onTaken: (peer, req, res, ms) => {
          logger.info('branch:received', { task: req.task, epoch: req.epoch, from: peer, head: res.oid, bytes: res.bytes, ms })
          this.leadership?.branchArrived(req.task, res.oid)
          taken.taken(req.task, req.epoch, res.oid)
        },
        haves: () => this.leadership?.recentMains() ?? [],
        onFetch: (req, fetching) => {
          if (fetching) handoffsInFlight.add(req.task)
          else handoffsInFlight.delete(req.task)
          // done, and neither handed off nor being fetched: the collector takes it from here
          if (!fetching) this.leadership?.wake()
        },
        logger
      })
      const handoff = new BranchHandoff(node, logger)
      // bounded disk: leftovers of an earlier life, and branches no one will read again
      await sweepAtStart(this.#init.dataDir, repo, logger).catch(err => { logger.warn('disk:sweep-failed', { error: toError(err).message }) })
      await pruneTaskBranches(repo, node.board.snapshot(), logger).catch(err => { logger.warn('disk:prune-failed', { error: toError(err).message }) })
      await pruneTranscripts(this.#init.dataDir, logger).catch(err => { logger.warn('disk:prune-failed', { error: toError(err).message }) })
      const legacy = await removeLegacyWorktrees(repo, this.#init.dataDir)
      if (legacy.length > 0) logger.warn('worktree:legacy-removed', { count: legacy.length, tasks: legacy, worktrees: this.worktreesDir, note: 'worktrees of an older meshwork inside the data dir (left by a crash; their branches and commits are kept, their tasks are rerun by the mesh); worktrees now live outside it' })
      this.#pruneTimer = setInterval(() => {
        if (this.#pruning !== null || this.#stopped) return
        this.#pruning = (async () => {
          await pruneTaskBranches(repo, node.board.snapshot(), logger)
          await pruneTranscripts(this.#init.dataDir, logger)
        })().catch(() => {}).finally(() => { this.#pruning = null })
      }, BRANCH_PRUNE_MS)
      this.#pruneTimer.unref()
      const leadership = new Leadership({
        node,
        repo,
        worktreesDir: this.worktreesDir,
        branch,
        logger,
        // conflicts decided with "agent" are resolved by the same agent the scheduler runs tasks with
        agent: this.#init.agent,
        ...(this.#init.setup !== undefined ? { setup: this.#init.setup } : {}),
        ...(this.#init.verify !== undefined ? { verify: this.#init.verify } : {}),
        ...(this.#init.verifyTimeoutMs !== undefined ? { verifyTimeoutMs: this.#init.verifyTimeoutMs } : {}),
        ...(this.#init.push !== undefined ? { push: this.#init.push } : {}),
        ...(this.#init.forgetAfterMs !== undefined ? { forgetAfterMs: this.#init.forgetAfterMs } : {}),
        ...(this.#init.mainLostMs !== undefined ? { mainLostMs: this.#init.mainLostMs } : {}),
        ...(this.#init.heldCheckAfterMs !== undefined ? { heldCheckAfterMs: this.#init.heldCheckAfterMs } : {}),
        handoffInFlight: task => handoffsInFlight.has(task),
        backUp: async (t, head) => await handoff.backUp(t, head),
        // a leader that cannot write merges (verify worktrees, git objects, the board) would only retry them: another leads
        standDown: () => disk.full ?? (node.diskFull ? BOARD_DISK_FULL : null)
      })
      this.leadership = leadership
      // a full disk where runs write (worktrees, git objects) pauses the node too, not only one under the board
      const disk = new DiskSpace({
        dirs: [{ what: 'board and node files', dir: this.#init.dataDir }, { what: 'worktrees', dir: this.worktreesDir }, { what: 'repository\'s files', dir: repo }],
        logger
      })
      this.#disk = disk
      await disk.check()
      disk.start()
      leadership.start()
      const exec = new Execution({
        node,
        repo,
        worktreesDir: this.worktreesDir,
        branch,
        logger,
        // a run needs the commit, not the branch moved: a node that does not lead only fetches it (`MainFollower.sync`)
        ensureMain: async () => { await leadership.syncMain({ defer: node.board.snapshot().main.leader !== node.peerId }) },
        knownCommit: oid => leadership.holdsMain(oid),
        fetchCheckpoint: async t => await fetchCheckpoint(node, repo, t, logger),
        // the next run's worktree is checked out while this one works: a run's slot waits only for the files that differ
        spareWorktree: true,
        ...(this.#init.setup !== undefined ? { setup: this.#init.setup } : {})
      })
      await exec.start()
      this.#exec = exec
      const names = (peer: PeerIdString): string => node.board.snapshot().nodes.get(peer)?.name ?? peer.slice(-8)
      this.scheduler = new Scheduler({
        node,
        agent: this.#init.agent,
        slots: this.#init.slots,
        logger,
        ...(this.#init.health !== undefined ? { health: this.#init.health } : {}),
        ...(this.#init.taskTimeoutMs !== undefined ? { defaultTimeoutMs: this.#init.taskTimeoutMs } : {}),
        prepare: exec.prepare,
        prepareEarly: exec.prepareEarly,
        dropEarly: exec.dropEarly,
        finish: exec.finish,
        handOff: async (t, head, signal) => {
          // a run of the leader's own: its branch is here already, and its merge needs no lookup
          if (node.board.snapshot().main.leader === node.peerId) leadership.branchArrived(t.id, head)
          // the task's branch points at `head`: the leader's fetch of it is served without a lookup
          gitServer.vouch(head)
          return await handoff.handOff(t, head, signal)
        },
        cleanup: exec.cleanup,
        checkpoint: exec.checkpoint,
        holdClaims: () => {
          const full = disk.full ?? (node.diskFull ? BOARD_DISK_FULL : null)
          if (full === null) return leadership.mainUnavailable()
          // what the health in status says: the node claims nothing, and does not lead merges either
          return leadership.standingDown !== null ? `${full}; not standing for merge leader until space returns` : full
        },
        ...(this.#init.credential !== undefined ? { credential: this.#init.credential } : {}),
        ...(this.#init.checkpointEveryMs !== undefined ? { checkpointEveryMs: this.#init.checkpointEveryMs } : {}),
        context: (t, snap) => taskContext(t, snap, names, exec.resumed.get(t.id)),
        onProgress: (taskId, p) => { node.publishProgress(taskId, p.kind, p.text) }
      })
      this.scheduler.start()
      node.setSlots(this.#init.slots)
    })()
    this.#ready.catch(err => { logger.error('worker:start-failed', { error: toError(err).message }) })
  }

  /** Keeps trying peers that serve git until one gives us main. */
  async #cloneFromMesh (): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    let lastLog = 0
    while (!this.#stopped) {
      for (const peerId of node.connectedPeers()) {
        if (!(await node.peerProtocols(peerId)).includes(GIT_PROTOCOL)) continue
        try {
          const res = await cloneFromPeer(node, peerId, repo, branch)
          logger.info('repo:cloned', { from: peerId.toString(), branch, head: res.oid, bytes: res.bytes })
          return
        } catch (err) {
          logger.warn('repo:clone-failed', { from: peerId.toString(), error: toError(err).message })
        }
      }
      if (Date.now() - lastLog > 10_000) {
        lastLog = Date.now()
        logger.info('repo:waiting', { note: `--repo is empty: waiting for a peer that serves ${branch} to clone it (this node takes no work until then)` })
      }
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  }

  async stop (graceMs: number): Promise<void> {
    this.#stopped = true
    this.#stopTaken()
    if (this.#pruneTimer !== null) clearInterval(this.#pruneTimer)
    this.#disk?.stop()
    // no merge starts from now on; what the leadership has in progress is aborted, and waited for with the runs
    const leaving = this.leadership?.stop()
    await this.scheduler?.stop(graceMs)
    await leaving
    await this.#pruning
    await this.#exec?.stop()
  }
}

/**
 * Fetches task `t`'s checkpoint (branch `meshwork-checkpoint/<id>`) from the
 * leader, the node that made it, or any live peer: true once this repository
 * has the commit the board names, or at least an earlier checkpoint of it.
 */
async function fetchCheckpoint (node: MeshNode, repo: string, t: Task, logger: Logger): Promise<boolean> {
  const cp = t.checkpoint
  if (cp == null) return false
  const ref = `refs/heads/${checkpointBranch(t.id)}`
  const snap = node.board.snapshot()
  const sources = [...new Set([snap.main.leader, cp.node, ...node.membership.alive().map(m => m.peerId)])].filter((p): p is PeerIdString => p !== null && p !== node.peerId)
  let any = false
  for (const peer of sources) {
    if (node.membership.get(peer)?.state !== 'alive') continue
    try {
      const res = await fetchFromPeer(node, peer, repo, ref, { intoRef: ref, timeoutMs: 5 * 60_000, logger })
      // an older checkpoint of the run (the last one never reached that peer) is still its work so far
      if (res.oid === cp.head) return true
      any = true
    } catch (err) {
      logger.debug('task:checkpoint-fetch-failed', { task: t.id, from: peer, error: toError(err).message })
    }
  }
  return any
}
