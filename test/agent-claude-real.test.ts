/**
 * The claude adapter against the real Claude Code CLI (pinned, installed into a
 * cache outside the repository on first use), pointed at a stand-in Messages API
 * on 127.0.0.1. Nothing here contacts the real API.
 */
import { describe, it, expect, beforeAll, beforeEach, afterEach } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { claudeAgent, type ClaudeAgentInit } from '../src/agent/claude.ts'
import type { AgentProgress, AgentResult } from '../src/agent/types.ts'
import { asPeerId, type Task, type TaskId } from '../src/crdt/schema.ts'
import { realClaudeBin, standInEnv, startMessagesApi, USAGE, type MessagesApi, type Script } from './helpers/messages-api.ts'

let bin = ''
let api: MessagesApi
let dir = ''
let cwd = ''
let dataDir = ''

beforeAll(() => { bin = realClaudeBin() }, 900_000)
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-claude-real-'))
  cwd = join(dir, 'worktree')
  dataDir = join(dir, 'data')
  await mkdir(cwd)
})
afterEach(async () => {
  await api?.close()
  await rm(dir, { recursive: true, force: true })
})

function task (id = 'task-1'): Task {
  return {
    id: id as TaskId, title: `Title of ${id}`, prompt: `Please do ${id}.`, deps: [], files: [], priority: 0, timeoutMs: null,
    maxAttempts: 3, sim: null, state: 'running', epoch: 1, attempts: 1, failures: 0, node: asPeerId('peer-a'), branch: `meshwork/${id}`,
    head: null, mergeCommit: null, costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, createdAt: 0,
    startedAt: 0, doneAt: null, mergedAt: null, error: null, readyAt: 0, notBefore: null, holders: [], claims: {}, summary: null, infraFailures: {}
  }
}

async function run (script: Script, opts: Partial<ClaudeAgentInit> = {}, env: Record<string, string> = {}, unset: string[] = []): Promise<{ r: AgentResult, progress: AgentProgress[], ms: number }> {
  api = await startMessagesApi(script)
  const e = standInEnv(api, env)
  for (const k of unset) delete e[k]
  const agent = claudeAgent({ bin, dataDir, nodeName: 'node-one', env: e, ...opts })
  const progress: AgentProgress[] = []
  // keys the test removes must not come from this process's environment either
  const saved = Object.fromEntries(unset.map(k => [k, process.env[k]]))
  for (const k of unset) delete process.env[k]
  const t0 = Date.now()
  try {
    const r = await agent.run({ task: task(), attempt: 1, node: 'peer-a', cwd, signal: new AbortController().signal, onProgress: p => { progress.push(p) } })
    return { r, progress, ms: Date.now() - t0 }
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v
  }
}

/** Answers every request with one text (the CLI's first call is the run's only one). */
const SAY_DONE: Script = () => ({ text: 'done' })

describe('claude agent with the real CLI', () => {
  it('runs Write and Bash tool calls in the worktree and reports cost and tokens', async () => {
    const { r, progress } = await run(req => {
      if (req.turn === 0) return { tool: 'Write', input: { file_path: join(cwd, 'hello.txt'), content: 'hello from the real cli\n' }, text: 'Writing the file.' }
      if (req.turn === 1) return { tool: 'Bash', input: { command: 'echo bash-ran > bash.txt', description: 'write a file' } }
      return { text: 'All done: wrote hello.txt.' }
    }, { allowedTools: ['Bash(echo *)'] })
    expect(r.outcome, r.error ?? '').toBe('success')
    expect(r.summary).toBe('All done: wrote hello.txt.')
    expect(readFileSync(join(cwd, 'hello.txt'), 'utf8')).toBe('hello from the real cli\n')
    expect(readFileSync(join(cwd, 'bash.txt'), 'utf8')).toBe('bash-ran\n')
    expect(r.costUsd).toBeGreaterThan(0)
    expect(r.tokens.input).toBeGreaterThanOrEqual(3 * USAGE.input_tokens)
    expect(r.tokens.output).toBeGreaterThanOrEqual(3 * USAGE.output_tokens)
    expect(progress.some(p => p.kind === 'tool' && p.text.startsWith('Write: '))).toBe(true)
    expect(progress.some(p => p.kind === 'tool' && p.text === 'Bash: echo bash-ran > bash.txt')).toBe(true)
    // the prompt reached the API through stdin, with meshwork's env on the run
    expect(api.requests[0]!.prompt).toContain('Please do task-1.')
    expect(api.requests[0]!.headers['x-api-key']).toBe('sk-ant-stand-in')
  })

  it('stops at once when the API refuses the credentials (401): paused, no cost, no minutes of retries', async () => {
    // the CLI would retry 10 times with back-off; the adapter kills it at the first refusal
    const { r, progress, ms } = await run(() => ({ status: 401, message: 'invalid x-api-key' }), {}, { CLAUDE_CODE_MAX_RETRIES: '10' })
    expect(r.outcome, r.error ?? '').toBe('paused')
    expect(r.error).toContain('HTTP 401')
    expect(r.costUsd).toBe(0)
    expect(progress.some(p => p.kind === 'info' && p.text.startsWith('credentials refused: the API refused the credentials (HTTP 401, authentication_failed)'))).toBe(true)
    expect(api.requests.length).toBeLessThanOrEqual(2)
    // ten retries take minutes; one try and a kill take seconds (the CLI's start-up included)
    expect(ms).toBeLessThan(60_000)
  })

  it('pauses on a 403 too (not retried by the CLI)', async () => {
    const { r } = await run(() => ({ status: 403, message: 'your org may not use this model' }))
    expect(r.outcome, r.error ?? '').toBe('paused')
    expect(r.error).toContain('Failed to authenticate')
  })

  it('shows overload retries as progress and succeeds once the API recovers', async () => {
    let overloaded = 2
    const { r, progress } = await run(() => overloaded-- > 0 ? { status: 529 } : { text: 'done after overload' }, {}, { CLAUDE_CODE_MAX_RETRIES: '4' })
    expect(r.outcome, r.error ?? '').toBe('success')
    const retries = progress.filter(p => p.kind === 'info' && p.text.startsWith('API overloaded')).map(p => p.text)
    expect(retries).toEqual(['API overloaded, retry 1/4', 'API overloaded, retry 2/4'])
  })

  it('a run that stays overloaded is rate-limited (no attempt used), with its retries shown', async () => {
    const { r, progress } = await run(() => ({ status: 529 }))
    expect(r.outcome, r.error ?? '').toBe('rate-limited')
    expect(progress.filter(p => p.text.startsWith('API overloaded, retry ')).length).toBe(2)
  })

  it('shows 429 retries as rate limited and a 500 by its status', async () => {
    const first = await run(() => ({ status: 429 }))
    expect(first.r.outcome).toBe('rate-limited')
    expect(first.progress.some(p => p.text === 'API rate limited, retry 1/2')).toBe(true)
    await api.close()
    const second = await run(() => ({ status: 500 }))
    expect(second.r.outcome).toBe('failure')
    expect(second.progress.some(p => p.text.startsWith('API error 500') && p.text.endsWith('retry 1/2'))).toBe(true)
  })

  it('uses CLAUDE_CODE_OAUTH_TOKEN (sent as a bearer token)', async () => {
    const { r } = await run(SAY_DONE, {}, { CLAUDE_CODE_OAUTH_TOKEN: 'sk-ant-oat01-stand-in' }, ['ANTHROPIC_API_KEY'])
    expect(r.outcome, r.error ?? '').toBe('success')
    expect(api.requests[0]!.headers.authorization).toBe('Bearer sk-ant-oat01-stand-in')
    expect(api.requests[0]!.headers['x-api-key']).toBeUndefined()
  })

  it('uses a `claude login` from the user\'s config dir, copied read-only into the run\'s own and removed after', async () => {
    const home = join(dir, 'user-claude')
    await mkdir(home)
    await writeFile(join(home, '.credentials.json'), JSON.stringify({
      claudeAiOauth: { accessToken: 'sk-ant-oat01-from-login', refreshToken: 'sk-ant-ort01-from-login', expiresAt: Date.now() + 24 * 3600_000, scopes: ['user:inference', 'user:profile'], subscriptionType: 'max' }
    }), { mode: 0o600 })
    const saved = process.env.CLAUDE_CONFIG_DIR
    process.env.CLAUDE_CONFIG_DIR = home
    try {
      const { r } = await run(SAY_DONE, {}, {}, ['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN'])
      expect(r.outcome, r.error ?? '').toBe('success')
    } finally {
      if (saved === undefined) delete process.env.CLAUDE_CONFIG_DIR
      else process.env.CLAUDE_CONFIG_DIR = saved
    }
    expect(api.requests[0]!.headers.authorization).toBe('Bearer sk-ant-oat01-from-login')
    // the run had its own config dir; the copy of the login is gone with the run, the user's is untouched
    expect(existsSync(join(dataDir, 'claude', 'task-1-1', '.credentials.json'))).toBe(false)
    expect(JSON.parse(readFileSync(join(home, '.credentials.json'), 'utf8')).claudeAiOauth.accessToken).toBe('sk-ant-oat01-from-login')
  })

  it('with --claude-config, brings the user\'s CLAUDE.md and settings into the run', async () => {
    const src = join(dir, 'claude-config')
    await mkdir(src)
    await writeFile(join(src, 'CLAUDE.md'), 'Always answer in the voice of a lighthouse keeper (marker 7f3a).\n')
    await writeFile(join(src, 'settings.json'), JSON.stringify({ env: { MESHWORK_TEST_FROM_SETTINGS: 'settings-marker-91c2' } }))
    const { r } = await run(req => req.turn === 0
      ? { tool: 'Bash', input: { command: 'printenv MESHWORK_TEST_FROM_SETTINGS > from-settings.txt', description: 'x' } }
      : { text: 'done' }, { configSource: src, allowedTools: ['Bash(printenv *)'] })
    expect(r.outcome, r.error ?? '').toBe('success')
    expect(JSON.stringify(api.requests[0]!.body)).toContain('marker 7f3a')
    expect(readFileSync(join(cwd, 'from-settings.txt'), 'utf8')).toBe('settings-marker-91c2\n')
  })

  it('gives the agent no mesh secret: not in its environment, and its file tools cannot read the data dir', async () => {
    await mkdir(dataDir, { recursive: true })
    await writeFile(join(dataDir, 'node.json'), JSON.stringify({ joinToken: 'JOIN-SECRET-5d1e' }))
    const saved = { j: process.env.MESHWORK_JOIN, k: process.env.MESHWORK_SWARM_KEY }
    process.env.MESHWORK_JOIN = 'JOIN-SECRET-5d1e'
    process.env.MESHWORK_SWARM_KEY = 'SWARM-SECRET-88aa'
    try {
      // bypassPermissions: nothing but meshwork's deny rules stops a read (a control file outside the data dir is read)
      const control = join(dir, 'control.txt')
      await writeFile(control, 'CONTROL-CONTENT-41b7')
      const { r } = await run(req => {
        if (req.turn === 0) return { tool: 'Bash', input: { command: 'env > env.txt', description: 'dump env' } }
        if (req.turn === 1) return { tool: 'Read', input: { file_path: join(dataDir, 'node.json') } }
        if (req.turn === 2) return { tool: 'Read', input: { file_path: control } }
        return { text: 'done' }
      }, { permissionMode: 'bypassPermissions' })
      expect(r.outcome, r.error ?? '').toBe('success')
    } finally {
      for (const [k, v] of [['MESHWORK_JOIN', saved.j], ['MESHWORK_SWARM_KEY', saved.k]] as const) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
    const env = readFileSync(join(cwd, 'env.txt'), 'utf8')
    expect(env).toContain('MESHWORK_TASK_ID=task-1')
    expect(env).not.toContain('SECRET')
    expect(env).not.toMatch(/^MESHWORK_(JOIN|SWARM_KEY)=/m)
    // the Read of the data dir was denied: its result (sent back to the API) holds no secret
    const readResult = api.requests.find(q => q.turn === 2)!.toolResults.join('\n')
    expect(readResult).not.toContain('JOIN-SECRET')
    expect(readResult.toLowerCase()).toMatch(/denied|permission|not allowed/)
    expect(api.requests.find(q => q.turn === 3)!.toolResults.join('\n')).toContain('CONTROL-CONTENT-41b7')
  })
})
