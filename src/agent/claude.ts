import { constants, createWriteStream } from 'node:fs'
import { access, mkdir, stat } from 'node:fs/promises'
import { delimiter, join, resolve } from 'node:path'
import type { Tokens } from '../crdt/schema.ts'
import { abortReason, meshworkEnv, promptText, runInGroup, withTail } from './process.ts'
import { ZERO_TOKENS, clipSummary, type Agent, type AgentProgress, type AgentResult, type AgentRunInit } from './types.ts'

/*
 * The `claude` agent: runs Claude Code in print mode
 * with streamed JSON in the task's worktree and judges the run by its final
 * `result` event.
 *
 * CLI spellings, as found in Claude Code's public CLI reference
 * (docs.anthropic.com/en/docs/claude-code/cli-reference, mirrored at
 * docs.arantic.com/claude-code/flags) and public wrappers (nucel-agent-claude-code
 * on docs.rs, which spawns `claude --permission-mode M --max-budget-usd X -p
 * --output-format stream-json --verbose --max-turns N`):
 *   -p / --print                 print mode; the prompt is read from stdin when no
 *                                positional prompt is given
 *   --output-format stream-json  NDJSON events; needs --verbose in print mode
 *                                (checked: the CLI exits 1 without it)
 *   --verbose
 *   --permission-mode MODE       default | acceptEdits | plan | bypassPermissions | dontAsk
 *   --allowedTools RULE...       variadic; documented as separate arguments,
 *                                e.g. "Bash(git log:*)" "Read" (commas work too)
 *   --disallowedTools RULE...    same form
 *   --model NAME
 *   --max-turns N                print mode; hidden from --help (checked against the CLI)
 *   --max-budget-usd X           print mode; a per-run spending cap. Checked between
 *                                turns, so a run can overshoot; the run then ends
 *                                with `subtype: "error_max_budget_usd"` and
 *                                `is_error: false` (agentmastered.com recipe
 *                                "set-budget-cap"; jonnyquan/claude-agent-sdk-go
 *                                example 16) — judged a failure here, and a final one: a
 *                                retry would spend the budget again, so the task
 *                                ends `failed` at once.
 *
 * Stream-json field names (system/init, assistant, user, result with subtype,
 * is_error, total_cost_usd, usage.{input,output,cache_read_input,
 * cache_creation_input}_tokens, result, num_turns, permission_denials) from
 * github.com/matt-grain/Claude-Debussy docs/CLAUDE_JSON_FORMAT.md and
 * Omar-Unpossible/claude_code_orchestrator docs/research/claude-code-json-response-schema.md.
 *
 * Rate and usage limits, as Claude Code prints them (anthropics/claude-code
 * issues #2087, #9046, #11429: result text "Claude AI usage limit reached|<epoch
 * seconds>"; #2087, #15064: "Claude usage limit reached. Your limit will reset at
 * 3pm (America/Bogota)."; #18663, #42042, #51981: "You've hit your limit · resets
 * 8pm (Europe/Berlin)" / "resets Apr 23 at 4pm (America/Recife)"; the API errors
 * behind them: "429 {"type":"error","error":{"type":"rate_limit_error",...}}";
 * #39745, #72390: "API Error: 529 {...overloaded_error...}" / "API Error: 529
 * Overloaded."). Recent versions also stream a `rate_limit_event` whose
 * `rate_limit_info` has `status` ("allowed", "allowed_warning", "rejected") and
 * `resetsAt` (epoch seconds) (openclaw/openclaw PR #80528 and public wrappers).
 * Any of these on a run that did not succeed makes it `rate-limited`, with
 * `retryAt` when a reset time can be read.
 *
 * Environment: the run gets MESHWORK_TASK_ID, MESHWORK_TASK_TITLE, MESHWORK_NODE
 * (plus MESHWORK_PEER_ID, MESHWORK_ATTEMPT) and its own CLAUDE_CONFIG_DIR under
 * `dataDir/claude/<task-id>-<attempt>` (created empty: nothing is copied, so
 * credentials must come from ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN, which
 * pass through). CLAUDECODE and CLAUDE_CODE_ENTRYPOINT are removed: Claude Code
 * refuses to start when it sees CLAUDECODE ("cannot be launched inside another
 * Claude Code session", e.g. chenhg5/cc-connect#1), which a node started from a
 * Claude Code shell would otherwise pass on.
 *
 * bypassPermissions: Claude Code refuses it (like --dangerously-skip-permissions)
 * when running as root unless IS_SANDBOX=1 (checked against the CLI); with that mode we
 * set IS_SANDBOX=1 only when this process runs as root, i.e. the operator chose
 * both root and bypassPermissions for the node.
 */

export interface ClaudeAgentInit {
  /** The claude executable (default `claude`). */
  bin?: string
  /** `--permission-mode` (default `acceptEdits`). */
  permissionMode?: string
  /** `--allowedTools` rules, e.g. `Bash(git *)`. */
  allowedTools?: string[]
  model?: string
  maxTurns?: number
  /** Per-run cap, passed as `--max-budget-usd`. */
  maxBudgetUsd?: number
  /** Node data dir: per-run CLAUDE_CONFIG_DIR under `claude/`, transcripts under `transcripts/`. */
  dataDir: string
  /** The node's human label, given to the agent as MESHWORK_NODE. */
  nodeName: string
  /** Extra environment for every run. */
  env?: Record<string, string>
  /** Grace between SIGTERM and SIGKILL of the run's process group (default 2000 ms). */
  killGraceMs?: number
  /** How long claude may linger after its `result` event before its group is killed (default 15000 ms). */
  resultExitGraceMs?: number
}

/** Tools meshwork does not let the agent use: meshwork owns the worktrees, branches and commits of a run. */
export const CLAUDE_DISALLOWED_TOOLS = ['EnterWorktree', 'ExitWorktree'] as const

/** The argument list for one run (the prompt goes on stdin). */
export function claudeArgs (init: ClaudeAgentInit): string[] {
  const args = ['-p', '--output-format', 'stream-json', '--verbose', '--permission-mode', init.permissionMode ?? 'acceptEdits']
  const allowed = (init.allowedTools ?? []).map(r => r.trim()).filter(r => r.length > 0)
  if (allowed.length > 0) args.push('--allowedTools', ...allowed)
  args.push('--disallowedTools', CLAUDE_DISALLOWED_TOOLS.join(','))
  if (init.model !== undefined && init.model.length > 0) args.push('--model', init.model)
  if (init.maxTurns !== undefined) args.push('--max-turns', String(init.maxTurns))
  if (init.maxBudgetUsd !== undefined) args.push('--max-budget-usd', String(init.maxBudgetUsd))
  return args
}

interface ResultEvent {
  subtype: string
  isError: boolean
  text: string
  costUsd: number
  tokens: Tokens
  numTurns: number | null
  denials: number
}

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
      await mkdir(configDir, { recursive: true, mode: 0o700 })
      await mkdir(transcriptDir, { recursive: true })
      const transcriptPath = join(transcriptDir, `${runId}.jsonl`)
      const transcript = createWriteStream(transcriptPath, { flags: 'w' })
      transcript.on('error', () => { /* a transcript that cannot be written does not fail the run */ })

      const env: NodeJS.ProcessEnv = { ...process.env, ...init.env, ...meshworkEnv(run.task, init.nodeName, run.node, run.attempt), ...run.env, CLAUDE_CONFIG_DIR: configDir }
      delete env.CLAUDECODE
      delete env.CLAUDE_CODE_ENTRYPOINT
      if (permissionMode === 'bypassPermissions' && process.getuid?.() === 0) env.IS_SANDBOX = '1'

      const progress = (p: AgentProgress): void => {
        try { run.onProgress?.(p) } catch { /* listener errors are not the run's */ }
      }
      const parser = new StreamParser(progress)
      let lingerTimer: NodeJS.Timeout | null = null

      const handle = runInGroup({
        file: bin,
        args: claudeArgs({ ...init, permissionMode }),
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
      await new Promise<void>(resolve => { transcript.end(() => { resolve() }) })

      const r = parser.result
      const costUsd = r?.costUsd ?? 0
      const tokens = r?.tokens ?? ZERO_TOKENS

      if (exit.spawnError !== null) {
        return { outcome: 'unavailable', error: `could not start claude (${bin}): ${exit.spawnError.message}. Install Claude Code or pass --claude-bin PATH.`, costUsd, tokens }
      }
      if (exit.aborted) return abortedResult(run.signal, r)

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
      if (r !== null && isBudgetStop(r.subtype)) {
        // a retry would start over and spend the budget again: the task fails at once
        error = withTail(`claude stopped: per-run budget of $${init.maxBudgetUsd ?? '?'} exceeded (spent $${r.costUsd.toFixed(4)}, ${how}); not retried: raise --max-budget-usd or split the task, then \`meshwork retry ${run.task.id}\``, 'stderr', exit.stderrTail)
        return { outcome: 'failure', error, costUsd, tokens, final: true }
      }
      if (r === null) {
        error = withTail(`claude ended (${how}) without a result event${extra}`, 'stderr', exit.stderrTail)
      } else if (r.isError) {
        error = withTail(`claude reported an error (subtype ${r.subtype}, ${how}): ${clip(r.text, 1000) || '(no result text)'}`, 'stderr', exit.stderrTail)
      } else if (!subtypeOk) {
        const why = r.subtype === 'error_max_turns' ? `reached --max-turns ${init.maxTurns ?? '?'}` : `result subtype ${r.subtype}`
        error = withTail(`claude stopped: ${why} (${how})`, 'stderr', exit.stderrTail)
      } else {
        error = withTail(`claude exited with ${how} after a successful result event${extra}`, 'stderr', exit.stderrTail)
      }
      return { outcome: 'failure', error, costUsd, tokens }
    }
  }
}

/** Result subtypes of a run that its `--max-budget-usd` cap stopped. */
export function isBudgetStop (subtype: string): boolean {
  return subtype === 'error_max_budget_usd' || /budget/i.test(subtype)
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

/** An aborted run: `aborted`, except the scheduler's timeout ("timed out …"), which is a failed attempt. */
function abortedResult (signal: AbortSignal, r: ResultEvent | null): AgentResult {
  const reason = abortReason(signal)
  return {
    outcome: reason.startsWith('timed out') ? 'failure' : 'aborted',
    error: reason,
    costUsd: r?.costUsd ?? 0,
    tokens: r?.tokens ?? ZERO_TOKENS
  }
}

/** Reads claude's NDJSON events one line at a time and turns them into progress. */
export class StreamParser {
  result: ResultEvent | null = null
  nonJsonLines = 0
  /** A `rate_limit_event` said the request was rejected. */
  rejectedLimit = false
  /** Reset time (epoch ms) from a rejected `rate_limit_event`. */
  resetsAt: number | undefined
  /** Assistant texts that look like API errors ("API Error: …"), for limit detection. */
  readonly assistantErrors: string[] = []
  private turns = 0
  private readonly seenMessages = new Set<string>()
  private readonly progress: (p: AgentProgress) => void

  constructor (progress: (p: AgentProgress) => void) {
    this.progress = progress
  }

  line (raw: string): void {
    const text = raw.trim()
    if (text.length === 0) return
    let ev: unknown
    try {
      ev = JSON.parse(text)
    } catch {
      ev = undefined
    }
    if (!isObject(ev) || typeof ev.type !== 'string') {
      this.nonJsonLines++
      if (this.nonJsonLines === 1) this.progress({ kind: 'info', text: `ignored a non-JSON line: ${clip(oneLine(text), 120)}` })
      return
    }
    switch (ev.type) {
      case 'system': this.system(ev); break
      case 'assistant': this.assistant(ev); break
      case 'user': this.user(ev); break
      case 'result': this.resultEvent(ev); break
      case 'rate_limit_event': this.rateLimit(ev); break
      default: break // stream_event, hooks and future kinds
    }
  }

  private system (ev: Record<string, unknown>): void {
    if (ev.subtype !== 'init') return
    const model = typeof ev.model === 'string' ? ev.model : '?'
    const session = typeof ev.session_id === 'string' ? ev.session_id : '?'
    const tools = Array.isArray(ev.tools) ? ev.tools.length : 0
    this.progress({ kind: 'info', text: `claude session ${session} (model ${model}, ${tools} tools)` })
  }

  private assistant (ev: Record<string, unknown>): void {
    const msg = ev.message
    if (!isObject(msg)) return
    const id = typeof msg.id === 'string' ? msg.id : null
    // Claude Code may stream one assistant line per content block of the same message.
    if (id === null || !this.seenMessages.has(id)) {
      if (id !== null) this.seenMessages.add(id)
      this.turns++
      this.progress({ kind: 'turn', text: `turn ${this.turns}` })
    }
    if (!Array.isArray(msg.content)) return
    for (const block of msg.content) {
      if (!isObject(block)) continue
      if (block.type === 'text' && typeof block.text === 'string' && block.text.trim().length > 0) {
        if (/^API Error/i.test(block.text.trim())) this.assistantErrors.push(block.text)
        this.progress({ kind: 'text', text: clip(oneLine(block.text), 300) })
      } else if (block.type === 'tool_use' && typeof block.name === 'string') {
        this.progress({ kind: 'tool', text: toolSummary(block.name, block.input) })
      }
    }
  }

  private user (ev: Record<string, unknown>): void {
    const msg = ev.message
    if (!isObject(msg) || !Array.isArray(msg.content)) return
    for (const block of msg.content) {
      if (!isObject(block) || block.type !== 'tool_result' || block.is_error !== true) continue
      this.progress({ kind: 'info', text: `tool error: ${clip(oneLine(toolResultText(block.content)), 200)}` })
    }
  }

  private resultEvent (ev: Record<string, unknown>): void {
    const usage = isObject(ev.usage) ? ev.usage : {}
    const n = (v: unknown): number => typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0
    this.result = {
      subtype: typeof ev.subtype === 'string' ? ev.subtype : '',
      isError: ev.is_error === true,
      text: typeof ev.result === 'string' ? ev.result : Array.isArray(ev.errors) ? ev.errors.map(String).join('; ') : '',
      costUsd: n(ev.total_cost_usd),
      tokens: {
        input: n(usage.input_tokens),
        output: n(usage.output_tokens),
        cacheRead: n(usage.cache_read_input_tokens),
        cacheWrite: n(usage.cache_creation_input_tokens)
      },
      numTurns: typeof ev.num_turns === 'number' ? ev.num_turns : null,
      denials: Array.isArray(ev.permission_denials) ? ev.permission_denials.length : 0
    }
    const r = this.result
    this.progress({ kind: 'info', text: `result: ${r.subtype}${r.isError ? ' (error)' : ''} after ${r.numTurns ?? '?'} turns, $${r.costUsd.toFixed(4)}` })
    if (r.denials > 0) this.progress({ kind: 'info', text: `${r.denials} tool use(s) were denied by the permission settings` })
  }

  private rateLimit (ev: Record<string, unknown>): void {
    const info = ev.rate_limit_info
    if (!isObject(info) || info.status !== 'rejected') return
    this.rejectedLimit = true
    if (typeof info.resetsAt === 'number' && info.resetsAt > 0) {
      this.resetsAt = info.resetsAt < 1e12 ? info.resetsAt * 1000 : info.resetsAt
    }
    this.progress({ kind: 'info', text: `rate limit reached${this.resetsAt !== undefined ? `, resets ${new Date(this.resetsAt).toISOString()}` : ''}` })
  }
}

/** `Bash: npm test`, `Edit: src/a.ts`, … */
export function toolSummary (name: string, input: unknown): string {
  const i = isObject(input) ? input : {}
  const s = (k: string): string | undefined => typeof i[k] === 'string' ? i[k] : undefined
  let detail: string | undefined
  switch (name) {
    case 'Bash': detail = s('command'); break
    case 'Read': case 'Write': case 'Edit': case 'MultiEdit': detail = s('file_path'); break
    case 'NotebookEdit': detail = s('notebook_path'); break
    case 'Glob': case 'Grep': detail = [s('pattern'), s('path')].filter(x => x !== undefined).join(' in '); break
    case 'WebFetch': detail = s('url'); break
    case 'WebSearch': detail = s('query'); break
    case 'Task': case 'Agent': detail = s('description'); break
    case 'TodoWrite': detail = Array.isArray(i.todos) ? `${i.todos.length} todos` : undefined; break
    default: detail = Object.keys(i).length > 0 ? JSON.stringify(i) : undefined
  }
  return detail !== undefined && detail.length > 0 ? `${name}: ${clip(oneLine(detail), 160)}` : name
}

function toolResultText (content: unknown): string {
  if (typeof content === 'string') return content
  if (Array.isArray(content)) return content.map(c => isObject(c) && typeof c.text === 'string' ? c.text : '').join(' ')
  return ''
}

/** True for the texts Claude Code prints for rate limits, usage limits and overload. */
export function isRateLimitText (text: string): boolean {
  if (text.length === 0) return false
  return /usage limit reached|hit your limit|limit will reset|rate[ _-]?limit|too many requests|overloaded|\b(429|529)\b.{0,40}(error|rate|overload|too many)|api error:?\s*\(?(429|529)\b/i.test(text)
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']

/**
 * The reset time (epoch ms) in a limit message, if one can be read:
 * "Claude AI usage limit reached|1749924000", "resets 8pm (Europe/Berlin)",
 * "resets Apr 23 at 4pm (America/Recife)", "resets Jan 21, 5am (Etc/GMT-9)",
 * "Your limit will reset at 3pm (America/Bogota)". Without a zone the local one
 * is assumed. A bare time means its next occurrence after `now`.
 */
export function parseResetTime (text: string, now = Date.now()): number | undefined {
  const epoch = /limit reached\|(\d{9,13})/i.exec(text)
  if (epoch !== null) {
    const n = Number(epoch[1])
    return n < 1e12 ? n * 1000 : n
  }
  const m = /resets?\s+(?:at\s+)?(?:([A-Za-z]{3})[a-z]*\.?\s+(\d{1,2})(?:,|\s+at)?\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b(?:\s*\(([^)]+)\))?/i.exec(text)
  if (m === null) return undefined
  let hour = Number(m[3]) % 12
  if (m[5]!.toLowerCase() === 'pm') hour += 12
  const minute = m[4] !== undefined ? Number(m[4]) : 0
  const zone = m[6]?.trim() ?? Intl.DateTimeFormat().resolvedOptions().timeZone
  try {
    const today = zonedParts(now, zone)
    if (m[1] !== undefined && m[2] !== undefined) {
      const month = MONTHS.indexOf(m[1].toLowerCase())
      if (month === -1) return undefined
      let t = zonedToEpoch(today.year, month, Number(m[2]), hour, minute, zone)
      if (t < now - 86_400_000) t = zonedToEpoch(today.year + 1, month, Number(m[2]), hour, minute, zone)
      return t
    }
    let t = zonedToEpoch(today.year, today.month, today.day, hour, minute, zone)
    if (t <= now) t = zonedToEpoch(today.year, today.month, today.day + 1, hour, minute, zone)
    return t
  } catch {
    return undefined // unknown time zone
  }
}

function zonedParts (t: number, zone: string): { year: number, month: number, day: number, hour: number, minute: number, second: number } {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' }).formatToParts(t)
  const get = (type: string): number => Number(parts.find(p => p.type === type)?.value ?? 0)
  return { year: get('year'), month: get('month') - 1, day: get('day'), hour: get('hour'), minute: get('minute'), second: get('second') }
}

/** Epoch ms of a wall-clock time in `zone` (month 0-based; days may overflow). */
function zonedToEpoch (year: number, month: number, day: number, hour: number, minute: number, zone: string): number {
  const wall = Date.UTC(year, month, day, hour, minute)
  const offsetAt = (t: number): number => {
    const p = zonedParts(t, zone)
    return Date.UTC(p.year, p.month, p.day, p.hour, p.minute, p.second) - Math.floor(t / 1000) * 1000
  }
  let t = wall - offsetAt(wall)
  t = wall - offsetAt(t)
  return t
}

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function oneLine (s: string): string {
  return s.replace(/\s+/g, ' ').trim()
}

function clip (s: string, max: number): string {
  return s.length > max ? s.slice(0, max - 1) + '…' : s
}

