import { constants, createWriteStream } from 'node:fs'
import { access, mkdir, rm, stat } from 'node:fs/promises'
import { delimiter, join, resolve } from 'node:path'
import { promptText, runInGroup } from './process.ts'
import type { Agent, AgentProgress, AgentResult, AgentRunInit } from './types.ts'
import { claudeArgs, claudeEnv, dataDirDenyRules, prepareConfigDir, runBudget, type ClaudeAgentInit } from './claude-args.ts'
import { StreamParser } from './claude-stream.ts'
import { abortedResult, classifyRun } from './claude-outcome.ts'

/*
 * The `claude` agent: runs Claude Code in print mode with streamed JSON in the
 * task's worktree and judges the run by its final `result` event. This module
 * owns the process; the argument list and environment (claude-args.ts), the
 * stream (claude-stream.ts), the verdict (claude-outcome.ts) and rate limits
 * (claude-limits.ts) live beside it.
 *
 * Refused credentials stop the run at once: the CLI would otherwise retry for
 * minutes (10 retries with back-off) before giving up.
 */

export { CLAUDE_DISALLOWED_TOOLS, claudeArgs, runBudget, type ClaudeAgentInit } from './claude-args.ts'
export { StreamParser, toolSummary } from './claude-stream.ts'
export { isBudgetStop } from './claude-outcome.ts'
export { isRateLimitText, parseResetTime } from './claude-limits.ts'

export function claudeAgent (init: ClaudeAgentInit): Agent {
  const bin = init.bin ?? 'claude'
  const permissionMode = init.permissionMode ?? 'acceptEdits'
  return {
    kind: 'claude',
    run: async (run: AgentRunInit): Promise<AgentResult> => {
      if (run.signal.aborted) return abortedResult(run.signal, null)
      const runId = run.runId ?? `${run.task.id}-${run.attempt}`
      const configDir = join(init.dataDir, 'claude', runId)
      const transcriptDir = join(init.dataDir, 'transcripts')
      await prepareConfigDir(configDir, init.configSource)
      await mkdir(transcriptDir, { recursive: true })
      const deny = await dataDirDenyRules(init.dataDir, run.cwd)
      const transcriptPath = join(transcriptDir, `${runId}.jsonl`)
      const transcript = createWriteStream(transcriptPath, { flags: 'w' })
      transcript.on('error', () => { /* a transcript that cannot be written does not fail the run */ })

      const env = claudeEnv({ ...init, permissionMode }, run.task, run.node, run.attempt, run.env, configDir)
      // the node's per-run cap, or what is left of the mesh's or the plan's budget when that is less
      const budget = runBudget(init.maxBudgetUsd, run.maxBudgetUsd)
      const argsInit: ClaudeAgentInit = { ...init, permissionMode, ...(budget !== undefined ? { maxBudgetUsd: budget.usd } : {}) }
      const progress = (p: AgentProgress): void => {
        try { run.onProgress?.(p) } catch { /* listener errors are not the run's */ }
      }
      // --approvals: the run's permission requests go to the board and wait for a human
      const approval = init.approvals === undefined ? null : await init.approvals.begin({ task: run.task, attempt: run.attempt, configDir, signal: run.signal, onProgress: progress })
      let lingerTimer: NodeJS.Timeout | null = null
      // refused credentials cannot get better within this run: stop it now
      const parser = new StreamParser(progress, reason => { handle.kill(`credentials refused: ${reason}`) })

      const handle = runInGroup({
        file: bin,
        args: [...claudeArgs(argsInit, [...deny, ...(approval?.disallowed ?? [])]), ...(approval?.args ?? [])],
        cwd: run.cwd,
        env,
        stdin: promptText(run.task, run.context),
        signal: run.signal,
        killGraceMs: init.killGraceMs,
        onStdoutChunk: chunk => { transcript.write(chunk) },
        onStdoutLine: line => {
          parser.line(line)
          if (parser.result !== null && lingerTimer === null) {
            // claude should exit right after its result; do not wait forever if it lingers.
            lingerTimer = setTimeout(() => { handle.kill('lingered after its result event') }, init.resultExitGraceMs ?? 15_000)
            lingerTimer.unref()
          }
        }
      })
      const exit = await handle.done
      if (lingerTimer !== null) clearTimeout(lingerTimer)
      await approval?.end()
      await new Promise<void>(resolve => { transcript.end(() => { resolve() }) })
      // the login's copy is not left behind once the run is over
      await rm(join(configDir, '.credentials.json'), { force: true }).catch(() => {})
      return classifyRun(exit, parser, run.signal, { bin, taskId: run.task.id, maxBudgetUsd: budget?.usd, budgetFrom: budget?.from, maxTurns: init.maxTurns })
    }
  }
}

/**
 * Finds the claude executable a node would run: `bin` itself when it contains a
 * slash, else the first match on PATH. Null when there is none (or it is not
 * executable): `meshwork node` refuses to start then, rather than fail every run.
 */
export async function findExecutable (bin: string, path = process.env.PATH ?? ''): Promise<string | null> {
  const candidates = bin.includes('/') ? [resolve(bin)] : path.split(delimiter).filter(d => d !== '').map(d => join(d, bin))
  for (const c of candidates) {
    try {
      if (!(await stat(c)).isFile()) continue
      await access(c, constants.X_OK)
      return c
    } catch { /* not this one */ }
  }
  return null
}
