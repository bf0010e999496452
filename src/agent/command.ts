import { abortedByTimeout } from '../util/errors.ts'
import { abortReason, agentEnv, meshworkEnv, promptText, runInGroup, withTail } from './process.ts'
import { ZERO_TOKENS, clipSummary, type Agent, type AgentResult, type AgentRunInit } from './types.ts'

export interface CommandAgentInit {
  /** A shell command line (`--agent-cmd`), run through `/bin/sh -c`. */
  cmd: string
  /** The node's human label, given to the command as MESHWORK_NODE. */
  nodeName: string
  /** Extra environment for every run. */
  env?: Record<string, string>
  /** Grace between SIGTERM and SIGKILL of the run's process group (default 2000 ms). */
  killGraceMs?: number
}

/**
 * The `command` agent: runs `cmd` through the shell in the task's
 * worktree with the prompt (and meshwork's context) on stdin and
 * MESHWORK_TASK_ID, MESHWORK_TASK_TITLE, MESHWORK_NODE in the environment.
 * Exit 0 is success (its last stdout lines are the task's summary); anything else is a failure with the exit code and the last
 * stderr lines (stdout's if stderr is empty). Its stdout lines are reported as
 * progress. The shell and whatever it starts share one process group, killed as
 * a whole on abort.
 */
export function commandAgent (init: CommandAgentInit): Agent {
  return {
    kind: 'command',
    run: async (run: AgentRunInit): Promise<AgentResult> => {
      if (run.signal.aborted) return aborted(run.signal)
      const handle = runInGroup({
        file: '/bin/sh',
        args: ['-c', init.cmd],
        cwd: run.cwd,
        env: { ...agentEnv(), ...init.env, ...meshworkEnv(run.task, init.nodeName, run.node, run.attempt), ...run.env },
        stdin: promptText(run.task, run.context),
        signal: run.signal,
        killGraceMs: init.killGraceMs,
        onStdoutLine: line => {
          if (line.trim().length === 0) return
          try { run.onProgress?.({ kind: 'text', text: line.length > 300 ? line.slice(0, 299) + '…' : line }) } catch { /* listener errors are not the run's */ }
        }
      })
      const exit = await handle.done
      if (exit.spawnError !== null) {
        return { outcome: 'unavailable', error: `could not start /bin/sh for "${init.cmd}": ${exit.spawnError.message}`, costUsd: 0, tokens: ZERO_TOKENS }
      }
      if (exit.aborted) return aborted(run.signal)
      if (exit.code === 0) return { outcome: 'success', error: null, costUsd: 0, tokens: ZERO_TOKENS, summary: commandSummary(exit.stdoutTail) }
      const how = exit.code !== null ? `exit code ${exit.code}` : `killed by ${exit.exitSignal ?? 'a signal'}`
      const message = `command failed with ${how}: ${init.cmd}`
      const error = exit.stderrTail.some(l => l.trim().length > 0)
        ? withTail(message, 'stderr', exit.stderrTail)
        : withTail(message, 'stdout', exit.stdoutTail)
      return { outcome: 'failure', error, costUsd: 0, tokens: ZERO_TOKENS }
    }
  }
}

/** Stdout lines a successful command run is summarised by (its last ones). @default 10 */
export const COMMAND_SUMMARY_LINES = 10

/** The summary of a successful command run: its last non-blank stdout lines, clipped. */
export function commandSummary (stdoutTail: readonly string[]): string {
  const lines = stdoutTail.filter(l => l.trim() !== '').slice(-COMMAND_SUMMARY_LINES)
  if (lines.length === 0) return 'command exited 0 without output'
  // keep the end: the last lines of a run are the ones that tell what it did
  const text = lines.join('\n')
  return text.length > 2000 ? clipSummary('…' + text.slice(-1999)) : clipSummary(text)
}

/** An aborted run: `aborted`, except the scheduler's timeout (a `TimeoutError` reason), which is a failed attempt. */
function aborted (signal: AbortSignal): AgentResult {
  const reason = abortReason(signal)
  return { outcome: abortedByTimeout(signal) ? 'failure' : 'aborted', error: reason, costUsd: 0, tokens: ZERO_TOKENS }
}
