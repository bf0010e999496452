import type { Agent, AgentProgress } from '../agent/types.ts'
import { ZERO_TOKENS } from '../agent/types.ts'
import type { Conflict, Task, Tokens } from '../crdt/schema.ts'
import { AgentMergeError, finishConflictedMerge, removeMergeWorktree, startConflictedMerge } from '../git/agent-merge.ts'
import { runSetup } from '../git/worktree.ts'
import { toError } from '../util/errors.ts'

/** What the agent is told when it resolves a conflicted merge (pure). */
export function conflictPrompt (task: { id: string, title: string, prompt: string }, files: readonly string[], branch: string, main: string, note: string): string {
  const lines = [
    `Resolve a git merge conflict for meshwork task "${task.id}"${task.title !== '' ? ` (${task.title})` : ''}.`,
    '',
    `This worktree is in the middle of merging the task's branch meshwork/${task.id} into ${branch} (at ${main.slice(0, 12)}).`,
    'Git could not merge these files and left conflict markers in them:',
    ...files.map(f => `- ${f}`),
    '',
    `Between "<<<<<<<" and "=======" is ${branch}'s side (work already merged from other tasks); between "=======" and ">>>>>>>" is this task's side.`,
    'Edit each conflicted file so that it keeps the intent of both sides, and remove every conflict marker line.',
    'A file deleted on one side and changed on the other: keep it (with both intents) or delete it, whichever is right.',
    'Do not commit, and do not run `git merge --abort`, `git reset` or `git checkout` of other commits: meshwork checks that no',
    'markers are left, makes the merge commit and runs the project\'s checks on it before main moves.',
    '',
    'The task was:',
    task.prompt
  ]
  if (note.trim() !== '') lines.push('', `Note from the person who asked for this resolution: ${note.trim()}`)
  return lines.join('\n')
}

export interface AgentResolveInit {
  repo: string
  /** Where the merge's worktree is made (the node's worktrees dir). */
  worktreesDir: string
  branch: string
  /** Main to merge onto. */
  main: string
  /** The conflicted task; its `head` is the branch to merge. */
  task: Task
  conflict: Conflict
  agent: Agent
  /** This node's peer id (the run's MESHWORK_PEER_ID). */
  peerId: string
  setup?: string
  signal: AbortSignal
  onProgress?: (p: AgentProgress) => void
}

/** How an agent-resolved merge ended: the merge commit on `main`, or why there is none. Costs count either way. */
export interface AgentResolveResult {
  commit: string | null
  error: string | null
  costUsd: number
  tokens: Tokens
}

/**
 * Resolves a conflicted merge with the node's agent: starts the merge in a
 * worktree under the data dir with git's conflict markers, runs `--setup`
 * there, runs the agent with `conflictPrompt` (and MESHWORK_CONFLICT_ID,
 * MESHWORK_CONFLICT_FILES in its environment), then checks and commits the
 * result (`finishConflictedMerge`). Expected failures (the agent failed,
 * markers left, the merge aborted) are values; the worktree is removed in
 * every case. The merge commit is not verified or published here.
 */
export async function resolveWithAgent (init: AgentResolveInit): Promise<AgentResolveResult> {
  const { repo, worktreesDir, task, conflict } = init
  const head = task.head
  const none = { costUsd: 0, tokens: ZERO_TOKENS }
  if (head === null) return { commit: null, error: 'the task has no committed branch to merge', ...none }
  let merge
  try {
    merge = await startConflictedMerge(repo, worktreesDir, init.main, head, task.id)
  } catch (err) {
    return { commit: null, error: toError(err).message, ...none }
  }
  let costUsd = 0
  let tokens: Tokens = ZERO_TOKENS
  try {
    if (merge.files.length > 0) {
      if (init.setup !== undefined && init.setup.trim() !== '') await runSetup(init.setup, merge.path, init.signal)
      const res = await init.agent.run({
        task: { ...task, prompt: conflictPrompt(task, merge.files, init.branch, init.main, conflict.decision?.note ?? '') },
        attempt: Math.max(1, task.attempts),
        runId: `${task.id}-resolve-${conflict.id}-${conflict.decision?.at ?? Date.now()}`,
        env: { MESHWORK_CONFLICT_ID: conflict.id, MESHWORK_CONFLICT_FILES: merge.files.join('\n') },
        node: init.peerId,
        cwd: merge.path,
        signal: init.signal,
        ...(init.onProgress !== undefined ? { onProgress: init.onProgress } : {})
      })
      costUsd = res.costUsd
      tokens = res.tokens
      if (res.outcome !== 'success') {
        return { commit: null, error: `the ${init.agent.kind} agent did not resolve the conflict (${res.outcome}): ${res.error ?? 'no reason given'}`, costUsd, tokens }
      }
    }
    const done = await finishConflictedMerge(repo, merge, task.id, task.title)
    return { commit: done.commit, error: null, costUsd, tokens }
  } catch (err) {
    // AgentMergeError says what is wrong with the result; anything else is a failure of the machinery
    return { commit: null, error: err instanceof AgentMergeError ? err.message : `the agent-resolved merge failed: ${toError(err).message}`, costUsd, tokens }
  } finally {
    await removeMergeWorktree(repo, merge.path)
  }
}
