import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { git, gitText, type GitResult } from './git.ts'
import { STALE_LOCK_NOTE } from './stale-lock.ts'
import { headOid, isOid } from './repo.ts'
import type { CommitWriter } from './commit-writer.ts'
import { commitEnv, TASK_TRAILER } from './worktree.ts'
import { agentEnv } from '../agent/process.ts'
import { conflictHunks, parseMergeTree } from './conflict.ts'
import type { ConflictHunk } from '../crdt/schema.ts'
import { runInGroup } from '../agent/process.ts'

/** The outcome of merging a task branch into main, computed without touching any checkout. */
export type MergeAttempt =
  | { kind: 'clean', tree: string }
  | { kind: 'conflict', tree: string, files: string[], hunks: ConflictHunk[] }

/**
 * `git merge-tree --write-tree main head`: a clean tree, or the conflicted
 * files with their hunks (main's side as `ours`, the task's as `theirs`).
 */
export async function tryMerge (repo: string, main: string, head: string): Promise<MergeAttempt> {
  const res = await git(['merge-tree', '--write-tree', '-z', main, head], { cwd: repo, allowFail: true })
  const out = parseMergeTree(res.stdout.toString('utf8'))
  if (res.code === 0) return { kind: 'clean', tree: out.tree }
  // a conflict still writes its tree; exit 1 without one is git refusing an input ("<oid> - not
  // something we can merge": a commit not in this repository), which no human can resolve
  if (res.code === 1 && isOid(out.tree)) {
    const files = [...new Set(out.stages.map(s => s.path))]
    return { kind: 'conflict', tree: out.tree, files, hunks: await conflictHunks(repo, out) }
  }
  throw new Error(`git merge-tree failed (${res.code ?? 'killed'}): ${res.stderr.trim()}`)
}

/**
 * The merge commit of a task: two parents (main first) and the task trailer.
 * Written by `writer` when one is given and can (a batch's later merges:
 * src/git/commit-writer.ts), else by `git commit-tree`.
 */
export async function mergeCommit (repo: string, tree: string, main: string, head: string, taskId: string, title: string, writer?: CommitWriter): Promise<string> {
  const message = `Merge meshwork/${taskId}: ${title === '' ? taskId : title}\n\n${TASK_TRAILER}: ${taskId}\n`
  const written = await writer?.write(tree, [main, head], message)
  if (written != null) return written
  const env = commitEnv()
  return await gitText(['commit-tree', tree, '-p', main, '-p', head, '-F', '-'], { cwd: repo, input: message, env })
}

/** Compare-and-swap of a branch: moves it to `next` only if it still points at `prev`. */
export async function casBranch (repo: string, branch: string, next: string, prev: string | null): Promise<boolean> {
  const args = ['update-ref', '-m', 'meshwork: main advanced', `refs/heads/${branch}`, next]
  if (prev !== null) args.push(prev)
  return (await git(args, { cwd: repo, allowFail: true })).code === 0
}

/** The oid of a local branch, or null. */
export async function branchOid (repo: string, branch: string): Promise<string | null> {
  const r = await git(['rev-parse', '--verify', '--quiet', `refs/heads/${branch}^{commit}`], { cwd: repo, allowFail: true })
  return r.code === 0 ? r.stdout.toString().trim() : null
}

/** For each branch, the commit it points to, or null when it is missing or not a commit: one git process for all. */
export async function branchOids (repo: string, branches: readonly string[]): Promise<Array<string | null>> {
  return await commitOids(repo, branches.map(b => `refs/heads/${b}`))
}

/**
 * For each name (a full ref name or an oid), the commit it names in this
 * repository, or null when it is missing or not a commit: one git process for
 * all (an oid that is here reads as itself).
 */
export async function commitOids (repo: string, names: readonly string[]): Promise<Array<string | null>> {
  if (names.length === 0) return []
  const r = await git(['cat-file', '--batch-check=%(objectname) %(objecttype)'], { cwd: repo, input: names.join('\n') + '\n', allowFail: true })
  const lines = r.code === 0 ? r.stdout.toString('utf8').split('\n') : []
  return names.map((_, i) => /^([0-9a-f]{40}|[0-9a-f]{64}) commit$/.exec(lines[i] ?? '')?.[1] ?? null)
}

/**
 * Whether the repository has the commit `oid`: a commit itself, not a tag
 * that points at one (`<oid>^{commit}` would peel it, and a branch set to the
 * tag's id would name no commit).
 */
export async function hasCommit (repo: string, oid: string): Promise<boolean> {
  return (await commitOids(repo, [oid]))[0] === oid
}

/**
 * Moves `branch` from `prev` to `next` (compare-and-swap) and brings a clean
 * checked-out primary worktree along in the same step (`git merge --ff-only`,
 * which updates the files before the ref, so the checkout never looks dirty
 * halfway). A dirty checkout is left alone with the branch moved under it.
 * Returns how the checkout fared, or 'lost-race' when the branch was not at `prev`.
 *
 * `fastForwardOnly`: whether `next` descends from `prev` is not known yet;
 * the branch moves only by a fast-forward of its clean checkout (which shows
 * by itself that it does), else nothing changes and the answer is
 * 'not-fast-forward' (the caller finds out, then calls again without it).
 * Saves the ancestry check's git process on every node's usual move of main.
 */
export async function advanceBranch (repo: string, branch: string, prev: string | null, next: string, opts: { fastForwardOnly?: boolean } = {}): Promise<'updated' | 'dirty' | 'not-checked-out' | 'lost-race' | 'not-fast-forward'> {
  const st = await worktreeStatus(repo)
  const where = st ?? await checkoutOf(repo, branch)
  if (where.bare || where.head !== `refs/heads/${branch}`) {
    if (opts.fastForwardOnly === true) return 'not-fast-forward'
    return await casBranch(repo, branch, next, prev) ? 'not-checked-out' : 'lost-race'
  }
  if (prev !== null && where.oid !== prev) return 'lost-race'
  const clean = prev !== null && (st !== null ? st.clean : (await git(['diff-index', '--quiet', 'HEAD', '--'], { cwd: repo, allowFail: true })).code === 0)
  if (clean) {
    // a fast-forward writes no object: git's auto maintenance after it (a second process) has nothing new to do
    const fastForward = async (): Promise<GitResult> => await git(['-c', 'maintenance.auto=false', 'merge', '--ff-only', '-q', next], { cwd: repo, allowFail: true, env: commitEnv() })
    let ff = await fastForward()
    // a stale lock on the branch, just removed (stale-lock.ts): once more, rather than move the branch without its checkout
    if (ff.code !== 0 && ff.stderr.includes(STALE_LOCK_NOTE)) ff = await fastForward()
    // (git says "Already up to date" and exits 0 when `next` is behind the branch: only a HEAD at `next` is a move)
    if (ff.code === 0 && (opts.fastForwardOnly !== true || await headOid(repo) === next)) return 'updated'
  }
  if (opts.fastForwardOnly === true) return 'not-fast-forward'
  return await casBranch(repo, branch, next, prev) ? 'dirty' : 'lost-race'
}

/**
 * The primary worktree's HEAD (the branch it is on as a full ref name, or
 * `HEAD` when detached), HEAD's commit, and whether its tracked files match
 * HEAD: one `git status` for what `git rev-parse` and `git diff-index` told in
 * two processes, on every advance of main on every node. Untracked files do
 * not count (as for `diff-index`); ahead/behind counts are not computed (they
 * walk history). Null when status cannot answer (a bare repository): then
 * `checkoutOf` reads the facts.
 */
async function worktreeStatus (repo: string): Promise<{ bare: false, oid: string | null, head: string, clean: boolean } | null> {
  const r = await git(['status', '--porcelain=v2', '--branch', '--untracked-files=no', '--no-ahead-behind', '-z'], { cwd: repo, allowFail: true })
  if (r.code !== 0) return null
  let oid: string | null = null
  let head: string | null = null
  let clean = true
  for (const entry of r.stdout.toString('utf8').split('\0')) {
    if (entry.startsWith('# branch.oid ')) {
      const v = entry.slice('# branch.oid '.length)
      oid = /^[0-9a-f]{40,64}$/.test(v) ? v : null
    } else if (entry.startsWith('# branch.head ')) {
      const v = entry.slice('# branch.head '.length)
      head = v === '(detached)' ? 'HEAD' : `refs/heads/${v}`
    } else if (entry !== '' && !entry.startsWith('# ')) {
      // a changed tracked file (a rename's second path is an entry of its own: dirty all the same)
      clean = false
    }
  }
  return head === null ? null : { bare: false, oid, head, clean }
}

/**
 * Whether the repository is bare, the commit `branch` points to and the ref
 * HEAD names (`HEAD` when detached): one `git rev-parse` for the three (it was
 * three processes on every advance of main, on every node). A HEAD on an
 * unborn branch, or a missing `branch`, fails that call: then they are read
 * one by one.
 */
async function checkoutOf (repo: string, branch: string): Promise<{ bare: boolean, oid: string | null, head: string | null }> {
  // --symbolic-full-name applies to the arguments after it only: the branch reads as its oid, HEAD as the ref it names
  const r = await git(['rev-parse', '--is-bare-repository', `refs/heads/${branch}^{commit}`, '--symbolic-full-name', 'HEAD'], { cwd: repo, allowFail: true })
  const lines = r.stdout.toString('utf8').split('\n')
  if (r.code === 0 && lines.length >= 3) return { bare: lines[0] === 'true', oid: lines[1] ?? null, head: lines[2] ?? null }
  const head = await git(['symbolic-ref', '-q', 'HEAD'], { cwd: repo, allowFail: true })
  const bare = (await gitText(['rev-parse', '--is-bare-repository'], { cwd: repo })) === 'true'
  return { bare, oid: await branchOid(repo, branch), head: head.code === 0 ? head.stdout.toString().trim() : null }
}

/** Result of `--verify` on a candidate merge. */
export interface VerifyResult {
  ok: boolean
  output: string
  ms: number
  /** The check ran past its time limit and was killed with its process group (then `ok` is false). */
  timedOut: boolean
}

/** Longest `--verify` run before it is killed and counts as failed (`--verify-timeout`). @default 30 min */
export const DEFAULT_VERIFY_TIMEOUT_MS = 30 * 60_000

/** Characters of a `--verify` run's output kept (its end). @default 8000 */
export const VERIFY_OUTPUT_CHARS = 8000

export interface VerifyOptions {
  /** Aborting kills the check's whole process group; `runVerify` then rejects with the signal's reason. */
  signal?: AbortSignal | undefined
  /** Time limit; null or 0: none. @default DEFAULT_VERIFY_TIMEOUT_MS */
  timeoutMs?: number | null | undefined
}

/**
 * Runs `--verify` through the shell in a detached worktree of the candidate,
 * in its own process group, then removes the worktree. A check still running
 * after `timeoutMs` is killed with its whole group (SIGTERM, then SIGKILL) and
 * counts as failed, with the output it gave so far. Aborting `signal` (the
 * task was cancelled, leadership changed, the node stops) kills the group too
 * and rejects. Whatever the check left running in its group is killed when it
 * exits.
 */
export async function runVerify (repo: string, worktreesDir: string, candidate: string, cmd: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  opts.signal?.throwIfAborted()
  const path = join(worktreesDir, `.verify-${candidate.slice(0, 12)}`)
  await mkdir(worktreesDir, { recursive: true })
  await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
  await git(['worktree', 'add', '--detach', '--force', path, candidate], { cwd: repo })
  const started = Date.now()
  const limit = opts.timeoutMs === undefined ? DEFAULT_VERIFY_TIMEOUT_MS : opts.timeoutMs
  const abort = new AbortController()
  const onAbort = (): void => { abort.abort(opts.signal?.reason) }
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  const timer = limit !== null && limit > 0 ? setTimeout(() => { run.kill('timeout') }, limit) : null
  let out = ''
  const keep = (line: string): void => { out = (out + line + '\n').slice(-VERIFY_OUTPUT_CHARS) }
  const run = runInGroup({ file: '/bin/sh', args: ['-c', cmd], cwd: path, env: { ...agentEnv(), MESHWORK_CANDIDATE: candidate }, stdin: '', signal: abort.signal, onStdoutLine: keep, onStderrLine: keep })
  try {
    const exit = await run.done
    if (exit.spawnError !== null) throw new Error(`--verify "${cmd}" could not start: ${exit.spawnError.message}`)
    if (exit.aborted) throw opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('--verify was stopped')
    const ms = Date.now() - started
    if (exit.killedFor === 'timeout') return { ok: false, output: `${out.trim()}\n--verify timed out after ${formatLimit(limit as number)} and was killed with its process group`.trim(), ms, timedOut: true }
    return { ok: exit.code === 0, output: out.trim(), ms, timedOut: false }
  } finally {
    if (timer !== null) clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onAbort)
    await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
    await rm(path, { recursive: true, force: true })
  }
}

function formatLimit (ms: number): string {
  if (ms < 1000) return `${ms} ms`
  if (ms < 120_000) return `${+(ms / 1000).toFixed(1)} s`
  return `${+(ms / 60_000).toFixed(1)} min`
}

/**
 * Merges `head` into `main` in a temporary detached worktree, settling every
 * conflicted hunk for one side (`-X ours` keeps main's side, `-X theirs` the
 * task's). Returns the merge commit (two parents, the task trailer), or throws
 * when git cannot settle the conflict that way (e.g. a file deleted on one side).
 */
export async function mergeTakingSide (repo: string, worktreesDir: string, main: string, head: string, side: 'ours' | 'theirs', taskId: string, title: string): Promise<string> {
  const path = join(worktreesDir, `.resolve-${taskId}`)
  await mkdir(worktreesDir, { recursive: true })
  await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
  await git(['worktree', 'add', '--detach', '--force', path, main], { cwd: repo })
  try {
    const message = `Merge meshwork/${taskId}: ${title === '' ? taskId : title} (conflicts: ${side})\n\n${TASK_TRAILER}: ${taskId}\n`
    const res = await git(['merge', '--no-ff', '--no-edit', '-X', side, '-m', message, head], { cwd: path, allowFail: true, env: commitEnv() })
    if (res.code !== 0) {
      const detail = (res.stdout.toString() + res.stderr).trim().split('\n').slice(-4).join(' | ')
      throw new Error(`git could not settle the conflict by taking "${side}": ${detail}`)
    }
    return await gitText(['rev-parse', 'HEAD'], { cwd: path })
  } finally {
    await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
    await rm(path, { recursive: true, force: true })
  }
}
