/**
 * Small read-only helpers over a local git repository, built on `git()` (argument
 * arrays, never shell strings). Nothing here changes a repository.
 */
import { readFile, stat } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { git, gitText } from './git.ts'

import { OID_PATTERN, isOid } from '../crdt/schema.ts'

// one rule for an object id, the board's (40 hex digits for SHA-1, 64 for SHA-256)
export { OID_PATTERN as OID_RE, isOid }

/** Absolute path of the repository's common git dir (shared by all its worktrees). */
export async function gitCommonDir (repoDir: string, signal?: AbortSignal): Promise<string> {
  const dir = await gitText(['rev-parse', '--path-format=absolute', '--git-common-dir'], { cwd: repoDir, ...(signal !== undefined ? { signal } : {}) })
  return isAbsolute(dir) ? dir : resolve(repoDir, dir)
}

/**
 * The commit HEAD of a working tree names, as `git rev-parse HEAD` says: read
 * from git's own files when they are plain (the worktree's `.git` file, its
 * HEAD, the loose ref of the branch HEAD names), which spares a git process
 * after every task's commit; else from git (packed or reftable refs, a ref
 * that is itself symbolic, anything unexpected). Throws as git does when HEAD
 * names no commit.
 */
export async function headOid (worktree: string): Promise<string> {
  return await headFromFiles(worktree).catch(() => null) ?? await gitText(['rev-parse', 'HEAD'], { cwd: worktree })
}

/**
 * The git dir of the working tree at `worktree` as its `.git` says: that
 * directory itself, or the one a linked worktree's `.git` file names; null
 * when the file is not of that form. Throws when there is no `.git`.
 */
export async function gitDirOf (worktree: string): Promise<{ dir: string, linked: boolean } | null> {
  const dotGit = join(worktree, '.git')
  if ((await stat(dotGit)).isDirectory()) return { dir: dotGit, linked: false }
  const m = /^gitdir: (.+?)\r?\n?$/.exec(await readFile(dotGit, 'utf8'))
  return m === null ? null : { dir: resolve(worktree, m[1] as string), linked: true }
}

async function headFromFiles (worktree: string): Promise<string | null> {
  const gitDir = (await gitDirOf(worktree))?.dir
  if (gitDir === undefined) return null
  const head = (await readFile(join(gitDir, 'HEAD'), 'utf8')).trim()
  if (isOid(head)) return head
  const ref = /^ref: (refs\/heads\/\S+)$/.exec(head)?.[1]
  if (ref === undefined || !isWellFormedRefName(ref)) return null
  // a linked worktree's branches are in the common dir, which its `commondir` file names
  const common = await readFile(join(gitDir, 'commondir'), 'utf8').then(c => resolve(gitDir, c.trim()), () => gitDir)
  const oid = (await readFile(join(common, ...ref.split('/')), 'utf8').catch(() => '')).trim()
  return isOid(oid) ? oid : null
}

/** `sha1` or `sha256`. */
export async function objectFormat (repoDir: string, signal?: AbortSignal): Promise<string> {
  const fmt = await gitText(['rev-parse', '--show-object-format'], { cwd: repoDir, ...(signal !== undefined ? { signal } : {}) })
  return fmt === '' ? 'sha1' : fmt
}

/**
 * Whether `ref` is a well-formed full ref name starting with `refs/`, by the
 * rules of `git check-ref-format` (no `..`, `@{`, control characters, space,
 * `~^:?*[\\`, no component starting with `.` or ending with `.lock`, no empty
 * component, not ending with `.`), checked without starting git. Such a name
 * is read by git as exactly that ref, never as a revision expression.
 */
export function isWellFormedRefName (ref: string): boolean {
  if (!ref.startsWith('refs/') || ref.length > 1024) return false
  if (/[\0-\x20\x7f~^:?*[\\]/.test(ref) || ref.includes('..') || ref.includes('@{') || ref.endsWith('.')) return false
  return ref.split('/').every(c => c !== '' && !c.startsWith('.') && !c.endsWith('.lock'))
}

/** Whether `ref` is a well-formed full ref name (`git check-ref-format`), starting with `refs/`. */
export async function isValidRefName (repoDir: string, ref: string): Promise<boolean> {
  if (!ref.startsWith('refs/') || ref.length > 1024 || /[\0-\x20\x7f]/.test(ref)) return false
  const res = await git(['check-ref-format', ref], { cwd: repoDir, allowFail: true })
  return res.code === 0
}

/** Whether `name` is a well-formed branch name (`git check-ref-format --branch`). */
export async function isValidBranchName (cwd: string, name: string): Promise<boolean> {
  if (name === '' || name.startsWith('-') || name.length > 1024 || /[\0-\x20\x7f]/.test(name)) return false
  const res = await git(['check-ref-format', '--branch', name], { cwd, allowFail: true })
  return res.code === 0
}

/** The oid an exact full ref points to, or null if it does not exist. */
export async function refOid (repoDir: string, ref: string, signal?: AbortSignal): Promise<string | null> {
  if (!ref.startsWith('refs/')) throw new Error(`not a full ref name: ${ref}`)
  const res = await git(['show-ref', '--verify', '--hash', ref], { cwd: repoDir, allowFail: true, ...(signal !== undefined ? { signal } : {}) })
  if (res.code !== 0) return null
  const oid = res.stdout.toString('utf8').trim()
  return isOid(oid) ? oid : null
}

/** The type of an object (`commit`, `tree`, …), or null if the repository does not have it. */
export async function objectType (repoDir: string, oid: string, signal?: AbortSignal): Promise<string | null> {
  if (!isOid(oid)) return null
  const res = await git(['cat-file', '-t', oid], { cwd: repoDir, allowFail: true, ...(signal !== undefined ? { signal } : {}) })
  return res.code === 0 ? res.stdout.toString('utf8').trim() : null
}

/** Of `oids`, the ones that name commits present in the repository (order kept, duplicates dropped). */
export async function presentCommits (repoDir: string, oids: string[], signal?: AbortSignal): Promise<string[]> {
  const wanted = [...new Set(oids.filter(isOid))]
  if (wanted.length === 0) return []
  const out = await gitText(['cat-file', '--batch-check=%(objectname) %(objecttype)'], {
    cwd: repoDir, input: wanted.join('\n') + '\n', ...(signal !== undefined ? { signal } : {})
  })
  const commits = new Set<string>()
  for (const line of out.split('\n')) {
    const [oid, type] = line.split(' ')
    if (oid !== undefined && type === 'commit') commits.add(oid)
  }
  return wanted.filter(o => commits.has(o))
}

/** Full ref names of branches checked out in any worktree of the repository. */
export async function checkedOutBranches (repoDir: string, signal?: AbortSignal): Promise<Set<string>> {
  const out = await gitText(['worktree', 'list', '--porcelain'], { cwd: repoDir, ...(signal !== undefined ? { signal } : {}) })
  const refs = new Set<string>()
  for (const line of out.split('\n')) if (line.startsWith('branch ')) refs.add(line.slice('branch '.length))
  return refs
}
