/**
 * The main follower trusts the local main it last read without a git process
 * while the files git keeps the branch in are unchanged, and reads it again as
 * soon as they change: a commit made in the repository, a ref packed by
 * `git pack-refs`, a branch in a linked worktree's common git dir.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText } from '../src/git/git.ts'
import { FOLLOW_LAND_MAX_MS, FOLLOW_LAND_QUIET_MS, MainFollower } from '../src/merge/main-follower.ts'
import type { LeaderInit } from '../src/merge/context.ts'
import { silentLogger } from '../src/util/logger.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { waitFor } from '../src/util/wait.ts'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

/** A follower of `repo`'s `branch`: `trusted` and `read` use only the repository, never the node. */
function follower (repo: string, branch = 'main'): MainFollower {
  const init: Pick<LeaderInit, 'repo' | 'branch' | 'logger' | 'worktreesDir'> = { repo, branch, logger: silentLogger, worktreesDir: join(repo, '..', 'wt') }
  return new MainFollower(init as LeaderInit)
}

/** A repository with one commit (`base`), and a follower of it whose node's board names `head()` as the mesh main, led by `leader`. */
async function boardFollower (prefix: string, leader: string, head: (base: string) => string, logger = silentLogger): Promise<{ root: string, repo: string, base: string, f: MainFollower }> {
  const root = await mkdtemp(join(tmpdir(), prefix))
  dirs.push(root)
  const repo = await initRepo(join(root, 'repo'))
  const base = await commitFiles(repo, { 'a.txt': 'a\n' }, 'base')
  const node = { peerId: 'me', board: { snapshot: () => ({ main: { head: head(base), leader } }) }, membership: { alive: () => [] } }
  const init: Pick<LeaderInit, 'repo' | 'branch' | 'logger' | 'worktreesDir'> & { node: unknown } = { repo, branch: 'main', logger, worktreesDir: join(root, 'wt'), node }
  return { root, repo, base, f: new MainFollower(init as LeaderInit) }
}

describe('MainFollower.trusted', () => {
  it('holds while the branch is unchanged and drops at once when a commit moves it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'meshwork-follower-'))
    dirs.push(root)
    const repo = await initRepo(join(root, 'repo'))
    const first = await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
    const f = follower(repo)
    expect(f.trusted(), 'nothing read yet').toBeNull()
    expect(await f.read()).toBe(first)
    expect(f.trusted()).toBe(first)
    expect(f.trusted(), 'still, with nothing changed').toBe(first)

    // a person's commit on main: no longer trusted, and the next read sees it
    const second = await commitFiles(repo, { 'b.txt': 'b\n' }, 'second')
    expect(f.trusted()).toBeNull()
    expect(await f.read()).toBe(second)
    expect(f.trusted()).toBe(second)

    // the loose ref packed away (the branch did not move, its files did): read again, same commit
    await git(['pack-refs', '--all'], { cwd: repo })
    expect(f.trusted()).toBeNull()
    expect(await f.read()).toBe(second)
    // a move of the packed branch rewrites packed-refs or a new loose ref
    await git(['update-ref', 'refs/heads/main', first], { cwd: repo })
    expect(f.trusted()).toBeNull()
    expect(await f.read()).toBe(first)
  })

  it('watches the common git dir: a commit on the branch from a linked worktree drops the trust', async () => {
    const root = await mkdtemp(join(tmpdir(), 'meshwork-follower-wt-'))
    dirs.push(root)
    const repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
    await git(['branch', 'trunk'], { cwd: repo })
    await git(['worktree', 'add', '-q', join(root, 'linked'), 'trunk'], { cwd: repo })
    // the follower runs in the linked worktree, the branch moves there
    const f = follower(join(root, 'linked'), 'trunk')
    const before = await f.read()
    expect(f.trusted()).toBe(before)
    const moved = await commitFiles(join(root, 'linked'), { 'c.txt': 'c\n' }, 'on trunk')
    expect(moved).not.toBe(before)
    expect(f.trusted()).toBeNull()
    expect(await f.read()).toBe(await gitText(['rev-parse', 'refs/heads/trunk'], { cwd: repo }))
  })

  it('moved() after this node moves the branch itself is trusted without a read', async () => {
    const root = await mkdtemp(join(tmpdir(), 'meshwork-follower-moved-'))
    dirs.push(root)
    const repo = await initRepo(join(root, 'repo'))
    const first = await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
    const f = follower(repo)
    await f.read()
    const second = await gitText(['commit-tree', '-p', first, '-m', 'next', `${first}^{tree}`], { cwd: repo })
    f.moved(null)
    await git(['update-ref', 'refs/heads/main', second, first], { cwd: repo })
    f.moved(second)
    expect(f.trusted()).toBe(second)
  })
})

describe('MainFollower.landing', () => {
  it('a sync while the leader lands a merge waits for it: the local main ahead of the board for that moment is not kept aside', async () => {
    const events: string[] = []
    const logger = { ...silentLogger, debug: (event: string) => { events.push(event) } }
    // the board names `head` as the mesh main (the base until the landing says otherwise); this node is its leader
    let head: string | null = null
    const { repo, base, f } = await boardFollower('meshwork-follower-landing-', 'me', b => head ?? b, logger)
    const tip = await gitText(['commit-tree', '-p', base, '-m', 'merged', `${base}^{tree}`], { cwd: repo })
    expect(await f.read()).toBe(base)
    let release: () => void = () => {}
    const held = new Promise<void>(resolve => { release = resolve })
    // the landing: main moves to the merge first, the board names it after (held here in between)
    const landing = f.landing(async () => {
      f.moved(null)
      await git(['merge', '--ff-only', '-q', tip], { cwd: repo })
      await held
      f.moved(tip)
      head = tip
    })
    // a run preparing its worktree asks for a sync meanwhile
    let synced = false
    const sync = f.sync().then(() => { synced = true })
    // released once the sync waits for the landing, or (were it not to wait) once it is over
    await waitFor(() => synced || events.includes('main:sync-after-landing'), { timeoutMs: 60_000, message: 'the sync neither waited nor finished' })
    release()
    await landing
    await sync
    expect(await gitText(['for-each-ref', '--format=%(refname)', 'refs/heads/meshwork/local/'], { cwd: repo }), 'main kept aside').toBe('')
    expect(await gitText(['rev-parse', 'refs/heads/main'], { cwd: repo })).toBe(tip)
    expect(f.trusted()).toBe(tip)
  })
})

describe('MainFollower deferred sync (a node that does not lead)', () => {
  it('takes a new main as a commit a run may start from, moves the branch only on a sync without defer, and dates its quiet time from the last new main', async () => {
    // the board names `head` as the mesh main; another node leads
    let head = ''
    const { repo, base, f } = await boardFollower('meshwork-follower-defer-', 'other', () => head)
    // mesh mains this node has the objects of (as after a fetch) but its branch does not point at
    const next = await gitText(['commit-tree', '-p', base, '-m', 'next', `${base}^{tree}`], { cwd: repo })
    const next2 = await gitText(['commit-tree', '-p', next, '-m', 'next2', `${base}^{tree}`], { cwd: repo })
    const tree = await gitText(['rev-parse', `${base}^{tree}`], { cwd: repo })
    head = next
    expect(await f.read()).toBe(base)
    const branch = async (): Promise<string> => await gitText(['rev-parse', 'refs/heads/main'], { cwd: repo })

    const t0 = Date.now()
    await f.sync({ defer: true })
    const t1 = Date.now()
    expect(await branch(), 'a deferred sync moved the branch').toBe(base)
    expect(f.holds(next), 'a run may start from the fetched main').toBe(true)
    expect(f.holds(base)).toBe(true)
    expect(f.behind).toBe(true)
    expect(f.recentMains()[0], 'the fetched main is a have for the next fetch').toBe(next)
    expect(f.landDue(t0 - 1)).toBe(false)
    expect(f.landDue(t1 + FOLLOW_LAND_QUIET_MS)).toBe(true)
    // the same main asked for again (every board change asks) does not start its quiet time over
    await waitFor(() => Date.now() > t1, { timeoutMs: 5000, message: 'the clock did not move' })
    await f.sync({ defer: true })
    expect(f.landDue(t1 + FOLLOW_LAND_QUIET_MS)).toBe(true)
    // a newer main does; but the first deferred one still bounds the wait
    head = next2
    await waitFor(() => Date.now() > t1 + 1, { timeoutMs: 5000, message: 'the clock did not move' })
    await f.sync({ defer: true })
    expect(f.holds(next2)).toBe(true)
    expect(f.landDue(t1 + FOLLOW_LAND_QUIET_MS), 'the quiet time dates from the newest main').toBe(false)
    expect(f.landDue(t1 + FOLLOW_LAND_MAX_MS)).toBe(true)
    expect(await branch()).toBe(base)

    // a sync without defer moves the branch (and the clean checkout) to the newest main
    await f.sync()
    expect(await branch()).toBe(next2)
    expect(await gitText(['rev-parse', 'HEAD'], { cwd: repo })).toBe(next2)
    expect(f.behind).toBe(false)
    expect(f.landDue(Date.now() + FOLLOW_LAND_MAX_MS)).toBe(false)
    expect(f.trusted()).toBe(next2)

    // a mesh main that is no commit is never taken as one a run may start from
    head = tree
    await f.sync({ defer: true })
    expect(f.holds(tree)).toBe(false)
    expect(f.behind).toBe(false)
    expect(await branch()).toBe(next2)
  })
})
