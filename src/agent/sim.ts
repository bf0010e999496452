import { access, appendFile, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { ZERO_TOKENS, clipSummary, type Agent, type AgentResult, type AgentRunInit } from './types.ts'

/**
 * The built-in simulated agent (the `sim` agent): takes the task's `sim`
 * block and behaves like an agent run without calling any model: waits
 * `duration` (then, with `until`, until that file exists), writes and appends
 * files in its worktree, and fails the first `fail` attempts. Each run reports
 * `costUsd` as its cost; given less than that as `maxBudgetUsd` (what is left
 * of the mesh's or the plan's budget), it stops there like claude at its
 * `--max-budget-usd`: the cost is the cap and the outcome `budget`.
 *
 * Asked to resolve a conflicted merge (`resolve --action agent`), it does the
 * same in the merge's worktree: its `write` files overwrite the conflicted ones
 * (the task's side wins for them) and `append` is appended again. A conflict in
 * a file it does not write keeps git's markers, and the leader refuses the
 * result, so the sim agent never passes off an unresolved merge.
 */
export function simAgent (): Agent {
  return {
    kind: 'sim',
    run: async (init: AgentRunInit): Promise<AgentResult> => {
      const sim = init.task.sim ?? { durationMs: 1000, write: {}, append: {}, fail: 0 }
      init.onProgress?.({ kind: 'info', text: `sim: working for ${sim.durationMs} ms${init.maxBudgetUsd !== undefined ? ` (budget left: $${init.maxBudgetUsd})` : ''}` })
      let aborted = await sleep(sim.durationMs, init.signal)
      if (!aborted && sim.until !== undefined) {
        init.onProgress?.({ kind: 'info', text: `sim: waiting for ${sim.until}` })
        aborted = await untilExists(sim.until, init.signal)
      }
      if (aborted) return { outcome: 'aborted', error: String(init.signal.reason ?? 'aborted'), costUsd: 0, tokens: ZERO_TOKENS }
      const costUsd = sim.costUsd ?? 0
      const cap = init.maxBudgetUsd
      if (cap !== undefined && costUsd > cap) {
        return { outcome: 'budget', error: `sim: stopped at what was left of the budget ($${cap}) before spending $${costUsd}`, costUsd: cap, tokens: ZERO_TOKENS }
      }
      if (init.task.failures < sim.fail) {
        return { outcome: 'failure', error: `sim: attempt ${init.attempt} fails as configured (fail: ${sim.fail})`, costUsd, tokens: ZERO_TOKENS }
      }
      if (init.cwd !== undefined) {
        for (const [file, text] of Object.entries(sim.write)) {
          await mkdir(dirname(join(init.cwd, file)), { recursive: true })
          await writeFile(join(init.cwd, file), text)
        }
        for (const [file, text] of Object.entries(sim.append)) {
          await mkdir(dirname(join(init.cwd, file)), { recursive: true })
          await appendFile(join(init.cwd, file), text)
        }
      }
      init.onProgress?.({ kind: 'info', text: 'sim: done' })
      return { outcome: 'success', error: null, costUsd, tokens: ZERO_TOKENS, summary: simSummary(Object.keys(sim.write), Object.keys(sim.append), init.cwd !== undefined) }
    }
  }
}

/** How often a held sim run looks for its `until` file. @default 100 */
const UNTIL_POLL_MS = 100

/** Resolves true if aborted before `file` exists. */
async function untilExists (file: string, signal: AbortSignal): Promise<boolean> {
  for (;;) {
    try {
      await access(file)
      return false
    } catch {}
    if (await sleep(UNTIL_POLL_MS, signal)) return true
  }
}

/** Resolves true if aborted before `ms` passed. */
function sleep (ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true)
  return new Promise(resolve => {
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(false) }, ms)
    const onAbort = (): void => { clearTimeout(t); resolve(true) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** What a sim run did, honestly: the files it wrote and appended to (none without a worktree). */
export function simSummary (written: readonly string[], appended: readonly string[], hadWorktree: boolean): string {
  if (!hadWorktree || (written.length === 0 && appended.length === 0)) return 'sim: changed no files'
  const parts: string[] = []
  if (written.length > 0) parts.push(`wrote ${written.join(', ')}`)
  if (appended.length > 0) parts.push(`appended to ${appended.join(', ')}`)
  return clipSummary(`sim: ${parts.join('; ')}`)
}
