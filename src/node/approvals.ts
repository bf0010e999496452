import { randomBytes } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { http } from '../util/http.ts'
import type { AddressInfo } from 'node:net'
import type { TypedEventTarget } from '@libp2p/interface'
import * as approvals from '../crdt/approvals.ts'
import { clipToolInput, type ApprovalId } from '../crdt/approval-schema.ts'
import { asPeerId, type TaskId } from '../crdt/schema.ts'
import type { PermissionResult } from '../agent/approval-mcp.ts'
import type { AgentProgress } from '../agent/types.ts'
import { APPROVAL_PROMPT_TOOL, writeApprovalConfig, type ApprovalGate, type ApprovalRunInit, type ApprovalSession } from '../agent/approvals.ts'
import type { BoardWriter } from './components.ts'
import type { MeshNodeEvents } from './types.ts'
import type { Logger } from '../util/logger.ts'

/** How long a permission request waits for a human before it is denied (`--approval-timeout`). @default 30 min */
export const DEFAULT_APPROVAL_TIMEOUT_MS = 30 * 60_000

/** Largest request body the endpoint reads (a tool input; the board keeps a clipped copy). @default 4 MiB */
const MAX_BODY_BYTES = 4 * 1024 * 1024

/** What the approval service uses of its node. */
export interface ApprovalNode extends BoardWriter, Pick<TypedEventTarget<MeshNodeEvents>, 'addEventListener' | 'removeEventListener'> {}

export interface ApprovalServiceInit {
  node: ApprovalNode
  /** How long a request waits for a human; then it is denied. @default DEFAULT_APPROVAL_TIMEOUT_MS */
  timeoutMs?: number
  logger: Logger
}

interface RunEntry {
  taskId: TaskId
  onProgress: ((p: AgentProgress) => void) | undefined
  attempt: number
  signal: AbortSignal
  /** Requests of this run still open. */
  open: Set<ApprovalId>
}

/**
 * A node's approvals (`meshwork node --approvals`): an HTTP endpoint on
 * 127.0.0.1 that the MCP server of each claude run calls with the run's
 * secret. Each call becomes an open request on the board (tool, clipped
 * input, task, node, time); the call is answered once a human allowed or
 * denied it on any machine (`meshwork approve`, the TUI), with a denial
 * after the timeout, and with an expiry when the run stops first.
 *
 * The secret keeps other local programs from filing requests in a run's name;
 * decisions come only from the board.
 */
export class ApprovalService implements ApprovalGate {
  readonly #init: ApprovalServiceInit
  readonly #timeoutMs: number
  #server: Server | null = null
  #url: Promise<string> | null = null
  readonly #runs = new Map<string, RunEntry>()

  constructor (init: ApprovalServiceInit) {
    this.#init = init
    this.#timeoutMs = init.timeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS
  }

  /** Starts the endpoint (once; later calls return the same URL). */
  async start (): Promise<string> {
    this.#url ??= new Promise<string>((resolve, reject) => {
      const server = http.createServer((req, res) => { void this.#handle(req, res) })
      // a request waits as long as a human takes: no server-side time limit (the run's and ours apply)
      server.requestTimeout = 0
      server.on('error', reject)
      server.listen(0, '127.0.0.1', () => {
        this.#server = server
        resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}/approval`)
      })
    })
    return await this.#url
  }

  /** Expires what is still open and closes the endpoint. */
  async stop (): Promise<void> {
    for (const run of this.#runs.values()) this.#expireRun(run, 'the node stopped')
    this.#runs.clear()
    const server = this.#server
    this.#server = null
    this.#url = null
    if (server === null) return
    server.closeAllConnections()
    await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }

  begin = async (run: ApprovalRunInit): Promise<ApprovalSession> => {
    const url = await this.start()
    const token = randomBytes(24).toString('hex')
    const entry: RunEntry = { taskId: run.task.id, onProgress: run.onProgress, attempt: run.attempt, signal: run.signal, open: new Set() }
    this.#runs.set(token, entry)
    const args = await writeApprovalConfig(run.configDir, url, token)
    return {
      args,
      disallowed: [APPROVAL_PROMPT_TOOL],
      end: async () => {
        this.#runs.delete(token)
        this.#expireRun(entry, 'the run ended')
      }
    }
  }

  #expireRun (run: RunEntry, why: string): void {
    if (run.open.size === 0) return
    const ids = [...run.open]
    run.open.clear()
    const at = Date.now()
    this.#init.node.changeBoard(`approval:expire ${ids.join(',')}`, d => {
      for (const id of ids) approvals.expire(d, run.taskId, id, at, why)
    })
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown): void => {
      if (res.writableEnded || res.destroyed) return
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    const auth = req.headers.authorization ?? ''
    const run = auth.startsWith('Bearer ') ? this.#runs.get(auth.slice(7)) : undefined
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/approval') { send(404, { error: 'not found' }); return }
    if (run === undefined) { send(403, { error: 'unknown run' }); return }
    let body: { tool_name?: unknown, input?: unknown }
    try {
      body = JSON.parse(await readBody(req)) as typeof body
    } catch (err) {
      send(400, { error: `bad request: ${(err as Error).message}` })
      return
    }
    const gone = new AbortController()
    res.on('close', () => { if (!res.writableFinished) gone.abort() })
    const input = typeof body.input === 'object' && body.input !== null && !Array.isArray(body.input) ? body.input as Record<string, unknown> : {}
    const result = await this.#ask(run, String(body.tool_name ?? ''), input, gone.signal)
    send(200, result)
  }

  /** Puts one request on the board and waits for its answer. */
  async #ask (run: RunEntry, tool: string, input: Record<string, unknown>, gone: AbortSignal): Promise<PermissionResult> {
    const { node, logger } = this.#init
    // allowed before with --always-for-task for this tool in this task: no human needed again
    const task = node.board.task(run.taskId)
    const standing = task === undefined ? null : approvals.standingApproval(task, tool)
    if (standing !== null) {
      logger.info('approval:standing', { task: run.taskId, tool, by: standing })
      run.onProgress?.({ kind: 'info', text: `${tool} allowed for this task by ${standing} (--always-for-task)` })
      return { behavior: 'allow', updatedInput: input }
    }
    const id = approvals.approvalIdFor(run.taskId, randomBytes(3).toString('hex'))
    const at = Date.now()
    const asked = node.changeBoard(`approval:ask ${id}`, d => { approvals.ask(d, run.taskId, { id, node: node.peerId, attempt: run.attempt, tool, input: clipToolInput(input), at }) })
    if (!asked) return { behavior: 'deny', message: `meshwork: task ${run.taskId} is not running here any more, so nobody can approve ${tool}.` }
    run.open.add(id)
    logger.info('approval:asked', { id, task: run.taskId, tool, timeoutMs: this.#timeoutMs })
    run.onProgress?.({ kind: 'info', text: `waiting for approval ${id}: ${tool} ${oneLine(input)} (\`meshwork approve ${id} --allow|--deny\`)` })
    const outcome = await this.#waitForAnswer(run, id, gone)
    run.open.delete(id)
    if (outcome === 'timeout') {
      node.changeBoard(`approval:timeout ${id}`, d => { approvals.timeOut(d, run.taskId, id, Date.now(), `nobody answered within ${durationText(this.#timeoutMs)} (--approval-timeout)`) })
    } else if (outcome === 'stopped') {
      node.changeBoard(`approval:expire ${id}`, d => { approvals.expire(d, run.taskId, id, Date.now(), run.signal.aborted ? 'the run stopped' : 'claude stopped asking') })
    }
    // whatever the board says now (a decision may have won over our timeout)
    const a = approvals.findApproval(node.board.snapshot(), id)
    logger.info('approval:answered', { id, task: run.taskId, tool, state: a?.state ?? 'unknown', by: a?.by ?? null })
    run.onProgress?.({ kind: 'info', text: `approval ${id}: ${a?.state ?? 'gone'}` })
    if (a?.state === 'allowed') return { behavior: 'allow', updatedInput: input }
    if (a?.state === 'denied') {
      const who = a.by === null ? '' : ` (${node.board.snapshot().nodes.get(asPeerId(a.by))?.name ?? a.by})`
      return { behavior: 'deny', message: a.by === null ? `meshwork: ${a.note}; ${tool} was denied.` : `meshwork: a human denied ${tool}${who}${a.note !== '' ? `: ${a.note}` : ''}.` }
    }
    return { behavior: 'deny', message: `meshwork: the request to use ${tool} expired${a?.note !== undefined && a.note !== '' ? ` (${a.note})` : ''}.` }
  }

  /** Resolves once request `id` is no longer open on the board, its time is up, or nobody waits for it any more. */
  #waitForAnswer (run: RunEntry, id: ApprovalId, gone: AbortSignal): Promise<'answered' | 'timeout' | 'stopped'> {
    const { node } = this.#init
    return new Promise(resolve => {
      let settled = false
      const finish = (how: 'answered' | 'timeout' | 'stopped'): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        node.removeEventListener('board:update', check)
        run.signal.removeEventListener('abort', stop)
        gone.removeEventListener('abort', stop)
        resolve(how)
      }
      const check = (): void => {
        const a = node.board.task(run.taskId)?.approvals?.[id]
        if (a === undefined || a.state !== 'open') finish('answered')
      }
      const stop = (): void => { finish('stopped') }
      const timer = setTimeout(() => { finish('timeout') }, this.#timeoutMs)
      node.addEventListener('board:update', check)
      run.signal.addEventListener('abort', stop, { once: true })
      gone.addEventListener('abort', stop, { once: true })
      if (run.signal.aborted || gone.aborted) stop()
      else check()
    })
  }
}

/** A tool input in one short line (a Bash command or a path as such). */
function oneLine (input: Record<string, unknown>): string {
  const v = input.command ?? input.file_path ?? input.path ?? input.url
  const text = typeof v === 'string' ? v : JSON.stringify(input)
  const flat = text.replace(/\s+/g, ' ').trim()
  return flat.length > 120 ? flat.slice(0, 119) + '…' : flat
}

/** `30m`, `90s`, `1500ms`: a timeout as the user gave it, roughly. */
function durationText (ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}

function readBody (req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_BODY_BYTES) { reject(new Error('body too large')); req.destroy(); return }
      chunks.push(c)
    })
    req.on('end', () => { resolve(Buffer.concat(chunks).toString('utf8')) })
    req.on('error', reject)
  })
}
