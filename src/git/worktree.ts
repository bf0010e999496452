import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { GitError, git, gitText, inWorktreeQueue } from './git.ts'
import { gitDirOf, headOid } from './repo.ts'
import { agentEnv, runInGroup, withTail } from '../agent/process.ts'
import { repoInfo, runMaintenance } from './transfer/quarantine.ts'

/** The trailer every commit meshwork makes for a task carries (`Meshwork-Task: <id>`: how main's history names the task a merge carries). */
export const TASK_TRAILER = 'Meshwork-Task'

/** Branch name of a task: `meshwork/<id>`. */
export function taskBranch (taskId: string): string {
  return `meshwork/${taskId}`
}

/** Branch of a task's last checkpoint: `meshwork-checkpoint/<id>` (outside `meshwork/`, so no task id can name it). */
export function checkpointBranch (taskId: string): string {
  return `meshwork-checkpoint/${taskId}`
}

/** A task run's worktree. */
export interface Worktree {
  path: string
  branch: string
  /** The commit the branch started from. */
  base: string
  /** This run has made a checkpoint. */
  checkpointed?: boolean
}

/** A `--setup` command that failed. */
export class SetupError extends Error {
  override name = 'SetupError'
}

/**
 * Where task worktrees live when `--worktrees` is not given: the data dir's
 * sibling `<data>-worktrees`, never inside the data dir (an agent works in a
 * worktree and must not reach the node's identity key, join token, board or
 * transcripts through its parents).
 */
export function defaultWorktreesDir (dataDir: string): string {
  const abs = resolve(dataDir)
  return join(dirname(abs), `${basename(abs)}-worktrees`)
}

/** Where worktrees lived before `--worktrees` (inside the data dir): emptied and removed at start. */
export const LEGACY_WORKTREES = 'worktrees'

/** Removes every worktree under `root` (git forgets them; their branches and commits stay). */
async function removeAllUnder (repo: string, root: string): Promise<string[]> {
  const removed: string[] = []
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const path = join(root, name)
    await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
    await rm(path, { recursive: true, force: true })
    removed.push(name)
  }
  await git(['worktree', 'prune'], { cwd: repo, allowFail: true })
  return removed
}

/**
 * A data dir of an older meshwork keeps its worktrees in `DATA/worktrees`.
 * They are what a crash left (a running node removes each when its run ends),
 * and a node prunes those at start anyway: the branches and commits are in the
 * repository, only a dead run's uncommitted files go, as before. Removes them
 * and the directory; returns the names removed.
 */
export async function removeLegacyWorktrees (repo: string, dataDir: string): Promise<string[]> {
  const root = join(dataDir, LEGACY_WORKTREES)
  if (!await exists(root)) return []
  const removed = await removeAllUnder(repo, root)
  await rm(root, { recursive: true, force: true })
  return removed
}

/** Name prefix of a spare worktree under the worktrees root (no task id starts with a dot: ids are valid in branch names). */
const SPARE_PREFIX = '.spare-'
/** Task commits between two runs of git's auto maintenance (`Worktrees.commit`). @default 20 */
export const COMMITS_PER_MAINTENANCE = 20

/**
 * Manages one worktree per task run under `root` (`--worktrees`, by default
 * beside the data dir), never inside the primary checkout or the data dir. Two
 * runs never share one: a leftover worktree of the same task (a crashed run) is
 * removed before a new one is made.
 */
export class Worktrees {
  readonly repo: string
  readonly root: string
  /** Task commits made here since git's auto maintenance last ran (see `commit`). */
  #commits = 0

  /** Whether `create` keeps a spare worktree ahead (see `#spare`). */
  #keepSpare: boolean

  /** `spare`: keep one worktree checked out ahead for the next run (a node does; off by default). */
  constructor (repo: string, root: string, opts: { spare?: boolean } = {}) {
    this.repo = repo
    this.root = root
    this.#keepSpare = opts.spare ?? false
  }

  /** Removes worktrees left by a crash (and a spare) and lets git forget them; returns the tasks' names. */
  async pruneStale (): Promise<string[]> {
    await mkdir(this.root, { recursive: true, mode: 0o700 })
    return (await removeAllUnder(this.repo, this.root)).filter(name => !name.startsWith(SPARE_PREFIX))
  }

  /**
   * The spare: a worktree checked out (detached) at an earlier run's base, made
   * in the background after a run's worktree, which the next run takes instead
   * of checking out the whole tree on its slot. Null: none made or being made.
   */
  #spare: Promise<string | null> | null = null
  #spareReady: string | null = null
  #spares = 0

  /**
   * Creates the worktree of a task run on branch `meshwork/<id>`, reset to
   * `base` (the mesh main at claim time); `--setup` is the caller's
   * (`runSetup`). Never stopped halfway: git killed while it moves the task's
   * branch would leave the branch's lock file. Takes the
   * spare worktree when one is ready (moved to the task's path, its files
   * brought to `base`: only what differs is written), and starts the next spare.
   */
  async create (taskId: string, base: string): Promise<Worktree> {
    await mkdir(this.root, { recursive: true })
    const path = join(this.root, taskId)
    const branch = taskBranch(taskId)
    if (await exists(path)) {
      await git(['worktree', 'remove', '--force', path], { cwd: this.repo, allowFail: true })
      await rm(path, { recursive: true, force: true })
      await git(['worktree', 'prune'], { cwd: this.repo, allowFail: true })
    }
    if (!await this.#fromSpare(path, branch, base)) {
      await git(['worktree', 'add', '--force', '-B', branch, path, base], { cwd: this.repo })
    }
    this.#makeSpare(base)
    return { path, branch, base }
  }

  /** Moves a ready spare to `path` and checks out `branch` at `base` there; false when there was none (or it failed: then it is gone). */
  async #fromSpare (path: string, branch: string, base: string): Promise<boolean> {
    const spare = this.#spareReady
    if (spare === null) return false
    this.#spareReady = null
    this.#spare = null
    try {
      const admin = await adminDirOf(spare)
      if (admin === null) throw new Error('not a plain linked worktree')
      await rename(spare, path)
      // git finds a linked worktree through its admin dir's `gitdir`: point it at the new place
      await writeFile(join(admin, 'gitdir'), join(path, '.git') + '\n')
      // -f: the spare's files are git's own (nothing ran in it); another worktree of the branch is a crashed run's
      await git(['checkout', '-q', '-f', '--ignore-other-worktrees', '-B', branch, base], { cwd: path })
      return true
    } catch {
      await this.remove({ path: await exists(path) ? path : spare }).catch(() => {})
      await rm(spare, { recursive: true, force: true }).catch(() => {})
      return false
    }
  }

  /** Starts a spare worktree at `base` in the background, unless one is ready or on its way. */
  #makeSpare (base: string): void {
    if (!this.#keepSpare || this.#spare !== null) return
    const path = join(this.root, `${SPARE_PREFIX}${process.pid}-${++this.#spares}`)
    const made = (async (): Promise<string | null> => {
      try {
        if (!await addDetached(this.repo, path, base)) await git(['worktree', 'add', '--force', '--detach', path, base], { cwd: this.repo })
        return path
      } catch {
        await rm(path, { recursive: true, force: true }).catch(() => {})
        return null
      }
    })()
    this.#spare = made
    void made.then(p => {
      if (this.#spare !== made) return
      if (p === null) this.#spare = null
      else this.#spareReady = p
    })
  }

  /** The spare worktree, once made (null: none). */
  async spareReady (): Promise<string | null> {
    return await this.#spare
  }

  /** Makes no more spares and removes the one there is (waiting for one on its way): at a node's stop. */
  async dropSpare (): Promise<void> {
    this.#keepSpare = false
    const path = await this.#spare
    this.#spare = null
    this.#spareReady = null
    if (path !== null && path !== undefined) await this.remove({ path }).catch(() => {})
  }

  /**
   * Commits whatever the agent left uncommitted, with the task trailer; an
   * agent that committed by itself keeps its commits. Returns the branch head.
   */
  /** The last `git maintenance run --auto` started after a task commit (never rejects); nothing waits for it but tests. */
  maintenance: Promise<void> = Promise.resolve()

  async commit (wt: Worktree, taskId: string, title: string): Promise<string> {
    await git(['add', '-A'], { cwd: wt.path })
    const message = `${title === '' ? taskId : title}\n\n${TASK_TRAILER}: ${taskId}\n`
    // committed straight away (not after a `git diff --cached --quiet`: one git process less per run, and
    // almost every run leaves something); git exits 1 when there is nothing to commit, and a failing hook
    // can exit 1 too: only with nothing staged is that "the agent committed everything itself"
    // `git commit` starts `git maintenance run --auto` (a second git process) after every commit: here it
    // runs once every COMMITS_PER_MAINTENANCE task commits instead, which keeps loose objects in check as well
    const args = ['-c', 'maintenance.auto=false', 'commit', '--no-verify', '-q', '-F', '-']
    const res = await git(args, { cwd: wt.path, input: message, env: commitEnv(), allowFail: true })
    if (res.code !== 0) {
      const staged = res.code !== 1 || (await git(['diff', '--cached', '--quiet'], { cwd: wt.path, allowFail: true })).code !== 0
      if (staged) throw new GitError(args, res.code, res.stderr)
    }
    if (++this.#commits >= COMMITS_PER_MAINTENANCE) {
      this.#commits = 0
      // git decides whether anything is due (loose objects, packs); never the run's failure
      this.maintenance = (async () => {
        const info = await repoInfo(this.repo).catch(() => null)
        if (info !== null) await runMaintenance(this.repo, info.commonDir)
      })().then(() => {}, () => {})
    }
    return await headOid(wt.path)
  }

  /**
   * Commits the worktree as it is now (tracked and untracked files) to the
   * task's checkpoint branch, on top of the branch head, without touching the
   * branch, the agent's index or its files: a private index is used. Returns
   * the checkpoint commit, or null when the files are as at this run's last one.
   */
  async checkpoint (wt: Worktree, taskId: string): Promise<string | null> {
    const index = join(this.root, `.${taskId}.checkpoint-index`)
    const env = { GIT_INDEX_FILE: index }
    try {
      await git(['read-tree', 'HEAD'], { cwd: wt.path, env })
      await git(['add', '-A'], { cwd: wt.path, env })
      const tree = await gitText(['write-tree'], { cwd: wt.path, env })
      // nothing changed since the last checkpoint of this run: no new commit (and no board write)
      const last = await git(['rev-parse', '--verify', '--quiet', `refs/heads/${checkpointBranch(taskId)}^{tree}`], { cwd: this.repo, allowFail: true })
      if (last.code === 0 && last.stdout.toString().trim() === tree && wt.checkpointed === true) return null
      wt.checkpointed = true
      const message = `meshwork checkpoint of ${taskId}\n\n${TASK_TRAILER}: ${taskId}\n`
      const commit = await gitText(['commit-tree', tree, '-p', 'HEAD', '-F', '-'], { cwd: wt.path, input: message, env: commitEnv() })
      await git(['update-ref', `refs/heads/${checkpointBranch(taskId)}`, commit], { cwd: this.repo })
      return commit
    } finally {
      await rm(index, { force: true })
    }
  }

  /** Removes the worktree; the branch (and its commits) stay in the repository. */
  async remove (wt: Pick<Worktree, 'path'>): Promise<void> {
    // what `git worktree remove --force` does, without a git process per task: the files, then the
    // worktree's administrative dir (which its `.git` file names); git itself when that is not plain
    const admin = await adminDirOf(wt.path)
    if (admin === null) await git(['worktree', 'remove', '--force', wt.path], { cwd: this.repo, allowFail: true })
    await rm(wt.path, { recursive: true, force: true })
    if (admin !== null) await rm(admin, { recursive: true, force: true })
  }
}

/**
 * Adds a linked worktree at `path`, detached at `commit` and checked out, as
 * `git worktree add --detach` does, in one git process where that takes three
 * (its `update-ref` and `reset --hard` children): the administrative files
 * that gitrepository-layout(5) describes (`worktrees/<id>/` with `gitdir`,
 * `commondir`, `HEAD`, and `locked` while it is made, which keeps `git
 * worktree prune` off it) and the worktree's `.git` file are written here,
 * then `git reset --hard` checks the files out. False, with nothing left
 * behind, when it cannot (the id is taken, `path` exists, git fails): the
 * caller asks git. Spares only: a run's own worktree goes through git.
 */
export async function addDetached (repo: string, path: string, commit: string): Promise<boolean> {
  const info = await repoInfo(repo)
  // in the queue of worktree commands: a gc's worktree prune would take the admin dir for a dead one while it is made
  return await inWorktreeQueue(repo, async () => await writeDetached(repo, info, path, commit))
}

async function writeDetached (repo: string, { commonDir, bare }: { commonDir: string, bare: boolean }, path: string, commit: string): Promise<boolean> {
  if (bare) return false
  // a sparse checkout or per-worktree config is copied into a new worktree by git (2.36 and later): git makes those
  const config = await readFile(join(commonDir, 'config'), 'utf8').catch(() => '')
  if (/^\s*(sparsecheckout|worktreeconfig)\s*=\s*(true|yes|on|1)\s*$/im.test(config) || /^\s*\[include/im.test(config)) return false
  // git names the admin dir after the worktree's dir, made a valid ref name component (`worktrees/<id>/HEAD`
  // is a ref): a leading dot becomes a dash, as git does; any other name git is left to make
  const id = basename(path).replace(/^\./, '-')
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(id) || id.includes('..') || id.endsWith('.lock')) return false
  const admin = join(commonDir, 'worktrees', id)
  await mkdir(dirname(admin), { recursive: true })
  try {
    await mkdir(admin)
  } catch {
    return false
  }
  let madePath = false
  try {
    await writeFile(join(admin, 'locked'), 'initializing\n')
    await writeFile(join(admin, 'commondir'), '../..\n')
    await writeFile(join(admin, 'HEAD'), `${commit}\n`)
    await mkdir(path)
    madePath = true
    await writeFile(join(path, '.git'), `gitdir: ${admin}\n`)
    await writeFile(join(admin, 'gitdir'), `${join(path, '.git')}\n`)
    await git(['reset', '--hard', '--quiet', '--no-recurse-submodules'], { cwd: path })
    await rm(join(admin, 'locked'))
    return true
  } catch {
    await rm(admin, { recursive: true, force: true }).catch(() => {})
    if (madePath) await rm(path, { recursive: true, force: true }).catch(() => {})
    return false
  }
}

/** Author and committer when the repository has none configured. */
export function commitEnv (): NodeJS.ProcessEnv {
  return {
    GIT_AUTHOR_NAME: process.env.GIT_AUTHOR_NAME ?? 'meshwork',
    GIT_AUTHOR_EMAIL: process.env.GIT_AUTHOR_EMAIL ?? 'meshwork@localhost',
    GIT_COMMITTER_NAME: process.env.GIT_COMMITTER_NAME ?? 'meshwork',
    GIT_COMMITTER_EMAIL: process.env.GIT_COMMITTER_EMAIL ?? 'meshwork@localhost'
  }
}

/**
 * The administrative dir of linked worktree `path` (`<common dir>/worktrees/<id>`),
 * when it is plain: its `.git` file names it, it names the worktree back
 * (`gitdir`), and it is not locked. Null otherwise (then git removes it).
 */
async function adminDirOf (path: string): Promise<string | null> {
  try {
    const git = await gitDirOf(path)
    if (git === null || !git.linked) return null
    const admin = git.dir
    if (basename(dirname(admin)) !== 'worktrees' || await exists(join(admin, 'locked'))) return null
    const back = (await readFile(join(admin, 'gitdir'), 'utf8')).trim()
    return resolve(admin, back) === resolve(path, '.git') ? admin : null
  } catch {
    return null
  }
}

async function exists (p: string): Promise<boolean> {
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}

/** Last output lines of a failing `--setup` quoted in its error. @default 10 */
const SETUP_TAIL_LINES = 10

/**
 * Runs `--setup` through the shell in the worktree, in its own process group
 * (everything it starts is killed with it): a non-zero exit is a `SetupError`
 * with its last output lines; an abort (cancel, lost claim, task timeout, node
 * stop) kills the group and rejects with the abort reason. Also used in the
 * worktree of an agent-resolved merge.
 */
export async function runSetup (cmd: string, cwd: string, signal?: AbortSignal, env?: NodeJS.ProcessEnv): Promise<void> {
  const out: string[] = []
  const keep = (line: string): void => {
    out.push(line.length > 300 ? line.slice(0, 299) + '…' : line)
    if (out.length > SETUP_TAIL_LINES) out.shift()
  }
  const exit = await runInGroup({ file: '/bin/sh', args: ['-c', cmd], cwd, env: { ...agentEnv(), ...env }, stdin: '', signal: signal ?? new AbortController().signal, onStdoutLine: keep, onStderrLine: keep }).done
  if (exit.aborted) throw signal?.reason instanceof Error ? signal.reason : new Error(`--setup "${cmd}" aborted`)
  if (exit.spawnError !== null) throw new SetupError(`--setup "${cmd}" could not start: ${exit.spawnError.message}`)
  if (exit.code === 0) return
  const how = exit.code !== null ? `exited ${exit.code}` : `was killed by ${exit.exitSignal ?? 'a signal'}`
  throw new SetupError(withTail(`--setup "${cmd}" ${how} in the task's worktree`, 'output', out, SETUP_TAIL_LINES))
}
