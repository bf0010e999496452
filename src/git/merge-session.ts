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
 * runs with coreutils'
 * `libstdbuf` preloaded (what `stdbuf -o0` does) when that library is found,
 * so each answer is written as soon as it is made. Where neither works the
 * first answer does not come within `FIRST_ANSWER_MS`: the session ends,
 * sessions are off for this process from then on, and the caller merges with
 * one process per merge (`tryMerge`), as it does after any answer a session
 * cannot give (a conflict, whose files and hunks `tryMerge` lists; a process
 * that failed).
 *
 * Measured on this project's 2-core AMD EPYC (40 merges of one-file branches,
 * each followed by a `commit-tree`): 22 ms a merge with a process each, 12 ms
 * through a session, quiet; about half as well under load.
 */
import { existsSync } from 'node:fs'
import { spawnGit, writingObjects, type GitProcess } from './git.ts'

/** How long a session that has not answered yet waits for its first answer before it is taken for a git that does not flush. @default 5 s */
export const FIRST_ANSWER_MS = 5000

/** How long a session that has answered before waits for an answer; past it the caller merges on its own. @default 60 s */
export const ANSWER_MS = 60_000

/** Where coreutils installs the library `stdbuf` preloads (Debian and Fedora, Arch, a local build). */
const STDBUF_LIBRARIES = ['/usr/libexec/coreutils/libstdbuf.so', '/usr/lib/coreutils/libstdbuf.so', '/usr/local/libexec/coreutils/libstdbuf.so']

/** Whether a session's answers arrive as they are made here: null until one has answered (or failed to). */
let flushes: boolean | null = null

/** For tests: forget what the last sessions showed. */
export function resetMergeSessions (): void {
  flushes = null
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
        // a session that never answered: this git does not flush its answers (or hung); none from now on
        if (!verified && this.#out === '') flushes = false
        await this.close()
        return null
      }
      flushes = true
      return tree
    } catch {
      await this.close()
      return null
    }
  }

  #start (): GitProcess {
    if (this.#proc !== null) return this.#proc
    const library = this.#opts.stdbuf === undefined ? findStdbuf() : this.#opts.stdbuf
    const proc = spawnGit(['merge-tree', '--write-tree', '--stdin'], { cwd: this.#repo, env: unbufferedEnv(library) })
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

  async close (): Promise<void> {
    this.#broken = true
    const proc = this.#proc
    this.#proc = null
    if (proc === null) return
    proc.stdin.end()
    const exited = await Promise.race([proc.exited, new Promise<null>(resolve => setTimeout(() => resolve(null), 5000).unref())])
    if (exited === null) proc.kill()
  }
}
