import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { claudeAgent, isRateLimitText, parseResetTime, toolSummary, type ClaudeAgentInit } from '../src/agent/claude.ts'
import type { AgentProgress, AgentResult } from '../src/agent/types.ts'
import { asPeerId, type Task, type TaskId } from '../src/crdt/schema.ts'
import { TimeoutError, waitFor } from '../src/util/wait.ts'
import { isAlive } from './helpers/proc.ts'

const FAKE = fileURLToPath(new URL('./fixtures/fake-claude.mjs', import.meta.url))

let dir = ''
let cwd = ''
let dataDir = ''
let record = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-claude-'))
  cwd = join(dir, 'worktree')
  dataDir = join(dir, 'data')
  record = join(dir, 'record.json')
  await mkdir(cwd)
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

function task (id = 'task-1', extra: Partial<Task> = {}): Task {
  return {
    id: id as TaskId,
    title: `Title of ${id}`,
    prompt: `Please do ${id}.`,
    deps: [],
    files: [],
    priority: 0,
    timeoutMs: null,
    maxAttempts: 3,
    sim: null,
    state: 'running',
    epoch: 1,
    attempts: 1,
    failures: 0,
    node: asPeerId('peer-a'),
    branch: `meshwork/${id}`,
    head: null,
    mergeCommit: null,
    costUsd: 0,
    tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
    createdAt: 0,
    startedAt: 0,
    doneAt: null,
    mergedAt: null,
    error: null,
    readyAt: 0,
    notBefore: null,
    infraFailures: {},
    holders: [],
    claims: {},
    summary: null,
    ...extra
  }
}

interface Run {
  result: Promise<AgentResult>
  progress: Array<AgentProgress & { at: number }>
  abort: AbortController
  settled: () => boolean
}

function start (fake: Record<string, string>, opts: Partial<ClaudeAgentInit> = {}, runOpts: { attempt?: number, context?: string, task?: Task, signal?: AbortSignal } = {}): Run {
  const agent = claudeAgent({ bin: FAKE, dataDir, nodeName: 'node-one', env: { FAKE_CLAUDE_RECORD: record, ...fake }, ...opts })
  const abort = new AbortController()
  const progress: Run['progress'] = []
  let done = false
  const result = agent.run({
    task: runOpts.task ?? task(),
    attempt: runOpts.attempt ?? 1,
    node: asPeerId('peer-a'),
    context: runOpts.context,
    cwd,
    signal: runOpts.signal ?? abort.signal,
    onProgress: p => { progress.push({ ...p, at: Date.now() }) }
  })
  void result.finally(() => { done = true })
  return { result, progress, abort, settled: () => done }
}

async function readRecord (): Promise<{ argv: string[], env: Record<string, string>, stdin: string, cwd: string, pid: number }> {
  return JSON.parse(await readFile(record, 'utf8'))
}


/** The permission rules that keep the file tools out of the data dir (the worktree is outside it here). */
function denyData (): string {
  return ['Read', 'Read', 'Edit', 'Edit'].map((tool, i) => `${tool}(/${dataDir}${i % 2 === 1 ? '/**' : ''})`).join(',')
}

function flagValue (argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name)
  return i === -1 ? undefined : argv[i + 1]
}

describe('claude agent', () => {
  it('succeeds, takes cost and tokens from the result event, and streams progress before the process exits', async () => {
    const pauseMs = 600
    const run = start({ FAKE_CLAUDE_MODE: 'success', FAKE_CLAUDE_PAUSE_MS: String(pauseMs) })
    const r = await run.result
    const doneAt = Date.now()
    // the result text is the task's summary
    expect(r).toEqual({ outcome: 'success', error: null, costUsd: 0.0123, tokens: { input: 1200, output: 340, cacheRead: 5000, cacheWrite: 800 }, summary: 'Done.' })
    expect(readFileSync(join(cwd, 'fake-claude.txt'), 'utf8')).toMatch(/^hello from fake claude for /)

    const kinds = run.progress.map(p => p.kind)
    expect(kinds).toContain('turn')
    const first = run.progress.find(p => p.kind === 'text')!
    expect(first.text).toBe('I will write the file.')
    const tool = run.progress.find(p => p.kind === 'tool')!
    expect(tool.text).toBe(`Write: ${join(realpathSync(cwd), 'fake-claude.txt')}`)
    expect(run.progress.some(p => p.kind === 'info' && p.text.startsWith('claude session '))).toBe(true)
    expect(run.progress.some(p => p.kind === 'info' && p.text.startsWith('result: success'))).toBe(true)
    // The fake pauses `pauseMs` after its first message: had the output been
    // buffered to the end, the first text would arrive with the exit.
    expect(doneAt - first.at).toBeGreaterThanOrEqual(pauseMs - 50)
    expect(run.progress.filter(p => p.kind === 'text').map(p => p.text)).toEqual(['I will write the file.', 'Wrote fake-claude.txt.'])
  })

  it('writes the transcript as the stream arrives', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'success', FAKE_CLAUDE_PAUSE_MS: '3000' }, {}, { attempt: 4 })
    const transcript = join(dataDir, 'transcripts', 'task-1-4.jsonl')
    await waitFor(() => run.progress.some(p => p.kind === 'text'), { timeoutMs: 10_000, message: 'first text' })
    // While the fake is paused, the lines so far are already on disk.
    await waitFor(() => existsSync(transcript) && readFileSync(transcript, 'utf8').includes('"type":"assistant"'), { timeoutMs: 2000, message: 'transcript while streaming' })
    expect(run.settled()).toBe(false)
    expect((await run.result).outcome).toBe('success')
    const events = readFileSync(transcript, 'utf8').trim().split('\n').map(l => JSON.parse(l) as { type: string })
    expect(events.map(e => e.type)).toEqual(['system', 'assistant', 'assistant', 'user', 'assistant', 'result'])
  })

  it('ignores (and reports) lines that are not JSON', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'success', FAKE_CLAUDE_NOISE: '1' })
    const r = await run.result
    expect(r.outcome).toBe('success')
    expect(run.progress.filter(p => p.kind === 'info' && p.text.startsWith('ignored a non-JSON line'))).toHaveLength(1)
  })

  it('passes the settings, the disallowed worktree tools, the environment and the prompt with context', async () => {
    const saved = process.env.CLAUDECODE
    process.env.CLAUDECODE = '1'
    try {
      const run = start({ FAKE_CLAUDE_MODE: 'success' }, {
        permissionMode: 'plan',
        allowedTools: ['Bash(git *)', 'Read'],
        model: 'claude-opus-4-1',
        maxTurns: 7,
        maxBudgetUsd: 0.5,
        env: { FAKE_CLAUDE_RECORD: record, TEST_EXTRA: 'extra-value' }
      }, { attempt: 2, context: 'Context: task id task-1; other tasks: b (Title b) on node-two.' })
      expect((await run.result).outcome).toBe('success')
    } finally {
      if (saved === undefined) delete process.env.CLAUDECODE
      else process.env.CLAUDECODE = saved
    }
    const rec = await readRecord()
    expect(rec.argv.slice(0, 4)).toEqual(['-p', '--output-format', 'stream-json', '--verbose'])
    expect(flagValue(rec.argv, '--permission-mode')).toBe('plan')
    const allowedAt = rec.argv.indexOf('--allowedTools')
    expect(rec.argv.slice(allowedAt + 1, allowedAt + 3)).toEqual(['Bash(git *)', 'Read'])
    // meshwork's worktree tools, and the node's data dir (keys, token, board, transcripts) for the file tools
    expect(flagValue(rec.argv, '--disallowedTools')).toBe(`EnterWorktree,ExitWorktree,${denyData()}`)
    expect(flagValue(rec.argv, '--model')).toBe('claude-opus-4-1')
    expect(flagValue(rec.argv, '--max-turns')).toBe('7')
    expect(flagValue(rec.argv, '--max-budget-usd')).toBe('0.5')
    expect(rec.stdin).toBe('Please do task-1.\n\nContext: task id task-1; other tasks: b (Title b) on node-two.')
    expect(rec.cwd).toBe(realpathSync(cwd))
    expect(rec.env.MESHWORK_TASK_ID).toBe('task-1')
    expect(rec.env.MESHWORK_TASK_TITLE).toBe('Title of task-1')
    expect(rec.env.MESHWORK_NODE).toBe('node-one')
    expect(rec.env.TEST_EXTRA).toBe('extra-value')
    expect(rec.env.CLAUDECODE).toBeUndefined()
    expect(rec.env.CLAUDE_CONFIG_DIR).toBe(join(dataDir, 'claude', 'task-1-2'))
    expect(existsSync(rec.env.CLAUDE_CONFIG_DIR!)).toBe(true)
    // Not in bypassPermissions mode: IS_SANDBOX is only passed through, never set.
    expect(rec.env.IS_SANDBOX).toBe(process.env.IS_SANDBOX)
  })

  it('uses acceptEdits and no optional flags by default, and the prompt alone without context', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'success' })
    expect((await run.result).outcome).toBe('success')
    const rec = await readRecord()
    expect(rec.argv).toEqual(['-p', '--output-format', 'stream-json', '--verbose', '--permission-mode', 'acceptEdits', '--disallowedTools', `EnterWorktree,ExitWorktree,${denyData()}`])
    expect(rec.stdin).toBe('Please do task-1.')
  })

  it('sets IS_SANDBOX=1 for bypassPermissions only when running as root', async () => {
    const saved = process.env.IS_SANDBOX
    delete process.env.IS_SANDBOX
    const run = start({ FAKE_CLAUDE_MODE: 'success' }, { permissionMode: 'bypassPermissions' })
    if (saved !== undefined) process.env.IS_SANDBOX = saved
    // The fake refuses bypassPermissions as root without IS_SANDBOX, like the real CLI.
    expect((await run.result).outcome).toBe('success')
    const rec = await readRecord()
    expect(rec.env.IS_SANDBOX).toBe(process.getuid?.() === 0 ? '1' : undefined)
  })

  it('fails on an is_error result (API errors come back as subtype success, exit 1)', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'is_error', FAKE_CLAUDE_RESULT_TEXT: 'API Error: 500 Internal server error' }).result
    expect(r.outcome).toBe('failure')
    expect(r.error).toContain('claude reported an error')
    expect(r.error).toContain('API Error: 500')
    expect(r.error).toContain('exit code 1')
  })

  it('pauses (no failed attempt) on an is_error result whose text says the credentials were refused', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'is_error' }).result
    expect(r.outcome).toBe('paused')
    expect(r.error).toContain('Invalid API key')
    expect(r.error).toContain('claude could not use its credentials')
  })

  it('fails when there is no result event', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'no_result' }).result
    expect(r).toMatchObject({ outcome: 'failure', costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 } })
    expect(r.error).toContain('without a result event')
    expect(r.error).toContain('exit code 0')
  })

  it('fails on a non-zero exit even after a successful result, keeping the reported cost', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'exit_nonzero', FAKE_CLAUDE_EXIT_CODE: '3' }).result
    expect(r.outcome).toBe('failure')
    expect(r.error).toContain('exit code 3')
    expect(r.error).toContain('fake-claude: something went wrong after the result')
    expect(r.costUsd).toBe(0.0123)
  })

  it('fails with the last stderr lines when claude prints only to stderr', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'stderr_only', FAKE_CLAUDE_STDERR: 'Error: the thing broke' }).result
    expect(r.outcome).toBe('failure')
    expect(r.error).toContain('without a result event')
    expect(r.error).toContain('Error: the thing broke')
    expect(r.error).toContain('exit code 1')
  })

  it('fails for good when the per-run budget stopped the run (error_max_budget_usd with is_error false): a retry would spend it again', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'max_budget', FAKE_CLAUDE_COST: '0.61' }, { maxBudgetUsd: 0.5 }).result
    expect(r.outcome).toBe('failure')
    expect(r.final).toBe(true)
    expect(r.error).toContain('per-run budget of $0.5 exceeded (spent $0.6100')
    expect(r.error).toContain('meshwork retry task-1')
    expect(r.costUsd).toBe(0.61)
    // other failures stay retryable
    expect((await start({ FAKE_CLAUDE_MODE: 'is_error' }).result).final).toBeUndefined()
  })

  it('clips a long result text to the summary limit', async () => {
    const r = await start({ FAKE_CLAUDE_MODE: 'success', FAKE_CLAUDE_RESULT: 'x'.repeat(5000) }).result
    expect(r.outcome).toBe('success')
    expect(r.summary).toHaveLength(2000)
    expect(r.summary!.endsWith('…')).toBe(true)
  })

  it('reports a usage limit as rate-limited with the reset time of the message', async () => {
    const resetSec = Math.floor(Date.now() / 1000) + 7200
    const r = await start({ FAKE_CLAUDE_MODE: 'rate_limit', FAKE_CLAUDE_RESULT_TEXT: `Claude AI usage limit reached|${resetSec}` }).result
    expect(r.outcome).toBe('rate-limited')
    expect(r.retryAt).toBe(resetSec * 1000)
    expect(r.error).toContain('usage limit reached')
  })

  it('takes the reset time of a rejected rate_limit_event', async () => {
    const resetSec = Math.floor(Date.now() / 1000) + 1800
    const r = await start({ FAKE_CLAUDE_MODE: 'rate_limit', FAKE_CLAUDE_RESETS_AT: String(resetSec), FAKE_CLAUDE_RESULT_TEXT: 'You\'ve hit your limit · resets 8pm (Europe/Berlin)' }).result
    expect(r.outcome).toBe('rate-limited')
    expect(r.retryAt).toBe(resetSec * 1000)
  })

  it('reports API overload (529) as rate-limited without a retry time', async () => {
    const r = await start({
      FAKE_CLAUDE_MODE: 'rate_limit',
      FAKE_CLAUDE_RESULT_TEXT: 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
      FAKE_CLAUDE_STDERR: 'request failed'
    }).result
    expect(r.outcome).toBe('rate-limited')
    expect(r.retryAt).toBeUndefined()
  })

  it('aborts a hanging run and reports the abort reason', async () => {
    // a grace far longer than any host takes to act on SIGTERM: an end before it was the SIGTERM's doing
    const graceMs = 120_000
    const run = start({ FAKE_CLAUDE_MODE: 'hang' }, { killGraceMs: graceMs })
    await waitFor(() => run.progress.some(p => p.kind === 'text'), { timeoutMs: 10_000, message: 'fake claude streaming' })
    const { pid } = await readRecord()
    const t0 = Date.now()
    run.abort.abort(new Error('claim lost: someone else won'))
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'aborted', error: 'claim lost: someone else won' })
    expect(Date.now() - t0).toBeLessThan(graceMs / 2)
    expect(isAlive(pid)).toBe(false)
  })

  it('counts the scheduler timeout as a failed attempt', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'hang' })
    await waitFor(() => run.progress.some(p => p.kind === 'text'), { timeoutMs: 10_000, message: 'fake claude streaming' })
    run.abort.abort(new TimeoutError('timed out after 100 ms'))
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'failure', error: 'timed out after 100 ms' })
  })

  it('kills the whole process group on abort, grandchildren included', async () => {
    const pidFile = join(dir, 'grandchild.pid')
    const run = start({ FAKE_CLAUDE_MODE: 'spawn_child_and_hang', FAKE_CLAUDE_CHILD_PID_FILE: pidFile })
    await waitFor(() => run.progress.some(p => p.kind === 'tool'), { timeoutMs: 10_000, message: 'fake claude started its tool' })
    const grandchild = Number(readFileSync(pidFile, 'utf8'))
    const { pid } = await readRecord()
    expect(isAlive(grandchild)).toBe(true)
    expect(run.progress.find(p => p.kind === 'tool')!.text).toBe('Bash: sleep 1000')
    run.abort.abort(new Error('node stopping'))
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'aborted', error: 'node stopping' })
    expect(isAlive(pid)).toBe(false)
    expect(isAlive(grandchild)).toBe(false)
  })

  it('escalates to SIGKILL when claude ignores SIGTERM', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'hang_ignore_term' }, { killGraceMs: 300 })
    await waitFor(() => run.progress.some(p => p.kind === 'text'), { timeoutMs: 10_000, message: 'fake claude streaming' })
    const { pid } = await readRecord()
    const t0 = Date.now()
    run.abort.abort(new Error('cancelled'))
    const r = await run.result
    expect(r.outcome).toBe('aborted')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250)
    expect(isAlive(pid)).toBe(false)
  })

  it('does not start claude when the signal is already aborted', async () => {
    const abort = new AbortController()
    abort.abort(new Error('node stopping'))
    const r = await start({ FAKE_CLAUDE_MODE: 'success' }, {}, { signal: abort.signal }).result
    expect(r).toMatchObject({ outcome: 'aborted', error: 'node stopping' })
    expect(existsSync(record)).toBe(false)
  })

  it('judges by the result when claude lingers after it', async () => {
    const run = start({ FAKE_CLAUDE_MODE: 'result_then_hang' }, { resultExitGraceMs: 300 })
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'success', costUsd: 0.0123 })
    const { pid } = await readRecord()
    expect(isAlive(pid)).toBe(false)
  })

  it('reports a missing claude executable as unavailable (not a failed attempt), naming the fix', async () => {
    const r = await start({}, { bin: join(dir, 'no-such-claude') }).result
    expect(r.outcome).toBe('unavailable')
    expect(r.error).toContain('--claude-bin')
    expect(r.error).toContain('could not start claude')
    expect(r.error).toContain('ENOENT')
  })
})

describe('claude output helpers', () => {
  it('recognises the rate and usage limit texts Claude Code prints', () => {
    for (const t of [
      'Claude AI usage limit reached|1749924000',
      'Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).',
      'You\'ve hit your limit · resets 8pm (Europe/Berlin)',
      'API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account\'s rate limit. Please try again later."}}',
      'API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment.',
      'API Error: Repeated 529 Overloaded errors'
    ]) expect(isRateLimitText(t), t).toBe(true)
    for (const t of ['Invalid API key · Please run /login', 'Error: line 429 of foo.ts', '']) expect(isRateLimitText(t), t).toBe(false)
  })

  it('reads reset times', () => {
    const now = Date.UTC(2026, 3, 1, 12, 0) // 2026-04-01 12:00 UTC = 14:00 in Berlin (CEST)
    expect(parseResetTime('Claude AI usage limit reached|1749924000', now)).toBe(1749924000_000)
    expect(parseResetTime('You\'ve hit your limit · resets 8pm (Europe/Berlin)', now)).toBe(Date.UTC(2026, 3, 1, 18, 0))
    expect(parseResetTime('You\'ve hit your limit · resets 1:30am (Asia/Dhaka)', now)).toBe(Date.UTC(2026, 3, 1, 19, 30))
    expect(parseResetTime('Your limit will reset at 3pm (America/Bogota).', now)).toBe(Date.UTC(2026, 3, 1, 20, 0))
    expect(parseResetTime('You\'ve hit your limit · resets Apr 23 at 4pm (America/Recife)', now)).toBe(Date.UTC(2026, 3, 23, 19, 0))
    expect(parseResetTime('You\'ve hit your limit · resets Jan 21, 5am (Etc/GMT-9)', now)).toBe(Date.UTC(2027, 0, 20, 20, 0))
    expect(parseResetTime('resets 8pm (Not/AZone)', now)).toBeUndefined()
    expect(parseResetTime('API Error: 529 Overloaded', now)).toBeUndefined()
  })

  it('summarises tool input', () => {
    expect(toolSummary('Bash', { command: 'npm   test\n --silent' })).toBe('Bash: npm test --silent')
    expect(toolSummary('Edit', { file_path: 'src/a.ts', old_string: 'x', new_string: 'y' })).toBe('Edit: src/a.ts')
    expect(toolSummary('Grep', { pattern: 'TODO', path: 'src' })).toBe('Grep: TODO in src')
    expect(toolSummary('TodoWrite', { todos: [{}, {}] })).toBe('TodoWrite: 2 todos')
    expect(toolSummary('mcp__x__y', { a: 1 })).toBe('mcp__x__y: {"a":1}')
    expect(toolSummary('Read', undefined)).toBe('Read')
  })
})
