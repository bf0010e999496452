/**
 * Refs moved one at a time, often, through one `git update-ref --stdin`
 * process per repository instead of one `git update-ref` each: the leader
 * points a task's branch at the commit each hand-off brought (one per task
 * run elsewhere). In `--stdin` mode git takes transactions one after another
 * (`start`, `update`, `commit`) and answers each command at once
 * ("start: ok", "commit: ok"), so one process serves them all; git still
 * locks, checks and writes each ref (and its reflog) as the one-shot command
 * does. The reflog message is the one the process was started with.
 *
 * A transaction git refuses ends the process (git dies with the reason);
 * `update` then throws `GitError` with it, and the next update starts a new
 * process. After `IDLE_MS` without an update the process is let go.
 */
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { GitError, spawnGit, type GitProcess } from './git.ts'
import { clearStaleLock } from './stale-lock.ts'

/** How long a ref updater's process waits for the next update before it is let go. @default 10 s */
export const REF_UPDATER_IDLE_MS = 10_000

export class RefUpdater {
  readonly repo: string
  readonly message: string
  #proc: GitProcess | null = null
  #answers: AsyncIterator<string> | null = null
  #queue: Promise<unknown> = Promise.resolve()
  #idle: ReturnType<typeof setTimeout> | null = null
  #idleMs: number

  constructor (repo: string, message: string, idleMs = REF_UPDATER_IDLE_MS) {
    this.repo = repo
    this.message = message
    this.#idleMs = idleMs
  }

  /** Points `ref` at `oid` (one transaction); updates run one at a time, in call order. */
  async update (ref: string, oid: string): Promise<void> {
    const run = this.#queue.then(async () => { await this.#update(ref, oid) })
    this.#queue = run.catch(() => {})
    await run
  }

  /** Whether a process is serving updates now. */
  get running (): boolean {
    return this.#proc !== null
  }

  async #update (ref: string, oid: string): Promise<void> {
    if (this.#idle !== null) { clearTimeout(this.#idle); this.#idle = null }
    if (/\s/.test(ref) || /\s/.test(oid)) throw new GitError(['update-ref', ref, oid], null, 'a ref or object name with white space')
    if (this.#proc === null) {
      this.#proc = spawnGit(['update-ref', '-m', this.message, '--stdin'], { cwd: this.repo })
      this.#answers = createInterface({ input: this.#proc.stdout, crlfDelay: Infinity })[Symbol.asyncIterator]()
      const proc = this.#proc
      void proc.exited.then(() => { if (this.#proc === proc) { this.#proc = null; this.#answers = null } })
    }
    const proc = this.#proc
    const answers = this.#answers as AsyncIterator<string>
    proc.stdin.write(`start\nupdate ${ref} ${oid}\ncommit\n`)
    for (const want of ['start: ok', 'commit: ok']) {
      const line = await answers.next()
      if (line.done === true || line.value.trim() !== want) {
        // git died on the transaction (its reason is on stderr) or said something else: this process is done
        if (this.#proc === proc) { this.#proc = null; this.#answers = null }
        proc.stdin.end()
        const { code, stderr } = await proc.exited
        const cleared = await clearStaleLock(stderr, this.repo)
        const why = stderr !== '' ? stderr : `unexpected answer: ${line.done === true ? '(none)' : line.value}`
        throw new GitError(['update-ref', '--stdin', ref, oid], code, cleared === null ? why : `${why.trimEnd()}\n${cleared}`)
      }
    }
    this.#idle = setTimeout(() => { this.close() }, this.#idleMs)
    this.#idle.unref()
  }

  /** Lets the process go (it ends at the end of its input); the next update starts another. */
  close (): void {
    if (this.#idle !== null) { clearTimeout(this.#idle); this.#idle = null }
    const proc = this.#proc
    this.#proc = null
    this.#answers = null
    proc?.stdin.end()
  }
}

const updaters = new Map<string, RefUpdater>()

/** The ref updater of `repo` for `message` (one per repository and message). */
export function refUpdater (repo: string, message: string): RefUpdater {
  const key = `${resolve(repo)}\0${message}`
  let u = updaters.get(key)
  if (u === undefined) {
    u = new RefUpdater(repo, message)
    updaters.set(key, u)
  }
  return u
}
