/**
 * Merge commits of a batch written by one git process instead of one `git
 * commit-tree` each. The leader stacks a batch's merges one on another (each
 * merge's base is the one before), so their commits cannot be made by a
 * single git call; `git hash-object -t commit -w --stdin-paths` reads one
 * path per line and answers each with the object's id at once, so one such
 * process writes them all: git still checks and writes every object (a
 * malformed commit is refused, and ends the process), this module only
 * formats the commit's text as `commit-tree` would. Unlike `commit-tree`,
 * git does not look for the tree and parents here: the caller passes what git
 * just made or fetched (the merge's tree, main and the task's head).
 *
 * Used only where the result is the same as `commit-tree`'s: identities from
 * `git var` (the names and e-mails `commit-tree` would use, with a fresh time
 * per commit), no signing (`commit.gpgSign`) and no other encoding
 * (`i18n.commitEncoding`) configured, and no fixed date in the environment.
 * Anything else, or a process that fails, and the caller uses `commit-tree`.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { endGit, git, spawnGit, writingObjects, type GitProcess } from './git.ts'
import { gitDirOf, isOid } from './repo.ts'
import { commitEnv } from './worktree.ts'
import { processAlive } from '../util/pid.ts'

/** How long identities read with `git var` are used before they are read again (a time zone may change). @default 10 min */
export const IDENT_TTL_MS = 10 * 60_000

interface Idents { author: string, committer: string, tz: string, at: number }
const identsByRepo = new Map<string, Idents | null>()

/** Whether `v` is one of git's spellings of true. */
function gitTrue (v: string | undefined): boolean {
  return v !== undefined && /^(true|yes|on|1)$/i.test(v.trim())
}

/**
 * The author and committer identities `commit-tree` would use here, without
 * their time (`Name <email>`), and the time zone; null when this repository
 * signs commits, writes another encoding, or the environment fixes a date.
 */
async function idents (repo: string): Promise<Idents | null> {
  const env = commitEnv()
  if (process.env.GIT_AUTHOR_DATE !== undefined || process.env.GIT_COMMITTER_DATE !== undefined) return null
  const cached = identsByRepo.get(repo)
  if (cached !== undefined && (cached === null || Date.now() - cached.at < IDENT_TTL_MS)) return cached
  const r = await git(['var', '-l'], { cwd: repo, env, allowFail: true })
  const vars = new Map<string, string>()
  for (const line of r.stdout.toString('utf8').split('\n')) {
    const eq = line.indexOf('=')
    if (eq > 0) vars.set(line.slice(0, eq).toLowerCase(), line.slice(eq + 1))
  }
  const split = (ident: string | undefined): { who: string, tz: string } | null => {
    const m = ident === undefined ? null : /^(.+ <[^<>\n]*>) \d+ ([+-]\d{4})$/.exec(ident)
    return m === null ? null : { who: m[1] as string, tz: m[2] as string }
  }
  const author = split(vars.get('git_author_ident'))
  const committer = split(vars.get('git_committer_ident'))
  const encoding = vars.get('i18n.commitencoding')
  const plain = r.code === 0 && author !== null && committer !== null && !gitTrue(vars.get('commit.gpgsign')) &&
    (encoding === undefined || /^utf-?8$/i.test(encoding.trim()))
  const found = plain ? { author: author.who, committer: committer.who, tz: committer.tz, at: Date.now() } : null
  identsByRepo.set(repo, found)
  return found
}

/** What the name of a writer's file starts with, before its process id. */
const FILE_PREFIX = 'meshwork-commit-'

/**
 * Where a writer keeps the file it hands git, and whether it made a directory
 * for it: in the repository's `.git` directory when it has one, else in a temp
 * dir of its own. A writer is kept open while its leader merges (merge-session.ts), so
 * a node killed then leaves the file behind: in the git dir the next writer
 * there removes it (its process is gone), rather than a directory in the
 * temp dir that nobody removes.
 */
async function fileFor (repo: string): Promise<{ file: string, dir: string | null }> {
  // a plain `.git` directory (repo.ts); a linked worktree's or anything else gets a temp dir
  const found = await gitDirOf(repo).catch(() => null)
  const gitDir = found !== null && !found.linked ? found.dir : null
  if (gitDir === null) {
    const dir = await mkdtemp(join(tmpdir(), FILE_PREFIX))
    return { file: join(dir, 'commit'), dir }
  }
  const names = await readdir(gitDir).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(FILE_PREFIX)) continue
    const pid = Number(name.slice(FILE_PREFIX.length).split('-')[0])
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid)) await rm(join(gitDir, name), { force: true })
  }
  return { file: join(gitDir, `${FILE_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`), dir: null }
}

/**
 * Writes commits through one `git hash-object -t commit -w --stdin-paths`
 * (see the top of this file). `write` resolves to the commit's id, or null
 * when this writer cannot make it (then `commit-tree` should); after a null
 * every later `write` is null too. One file holds each commit's text in turn
 * (git has read it by the time it answers). `close` ends the process and
 * removes the file; it is safe to call more than once.
 */
export class CommitWriter {
  #repo: string
  /** The file each commit's text is written to, and the directory made for it (null: none, the file is in the git dir). */
  #file: string | null = null
  #dir: string | null = null
  #proc: GitProcess | null = null
  #answers: AsyncIterator<string> | null = null
  #broken = false

  constructor (repo: string) {
    this.#repo = repo
  }

  async write (tree: string, parents: readonly string[], message: string): Promise<string | null> {
    if (this.#broken) return null
    try {
      const who = await idents(this.#repo)
      if (who === null) { this.#broken = true; return null }
      if (this.#proc === null) {
        const where = await fileFor(this.#repo)
        this.#file = where.file
        this.#dir = where.dir
        this.#proc = spawnGit(['hash-object', '-t', 'commit', '-w', '--stdin-paths'], { cwd: this.#repo, env: commitEnv(), direct: true })
        this.#answers = createInterface({ input: this.#proc.stdout, crlfDelay: Infinity })[Symbol.asyncIterator]()
      }
      const when = `${Math.floor(Date.now() / 1000)} ${who.tz}`
      const text = [`tree ${tree}`, ...parents.map(p => `parent ${p}`), `author ${who.author} ${when}`, `committer ${who.committer} ${when}`, '', message].join('\n')
      const file = this.#file as string
      await writeFile(file, text)
      const proc = this.#proc
      // written never beside a gc's repack or prune (git.ts)
      const answer = await writingObjects(async () => {
        proc.stdin.write(`${file}\n`)
        return await (this.#answers as AsyncIterator<string>).next()
      })
      const oid = answer.done === true ? '' : answer.value.trim()
      if (!isOid(oid)) { this.#broken = true; return null }
      return oid
    } catch {
      this.#broken = true
      return null
    }
  }

  /** Whether `write` may still make commits (it has not failed nor been closed). */
  get usable (): boolean {
    return !this.#broken
  }

  async close (): Promise<void> {
    const proc = this.#proc
    this.#proc = null
    this.#broken = true
    if (proc !== null) await endGit(proc)
    if (this.#dir !== null) await rm(this.#dir, { recursive: true, force: true })
    else if (this.#file !== null) await rm(this.#file, { force: true })
    this.#dir = null
    this.#file = null
  }
}
