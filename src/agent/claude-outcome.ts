import { abortedByTimeout } from '../util/errors.ts'
import { abortReason, withTail, type GroupRunResult } from './process.ts'
import { ZERO_TOKENS, clipSummary, type AgentResult } from './types.ts'
import { isRateLimitText, parseResetTime } from './claude-limits.ts'
import { clip, isAuthText, type ResultEvent, type StreamParser } from './claude-stream.ts'

/*
 * How a finished `claude` run is judged: success only when the process exits 0
 * and its `result` event is a success without `is_error`. API and auth errors
 * come back as `subtype: "success"` with `is_error: true` and exit 1. Refused
 * credentials make the run `paused` (the node's fault, not the task's: no
 * attempt burnt); a rate or usage limit makes it `rate-limited`, with `retryAt`
 * when a reset time can be read; a run stopped by its `--max-budget-usd` cap
 * (`subtype: "error_max_budget_usd"`, `is_error: false`) is a failure, and a
 * final one: a retry would spend the budget again, so the task ends `failed` at
 * once.
 */

export interface RunFacts {
  bin: string
  taskId: string
  /** The run's `--max-budget-usd`, and whether it was the node's own cap or what was left of a budget. */
  maxBudgetUsd?: number | undefined
  budgetFrom?: 'node' | 'budget' | undefined
  maxTurns?: number | undefined
}

/** Result subtypes of a run that its `--max-budget-usd` cap stopped. */
export function isBudgetStop (subtype: string): boolean {
  return subtype === 'error_max_budget_usd' || /budget/i.test(subtype)
}

/** An aborted run: `aborted`, except the scheduler's timeout (a `TimeoutError` reason), which is a failed attempt. */
export function abortedResult (signal: AbortSignal, r: ResultEvent | null): AgentResult {
  const reason = abortReason(signal)
  return {
    outcome: abortedByTimeout(signal) ? 'failure' : 'aborted',
    error: reason,
    costUsd: r?.costUsd ?? 0,
    tokens: r?.tokens ?? ZERO_TOKENS
  }
}

/** The outcome of a run from its exit and what its stream said. */
export function classifyRun (exit: GroupRunResult, parser: StreamParser, signal: AbortSignal, facts: RunFacts): AgentResult {
  const r = parser.result
  const costUsd = r?.costUsd ?? 0
  const tokens = r?.tokens ?? ZERO_TOKENS

  if (exit.spawnError !== null) {
    return { outcome: 'unavailable', error: `could not start claude (${facts.bin}): ${exit.spawnError.message}. Install Claude Code or pass --claude-bin PATH.`, costUsd, tokens }
  }
  if (exit.aborted) return abortedResult(signal, r)

  const auth = parser.authFailure ?? (r !== null && r.isError && isAuthText(r.text) ? clip(r.text, 300) : null)
  if (auth !== null) {
    return { outcome: 'paused', error: `claude could not use its credentials: ${auth}. Check ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN or the login (claude login) on this node.`, costUsd, tokens }
  }

  const lingered = exit.killedFor !== null
  const exitOk = exit.code === 0 || (lingered && r !== null)
  const subtypeOk = r !== null && (r.subtype === 'success' || r.subtype === '')
  if (exitOk && r !== null && !r.isError && subtypeOk) {
    const summary = r.text.trim() !== '' ? clipSummary(r.text) : `claude finished after ${r.numTurns ?? '?'} turns without a result text`
    return { outcome: 'success', error: null, costUsd, tokens, summary }
  }

  // Not a success: a rate or usage limit does not burn an attempt.
  // (The result text is the model's own answer unless is_error: only then is it claude's error.)
  const limitTexts = [r?.isError === true ? r.text : '', ...parser.assistantErrors, ...exit.stderrTail]
  const limited = parser.rejectedLimit || limitTexts.some(isRateLimitText)
  const how = exit.code !== null ? `exit code ${exit.code}` : exit.exitSignal !== null ? `killed by ${exit.exitSignal}` : 'no exit code'
  const extra = parser.nonJsonLines > 0 ? ` (${parser.nonJsonLines} non-JSON stdout lines ignored)` : ''
  if (limited) {
    const retryAt = parser.resetsAt ?? limitTexts.map(t => parseResetTime(t)).find(t => t !== undefined)
    const text = limitTexts.find(isRateLimitText) ?? 'rate_limit_event status "rejected"'
    return { outcome: 'rate-limited', error: `claude hit a rate or usage limit: ${clip(text, 500)}`, costUsd, tokens, ...(retryAt !== undefined ? { retryAt } : {}) }
  }

  let error: string
  if (r !== null && isBudgetStop(r.subtype) && facts.budgetFrom === 'budget') {
    // the mesh's or the plan's budget ran out, not this task's: it waits, held, until the budget is raised
    error = `claude stopped at what was left of the budget ($${facts.maxBudgetUsd ?? '?'}; spent $${r.costUsd.toFixed(4)}, ${how}); the task waits until \`meshwork budget\` raises the budget`
    return { outcome: 'budget', error, costUsd, tokens }
  }
  if (r !== null && isBudgetStop(r.subtype)) {
    // a retry would start over and spend the budget again: the task fails at once
    error = withTail(`claude stopped: per-run budget of $${facts.maxBudgetUsd ?? '?'} exceeded (spent $${r.costUsd.toFixed(4)}, ${how}); not retried: raise --max-budget-usd or split the task, then \`meshwork retry ${facts.taskId}\``, 'stderr', exit.stderrTail)
    return { outcome: 'failure', error, costUsd, tokens, final: true }
  }
  if (r === null) {
    error = withTail(`claude ended (${how}) without a result event${extra}`, 'stderr', exit.stderrTail)
  } else if (r.isError) {
    error = withTail(`claude reported an error (subtype ${r.subtype}, ${how}): ${clip(r.text, 1000) || '(no result text)'}`, 'stderr', exit.stderrTail)
  } else if (!subtypeOk) {
    const why = r.subtype === 'error_max_turns' ? `reached --max-turns ${facts.maxTurns ?? '?'}` : `result subtype ${r.subtype}`
    error = withTail(`claude stopped: ${why} (${how})`, 'stderr', exit.stderrTail)
  } else {
    error = withTail(`claude exited with ${how} after a successful result event${extra}`, 'stderr', exit.stderrTail)
  }
  return { outcome: 'failure', error, costUsd, tokens }
}
