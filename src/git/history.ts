import { git, gitText } from './git.ts'
import { TASK_TRAILER } from './worktree.ts'
import { isOid, isTaskId, type Task, type TaskId } from '../crdt/schema.ts'

/** Main's first-parent history as far as merges of tasks go. */
export interface MainHistory {
  /** Every commit on the first-parent line. */
  commits: Set<string>
  /** Task id → its merges on that line (oldest first): the merge commit and the task head it merged (second parent). */
  merges: Map<string, Array<{ commit: string, head: string }>>
}

/** Reads `head`'s first-parent history: its commits and the merges carrying a `Meshwork-Task` trailer. */
export async function mainHistory (repo: string, head: string): Promise<MainHistory> {
  const out = await gitText(['log', '--first-parent', '--reverse', `--format=%H %P%x00%(trailers:key=${TASK_TRAILER},valueonly,separator=%x01)%x00`, head], { cwd: repo })
  const commits = new Set<string>()
  const merges = new Map<string, Array<{ commit: string, head: string }>>()
  const parts = out.split('\0')
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const [commit, , second] = (parts[i] as string).trim().split(' ')
    if (commit === undefined || commit === '') continue
    commits.add(commit)
    if (second === undefined) continue
    for (const id of (parts[i + 1] as string).split('\x01').map(x => x.trim()).filter(x => x !== '')) {
      const list = merges.get(id) ?? []
      list.push({ commit, head: second })
      merges.set(id, list)
    }
  }
  return { commits, merges }
}

/**
 * Main's history after merge commits `merged` were stacked on it (in order,
 * the first with the history's head as first parent, each task head the
 * second parent): what `mainHistory` reads at the last one, without reading it.
 * Adds to `history` and returns it.
 */
export function extendHistory (history: MainHistory, merged: ReadonlyArray<{ taskId: string, commit: string, head: string }>): MainHistory {
  for (const m of merged) {
    history.commits.add(m.commit)
    const list = history.merges.get(m.taskId) ?? []
    list.push({ commit: m.commit, head: m.head })
    history.merges.set(m.taskId, list)
  }
  return history
}

/** What the leader corrects on the board so that "merged" means "on main" (see `reconcileMerged`). */
export interface MergedRepair<I extends string = TaskId> {
  /** Marked merged but not on main (their merge was on the losing side of a partition): merge again, or run again if no branch is left. */
  requeue: Array<{ id: I, to: 'done' | 'ready', lost: string | null }>
  /** On main but not marked merged (or marked with another commit): record it, never merge it twice. */
  record: Array<{ id: I, commit: string }>
}

/**
 * Re-derives each task's merged state from main's history (pure): a task is
 * merged exactly when main's first-parent history has the merge of its branch
 * head (a merge commit carrying its trailer whose second parent is the task's
 * head). After two leaders acted on the two sides of a partition, the board
 * keeps one main; the merges made on the other side are not on it, and their
 * tasks go back to `done` (their branch is still held) or `ready` (it is not)
 * to be merged again: nothing merged disappears silently. A task whose merge
 * is on main is recorded merged: nothing is merged twice; so is a task whose
 * recorded merge commit is on main although the board now shows another
 * run's head (the other side of a partition ran it again meanwhile). An old
 * merge of an earlier task with the same id (another head, not its recorded
 * merge) is not taken for this one.
 */
export function reconcileMerged<I extends string> (tasks: Iterable<{ id: I, state: Task['state'], mergeCommit: string | null, head: string | null }>, history: MainHistory): MergedRepair<I> {
  const repair: MergedRepair<I> = { requeue: [], record: [] }
  for (const t of tasks) {
    if (t.state === 'merged' && t.mergeCommit !== null && history.commits.has(t.mergeCommit)) continue
    const merges = history.merges.get(t.id) ?? []
    // the merge of its head; else the merge the board recorded for it, when main has it: after a partition's
    // heal the losing side's later run may show on the board (another head, done or ready) over that merge
    const onMain = (t.head === null ? undefined : merges.find(m => m.head === t.head)) ?? (t.mergeCommit === null ? undefined : merges.find(m => m.commit === t.mergeCommit))
    if (onMain !== undefined) {
      if (t.state !== 'merged' || t.mergeCommit !== onMain.commit) repair.record.push({ id: t.id, commit: onMain.commit })
    } else if (t.state === 'merged') {
      repair.requeue.push({ id: t.id, to: t.head !== null ? 'done' : 'ready', lost: t.mergeCommit })
    }
  }
  return repair
}

/** Most conflicted files whose last task on main is looked up (one bounded `git log` each). @default 20 */
export const MAX_OURS_FROM_FILES = 20

/**
 * For each conflicted file (the first `MAX_OURS_FROM_FILES`), the task whose
 * merge last changed it on `main` since `head` forked from it (their merge
 * base): the `Meshwork-Task` trailer of the newest commit on main's
 * first-parent line after the fork that changed the file. That is the task
 * that put main's side (`ours`) of the conflict there. A file last changed by
 * a commit without the trailer (a human's) or not changed since the fork is
 * left out (so is a trailer that is not a task id); so is everything when
 * the two have no common history.
 */
export async function lastTaskPerFile (repo: string, main: string, head: string, files: readonly string[]): Promise<Record<string, TaskId>> {
  const out: Record<string, TaskId> = {}
  const fork = await git(['merge-base', main, head], { cwd: repo, allowFail: true, maxOutput: 4096 })
  const base = fork.code === 0 ? fork.stdout.toString('utf8').trim().split('\n')[0] ?? '' : ''
  if (!isOid(base)) return out
  for (const file of [...new Set(files)].slice(0, MAX_OURS_FROM_FILES)) {
    if (file === '') continue
    // --literal-pathspecs: a file named like a pathspec (`*`, `:(glob)...`) is that file
    const r = await git(['--literal-pathspecs', 'log', '-1', '--first-parent', `--format=%(trailers:key=${TASK_TRAILER},valueonly,separator=%x01)`, `${base}..${main}`, '--', file],
      { cwd: repo, allowFail: true, maxOutput: 64 * 1024 })
    if (r.code !== 0) continue
    const id = r.stdout.toString('utf8').split('\x01')[0]?.trim() ?? ''
    if (isTaskId(id)) out[file] = id
  }
  return out
}
