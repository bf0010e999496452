import { createHash } from 'node:crypto'
import { realpath } from 'node:fs/promises'
import { homedir } from 'node:os'
import { basename, dirname, join, relative, resolve, sep, isAbsolute } from 'node:path'
import { UsageError } from '../util/errors.ts'
import { defaultWorktreesDir } from '../git/worktree.ts'

/** Default data dir: one per repository under the user's state directory, never inside the working tree. */
export async function defaultDataDir (repo: string): Promise<string> {
  const abs = await realpath(repo).catch(() => resolve(repo))
  const id = `${basename(abs) || 'repo'}-${createHash('sha256').update(abs).digest('hex').slice(0, 8)}`
  const state = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state')
  return join(state, 'meshwork', id)
}

export { defaultWorktreesDir }

/** `path` with symlinks resolved as far as it exists (the rest appended), so `inside` compares real places. */
async function realish (path: string): Promise<string> {
  const abs = resolve(path)
  let head = abs
  const rest: string[] = []
  for (;;) {
    try {
      return join(await realpath(head), ...rest.reverse())
    } catch {
      const up = dirname(head)
      if (up === head) return abs
      rest.push(basename(head))
      head = up
    }
  }
}

/** Whether `child` is `parent` or lies below it. */
export function isWithin (child: string, parent: string): boolean {
  const rel = relative(parent, child)
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel))
}

/**
 * The worktrees dir of a node: `--worktrees DIR`, else beside the data dir.
 * A DIR inside the data dir (or holding it) is a usage error: an agent works
 * in a worktree, and everything above it must hold none of the node's secrets.
 */
export async function resolveWorktreesDir (dataDir: string, given: string | undefined): Promise<string> {
  const dir = resolve(given ?? defaultWorktreesDir(dataDir))
  const [realDir, realData] = await Promise.all([realish(dir), realish(dataDir)])
  if (isWithin(realDir, realData)) {
    throw new UsageError(`--worktrees ${dir} is inside the data dir ${resolve(dataDir)}: agents work in those worktrees and must not reach the node's identity key, join token, board or transcripts. Choose a directory outside it, or leave --worktrees out (default: ${defaultWorktreesDir(dataDir)}).`)
  }
  if (isWithin(realData, realDir)) {
    throw new UsageError(`--worktrees ${dir} holds the data dir ${resolve(dataDir)}: agents could list and read the node's secrets from it. Choose a directory that does not contain the data dir, or leave --worktrees out (default: ${defaultWorktreesDir(dataDir)}).`)
  }
  return dir
}
