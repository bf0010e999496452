/**
 * Real git repositories in temp dirs for tests, driven through `git()` (argument
 * arrays). Each repo gets its own identity in its local config, so nothing
 * depends on the machine's global git config.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { git, gitText } from '../../src/git/git.ts'
import { gitCommonDir } from '../../src/git/repo.ts'

/** Creates (or reuses) `dir` and makes it a non-bare repository on `branch` with a test identity. */
export async function initRepo (dir: string, branch = 'main'): Promise<string> {
  await mkdir(dir, { recursive: true })
  await git(['init', '--quiet', '-b', branch], { cwd: dir })
  await configIdentity(dir)
  return dir
}

/** Sets `user.name`/`user.email` (and no signing) in the repo's local config. */
export async function configIdentity (dir: string): Promise<void> {
  await git(['config', 'user.name', 'Meshwork Test'], { cwd: dir })
  await git(['config', 'user.email', 'test@meshwork.invalid'], { cwd: dir })
  await git(['config', 'commit.gpgsign', 'false'], { cwd: dir })
}

/** Writes `files` (path → content) into the worktree, stages everything and commits; returns the new HEAD. */
export async function commitFiles (dir: string, files: Record<string, string | Uint8Array>, message: string): Promise<string> {
  for (const [path, content] of Object.entries(files)) {
    const full = join(dir, path)
    await mkdir(dirname(full), { recursive: true })
    await writeFile(full, content)
  }
  await git(['add', '-A'], { cwd: dir })
  await git(['commit', '--quiet', '--allow-empty', '-m', message], { cwd: dir })
  return await gitText(['rev-parse', 'HEAD'], { cwd: dir })
}

/** `git checkout -q -b <branch> [<start>]`. */
export async function createBranch (dir: string, branch: string, start?: string): Promise<void> {
  await git(['checkout', '--quiet', '-b', branch, ...(start !== undefined ? [start] : [])], { cwd: dir })
}

/** The oid `rev` names (`<rev>^{commit}` style revs allowed), or null. */
export async function revParse (dir: string, rev: string): Promise<string | null> {
  const res = await git(['rev-parse', '--verify', '--quiet', rev], { cwd: dir, allowFail: true })
  return res.code === 0 ? res.stdout.toString('utf8').trim() : null
}

/** Content of `path` at `rev` (bytes). */
export async function showFile (dir: string, rev: string, path: string): Promise<Buffer> {
  return (await git(['cat-file', 'blob', `${rev}:${path}`], { cwd: dir })).stdout
}

/** All refs of the repository as `refname → oid`. */
export async function listRefs (dir: string): Promise<Map<string, string>> {
  const out = await gitText(['for-each-ref', '--format=%(refname) %(objectname)'], { cwd: dir })
  const refs = new Map<string, string>()
  for (const line of out.split('\n')) {
    const [ref, oid] = line.split(' ')
    if (ref !== undefined && oid !== undefined && ref !== '') refs.set(ref, oid)
  }
  return refs
}

/** Entries the transfer code leaves behind in the repo's git dir (should be none). */
export async function transferTemps (dir: string): Promise<string[]> {
  const gitDir = await gitCommonDir(dir)
  return (await readdir(gitDir)).filter(e => e.startsWith('meshwork-'))
}

/** `git fsck` passes (full connectivity and object checks). */
export async function fsckOk (dir: string): Promise<boolean> {
  const res = await git(['fsck', '--no-dangling', '--no-progress'], { cwd: dir, allowFail: true })
  return res.code === 0
}

/** `git status --porcelain` output (empty for a clean worktree). */
export async function statusPorcelain (dir: string): Promise<string> {
  return await gitText(['status', '--porcelain'], { cwd: dir })
}
