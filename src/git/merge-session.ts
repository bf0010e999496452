/**
 * A batch's clean merges computed by one `git merge-tree --write-tree --stdin`
 * instead of one `git merge-tree` each. The leader stacks a batch's merges one
 * on another (each merge's first side is the merge commit before it), so they
 * cannot be handed to git at once; `--stdin` reads one pair of commits per line
 * and answers each with the merge's tree, so one such process computes them all
 * in turn. git's own merge (merge-ort) runs as with one process per merge, on
 * the same commits: the trees are the same.
 *
 * Some versions of git (2.39 among them) write the answers into their stdio
 * buffer, which reaches a pipe only when the process exits. So the process
 * runs with coreutils' `libstdbuf` preloaded (what `stdbuf -o0` does) when
 * that library is found, and each answer is written as soon as it is made.
 * Where neither works the first answer does not come within
 * `FIRST_ANSWER_MS`: the session ends, sessions are off for this process from
 * then on, and the caller merges with one process per merge (`tryMerge`), as
 * it does after any answer a session cannot give (a conflict, whose files and
 * hunks `tryMerge` lists; a process that failed). Three sessions in a row whose
 * git exits before its first answer (a git without `--stdin`) turn them off
 * too.
 *
 * The merge leader keeps its session and its commit writer from batch to
 * batch (`BatchProcesses`, below), so a batch starts no git process to stack
 * its merges.
 *
 * Measured on this project's 2-core AMD EPYC (40 merges of one-file branches,
 * each followed by a `commit-tree`): 22 ms a merge with a process each, 12 ms
 * through a session, quiet; 25-70 ms against 14-32 ms with four busy loops
 * beside it.
 */
import { existsSync } from 'node:fs'
import { endGit, spawnGit, writingObjects, type GitProcess } from './git.ts'
import { CommitWriter } from './commit-writer.ts'

/** How long a session that has not answered yet waits for its first answer before it is taken for a git that does not flush. @default 5 s */
export const FIRST_ANSWER_MS = 5000

/** How long a session that has answered before waits for an answer; past it the caller merges on its own. @default 60 s */
export const ANSWER_MS = 60_000

/** Where coreutils installs the library `stdbuf` preloads (Debian and Fedora, Arch, a local build). */
const STDBUF_LIBRARIES = ['/usr/libexec/coreutils/libstdbuf.so', '/usr/lib/coreutils/libstdbuf.so', '/usr/local/libexec/coreutils/libstdbuf.so']

/** Whether a session's answers arrive as they are made here: null until one has answered (or failed to). */
let flushes: boolean | null = null

/**
 * Sessions in a row whose git exited before it answered anything, while none
 * had answered yet: a git without `--stdin` (before 2.39 or so) dies at once on
 * the option. After `MAX_SILENT_DEATHS` of them sessions are off, as for a git
 * that does not flush; a single one is a merge git could not make (a commit
 * it lacks), which its merge of its own reports.
 */
let silentDeaths = 0
const MAX_SILENT_DEATHS = 3

/** For tests: forget what the last sessions showed. */
export function resetMergeSessions (): void {
  flushes = null
  silentDeaths = 0
}

/** Whether merge sessions are used in this process (false once one did not answer in time). */
export function mergeSessionsOn (): boolean {
  return flushes !== false
}

/** The environment that makes git's stdout unbuffered (`stdbuf -o0`), or none when the library is not here. */
function unbufferedEnv (library: string | null): NodeJS.ProcessEnv {
  if (library === null) return {}
  const preload = process.env.LD_PRELOAD
  return { LD_PRELOAD: preload === undefined || preload === '' ? library : `${preload}:${library}`, _STDBUF_O: '0' }
}

function findStdbuf (): string | null {
  for (const p of STDBUF_LIBRARIES) if (existsSync(p)) return p
  return null
}

/** Options for tests: the library to preload (null: none), and the first answer's bound. */
export interface MergeSessionOptions {
  stdbuf?: string | null
  firstAnswerMs?: number
}

/** A clean merge's answer: `1`, the tree, and the line's end (NUL each). */
const CLEAN = /^1\0([0-9a-f]{40}|[0-9a-f]{64})\0\0/

/**
 * One `git merge-tree --write-tree --stdin` in `repo`, started at the first
 * `merge`. `merge` resolves to the tree of a clean merge of `ours` and
 * `theirs`, or null when the session cannot say (a conflict, a failed or silent
 * process, sessions off): then it has ended, every later `merge` is null too,
 * and the caller merges with `tryMerge`. `close` ends the process; it is safe
 * to call more than once.
 */
export class MergeTreeSession {
  readonly #repo: string
  readonly #opts: MergeSessionOptions
  #proc: GitProcess | null = null
  #out = ''
  #wake: (() => void) | null = null
  #ended = false
  #broken = false
  #merges = 0

  constructor (repo: string, opts: MergeSessionOptions = {}) {
    this.#repo = repo
    this.#opts = opts
  }

  async merge (ours: string, theirs: string): Promise<string | null> {
    if (this.#broken || flushes === false) return null
    try {
      const proc = this.#start()
      const verified = flushes === true
      const bound = verified ? ANSWER_MS : (this.#opts.firstAnswerMs ?? FIRST_ANSWER_MS)
      // merge-tree writes the merge's trees: never beside a gc's repack or prune (git.ts)
      const tree = await writingObjects(async () => {
        proc.stdin.write(`${ours} ${theirs}\n`)
        return await this.#answer(bound)
      })
      if (tree === null) {
        // a session still running that never answered: this git does not flush its answers; none from now on
        // (one that exited said why on its stderr: the merge of its own that follows says it again)
        if (!verified && this.#out === '' && !this.#ended) flushes = false
        if (!verified && this.#out === '' && this.#ended && ++silentDeaths >= MAX_SILENT_DEATHS) flushes = false
        await this.close()
        return null
      }
      flushes = true
      silentDeaths = 0
      this.#merges++
      return tree
    } catch {
      await this.close()
      return null
    }
  }

  #start (): GitProcess {
    if (this.#proc !== null) return this.#proc
    const library = this.#opts.stdbuf === undefined ? findStdbuf() : this.#opts.stdbuf
    const proc = spawnGit(['merge-tree', '--write-tree', '--stdin'], { cwd: this.#repo, env: unbufferedEnv(library), direct: true })
    proc.stdout.setEncoding('latin1')
    proc.stdout.on('data', (chunk: string) => {
      this.#out += chunk
      this.#wake?.()
    })
    void proc.exited.then(() => {
      this.#ended = true
      this.#wake?.()
    })
    this.#proc = proc
    return proc
  }

  /** The next answer's tree when it is a clean merge; null for anything else, or none within `ms`. */
  async #answer (ms: number): Promise<string | null> {
    const deadline = Date.now() + ms
    for (;;) {
      const m = CLEAN.exec(this.#out)
      if (m !== null) {
        this.#out = this.#out.slice(m[0].length)
        return m[1] as string
      }
      // a conflict (`0`), or anything else: the rest of that answer is not read
      if (this.#out.length > 0 && !this.#out.startsWith('1')) return null
      if (this.#out.length > 2 && !/^1\0[0-9a-f]*\0?$/.test(this.#out)) return null
      if (this.#ended) return null
      const left = deadline - Date.now()
      if (left <= 0) return null
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.#wake = () => { clearTimeout(timer); resolve() }
      })
      this.#wake = null
    }
  }

  /** Whether `merge` may still answer (not ended), and how many merges it made. */
  get usable (): boolean {
    return !this.#broken && flushes !== false
  }

  get merges (): number {
    return this.#merges
  }

  /** Ends the process: its stdin closed, killed if it has not exited 5 s later (the caller need not wait). */
  async close (): Promise<void> {
    this.#broken = true
    const proc = this.#proc
    this.#proc = null
    if (proc !== null) await endGit(proc)
  }
}

/** A leader's merge processes go after this long without a batch. @default 10 s */
export const BATCH_PROCESSES_IDLE_MS = 10_000

/** Merges a session makes before it is replaced by a new one (git keeps every object it read in memory). @default 1000 */
export const MAX_SESSION_MERGES = 1000

/**
 * The merge leader's long-lived git processes, shared by its batches: a merge
 * session and a commit writer (commit-writer.ts), so a batch starts no git
 * process to stack its merges (a batch of one task started three: merge-tree,
 * commit-tree, and the end of the writer's and the session's). `take` gives
 * them to a batch (new ones in place of ended ones); `release` once the batch
 * is stacked: after `BATCH_PROCESSES_IDLE_MS` without a batch they are ended,
 * so an idle leader keeps no git process. `close` ends them at once.
 */
export class BatchProcesses {
  readonly #repo: string
  readonly #idleMs: number
  #merges: MergeTreeSession | null = null
  #writer: CommitWriter | null = null
  #idle: NodeJS.Timeout | null = null

  constructor (repo: string, idleMs = BATCH_PROCESSES_IDLE_MS) {
    this.#repo = repo
    this.#idleMs = idleMs
  }

  take (): { merges: MergeTreeSession, writer: CommitWriter } {
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = null
    if (this.#merges === null || !this.#merges.usable || this.#merges.merges >= MAX_SESSION_MERGES) {
      if (this.#merges !== null) void this.#merges.close()
      this.#merges = new MergeTreeSession(this.#repo)
    }
    if (this.#writer === null || !this.#writer.usable) {
      if (this.#writer !== null) void this.#writer.close()
      this.#writer = new CommitWriter(this.#repo)
    }
    return { merges: this.#merges, writer: this.#writer }
  }

  release (): void {
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = setTimeout(() => { void this.close() }, this.#idleMs)
    this.#idle.unref()
  }

  async close (): Promise<void> {
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = null
    const merges = this.#merges
    const writer = this.#writer
    this.#merges = null
    this.#writer = null
    await Promise.all([merges?.close(), writer?.close()])
  }
}
