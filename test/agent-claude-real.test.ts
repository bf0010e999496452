/**
 * The claude adapter against the real Claude Code CLI (pinned, installed into a
 * cache outside the repository on first use), pointed at a stand-in Messages API
 * on 127.0.0.1. Nothing here contacts the real API.
 */
import { describe, it, expect, beforeAll, afterAll, beforeEach, afterEach } from 'vitest'
import { readFileSync } from 'node:fs'
import { mkdtemp, mkdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { claudeAgent, type ClaudeAgentInit } from '../src/agent/claude.ts'
import type { AgentProgress, AgentResult } from '../src/agent/types.ts'
import type { Task, TaskId } from '../src/crdt/schema.ts'
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
    maxAttempts: 3, sim: null, state: 'running', epoch: 1, attempts: 1, failures: 0, node: 'peer-a', branch: `meshwork/${id}`,
    head: null, mergeCommit: null, costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, createdAt: 0,
    startedAt: 0, doneAt: null, mergedAt: null, error: null, readyAt: 0, notBefore: null, holders: [], claims: {}, summary: null
  }
}

async function run (script: Script, opts: Partial<ClaudeAgentInit> = {}, env: Record<string, string> = {}): Promise<{ r: AgentResult, progress: AgentProgress[] }> {
  api = await startMessagesApi(script)
  const agent = claudeAgent({ bin, dataDir, nodeName: 'node-one', env: standInEnv(api, env), ...opts })
  const progress: AgentProgress[] = []
  const r = await agent.run({ task: task(), attempt: 1, node: 'peer-a', cwd, signal: new AbortController().signal, onProgress: p => { progress.push(p) } })
  return { r, progress }
}

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
})
