import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, writeSync } from 'node:fs'
import type { Readable, Writable } from 'node:stream'
import { resolve } from 'node:path'
import { runInHelper, streamInHelper } from './spawner.ts'
import { clearStaleLock, STALE_LOCK_NOTE } from './stale-lock.ts'

/** The environment git runs in: this process's, never prompting, in the C locale (its messages are parsed), then `extra`. */
function gitEnv (extra: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  return { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C', ...extra }
}

/**
 * The lines of git's stderr that say what went wrong: its `fatal:` and
 * `error:` lines and a stale lock's removal (stale-lock.ts), the last three;
 * else its last three lines. (After a lock in the way, git's last five lines
 * are advice that does not name the lock.)
 */
function summary (stderr: string): string {
  const lines = stderr.trim().split('\n')
  const said = lines.filter(l => /^(fatal|error): /.test(l) || l.startsWith(STALE_LOCK_NOTE))
  return (said.length > 0 ? said : lines).slice(-3).join(' | ')
}

/** A git command that exited non-zero. */
export class GitError extends Error {
  override name = 'GitError'
  readonly args: string[]
  readonly code: number | null
  readonly stderr: string
  constructor (args: string[], code: number | null, stderr: string) {
    super(`git ${args.join(' ')} failed (${code ?? 'killed'}): ${summary(stderr)}`)
    this.args = args
    this.code = code
    this.stderr = stderr
  }
}

export interface GitOptions {
  cwd: string
  /** Bytes written to git's stdin. */
  input?: string | Uint8Array
  signal?: AbortSignal
  env?: NodeJS.ProcessEnv
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFail?: boolean
  /** Cap on captured stdout (bytes); more is an error. @default 256 MiB */
  maxOutput?: number
}

export interface GitResult {
  code: number | null
  stdout: Buffer
  stderr: string
}

/**
 * Runs the system git with an argument array (never a shell string), without
 * blocking the event loop. Throws `GitError` on a non-zero exit unless
 * `allowFail` is set.
 */
export async function git (args: string[], opts: GitOptions): Promise<GitResult> {
  const sub = subcommand(args)
  const go = OBJECT_PRUNERS.has(sub)
    ? async () => await pruningObjects(async () => await run(args, opts))
    : OBJECT_WRITERS.has(sub) ? async () => await writingObjects(async () => await run(args, opts)) : async () => await run(args, opts)
  if (WORKTREE_QUEUE.has(sub)) return await inWorktreeQueue(opts.cwd, go)
  return await go()
}

/**
 * git commands that write loose objects. git writes one into `objects/xx/`,
 * making that directory first when it is missing; a repack or prune
 * (`OBJECT_PRUNERS`) removes every such directory it empties, and a write
 * that falls between fails ("unable to create temporary file: No such file
 * or directory", then "failed to insert into database"): seen as a task
 * commit's `git add -A` failing in a benchmark run, so the agent's work was
 * run again elsewhere, and shown with `hash-object -w` in a loop beside
 * `repack -a -d` (30 of 3,000 writes failed). These run beside each other,
 * never beside a pruner (`writingObjects`).
 */
const OBJECT_WRITERS = new Set([
  'add', 'commit', 'commit-tree', 'merge-tree', 'hash-object', 'mktree', 'write-tree', 'update-index',
  'merge', 'stash', 'cherry-pick', 'revert', 'rebase', 'am', 'apply', 'tag', 'notes', 'unpack-objects'
])

/** git commands that may remove object directories (see `OBJECT_WRITERS`): each runs alone. */
const OBJECT_PRUNERS = new Set(['maintenance', 'gc', 'repack', 'prune', 'prune-packed'])

// The object lock, for this whole process (a node has one repository; pruners are rare): writers share it, a
// pruner holds it alone, and a waiting pruner lets no new writer in.
let writers = 0
let pruner: Promise<void> | null = null
let writersDone: (() => void) | null = null
let writersWaiting = 0

/**
 * Runs `fn`, which writes objects (a git process that `git` does not start
 * itself, such as the commit writer's), never beside a git command that
 * prunes object directories (see `OBJECT_WRITERS`).
 */
export async function writingObjects<T> (fn: () => Promise<T>): Promise<T> {
  while (pruner !== null) {
    writersWaiting++
    await pruner.finally(() => { writersWaiting-- })
  }
  writers++
  try {
    return await fn()
  } finally {
    if (--writers === 0 && writersDone !== null) writersDone()
  }
}

async function pruningObjects<T> (fn: () => Promise<T>): Promise<T> {
  while (pruner !== null) await pruner
  let release = (): void => {}
  pruner = new Promise<void>(resolve => { release = resolve })
  try {
    if (writers > 0) await new Promise<void>(resolve => { writersDone = resolve })
    writersDone = null
    return await fn()
  } finally {
    pruner = null
    release()
  }
}

/** How many object writers wait for a pruner now (for tests). */
export function objectWritersWaiting (): number {
  return writersWaiting
}

/**
 * git commands that run one at a time per repository (`inWorktreeQueue`): git
 * reads every worktree's admin directory while adding, removing or pruning
 * one, and fails on a half-written one ("failed to read
 * .git/worktrees/x/commondir"); and gc, which a maintenance run starts (in the
 * foreground: callers pass `-c gc.autoDetach=false`), prunes an admin dir that
 * has neither its `gitdir` nor its `locked` file yet, which is how every
 * `worktree add` starts ("could not open '.git/worktrees/x/locked'", seen in a
 * benchmark run), and reads the `HEAD` it writes as a null id at first ("bad
 * object worktrees/x/HEAD").
 */
const WORKTREE_QUEUE = new Set(['worktree', 'maintenance', 'gc'])

/** The git subcommand of `args`, after any `-c name=value` options. */
function subcommand (args: readonly string[]): string {
  let i = 0
  while (args[i] === '-c') i += 2
  return args[i] ?? ''
}

/** Runs `fn` in the queue of repository `repo`'s worktree commands (see `WORKTREE_QUEUE`): for worktree admin files written without git. */
export async function inWorktreeQueue<T> (repo: string, fn: () => Promise<T>): Promise<T> {
  return await serialized(resolve(repo), fn)
}

const queues = new Map<string, Promise<unknown>>()

async function serialized<T> (key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve()
  const next = prev.then(fn, fn)
  const tail = next.catch(() => {})
  queues.set(key, tail)
  void tail.then(() => { if (queues.get(key) === tail) queues.delete(key) })
  return await next
}

/**
 * With `MESHWORK_BENCH_GIT_LOG` set (the benchmarks that count a node's git
 * processes), each git command this process starts is appended to that file,
 * its arguments on one line cut at 200 characters. Counted here rather than by
 * a `git` wrapper on PATH, whose shell start cost about 2 ms of CPU per call
 * and was counted as git's. Git's own children (a `worktree add`'s checkout)
 * are not counted, as they were not through the wrapper either.
 */
const GIT_LOG = process.env.MESHWORK_BENCH_GIT_LOG
let gitLogFd: number | null = null
function noteGit (args: readonly string[]): void {
  if (GIT_LOG === undefined || GIT_LOG === '') return
  try {
    gitLogFd ??= openSync(GIT_LOG, 'a')
    writeSync(gitLogFd, `${args.join(' ').slice(0, 200)}\n`)
  } catch {
    // a count the benchmark cannot write is its loss, never the node's
  }
}

async function run (args: string[], opts: GitOptions): Promise<GitResult> {
  noteGit(args)
  const max = opts.maxOutput ?? 256 * 1024 * 1024
  const env = gitEnv(opts.env)
  // started by a small helper process, so that the fork neither copies this process nor stalls its event loop (spawner.ts)
  const viaHelper = await runInHelper(args, { cwd: opts.cwd, env, input: opts.input, maxOutput: max, signal: opts.signal })
  if (viaHelper !== null) {
    if (viaHelper.over) throw new GitError(args, viaHelper.code, `output larger than ${max} bytes`)
    return await outcome(args, opts, { code: viaHelper.code, stdout: viaHelper.stdout, stderr: viaHelper.stderr })
  }
  const result = await new Promise<GitResult>((resolve, reject) => {
    const child = spawn('git', args, {
      cwd: opts.cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.signal !== undefined ? { signal: opts.signal } : {})
    })
    const out: Buffer[] = []
    let outBytes = 0
    let err = ''
    child.stdout.on('data', (c: Buffer) => {
      outBytes += c.length
      if (outBytes > max) {
        child.kill('SIGKILL')
        return
      }
      out.push(c)
    })
    child.stderr.on('data', (c: Buffer) => { if (err.length < 64 * 1024) err += c.toString() })
    child.on('error', reject)
    closeOnSignal(child)
    child.on('close', code => {
      if (outBytes > max) {
        reject(new GitError(args, code, `output larger than ${max} bytes`))
        return
      }
      resolve({ code, stdout: Buffer.concat(out), stderr: err })
    })
    child.stdin.on('error', () => {})
    if (opts.input !== undefined) child.stdin.end(opts.input)
    else child.stdin.end()
  })
  return await outcome(args, opts, result)
}

/** A finished git's result, or its `GitError`; a failure on a stale ref lock removes that lock first (stale-lock.ts). */
async function outcome (args: string[], opts: GitOptions, result: GitResult): Promise<GitResult> {
  if (result.code === 0) return result
  const cleared = await clearStaleLock(result.stderr, opts.cwd)
  const stderr = cleared === null ? result.stderr : `${result.stderr.trimEnd()}\n${cleared}\n`
  if (opts.allowFail !== true) throw new GitError(args, result.code, stderr)
  return { ...result, stderr }
}

/**
 * A process killed by a signal is over even while a process it started (a
 * hook, an alias, a remote helper) still holds its stdout or stderr: its
 * pipes are closed so that 'close' comes at once (the helper does the same).
 */
function closeOnSignal (child: ChildProcess): void {
  child.on('exit', (_code, signal) => {
    if (signal !== null) { child.stdout?.destroy(); child.stderr?.destroy() }
  })
}

/** Runs git and returns its stdout as trimmed text. */
export async function gitText (args: string[], opts: GitOptions): Promise<string> {
  return (await git(args, opts)).stdout.toString('utf8').trim()
}

/** A git process whose stdin and stdout the caller streams (see `spawnGit`). */
export interface GitProcess {
  readonly stdin: Writable
  readonly stdout: Readable
  /** Settles when the process has exited: its exit code (null if killed) and the start of its stderr. */
  readonly exited: Promise<{ code: number | null, stderr: string }>
  /** Kills the process if it is still running. */
  kill: () => void
}

/** Ends a long-lived git that reads requests on its stdin: the input closed, and the process killed if it has not exited `graceMs` later. */
export async function endGit (proc: GitProcess, graceMs = 5000): Promise<void> {
  proc.stdin.end()
  const exited = await Promise.race([proc.exited, new Promise<null>(resolve => setTimeout(() => resolve(null), graceMs).unref())])
  if (exited === null) proc.kill()
}

/**
 * Starts the system git with an argument array and leaves its stdin and stdout
 * to the caller, for data that should flow through rather than be buffered
 * (`pack-objects --stdout`, `index-pack --stdin`): through the helper process
 * when there is one (spawner.ts), else from this process. `direct`: from this
 * process all the same, for a long-lived git that answers one request after
 * another (a merge session, the commit writer): its one start costs this
 * process a fork, and each of its answers then comes straight here instead of
 * through the helper (two hops fewer, each a wait for a CPU on a busy host).
 * `exited` never rejects: a failed start resolves with code null and the error
 * in `stderr`.
 */
export function spawnGit (args: string[], opts: Omit<GitOptions, 'input' | 'allowFail' | 'maxOutput'> & { direct?: boolean }): GitProcess {
  noteGit(args)
  const env = gitEnv(opts.env)
  const viaHelper = opts.direct === true ? null : streamInHelper(args, { cwd: opts.cwd, env, signal: opts.signal })
  if (viaHelper !== null) return viaHelper
  const child = spawn('git', args, {
    cwd: opts.cwd,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(opts.signal !== undefined ? { signal: opts.signal } : {})
  })
  let err = ''
  child.stderr.on('data', (c: Buffer) => { if (err.length < 64 * 1024) err += c.toString() })
  child.stdin.on('error', () => {})
  child.stdout.on('error', () => {})
  closeOnSignal(child)
  const exited = new Promise<{ code: number | null, stderr: string }>(resolve => {
    let done = false
    child.on('error', e => {
      if (done) return
      err += `${e.message}\n`
      // a failed spawn emits no 'close'
      if (child.pid === undefined) { done = true; resolve({ code: null, stderr: err }) }
    })
    child.on('close', code => { if (!done) { done = true; resolve({ code, stderr: err }) } })
  })
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    exited,
    kill: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') }
  }
}
