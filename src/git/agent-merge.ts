import { mkdir, readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { git, gitText } from './git.ts'
import { commitEnv, TASK_TRAILER } from './worktree.ts'

/** A merge left half-done in a worktree, for an agent to finish. */
export interface ConflictedMerge {
  /** The worktree (detached at main, `git merge` of the task in progress). */
  path: string
  main: string
  head: string
  /** Paths git could not merge (unmerged in the index when the agent starts). */
  files: string[]
}

/** The git side of an agent-resolved merge could not be set up or finished; the message says why. */
export class AgentMergeError extends Error {
  override name = 'AgentMergeError'
}

/** Where the agent-resolved merge of a task is worked on: in the leader's worktrees dir. */
export function agentMergePath (worktreesDir: string, taskId: string): string {
  return join(worktreesDir, `.agent-merge-${taskId}`)
}

/**
 * Starts the merge of `head` into `main` in a fresh detached worktree
 * (`git merge --no-ff --no-commit`), leaving git's conflict markers in the
 * conflicted files, and lists those files. Throws `AgentMergeError` when git
 * fails for another reason.
 */
export async function startConflictedMerge (repo: string, worktreesDir: string, main: string, head: string, taskId: string): Promise<ConflictedMerge> {
  const path = agentMergePath(worktreesDir, taskId)
  await mkdir(worktreesDir, { recursive: true })
  await removeMergeWorktree(repo, path)
  await git(['worktree', 'add', '--detach', '--force', path, main], { cwd: repo })
  const res = await git(['merge', '--no-ff', '--no-commit', head], { cwd: path, allowFail: true, env: commitEnv() })
  if (res.code !== 0 && res.code !== 1) throw new AgentMergeError(`git merge of ${head.slice(0, 12)} could not start: ${(res.stdout.toString() + res.stderr).trim().split('\n').slice(-3).join(' | ')}`)
  const unmerged = await git(['diff', '--name-only', '--diff-filter=U', '-z'], { cwd: path })
  const files = [...new Set(unmerged.stdout.toString('utf8').split('\0').filter(f => f !== ''))]
  if (res.code === 1 && files.length === 0) throw new AgentMergeError(`git merge of ${head.slice(0, 12)} failed without conflicted files: ${(res.stdout.toString() + res.stderr).trim().split('\n').slice(-3).join(' | ')}`)
  return { path, main, head, files }
}

const MARKER = /^(<{7}|>{7})(?: |$)/m

/**
 * The files of `files` that still hold a conflict marker line (`<<<<<<<` or
 * `>>>>>>>` at the start of a line) in the worktree; a deleted file has none.
 */
export async function filesWithMarkers (path: string, files: readonly string[]): Promise<string[]> {
  const left: string[] = []
  for (const f of files) {
    const full = join(path, f)
    const st = await stat(full).catch(() => null)
    if (st === null || !st.isFile()) continue
    const text = (await readFile(full)).subarray(0, 8 * 1024 * 1024).toString('utf8')
    if (MARKER.test(text)) left.push(f)
  }
  return left
}

/**
 * Finishes a merge an agent worked on: checks that the merge is still the
 * one meshwork started (not aborted, HEAD not moved elsewhere) and that no
 * conflict marker is left in the conflicted files, stages everything the agent
 * left (`git add -A`, which also settles paths it deleted or restored) and
 * makes the merge commit: main first, the task head second, the task trailer.
 * Commits the agent made itself are not kept, their tree is. Throws
 * `AgentMergeError` saying what is wrong.
 */
export async function finishConflictedMerge (repo: string, m: ConflictedMerge, taskId: string, title: string): Promise<{ commit: string, tree: string }> {
  const at = await gitText(['rev-parse', 'HEAD'], { cwd: m.path })
  if (at === m.main) {
    const mergeHead = await git(['rev-parse', '-q', '--verify', 'MERGE_HEAD'], { cwd: m.path, allowFail: true })
    if (mergeHead.code !== 0 || mergeHead.stdout.toString().trim() !== m.head) throw new AgentMergeError('the merge was aborted in the worktree (no merge in progress any more): nothing to commit')
  } else {
    const contains = async (rev: string): Promise<boolean> => (await git(['merge-base', '--is-ancestor', rev, at], { cwd: m.path, allowFail: true })).code === 0
    if (!await contains(m.head) || !await contains(m.main)) throw new AgentMergeError(`the agent moved HEAD to ${at.slice(0, 12)}, which does not contain both main and the task branch`)
  }
  const marked = await filesWithMarkers(m.path, m.files)
  if (marked.length > 0) throw new AgentMergeError(`conflict markers are left in ${marked.join(', ')}`)
  await git(['add', '-A'], { cwd: m.path })
  const unmerged = await gitText(['ls-files', '-u'], { cwd: m.path })
  if (unmerged !== '') throw new AgentMergeError(`paths are still unmerged: ${unmerged.split('\n').map(l => l.split('\t')[1]).filter(x => x !== undefined).join(', ')}`)
  const tree = await gitText(['write-tree'], { cwd: m.path })
  const message = `Merge meshwork/${taskId}: ${title === '' ? taskId : title} (conflicts resolved by an agent)\n\n${TASK_TRAILER}: ${taskId}\n`
  const commit = await gitText(['commit-tree', tree, '-p', m.main, '-p', m.head, '-F', '-'], { cwd: repo, input: message, env: commitEnv() })
  return { commit, tree }
}

/** Removes the worktree of an agent-resolved merge (best effort). */
export async function removeMergeWorktree (repo: string, path: string): Promise<void> {
  await git(['worktree', 'remove', '--force', path], { cwd: repo, allowFail: true })
  await rm(path, { recursive: true, force: true })
}
