import { http } from '../util/http.ts'
import { createInterface } from 'node:readline'

/*
 * The MCP server Claude Code starts (stdio) for a run of a node started with
 * `--approvals`: it serves one tool, `approve`, which the run is told to use as
 * its `--permission-prompt-tool`. Claude calls it with
 * `{ tool_name, input, tool_use_id }` whenever a tool use is neither allowed
 * nor denied by the run's rules; the tool asks the node (127.0.0.1 HTTP, the
 * URL and the run's secret in this process's environment), which puts the
 * request on the board and answers once a human decided, and returns Claude's
 * permission result as the text content: `{"behavior":"allow","updatedInput":
 * {...}}` or `{"behavior":"deny","message":"..."}`.
 *
 * Run as a script (approval-mcp-server.ts) with the node's own Node binary, it imports nothing but
 * Node's built-ins (`node:http` through util/http.ts; it starts with every run). MCP over stdio is JSON-RPC 2.0,
 * one message a line; the few methods a tool server needs are answered here
 * (the MCP SDK would add a dependency tree for that). Nothing else may be
 * written to stdout.
 */

/** The environment variables naming the node's approval endpoint and this run's secret. */
export const APPROVAL_URL_ENV = 'MESHWORK_APPROVAL_URL'
export const APPROVAL_TOKEN_ENV = 'MESHWORK_APPROVAL_TOKEN'

/** The tool's name; Claude sees it as `mcp__meshwork__approve`. */
export const APPROVAL_TOOL = 'approve'

/** The MCP protocol version answered when the client names none. */
const PROTOCOL_VERSION = '2025-06-18'

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }

interface RpcMessage {
  jsonrpc?: string
  id?: string | number | null
  method?: string
  params?: Record<string, unknown>
}

/** Claude's permission result: what the tool returns as its text. */
export type PermissionResult =
  | { behavior: 'allow', updatedInput: Record<string, unknown> }
  | { behavior: 'deny', message: string }

/** Asks the node and waits (as long as it takes: a human decides) for its answer. */
function askNode (url: string, token: string, body: unknown, signal: AbortSignal): Promise<PermissionResult> {
  return new Promise(resolve => {
    const deny = (why: string): void => { resolve({ behavior: 'deny', message: `meshwork could not ask for approval: ${why}` }) }
    const data = JSON.stringify(body)
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), authorization: `Bearer ${token}` }, signal }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', err => { deny(err.message) })
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        if (res.statusCode !== 200) { deny(`the node answered HTTP ${res.statusCode ?? '?'}: ${text.slice(0, 300)}`); return }
        try {
          const r = JSON.parse(text) as PermissionResult
          if (r.behavior === 'allow' && typeof r.updatedInput === 'object' && r.updatedInput !== null) resolve(r)
          else if (r.behavior === 'deny' && typeof r.message === 'string') resolve(r)
          else deny('the node gave no decision')
        } catch {
          deny('the node gave no decision')
        }
      })
    })
    req.on('error', err => { deny(err.message) })
    req.end(data)
  })
}

const TOOL = {
  name: APPROVAL_TOOL,
  description: 'meshwork: asks a human (on any machine of the mesh) whether a tool use may go ahead. Used by Claude Code as its permission prompt tool.',
  inputSchema: {
    type: 'object',
    properties: {
      tool_name: { type: 'string', description: 'The tool that asks for permission.' },
      input: { type: 'object', description: 'The tool\'s input.' },
      tool_use_id: { type: 'string' }
    },
    required: ['tool_name', 'input']
  }
}

/** Serves MCP on stdin/stdout until stdin closes. */
export function serveApprovalMcp (env: NodeJS.ProcessEnv = process.env): void {
  const url = env[APPROVAL_URL_ENV] ?? ''
  const token = env[APPROVAL_TOKEN_ENV] ?? ''
  const calls = new Map<string | number, AbortController>()
  const send = (msg: Record<string, Json>): void => { process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...msg }) + '\n') }
  const reply = (id: string | number, result: Record<string, Json>): void => { send({ id, result }) }
  const fail = (id: string | number, code: number, message: string): void => { send({ id, error: { code, message } }) }

  const handle = async (m: RpcMessage): Promise<void> => {
    const id = m.id
    if (m.method === 'notifications/cancelled') {
      const target = m.params?.requestId
      if (typeof target === 'string' || typeof target === 'number') calls.get(target)?.abort()
      return
    }
    if (id === undefined || id === null) return // other notifications need no answer
    switch (m.method) {
      case 'initialize': {
        const asked = m.params?.protocolVersion
        reply(id, { protocolVersion: typeof asked === 'string' ? asked : PROTOCOL_VERSION, capabilities: { tools: {} }, serverInfo: { name: 'meshwork', version: '1' } })
        return
      }
      case 'ping':
        reply(id, {})
        return
      case 'tools/list':
        reply(id, { tools: [TOOL] as unknown as Json })
        return
      case 'tools/call': {
        const name = m.params?.name
        const args = (m.params?.arguments ?? {}) as Record<string, unknown>
        if (name !== APPROVAL_TOOL) { fail(id, -32602, `unknown tool ${String(name)}`); return }
        const input = typeof args.input === 'object' && args.input !== null ? args.input as Record<string, unknown> : {}
        const ac = new AbortController()
        calls.set(id, ac)
        const result = url === '' || token === ''
          ? { behavior: 'deny' as const, message: 'meshwork could not ask for approval: the approval endpoint is not configured' }
          : await askNode(url, token, { tool_name: String(args.tool_name ?? ''), input, tool_use_id: String(args.tool_use_id ?? '') }, ac.signal)
        calls.delete(id)
        if (ac.signal.aborted) return
        reply(id, { content: [{ type: 'text', text: JSON.stringify(result) }] })
        return
      }
      default:
        fail(id, -32601, `method ${String(m.method)} not found`)
    }
  }

  const lines = createInterface({ input: process.stdin })
  lines.on('line', line => {
    if (line.trim() === '') return
    let m: RpcMessage
    try { m = JSON.parse(line) as RpcMessage } catch { send({ id: null, error: { code: -32700, message: 'parse error' } }); return }
    void handle(m).catch(err => { if (m.id !== undefined && m.id !== null) fail(m.id, -32603, String(err)) })
  })
  lines.on('close', () => {
    for (const ac of calls.values()) ac.abort()
    process.exit(0)
  })
}
