/**
 * A stand-in for the Anthropic Messages API on 127.0.0.1, for running the real
 * Claude Code CLI in tests without the real API (point the CLI at it with
 * `ANTHROPIC_BASE_URL`). It answers `POST /v1/messages` with server-sent events
 * (message_start, content_block_start / _delta / _stop with `text_delta` and
 * `input_json_delta`, message_delta with stop_reason and usage, message_stop),
 * and scripts tool calls and API failures through a `script` function of the
 * request. Every request is recorded (headers and body) for assertions.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { execFileSync } from 'node:child_process'
import { resolve } from 'node:path'

/** One scripted answer. */
export type Reply =
  | { text: string }
  | { tool: string, input: Record<string, unknown>, text?: string }
  | { status: number, errorType?: string, message?: string }

export interface ApiRequest {
  headers: IncomingHttpHeaders
  body: Record<string, unknown>
  /** The text of the first user message (where the CLI puts the prompt). */
  prompt: string
  /** How many assistant messages the conversation holds: 0 for the first call of a run. */
  turn: number
  /** Texts of every tool_result in the last user message. */
  toolResults: string[]
}

export type Script = (req: ApiRequest) => Reply

/** Usage reported on every reply (so a run's tokens and cost are not zero). */
export const USAGE = { input_tokens: 120, output_tokens: 30, cache_read_input_tokens: 10, cache_creation_input_tokens: 5 }

export interface MessagesApi {
  url: string
  requests: ApiRequest[]
  /** Replace the script (e.g. to make the API healthy again). */
  setScript: (s: Script) => void
  close: () => Promise<void>
}

function textOf (content: unknown): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) return ''
  return content.map(c => {
    if (typeof c !== 'object' || c === null) return ''
    const b = c as Record<string, unknown>
    if (b.type === 'text' && typeof b.text === 'string') return b.text
    if (b.type === 'tool_result') return textOf(b.content)
    return ''
  }).join('\n')
}

function parseRequest (headers: IncomingHttpHeaders, body: Record<string, unknown>): ApiRequest {
  const messages = Array.isArray(body.messages) ? body.messages as Array<Record<string, unknown>> : []
  const firstUser = messages.find(m => m.role === 'user')
  const users = messages.filter(m => m.role === 'user')
  const last = users[users.length - 1]
  const toolResults = Array.isArray(last?.content)
    ? (last.content as Array<Record<string, unknown>>).filter(b => b?.type === 'tool_result').map(b => textOf(b.content))
    : []
  return {
    headers,
    body,
    prompt: textOf(firstUser?.content),
    turn: messages.filter(m => m.role === 'assistant').length,
    toolResults
  }
}

let nextId = 0

function sse (event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
}

export async function startMessagesApi (script: Script): Promise<MessagesApi> {
  let current = script
  const requests: ApiRequest[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0]
      if (req.method !== 'POST' || path !== '/v1/messages') {
        // count_tokens and anything else: not part of what the tests script
        res.writeHead(404, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: `no ${req.method} ${path} here` } }))
        return
      }
      let body: Record<string, unknown> = {}
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch { /* an empty body is answered like any other */ }
      const r = parseRequest(req.headers, body)
      requests.push(r)
      let reply: Reply
      try { reply = current(r) } catch (err) { reply = { status: 500, message: `stand-in script threw: ${String(err)}` } }
      const model = typeof body.model === 'string' ? body.model : 'claude-stand-in'
      if ('status' in reply) {
        const type = reply.errorType ?? (reply.status === 401 ? 'authentication_error' : reply.status === 403 ? 'permission_error' : reply.status === 429 ? 'rate_limit_error' : reply.status === 529 ? 'overloaded_error' : 'api_error')
        res.writeHead(reply.status, { 'content-type': 'application/json', 'request-id': `req_${++nextId}` })
        res.end(JSON.stringify({ type: 'error', error: { type, message: reply.message ?? type } }))
        return
      }
      const id = `msg_standin_${++nextId}`
      const blocks: Array<Record<string, unknown>> = []
      if ('text' in reply && reply.text !== undefined) blocks.push({ type: 'text', text: reply.text })
      if ('tool' in reply) blocks.push({ type: 'tool_use', id: `toolu_standin_${++nextId}`, name: reply.tool, input: reply.input })
      const stopReason = 'tool' in reply ? 'tool_use' : 'end_turn'
      if (body.stream !== true) {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ id, type: 'message', role: 'assistant', model, content: blocks, stop_reason: stopReason, stop_sequence: null, usage: USAGE }))
        return
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
      let out = sse('message_start', { type: 'message_start', message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { ...USAGE, output_tokens: 1 } } })
      blocks.forEach((b, index) => {
        if (b.type === 'text') {
          out += sse('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '' } })
          out += sse('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: b.text } })
        } else {
          out += sse('content_block_start', { type: 'content_block_start', index, content_block: { type: 'tool_use', id: b.id, name: b.name, input: {} } })
          const json = JSON.stringify(b.input)
          const half = Math.floor(json.length / 2)
          out += sse('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: json.slice(0, half) } })
          out += sse('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: json.slice(half) } })
        }
        out += sse('content_block_stop', { type: 'content_block_stop', index })
      })
      out += sse('message_delta', { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: USAGE.output_tokens } })
      out += sse('message_stop', { type: 'message_stop' })
      res.end(out)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setScript: s => { current = s },
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

/**
 * The environment that points the real CLI at the stand-in: no other traffic,
 * few retries (`maxRetries`), a key the stand-in accepts unless told otherwise.
 */
export function standInEnv (api: MessagesApi, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ANTHROPIC_BASE_URL: api.url,
    ANTHROPIC_API_KEY: 'sk-ant-stand-in',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
    CLAUDE_CODE_MAX_RETRIES: '2',
    ...extra
  }
}

/** The pinned real Claude Code executable, installed into a cache outside the repository on first use. */
export function realClaudeBin (): string {
  const script = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'scripts', 'claude-code.mjs')
  return execFileSync(process.execPath, [script], { encoding: 'utf8', timeout: 900_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim()
}
