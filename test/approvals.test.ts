/**
 * Approvals without the real CLI: the board's request lifecycle, the node's
 * approval service (its 127.0.0.1 endpoint, waits, timeout, expiry) driven
 * through meshwork's own stdio MCP server, the status shape, and the TUI keys.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { TypedEventEmitter } from '@libp2p/interface'
import { Board, type BoardWrite } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import * as approvals from '../src/crdt/approvals.ts'
import { clipToolInput, parseToolInput, MAX_APPROVAL_INPUT_CHARS, type ApprovalId } from '../src/crdt/approval-schema.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { ApprovalService } from '../src/node/approvals.ts'
import type { MeshNodeEvents } from '../src/node/types.ts'
import { APPROVAL_PROMPT_TOOL, approvalMcpScript } from '../src/agent/approvals.ts'
import { findApprovalRequest, statusApprovals } from '../src/api/approvals.ts'
import { buildStatus } from '../src/api/status.ts'
import { inbox } from '../src/tui/model.ts'
import { handleKey, initialUiState, keyHelp, type KeyContext } from '../src/tui/keys.ts'
import { runEffect } from '../src/tui/app.ts'
import { renderStatus } from '../src/cli/render.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import type { AgentProgress } from '../src/agent/types.ts'

const NODE = asPeerId('12D3KooWNodeA')
const CLIENT = '12D3KooWClientB'

/** A node with a real board and the events the service listens to. */
class FakeNode extends TypedEventEmitter<MeshNodeEvents> {
  readonly peerId = NODE
  readonly board = Board.create('mesh-approvals', 'aa'.repeat(16))
  changeBoard (message: string, fn: Parameters<Board['change']>[1]): boolean {
    const bytes = this.board.change(message, fn)
    if (bytes === null) return false
    this.dispatchEvent(new CustomEvent('board:update', { detail: { local: true, changes: [bytes], tasks: [] } }))
    return true
  }

  writeBoard (message: string, fn: Parameters<Board['change']>[1]): BoardWrite {
    const w = this.board.write(message, fn)
    if (w.kind === 'written') this.dispatchEvent(new CustomEvent('board:update', { detail: { local: true, changes: [w.bytes], tasks: [] } }))
    return w
  }
}

/** A board with task `t1` running on NODE. */
function runningBoard (node = new FakeNode()): FakeNode {
  node.changeBoard('plan', addTasks([simpleTask('t1'), simpleTask('t2')]))
  const id = 't1' as TaskId
  node.changeBoard('run', d => { lifecycle.claim(d, id, NODE, 0, 1); lifecycle.start(d, id, NODE, 1, 2) })
  return node
}

const T1 = 't1' as TaskId

describe('the board\'s permission requests', () => {
  it('asks only for a running task, and moves open → allowed | denied | expired once', () => {
    const node = runningBoard()
    const a = approvals.approvalIdFor(T1, 'abc123')
    const b = approvals.approvalIdFor(T1, 'def456')
    const input = clipToolInput({ command: 'npm publish' })
    expect(node.changeBoard('ask', d => { approvals.ask(d, 't2' as TaskId, { id: a, node: NODE, attempt: 1, tool: 'Bash', input, at: 5 }) })).toBe(false)
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 1, tool: 'Bash', input, at: 5 }) })).toBe(true)
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: b, node: NODE, attempt: 1, tool: 'Write', input: '{}', at: 6 }) })).toBe(true)
    // the same id twice: refused
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 1, tool: 'Bash', input, at: 7 }) })).toBe(false)
    const open = approvals.listApprovals(node.board.snapshot())
    expect(open.map(x => [x.id, x.state, x.taskId])).toEqual([[a, 'open', 't1'], [b, 'open', 't1']])
    expect(node.board.snapshot().invalid).toEqual([])

    expect(node.changeBoard('allow', d => { approvals.decide(d, T1, a, { allow: true, by: CLIENT, at: 9, note: 'ok' }) })).toBe(true)
    // answered: neither a second decision, nor a timeout, nor an expiry moves it
    expect(node.changeBoard('deny', d => { approvals.decide(d, T1, a, { allow: false, by: CLIENT, at: 10, note: '' }) })).toBe(false)
    expect(node.changeBoard('timeout', d => { approvals.timeOut(d, T1, a, 10, 'late') })).toBe(false)
    expect(node.changeBoard('cancel', d => { expect(approvals.expireAll(d, T1, 11, 'the task was cancelled')).toBe(1) })).toBe(true)
    const [x, y] = approvals.listApprovals(node.board.snapshot())
    expect(x).toMatchObject({ id: a, state: 'allowed', by: CLIENT, decidedAt: 9, note: 'ok' })
    expect(y).toMatchObject({ id: b, state: 'expired', by: null, decidedAt: 11, note: 'the task was cancelled' })
  })

  it('refuses a run that is not the task\'s current one, and reads an open request of a run that is gone as expired', () => {
    const node = runningBoard()
    const a = approvals.approvalIdFor(T1, 'a1a1a1')
    const other = asPeerId('12D3KooWOther')
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: other, attempt: 1, tool: 'Bash', input: '{}', at: 1 }) })).toBe(false)
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 2, tool: 'Bash', input: '{}', at: 1 }) })).toBe(false)
    expect(node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 1, tool: 'Bash', input: '{}', at: 1 }) })).toBe(true)
    expect(approvals.findApproval(node.board.snapshot(), a)?.state).toBe('open')
    // its node died: the others release the task; nobody wrote the request, it reads expired
    node.changeBoard('release', d => { lifecycle.release(d, T1, { now: 3, notBefore: null }) })
    expect(approvals.findApproval(node.board.snapshot(), a)).toMatchObject({ state: 'expired', note: approvals.GONE_NOTE })
    expect(() => findApprovalRequest(node.board.snapshot(), 't1')).toThrow(/no open permission request/)
  })

  it('clips a large input to a bounded JSON text that still parses, keeping the start of a command', () => {
    const long = 'x'.repeat(10_000)
    const text = clipToolInput({ command: `echo ${long}`, description: 'big' })
    expect(text.length).toBeLessThanOrEqual(MAX_APPROVAL_INPUT_CHARS)
    const back = parseToolInput(text)
    expect(String(back.command)).toMatch(/^echo x+…$/)
    expect(back.description).toBe('big')
    const huge = clipToolInput(Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${i}`, 'v'.repeat(400)])))
    expect(huge.length).toBeLessThanOrEqual(MAX_APPROVAL_INPUT_CHARS)
    expect(typeof parseToolInput(huge)).toBe('object')
    expect(parseToolInput('not json')).toEqual({ clipped: 'not json' })
  })

  it('is in status --json under approvals, in the status text, and named by its task id when it is the only open one', () => {
    const node = runningBoard()
    const a = approvals.approvalIdFor(T1, '0a0b0c')
    node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 1, tool: 'Bash', input: clipToolInput({ command: 'rm -rf build' }), at: 42 }) })
    const s = buildStatus(node.board.snapshot(), null)
    expect(s.approvals).toEqual([{ id: a, taskId: 't1', node: NODE, tool: 'Bash', input: { command: 'rm -rf build' }, state: 'open', at: 42, by: null, decidedAt: null, note: '' }])
    expect(statusApprovals(node.board.snapshot())).toEqual(s.approvals)
    expect(renderStatus(s, NODE)).toMatch(new RegExp(`APPROVALS 1 waiting[^\\n]*\\n.*\\n\\s+${a}\\s+t1\\s+\\S+\\s+Bash\\s+rm -rf build`))
    expect(findApprovalRequest(node.board.snapshot(), 't1').id).toBe(a)
    expect(() => findApprovalRequest(node.board.snapshot(), 't2')).toThrow(/has no open permission request/)
    expect(() => findApprovalRequest(node.board.snapshot(), 'nope')).toThrow(/no permission request or task "nope"/)
  })
})

/** Runs meshwork's MCP server script as Claude Code would, speaking JSON-RPC lines. */
class McpClient {
  readonly child: ChildProcessWithoutNullStreams
  #exited: Promise<void>
  #next = 1
  #waiting = new Map<number, (msg: Record<string, unknown>) => void>()
  constructor (env: Record<string, string>) {
    this.child = spawn(process.execPath, [approvalMcpScript()], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    this.#exited = new Promise(resolve => { this.child.once('exit', () => { resolve() }) })
    createInterface({ input: this.child.stdout }).on('line', line => {
      const msg = JSON.parse(line) as Record<string, unknown>
      this.#waiting.get(msg.id as number)?.(msg)
    })
  }

  request (method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#next++
    return new Promise(resolve => {
      this.#waiting.set(id, resolve)
      this.child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n')
    })
  }

  /** Calls the approve tool and returns the permission result it gives Claude. */
  async approve (tool: string, input: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await this.request('tools/call', { name: 'approve', arguments: { tool_name: tool, input, tool_use_id: 'toolu_1' } })
    const content = (r.result as { content: Array<{ type: string, text: string }> }).content
    expect(content[0]!.type).toBe('text')
    return JSON.parse(content[0]!.text) as Record<string, unknown>
  }

  /** Closes its stdin (the server exits on its own); SIGKILL if it has not within 5 s. */
  async close (): Promise<void> {
    this.child.stdin.end()
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 5000)
    await this.#exited
    clearTimeout(timer)
  }
}

describe('the node\'s approval service through meshwork\'s MCP server', () => {
  let dir = ''
  let service: ApprovalService | null = null
  const clients: McpClient[] = []
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close()
    await service?.stop()
    service = null
    if (dir !== '') await rm(dir, { recursive: true, force: true })
    dir = ''
  })

  /** A run of t1 begun on the service, with its MCP server started from the config the run would give claude. */
  async function begin (timeoutMs: number): Promise<{ node: FakeNode, mcp: McpClient, run: AbortController, progress: AgentProgress[], end: () => Promise<void>, args: string[] }> {
    dir = await mkdtemp(join(tmpdir(), 'meshwork-approvals-'))
    const node = runningBoard()
    service = new ApprovalService({ node, timeoutMs, logger: silentLogger })
    const run = new AbortController()
    const progress: AgentProgress[] = []
    const task = node.board.task('t1')!
    const session = await service.begin({ task, attempt: 1, configDir: dir, signal: run.signal, onProgress: p => { progress.push(p) } })
    expect(session.disallowed).toEqual([APPROVAL_PROMPT_TOOL])
    const file = session.args[session.args.indexOf('--mcp-config') + 1]!
    expect(session.args.slice(-2)).toEqual(['--permission-prompt-tool', 'mcp__meshwork__approve'])
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const server = (JSON.parse(await readFile(file, 'utf8')) as { mcpServers: Record<string, { command: string, args: string[], env: Record<string, string> }> }).mcpServers.meshwork!
    expect(server.command).toBe(process.execPath)
    const mcp = new McpClient(server.env)
    clients.push(mcp)
    const init = await mcp.request('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'test', version: '0' } })
    expect(init.result).toMatchObject({ protocolVersion: '2025-06-18', capabilities: { tools: {} } })
    const list = await mcp.request('tools/list')
    expect((list.result as { tools: Array<{ name: string }> }).tools.map(t => t.name)).toEqual(['approve'])
    return { node, mcp, run, progress, end: session.end, args: session.args }
  }

  const openOne = async (node: FakeNode): Promise<approvals.TaskApproval> => await waitFor(() => approvals.listApprovals(node.board.snapshot()).find(a => a.state === 'open'), { timeoutMs: 10_000, message: 'no open request on the board' })

  it('waits for a human: allowed with the tool\'s own input, denied with the note', async () => {
    const { node, mcp, progress } = await begin(60_000)
    const input = { command: 'npm publish --dry-run', description: 'publish' }
    const allowed = mcp.approve('Bash', input)
    const a = await openOne(node)
    expect(a).toMatchObject({ taskId: 't1', node: NODE, tool: 'Bash', attempt: 1 })
    expect(parseToolInput(a.input)).toEqual(input)
    expect(progress.some(p => p.text.startsWith(`waiting for approval ${a.id}: Bash npm publish --dry-run`))).toBe(true)
    node.changeBoard('allow', d => { approvals.decide(d, T1, a.id, { allow: true, by: CLIENT, at: Date.now(), note: '' }) })
    expect(await allowed).toEqual({ behavior: 'allow', updatedInput: input })

    const denied = mcp.approve('Bash', { command: 'curl example.com' })
    const b = await waitFor(() => approvals.listApprovals(node.board.snapshot()).find(x => x.state === 'open' && x.id !== a.id), { timeoutMs: 10_000, message: 'no second request' })
    node.changeBoard('deny', d => { approvals.decide(d, T1, b.id, { allow: false, by: CLIENT, at: Date.now(), note: 'no network from agents' }) })
    const r = await denied
    expect(r.behavior).toBe('deny')
    expect(String(r.message)).toContain('no network from agents')
  })

  it('--always-for-task: later requests of the same tool in the task are allowed without asking; another tool still asks', async () => {
    const { node, mcp, progress } = await begin(60_000)
    const first = mcp.approve('Bash', { command: 'npm test' })
    const a = await openOne(node)
    node.changeBoard('allow', d => { approvals.decide(d, T1, a.id, { allow: true, by: CLIENT, at: Date.now(), note: '', alwaysForTask: true }) })
    expect(await first).toEqual({ behavior: 'allow', updatedInput: { command: 'npm test' } })
    expect(await mcp.approve('Bash', { command: 'npm run lint' })).toEqual({ behavior: 'allow', updatedInput: { command: 'npm run lint' } })
    expect(approvals.listApprovals(node.board.snapshot())).toHaveLength(1)
    expect(progress.some(p => p.text.includes('allowed for this task by'))).toBe(true)
    const other = mcp.approve('WebFetch', { url: 'https://example.com' })
    const b = await waitFor(() => approvals.listApprovals(node.board.snapshot()).find(x => x.state === 'open'), { timeoutMs: 10_000, message: 'another tool did not ask' })
    expect(b.tool).toBe('WebFetch')
    node.changeBoard('deny', d => { approvals.decide(d, T1, b.id, { allow: false, by: CLIENT, at: Date.now(), note: '' }) })
    expect((await other).behavior).toBe('deny')
  })

  it('denies what nobody answers within the timeout, recording no decider', async () => {
    const { node, mcp } = await begin(300)
    const t0 = Date.now()
    const r = await mcp.approve('Bash', { command: 'make deploy' })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300)
    expect(r.behavior).toBe('deny')
    expect(String(r.message)).toContain('nobody answered within 300ms')
    const [a] = approvals.listApprovals(node.board.snapshot())
    expect(a).toMatchObject({ state: 'denied', by: null })
    expect(a!.note).toContain('--approval-timeout')
  })

  it('expires a request whose run stops while it waits, and what a run leaves open when it ends', async () => {
    const { node, mcp, run, end } = await begin(60_000)
    const pending = mcp.approve('Bash', { command: 'sleep 1' })
    await openOne(node)
    run.abort(new Error('cancelled'))
    expect((await pending).behavior).toBe('deny')
    expect(approvals.listApprovals(node.board.snapshot()).map(a => [a.state, a.note])).toEqual([['expired', 'the run stopped']])
    await end()
    // a run that ended: its secret is no longer accepted
    const late = await mcp.approve('Bash', { command: 'ls' })
    expect(late.behavior).toBe('deny')
    expect(String(late.message)).toContain('HTTP 403')
  })

  it('expires the request when claude stops asking (the MCP server goes away)', async () => {
    const { node, mcp } = await begin(60_000)
    void mcp.approve('Bash', { command: 'sleep 1' })
    await openOne(node)
    mcp.child.kill('SIGKILL')
    await waitFor(() => approvals.listApprovals(node.board.snapshot())[0]?.state === 'expired', { timeoutMs: 10_000, message: 'the request did not expire when its caller went away' })
  })

  it('refuses a request for a task that no longer runs, without putting it on the board', async () => {
    const { node, mcp } = await begin(60_000)
    node.changeBoard('cancel', d => { lifecycle.cancel(d, T1) })
    const r = await mcp.approve('Bash', { command: 'ls' })
    expect(r.behavior).toBe('deny')
    expect(String(r.message)).toContain('not running here')
    expect(approvals.listApprovals(node.board.snapshot())).toEqual([])
  })
})

describe('the TUI inbox and keys for permission requests', () => {
  it('lists open requests first; a and d ask y/n, then answer through the actions', async () => {
    const node = runningBoard()
    const a = approvals.approvalIdFor(T1, 'aaaaaa') as ApprovalId
    node.changeBoard('ask', d => { approvals.ask(d, T1, { id: a, node: NODE, attempt: 1, tool: 'Bash', input: clipToolInput({ command: 'git push' }), at: 1 }) })
    node.changeBoard('fail t2', d => { lifecycle.claim(d, 't2' as TaskId, NODE, 0, 1); lifecycle.start(d, 't2' as TaskId, NODE, 1, 2); lifecycle.fail(d, 't2' as TaskId, 'boom') })
    const items = inbox(buildStatus(node.board.snapshot(), null))
    expect(items.map(i => [i.kind, i.key])).toEqual([['approval', `approval:${a}`], ['failed', 'failed:t2']])
    expect(items[0]!.summary).toBe('Bash: git push')
    const ctx: KeyContext = { taskIds: ['t1', 't2'], taskStates: new Map([['t1', 'running'], ['t2', 'failed']]), inbox: items }
    const ui = { ...initialUiState(), view: 'inbox' as const }
    expect(keyHelp(ui, ctx).slice(0, 2)).toEqual([['a', 'allow'], ['d', 'deny']])
    const asked = handleKey(ui, ctx, 'a', {})
    expect(asked.effect).toBeUndefined()
    expect(asked.state.pending?.question).toBe('Allow Bash for t1?')
    const sent = handleKey(asked.state, ctx, 'y', {})
    expect(sent.effect).toEqual({ kind: 'approve', approvalId: a, allow: true })
    const deny = handleKey(handleKey(ui, ctx, 'd', {}).state, ctx, 'y', {})
    expect(deny.effect).toEqual({ kind: 'approve', approvalId: a, allow: false })
    const calls: Array<[string, boolean]> = []
    const actions = { resolve: async () => {}, cancel: async () => 'running', retry: async () => {}, approve: async (id: string, allow: boolean) => { calls.push([id, allow]) } }
    expect(await runEffect(actions, sent.effect!)).toEqual({ text: `${a}: allowed; the run goes on`, tone: 'ok' })
    expect(calls).toEqual([[a, true]])
  })
})
