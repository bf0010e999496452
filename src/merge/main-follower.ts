import { fetchFromPeer } from '../git/transfer.ts'
import { advanceBranch, branchOid, hasCommit } from '../git/merge.ts'
import { git } from '../git/git.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import { toError } from '../util/errors.ts'
import type { LeaderInit } from './context.ts'

/**
 * The main follower, which every node runs (leader or not): keeps the local
 * main branch equal to the mesh main the board names.
 */
export class MainFollower {
  #init: LeaderInit

  constructor (init: LeaderInit) {
    this.#init = init
  }

  /**
   * Keeps this repository's main equal to the mesh main on the board: moves the
   * branch when the commit is here, else fetches it from the leader (or any
   * node that has merged), and brings a clean primary checkout along.
   */
  async sync (): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    const target = node.board.snapshot().main.head
    if (target === null) return
    const local = await branchOid(repo, branch)
    if (local === target) return
    if (!await hasCommit(repo, target)) {
      const leader = node.board.snapshot().main.leader
      const sources = [leader, ...node.membership.alive().map(m => m.peerId)].filter((p): p is PeerIdString => p !== null && p !== node.peerId)
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
}
