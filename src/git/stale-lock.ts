/**
 * Ref lock files a dead git left behind. git takes a ref (or `packed-refs`,
 * or `HEAD`) by creating `<name>.lock` exclusively, writes it and renames it
 * over the ref: milliseconds. A git that dies in between (killed with
 * SIGKILL, by the OOM killer, or on a VM that lost power) leaves the lock, and
 * every later update of that ref fails with "Unable to create '….lock': File
 * exists" until someone removes it: a merge leader failed to take a task's
 * branch 122 times in a row on one such lock, and would have forever.
 *
 * When a git command of this node fails on a lock file that has not changed
 * for `STALE_LOCK_MS`, far longer than any git holds a ref lock, the lock is
 * removed, so the caller's next try (every caller of a ref update retries, or
 * its task does) can take it. The failed command is not repeated here: it may
 * have done part of its work before the lock.
 *
 * `index.lock` is left alone: `git commit` holds it for as long as its editor
 * is open, so its age says nothing; git's message names it for the user.
 */
import { lstat, unlink } from 'node:fs/promises'
import { basename, isAbsolute, resolve } from 'node:path'

/** How long a ref lock file must have been unchanged before it counts as left by a dead git. @default 60 s */
export const STALE_LOCK_MS = 60_000

/** How the sentence `clearStaleLock` adds to a failure starts. */
export const STALE_LOCK_NOTE = 'meshwork removed the stale lock '

/** The lock file git could not create, from its stderr ("Unable to create '/r/.git/refs/heads/x.lock': File exists."), or null. */
export function lockInTheWay (stderr: string): string | null {
  const m = /Unable to create '([^'\n]+\.lock)': File exists/.exec(stderr)
  return m?.[1] ?? null
}

/**
 * When `stderr` (of a git run in `cwd`) says a ref lock was in the way and
 * that lock is stale, removes it: the sentence to add to the failure, else
 * null. Never throws.
 */
export async function clearStaleLock (stderr: string, cwd: string, staleMs = STALE_LOCK_MS): Promise<string | null> {
  const found = lockInTheWay(stderr)
  if (found === null || basename(found) === 'index.lock') return null
  const path = isAbsolute(found) ? found : resolve(cwd, found)
  try {
    const st = await lstat(path)
    const age = Date.now() - st.mtimeMs
    if (!st.isFile() || age < staleMs) return null
    await unlink(path)
    return `${STALE_LOCK_NOTE}${path} (unchanged for ${Math.round(age / 1000)} s, left by a git that is gone): the next try can take it`
  } catch {
    // gone meanwhile (its git finished), or not ours to remove: nothing done
    return null
  }
}
