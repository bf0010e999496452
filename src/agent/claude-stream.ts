import type { Tokens } from '../crdt/schema.ts'
import type { AgentProgress } from './types.ts'

/*
 * The NDJSON stream of `claude -p --output-format stream-json --verbose`, read
 * one line at a time: progress for status and the TUI, the final `result`
 * event, and the API trouble the CLI reports on the way.
 *
 * Stream-json field names (system/init, assistant, user, result with subtype,
 * is_error, total_cost_usd, usage.{input,output,cache_read_input,
 * cache_creation_input}_tokens, result, num_turns, permission_denials) from
 * github.com/matt-grain/Claude-Debussy docs/CLAUDE_JSON_FORMAT.md and
 * Omar-Unpossible/claude_code_orchestrator docs/research/claude-code-json-response-schema.md,
 * checked against Claude Code 2.1.332.
 *
 * API errors (as Claude Code 2.1.332 emits them): the CLI retries failed API
 * calls itself, announcing each retry with
 *   {"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,
 *    "retry_delay_ms":593,"error_status":401,"error":"authentication_failed"}
 * (`error` is "authentication_failed" for 401, "rate_limit" for 429, "overloaded"
 * for 529). A 403 is not retried: the run ends with an assistant message whose
 * top-level `error` is "authentication_failed" and text "Failed to authenticate.
 * API Error: 403 …". Recent versions also stream a `rate_limit_event` whose
 * `rate_limit_info` has `status` ("allowed", "allowed_warning", "rejected") and
 * `resetsAt` (epoch seconds) (openclaw/openclaw PR #80528 and public wrappers).
 */

export interface ResultEvent {
  subtype: string
  isError: boolean
  text: string
  costUsd: number
  tokens: Tokens
  numTurns: number | null
  denials: number
}

/** The last `api_retry` event: the CLI is retrying a failed API call. */
export interface ApiRetry {
  attempt: number
  maxRetries: number | null
  status: number | null
  error: string
}

/** Credentials refused: the API answered 401 or 403, or the CLI said authentication failed. */
export function isAuthFailure (status: number | null, error: string): boolean {
  return status === 401 || status === 403 || /authentication|permission|unauthori[sz]ed|forbidden|oauth/i.test(error)
}

/** True for the result texts of a run whose credentials were refused. */
export function isAuthText (text: string): boolean {
  return /failed to authenticate|invalid api key|authentication[_ ]failed|oauth token (has )?expired|please run \/login|invalid bearer token/i.test(text)
}

/** Progress text for an API retry: "API overloaded, retry 3/10". */
export function retryText (r: ApiRetry): string {
  const what = r.status === 529 || /overload/i.test(r.error)
    ? 'API overloaded'
    : r.status === 429 || /rate/i.test(r.error)
      ? 'API rate limited'
      : `API error${r.status !== null ? ` ${r.status}` : ''}${r.error !== '' ? ` (${r.error})` : ''}`
  return `${what}, retry ${r.attempt}/${r.maxRetries ?? '?'}`
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
  /** The last API retry the CLI announced, if any. */
  lastRetry: ApiRetry | null = null
  /** Why the credentials were refused, once they were (the run cannot succeed). */
  authFailure: string | null = null
  private turns = 0
  private readonly seenMessages = new Set<string>()
  private readonly progress: (p: AgentProgress) => void
  private readonly onAuthFailure: (reason: string) => void

  /** `onAuthFailure` is called once, as soon as the stream shows the credentials were refused. */
  constructor (progress: (p: AgentProgress) => void, onAuthFailure: (reason: string) => void = () => {}) {
    this.progress = progress
    this.onAuthFailure = onAuthFailure
  }

  private authFailed (reason: string): void {
    if (this.authFailure !== null) return
    this.authFailure = reason
    this.progress({ kind: 'info', text: `credentials refused: ${reason}` })
    this.onAuthFailure(reason)
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
    if (ev.subtype === 'api_retry') {
      this.apiRetry(ev)
      return
    }
    if (ev.subtype !== 'init') return
    const model = typeof ev.model === 'string' ? ev.model : '?'
    const session = typeof ev.session_id === 'string' ? ev.session_id : '?'
    const tools = Array.isArray(ev.tools) ? ev.tools.length : 0
    this.progress({ kind: 'info', text: `claude session ${session} (model ${model}, ${tools} tools)` })
  }

  private apiRetry (ev: Record<string, unknown>): void {
    const r: ApiRetry = {
      attempt: typeof ev.attempt === 'number' ? ev.attempt : 0,
      maxRetries: typeof ev.max_retries === 'number' ? ev.max_retries : null,
      status: typeof ev.error_status === 'number' ? ev.error_status : null,
      error: typeof ev.error === 'string' ? ev.error : ''
    }
    this.lastRetry = r
    if (isAuthFailure(r.status, r.error)) {
      this.authFailed(`the API refused the credentials (${r.status !== null ? `HTTP ${r.status}` : 'no status'}${r.error !== '' ? `, ${r.error}` : ''})`)
      return
    }
    this.progress({ kind: 'info', text: retryText(r) })
  }

  private assistant (ev: Record<string, unknown>): void {
    const msg = ev.message
    if (!isObject(msg)) return
    // an API error ends the run with a synthetic assistant message whose `error` names the kind
    if (typeof ev.error === 'string' && /authentication|permission/i.test(ev.error)) {
      const text = Array.isArray(msg.content) ? msg.content.map(b => isObject(b) && typeof b.text === 'string' ? b.text : '').join(' ').trim() : ''
      this.authFailed(text !== '' ? clip(oneLine(text), 200) : ev.error)
    }
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

export function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function oneLine (s: string): string {
  return s.replace(/\s+/g, ' ').trim()
}

export function clip (s: string, max: number): string {
  return s.length > max ? s.slice(0, max - 1) + '…' : s
}

