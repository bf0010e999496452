import { hasCommit, mergeCommit, runVerify, tryMerge, type MergeAttempt } from './merge.ts'
import { CommitWriter } from './commit-writer.ts'
import { MergeTreeSession, type BatchProcesses } from './merge-session.ts'
import { lastTaskPerFile } from './history.ts'
import type { ConflictHunk, TaskId } from '../crdt/schema.ts'

/** Most merges verified together in one `--verify` run. @default 8 */
export const MAX_VERIFY_BATCH = 8
/** Most merges stacked and landed in one step when there is no `--verify`. @default 64 */
export const MAX_PLAIN_BATCH = 64

/** A finished task to merge: its branch head, in queue order. */
export interface BatchItem {
  taskId: TaskId
  title: string
  head: string
}

/** What happened to one item of a batch. */
export type BatchOutcome =
  /** On main now, by this merge commit. */
  | { kind: 'merged', taskId: TaskId, commit: string }
  /** Conflicts with main itself: a human decides. `oursFrom`: file → the task whose merge last changed it on main since the task forked (see `lastTaskPerFile`). */
  | { kind: 'conflict', taskId: TaskId, files: string[], hunks: ConflictHunk[], oursFrom: Record<string, TaskId> }
  /** `--verify` failed on main plus the merges before it plus this one. */
  | { kind: 'verify-failed', taskId: TaskId, output: string }
  /** Not decided in this batch (conflicts only with an earlier item of the batch, or main could not be advanced): back in the queue. */
  | { kind: 'deferred', taskId: TaskId, reason: string }
  /** Its head commit is not in this repository (its branch names a commit that is gone): back in the queue, to be fetched again. */
  | { kind: 'missing', taskId: TaskId, head: string }

export interface BatchInit {
  repo: string
  /** Where `--verify` worktrees are made (the node's worktrees dir). */
  worktreesDir: string
  /** Main when the batch starts. */
  base: string
  /** In queue order; each item's dependencies are already on `base`. */
  items: readonly BatchItem[]
  verify?: string | undefined
  /** Time limit of each `--verify` run (see `runVerify`). @default DEFAULT_VERIFY_TIMEOUT_MS */
  verifyTimeoutMs?: number | null | undefined
  /**
   * Moves main from `prev` to `tip` (compare-and-swap) and publishes the merges
   * in `merged` (in order, `tip` is the last one's commit). Returns false when
   * main could not be moved (leadership, term or main changed): the batch stops
   * and the rest of its items are deferred.
   */
  land: (prev: string, tip: string, merged: ReadonlyArray<{ taskId: TaskId, commit: string }>) => Promise<boolean>
  /**
   * Items that became ready while the batch was stacked (queue order, each's
   * dependencies on `base`, none already in the batch): stacked on top before
   * the batch is verified and landed, so a task done meanwhile lands in this
   * batch instead of waiting for the whole next one. Asked after the stack is
   * built, again after each extension, until it gives none.
   */
  more?: () => Promise<readonly BatchItem[]>
  /** Called after each verify run (for logs and benchmarks). */
  onVerify?: (commit: string, ok: boolean, ms: number, size: number) => void
  signal?: AbortSignal
  /** The leader's merge processes, kept from batch to batch (see `BatchProcesses`); else the batch starts its own. */
  processes?: BatchProcesses
}

export interface BatchResult {
  /** One per item, the batch's items first, then those `more` gave, in order. */
  outcomes: BatchOutcome[]
  /** Main after the batch (`base` if nothing landed). */
  main: string
  verifyRuns: number
}

/**
 * Merges a batch of finished tasks: stacks their merge commits on `base` in
 * order (`git merge-tree --write-tree`, `commit-tree`; no checkout touched),
 * runs `--verify` once on the top of the stack and, if it passes, lands them all
 * at once. When it fails, bisects for the first merge whose stack fails: every
 * prefix that passes lands as soon as it has passed, the culprit is reported
 * `verify-failed` with the check's output, and the items after it are deferred
 * (they are re-stacked on the new main next time). With one item this is the
 * plain merge queue: merge, verify, compare-and-swap.
 *
 * Each landed merge commit has main's previous head as first parent, so main's
 * first-parent history gets exactly one merge commit per task, in queue order.
 */
export async function runBatch (init: BatchInit): Promise<BatchResult> {
  const { repo, worktreesDir, base, verify } = init
  const outcomes = new Map<string, BatchOutcome>()
  const stack: Array<{ taskId: TaskId, commit: string }> = []
  let tip = base
  const items = [...init.items]
  // the clean merges through one `merge-tree` process, the merge commits through one `hash-object` (merge-session.ts,
  // commit-writer.ts): the leader's, kept from batch to batch; else the batch's own, its first commit by `commit-tree`
  const shared = init.processes?.take()
  const writer = shared?.writer ?? new CommitWriter(repo)
  const merges = shared?.merges ?? new MergeTreeSession(repo)
  try {
    for (let i = 0; ; i++) {
      // the stack is built: what became ready meanwhile goes on top
      if (i === items.length && init.more !== undefined) items.push(...await init.more())
      if (i >= items.length) break
      const item = items[i] as BatchItem
      init.signal?.throwIfAborted()
      const clean = await merges.merge(tip, item.head)
      let attempt: MergeAttempt
      try {
        attempt = clean !== null ? { kind: 'clean', tree: clean } : await tryMerge(repo, tip, item.head)
      } catch (err) {
        // the rest of the batch merges without it
        if (!await hasCommit(repo, item.head)) { outcomes.set(item.taskId, { kind: 'missing', taskId: item.taskId, head: item.head }); continue }
        throw err
      }
      if (attempt.kind === 'conflict') {
        // a conflict with main itself is for a human; one only with an earlier item of this batch waits for that item to land
        const onMain = tip === base ? attempt : await tryMerge(repo, base, item.head)
        if (onMain.kind === 'conflict') outcomes.set(item.taskId, { kind: 'conflict', taskId: item.taskId, files: onMain.files, hunks: onMain.hunks, oursFrom: await lastTaskPerFile(repo, base, item.head, onMain.files).catch(() => ({})) })
        else outcomes.set(item.taskId, { kind: 'deferred', taskId: item.taskId, reason: `conflicts with ${stack.map(s => s.taskId).join(', ')} earlier in the batch` })
        continue
      }
      const commit = await mergeCommit(repo, attempt.tree, tip, item.head, item.taskId, item.title, stack.length > 0 || shared !== undefined ? writer : undefined)
      stack.push({ taskId: item.taskId, commit })
      tip = commit
    }
  } finally {
    // the batch's own end without holding up the landing (their exits are waited for in the background)
    if (shared !== undefined) init.processes?.release()
    else void Promise.all([writer.close(), merges.close()])
  }
  let main = base
  let verifyRuns = 0
  const deferRest = (from: number, reason: string): void => {
    for (const s of stack.slice(from)) if (!outcomes.has(s.taskId)) outcomes.set(s.taskId, { kind: 'deferred', taskId: s.taskId, reason })
  }
  // stack[0..landed) are on main
  let landed = 0
  const landTo = async (upto: number): Promise<boolean> => {
    if (upto <= landed) return true
    const merged = stack.slice(landed, upto)
    const next = (merged.at(-1) as { commit: string }).commit
    if (!await init.land(main, next, merged)) return false
    for (const m of merged) outcomes.set(m.taskId, { kind: 'merged', taskId: m.taskId, commit: m.commit })
    main = next
    landed = upto
    return true
  }
  const check = async (i: number): Promise<{ ok: boolean, output: string }> => {
    const s = stack[i] as { commit: string }
    const v = await runVerify(repo, worktreesDir, s.commit, verify as string, { signal: init.signal, timeoutMs: init.verifyTimeoutMs })
    verifyRuns++
    init.onVerify?.(s.commit, v.ok, v.ms, i + 1 - landed)
    return v
  }
  if (stack.length > 0) {
    if (verify === undefined) {
      if (!await landTo(stack.length)) deferRest(0, 'main could not be advanced')
    } else {
      const top = await check(stack.length - 1)
      if (top.ok) {
        if (!await landTo(stack.length)) deferRest(0, 'main could not be advanced')
      } else {
        // invariant: the stack up to `hi` fails (with `failOutput`); every prefix up to `landed` passed and is on main
        let hi = stack.length - 1
        let failOutput = top.output
        let lost = false
        while (landed < hi) {
          const mid = Math.floor((landed + hi - 1) / 2)
          const v = await check(mid)
          if (v.ok) {
            if (!await landTo(mid + 1)) { lost = true; break }
          } else {
            hi = mid
            failOutput = v.output
          }
        }
        if (lost) deferRest(landed, 'main could not be advanced')
        else {
          const culprit = stack[hi] as { taskId: TaskId }
          outcomes.set(culprit.taskId, { kind: 'verify-failed', taskId: culprit.taskId, output: failOutput })
          deferRest(hi + 1, `verified again on main without ${culprit.taskId}`)
        }
      }
    }
  }
  return { outcomes: items.map(it => outcomes.get(it.taskId) as BatchOutcome), main, verifyRuns }
}
