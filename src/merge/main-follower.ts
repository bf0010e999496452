import { statSync } from 'node:fs'
import { join } from 'node:path'
import { fetchFromPeer } from '../git/transfer.ts'
import { advanceBranch, branchOid, casBranch, commitOids } from '../git/merge.ts'
import { git } from '../git/git.ts'
import { gitCommonDir } from '../git/repo.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import { toError } from '../util/errors.ts'
import { MAIN_RECHECK_BLIND_MS, MAIN_RECHECK_MS, type LeaderInit, type LocalMain } from './context.ts'

/** Recent local mains kept as haves for fetches (`MainFollower.recentMains`). @default 32 */
export const RECENT_MAINS = 32

/**
 * A node that does not lead fetches each new mesh main at once (a run starts
 * from it), but moves its main branch and primary checkout there (`git status`
 * and `git merge --ff-only`: two of the three git processes of every move) only
 * once main has been still this long (`MainFollower.landDue`). @default 1000 ms
 */
export const FOLLOW_LAND_QUIET_MS = 1000
/** ...and never later than this after the first main it fetched without moving to it. @default 3000 ms */
export const FOLLOW_LAND_MAX_MS = 3000

/**
 * The main follower, which every node runs (leader or not): keeps the local
 * main branch equal to the mesh main the board names.
 */
export class MainFollower implements LocalMain {
  #init: LeaderInit
  /** The local main as last read or moved here, when, and the signature of the branch's files then. */
  #seen: { oid: string, at: number, sig: string } | null = null
  /** The files git keeps the branch in (null: not looked up yet; empty: unknown, trust by age only). */
  #refFiles: string[] | null = null
  /** The mesh main the board names that no live peer could give this node, and since when. */
  #missing: { oid: string, since: number } | null = null
  /** The last `RECENT_MAINS` commits the local main was read at or moved to, newest first. */
  #recent: string[] = []

  /**
   * The newest mesh main fetched here (a commit: the fetch's connectivity
   * check peels it) that the local branch has not moved to yet (a deferred
   * sync), with when the first and the last such fetch were; null: none.
   */
  #ahead: { oid: string, since: number, at: number } | null = null

  #signal: AbortSignal | undefined
  /** The landing in progress (`landing`), which a sync waits for. */
  #landing: Promise<unknown> | null = null

  /** `signal` aborts the fetches of a sync (the leadership stopping). */
  constructor (init: LeaderInit, signal?: AbortSignal) {
    this.#init = init
    this.#signal = signal
  }

  /**
   * The local main as last read or moved here, while it surely has not moved
   * since: the files git keeps the branch in are as they were then (a stat
   * each, no git process), and it is less than `MAIN_RECHECK_MS` old. Else null.
   */
  trusted (): string | null {
    const seen = this.#seen
    if (seen === null) return null
    const files = this.#refFiles ?? []
    if (Date.now() - seen.at >= (files.length > 0 ? MAIN_RECHECK_MS : MAIN_RECHECK_BLIND_MS)) return null
    return files.length === 0 || refSignature(files) === seen.sig ? seen.oid : null
  }

  async read (): Promise<string | null> {
    this.#refFiles ??= await refFilesOf(this.#init.repo, this.#init.branch)
    // the signature before the read: a move in between makes the next `trusted` read again
    const sig = refSignature(this.#refFiles)
    const oid = await branchOid(this.#init.repo, this.#init.branch)
    this.#see(oid, sig)
    return oid
  }

  /** The local main is `oid` (null: unknown) as of now; `sig` is the branch files' signature when it was read. */
  #see (oid: string | null, sig = refSignature(this.#refFiles ?? [])): void {
    this.#seen = oid === null ? null : { oid, at: Date.now(), sig }
    if (oid !== null && this.#recent[0] !== oid) this.#recent = [oid, ...this.#recent.filter(o => o !== oid)].slice(0, RECENT_MAINS)
  }

  /**
   * Commits this repository has for sure, to announce as haves when fetching
   * from a peer (a new main, a handed-off branch): the mains it had lately,
   * newest first, which a peer that follows main has too. Saves reading the
   * branch tips and main's history with two git processes per fetch. Empty
   * before the local main was first read.
   */
  recentMains (): string[] {
    const ahead = this.#ahead?.oid
    return ahead === undefined ? [...this.#recent] : [ahead, ...this.#recent.filter(o => o !== ahead)]
  }

  /** Whether a main fetched without moving to it (a deferred sync) should be moved to now (`FOLLOW_LAND_QUIET_MS`, `FOLLOW_LAND_MAX_MS`). */
  landDue (now = Date.now()): boolean {
    const a = this.#ahead
    return a !== null && (now - a.at >= FOLLOW_LAND_QUIET_MS || now - a.since >= FOLLOW_LAND_MAX_MS)
  }

  /** Whether a fetched main waits for the local branch to move to it (see `sync`'s `defer`). */
  get behind (): boolean {
    return this.#ahead !== null
  }

  /**
   * Whether `oid` is a commit this repository certainly has: the local main as
   * last read or moved here, however long ago (commits are never removed from
   * under main; a main kept aside stays on its backup branch).
   */
  holds (oid: string): boolean {
    return this.#seen?.oid === oid || this.#ahead?.oid === oid
  }

  moved (oid: string | null): void {
    // the branch moved (a sync, or a merge landed here): a main fetched ahead of it is behind it now
    if (oid !== null) this.#ahead = null
    this.#see(oid)
  }

  /**
   * The board's main when no live peer could give it to this node (its
   * leader died right after publishing it, say), and since when; else null.
   */
  missing (): { oid: string, since: number } | null {
    const m = this.#missing
    return m !== null && m.oid === this.#init.node.board.snapshot().main.head ? m : null
  }

  async landing<T> (fn: () => Promise<T>): Promise<T> {
    const p = fn()
    this.#landing = p
    try {
      return await p
    } finally {
      if (this.#landing === p) this.#landing = null
    }
  }

  /**
   * Keeps this repository's main equal to the mesh main on the board: moves the
   * branch when the commit is here, else fetches it from the leader (or any
   * node that has merged), and brings a clean primary checkout along. Waits
   * for a landing in progress first (`landing`). `defer`: only fetch the new
   * main (a run can start from it: `holds`), and move the branch and checkout
   * later, by a sync without it (a follower while main moves fast).
   */
  async sync (opts: { defer?: boolean } = {}): Promise<void> {
    const { node, repo, branch, logger } = this.#init
    while (this.#landing !== null) {
      logger.debug('main:sync-after-landing')
      await this.#landing.catch(() => {})
    }
    const target = node.board.snapshot().main.head
    if (target === null) return
    const trusted = this.trusted()
    if (trusted === target) { this.#ahead = null; return }
    let local: string | null
    let here: string | null
    if (trusted !== null) {
      // the local main is known (its files have not changed since), and a new main is as good as never
      // here before it is fetched (but for one fetched by a deferred sync): no git process to ask (were it
      // here, the peer answers "up to date")
      local = trusted
      here = this.#ahead?.oid === target ? target : null
    } else {
      this.#refFiles ??= await refFilesOf(repo, branch)
      const sig = refSignature(this.#refFiles)
      // the local main and whether the target is here already, in one git process
      const found = await commitOids(repo, [`refs/heads/${branch}`, target])
      local = found[0] ?? null
      here = found[1] ?? null
      this.#see(local, sig)
      if (local === target) { this.#missing = null; this.#ahead = null; return }
    }
    if (here !== target) {
      const leader = node.board.snapshot().main.leader
      const sources = [leader, ...node.membership.alive().map(m => m.peerId)].filter((p): p is PeerIdString => p !== null && p !== node.peerId)
      let fetched = false
      for (const peer of sources) {
        try {
          const haves = this.recentMains()
          // objects only: the fast-forward below moves main to it, and shows it a commit (no ref to keep it meanwhile)
          await fetchFromPeer(node, peer, repo, target, { intoRef: null, timeoutMs: 5 * 60_000, logger, ...(haves.length > 0 ? { haves } : {}), ...(this.#signal !== undefined ? { signal: this.#signal } : {}) })
          fetched = true
          break
        } catch (err) {
          logger.debug('main:fetch-failed', { from: peer, error: toError(err).message })
          // the next try reads the haves from the repository (a remembered main could be gone: a backup branch deleted)
          this.#recent = []
        }
      }
      // not asked before (the trusted local main): no peer could give it, but it may be here all the same (an older main the board went back to)
      if (!fetched && here === null) fetched = (await commitOids(repo, [target]))[0] === target
      if (!fetched) {
        if (this.#missing?.oid !== target) this.#missing = { oid: target, since: Date.now() }
        return
      }
    }
    this.#missing = null
    if (opts.defer === true && local != null) {
      // the commit is here and checked (a run may start from it); the branch and checkout move later
      const now = Date.now()
      // (the same main again, as every board change asks, is no move: its quiet time goes on)
      const a = this.#ahead
      this.#ahead = a?.oid === target ? a : { oid: target, since: a?.since ?? now, at: now }
      return
    }
    this.#ahead = null
    this.moved(null)
    // the usual move first: a fast-forward of the clean checkout, which shows by itself that main only moves forward
    let how = local != null ? await advanceBranch(repo, branch, local, target, { fastForwardOnly: true }) : 'not-fast-forward'
    if (how === 'not-fast-forward') {
      // the fetch took the objects without asking what `target` is: only a commit may become main
      if ((await commitOids(repo, [target]))[0] !== target) {
        logger.warn('main:not-a-commit', { head: target, note: `the board names ${target.slice(0, 12)} as the mesh main, but it is no commit here: ${branch} left where it is` })
        return
      }
      // main only moves forward: a local main with commits the mesh main lacks (a person's commit,
      // or a merge this node made as leader and crashed before publishing) is kept on a backup branch
      if (local != null && !await isAncestor(repo, local, target)) {
        await this.#keepAside(local, target)
        return
      }
      how = await advanceBranch(repo, branch, local ?? null, target)
    }
    if (how === 'lost-race' || how === 'not-fast-forward') return
    this.moved(target)
    if (how === 'dirty') logger.warn('main:checkout-dirty', { repo, head: target, note: `${branch} moved to the mesh main but the checked-out working tree has local changes: left alone; run \`git reset --keep ${target.slice(0, 12)}\` when ready` })
    logger.info('main:updated', { head: target, checkout: how })
  }

  /**
   * Keeps `local` on `meshwork/local/<time>` and moves main to the mesh main
   * `target`: a clean checkout follows (`git reset --keep`), a dirty one is
   * left alone with the branch moved under it. Nothing is merged silently and
   * nothing is dropped: the backup branch holds it until a person decides.
   */
  async #keepAside (local: string, target: string): Promise<void> {
    const { repo, branch, logger } = this.#init
    const backup = `meshwork/local/${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${local.slice(0, 8)}`
    await git(['branch', backup, local], { cwd: repo })
    this.moved(null)
    const head = (await git(['symbolic-ref', '-q', 'HEAD'], { cwd: repo, allowFail: true })).stdout.toString().trim()
    let checkout = 'not-checked-out'
    if (await branchOid(repo, branch) !== local) return
    if (head === `refs/heads/${branch}`) {
      const clean = (await git(['diff-index', '--quiet', 'HEAD', '--'], { cwd: repo, allowFail: true })).code === 0
      if (clean && (await git(['reset', '-q', '--keep', target], { cwd: repo, allowFail: true })).code === 0) checkout = 'updated'
      else { await casBranch(repo, branch, target, local); checkout = 'dirty' }
    } else if (!await casBranch(repo, branch, target, local)) {
      return
    }
    this.moved(target)
    logger.warn('main:kept-aside', {
      backup,
      local,
      mesh: target,
      checkout,
      note: `this repository's ${branch} had commits the mesh main lacks (a commit made here, or a merge this node made as leader and never published): kept on ${backup}, ${branch} moved to the mesh main. Merge what you need through a task; delete the branch when done`
    })
  }
}

/**
 * The files whose change means `branch` may have moved: its loose ref,
 * packed-refs, and a reftable's table list (whichever the repository uses),
 * in the common git dir (where a linked worktree's branches live too). Empty
 * when git cannot say where that is.
 */
async function refFilesOf (repo: string, branch: string): Promise<string[]> {
  const common = await gitCommonDir(repo).catch(() => null)
  if (common === null) return []
  return [join(common, 'refs', 'heads', ...branch.split('/')), join(common, 'packed-refs'), join(common, 'reftable', 'tables.list')]
}

/**
 * Inode, size and modification time of each file ('-' where missing). Git
 * writes a ref by renaming a new file into place, so any move of the branch
 * changes this; a stat is microseconds, a git process tens of milliseconds.
 */
function refSignature (files: string[]): string {
  return files.map(f => {
    const s = statSync(f, { throwIfNoEntry: false, bigint: true })
    return s === undefined ? '-' : `${s.ino}:${s.size}:${s.mtimeNs}`
  }).join(' ')
}

async function isAncestor (repo: string, ancestor: string, of: string): Promise<boolean> {
  return (await git(['merge-base', '--is-ancestor', ancestor, of], { cwd: repo, allowFail: true })).code === 0
}
