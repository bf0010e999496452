import { createHash, randomBytes } from 'node:crypto'
import { link, mkdir, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { deflateSync } from 'node:zlib'
import { git } from './git.ts'

/**
 * Merge commits written straight into the repository's object store, the way
 * git writes a loose object (`commit <size>\0<body>`, zlib-deflated, under
 * `objects/xx/yyyy…`, through a temporary file linked into place), instead of
 * one `git commit-tree` process each. The merge leader makes one merge commit
 * per task, in a row (each task's merge is made on the previous one's commit);
 * on a host short of CPU each git process costs it a few hundred milliseconds,
 * and this halves the processes of a merge batch (`git merge-tree` stays: git
 * does the merge).
 *
 * Only where the bytes are certainly the ones `git commit-tree` would write: a
 * SHA-1 repository with no other object format or extension, no commit
 * encoding or shared permissions, no dates or object directory from the
 * environment, and an identity git would take as it is. Anywhere else `writeCommit` answers null
 * and the caller runs `git commit-tree`.
 */

/** A repository's loose object directory when commits may be written here, else null (found once per repository). */
const stores = new Map<string, Promise<string | null>>()

/** Environment variables under which git would write other bytes, or elsewhere. */
const GIT_ENV_OVERRIDES = ['GIT_OBJECT_DIRECTORY', 'GIT_AUTHOR_DATE', 'GIT_COMMITTER_DATE', 'GIT_DIR', 'GIT_COMMON_DIR']

async function storeOf (repo: string): Promise<string | null> {
  const key = resolve(repo)
  let p = stores.get(key)
  if (p === undefined) {
    p = (async () => {
      const paths = await git(['rev-parse', '--path-format=absolute', '--git-path', 'objects', '--show-object-format'], { cwd: repo, allowFail: true })
      const [objects, format] = paths.stdout.toString('utf8').split('\n')
      if (paths.code !== 0 || objects === undefined || !isAbsolute(objects) || format !== 'sha1') return null
      // any extension (another object format beside, say), a commit encoding, or shared permissions: git writes them
      const cfg = await git(['config', '--get-regexp', '^(extensions\\..*|i18n\\.commitencoding|core\\.sharedrepository)$'], { cwd: repo, allowFail: true })
      const extra = cfg.stdout.toString('utf8').split('\n').filter(l => l !== '' && l.toLowerCase() !== 'extensions.objectformat sha1')
      return extra.length === 0 ? objects : null
    })().catch(() => null)
    stores.set(key, p)
  }
  return await p
}

/** An identity git writes as given: no angle brackets or newlines, nothing git would trim at either end. */
function plainIdent (s: string): boolean {
  return s !== '' && !/[<>\n\0]/.test(s) && !/^[\s.,:;'"\\]|[\s.,:;'"\\]$/.test(s)
}

/** `+hhmm` / `-hhmm`: this process's local offset from UTC now, as git writes it. */
function tzOffset (now: Date): string {
  const m = -now.getTimezoneOffset()
  const a = Math.abs(m)
  return `${m < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}${String(a % 60).padStart(2, '0')}`
}

export interface CommitSpec {
  tree: string
  parents: readonly string[]
  /** Author and committer (the same person). */
  name: string
  email: string
  message: string
}

/**
 * Writes the commit `spec` describes into `repo` (dated now) and returns its
 * oid, or null when this repository or environment needs `git commit-tree`
 * (see above). Safe to call while other git processes run: the object is
 * complete before it appears under its name, and an object already there is
 * left as it is.
 */
export async function writeCommit (repo: string, spec: CommitSpec): Promise<string | null> {
  if (GIT_ENV_OVERRIDES.some(k => process.env[k] !== undefined) || !plainIdent(spec.name) || !plainIdent(spec.email)) return null
  const objects = await storeOf(repo)
  if (objects === null) return null
  const now = new Date()
  const ident = `${spec.name} <${spec.email}> ${Math.floor(now.getTime() / 1000)} ${tzOffset(now)}`
  const body = Buffer.from(`tree ${spec.tree}\n${spec.parents.map(p => `parent ${p}\n`).join('')}author ${ident}\ncommitter ${ident}\n\n${spec.message}`, 'utf8')
  const raw = Buffer.concat([Buffer.from(`commit ${body.length}\0`), body])
  const oid = createHash('sha1').update(raw).digest('hex')
  const dir = join(objects, oid.slice(0, 2))
  const path = join(dir, oid.slice(2))
  if (await exists(path)) return oid
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `tmp_obj_meshwork_${randomBytes(6).toString('hex')}`)
  await writeFile(tmp, deflateSync(raw), { mode: 0o444, flag: 'wx' })
  try {
    // as git does: a link (an object that appeared meanwhile has the same bytes and stays), else a rename
    await link(tmp, path).catch(async (err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') await rename(tmp, path) })
  } finally {
    await unlink(tmp).catch(() => {})
  }
  return oid
}

async function exists (p: string): Promise<boolean> {
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}
