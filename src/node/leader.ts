import type { MeshNode } from './mesh-node.ts'
import { str } from '../crdt/board.ts'
import { electLeader, ELECTION_TIMEOUT_MS, type Candidate } from '../scheduler/election.ts'
import { fetchFromPeer } from '../git/transfer.ts'
import { taskBranch } from '../git/worktree.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** Period of the election and branch-collection loop. @default 500 ms */
export const LEADER_TICK_MS = 500
/** Branch fetches a leader runs at once. @default 2 */
export const MAX_PARALLEL_FETCHES = 2

export interface LeaderInit {
  node: MeshNode
  repo: string
  logger: Logger
  electionTimeoutMs?: number
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

  constructor (init: LeaderInit) {
    this.#init = init
  }

  start (): void {
    this.#timer ??= setInterval(() => { this.tick() }, LEADER_TICK_MS)
  }

  stop (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Whether this node is the leader on its board. */
  isLeader (): boolean {
    return this.#init.node.board.snapshot().main.leader === this.#init.node.peerId
  }

  tick (): void {
    const { node, logger } = this.#init
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
    if (this.isLeader()) this.#collect()
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
