import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { mkdtemp, mkdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { commandAgent } from '../src/agent/command.ts'
import type { AgentProgress, AgentResult } from '../src/agent/types.ts'
import { asPeerId, type Task, type TaskId } from '../src/crdt/schema.ts'
import { TimeoutError, waitFor } from '../src/util/wait.ts'
import { isAlive } from './helpers/proc.ts'

let dir = ''
let cwd = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-cmd-'))
  cwd = join(dir, 'worktree')
  await mkdir(cwd)
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

function task (id = 'task-1'): Task {
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
    summary: null
  }
}

function start (cmd: string, opts: { context?: string, killGraceMs?: number } = {}): { result: Promise<AgentResult>, progress: AgentProgress[], abort: AbortController } {
  const agent = commandAgent({ cmd, nodeName: 'node-one', killGraceMs: opts.killGraceMs })
  const abort = new AbortController()
  const progress: AgentProgress[] = []
  const result = agent.run({ task: task(), attempt: 1, node: 'peer-a', context: opts.context, cwd, signal: abort.signal, onProgress: p => { progress.push(p) } })
  return { result, progress, abort }
}


describe('command agent', () => {
  it('runs the command through the shell in the worktree with the prompt on stdin and the MESHWORK_ environment', async () => {
    const run = start('cat > prompt.txt; pwd; echo "id=$MESHWORK_TASK_ID title=$MESHWORK_TASK_TITLE node=$MESHWORK_NODE"', { context: 'Context: nothing else runs.' })
    const r = await run.result
    // the summary of a successful run is its last stdout lines
    expect(r).toEqual({ outcome: 'success', error: null, costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, summary: `${realpathSync(cwd)}\nid=task-1 title=Title of task-1 node=node-one` })
    expect(readFileSync(join(cwd, 'prompt.txt'), 'utf8')).toBe('Please do task-1.\n\nContext: nothing else runs.')
    expect(run.progress).toEqual([
      { kind: 'text', text: realpathSync(cwd) },
      { kind: 'text', text: 'id=task-1 title=Title of task-1 node=node-one' }
    ])
  })

  it('fails with the exit code and the last stderr lines', async () => {
    const r = await start('echo working; echo "first problem" >&2; echo "second problem" >&2; exit 3').result
    expect(r.outcome).toBe('failure')
    expect(r.error).toContain('exit code 3')
    expect(r.error).toContain('first problem\nsecond problem')
    expect(r.error!.split('last stderr lines:')[1]).toBe('\nfirst problem\nsecond problem')
  })

  it('falls back to the last stdout lines when stderr is empty', async () => {
    const r = await start('echo "tests: 2 failed"; exit 1').result
    expect(r.outcome).toBe('failure')
    expect(r.error).toContain('exit code 1')
    expect(r.error).toContain('tests: 2 failed')
  })

  it('kills the whole process group on abort', async () => {
    const run = start('echo $$ > sh.pid; sleep 1000 & echo $! > child.pid; wait')
    // the whole line, newline included: a read between the shell's truncate and its write sees a part
    const childPid = await waitFor(() => {
      const text = existsSync(join(cwd, 'child.pid')) ? readFileSync(join(cwd, 'child.pid'), 'utf8') : ''
      return text.endsWith('\n') ? text.trim() : null
    }, { timeoutMs: 10_000, message: 'background child started' })
    const shPid = Number(readFileSync(join(cwd, 'sh.pid'), 'utf8'))
    expect(isAlive(Number(childPid))).toBe(true)
    run.abort.abort(new Error('cancelled by user'))
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'aborted', error: 'cancelled by user', costUsd: 0 })
    expect(isAlive(shPid)).toBe(false)
    expect(isAlive(Number(childPid))).toBe(false)
  })

  it('escalates to SIGKILL for a command that ignores SIGTERM, and a timeout is a failure', async () => {
    const run = start('trap "" TERM; echo $$ > sh.pid; while :; do sleep 0.05; done', { killGraceMs: 300 })
    await waitFor(() => existsSync(join(cwd, 'sh.pid')) && readFileSync(join(cwd, 'sh.pid'), 'utf8').trim(), { timeoutMs: 10_000, message: 'shell started' })
    const shPid = Number(readFileSync(join(cwd, 'sh.pid'), 'utf8'))
    run.abort.abort(new TimeoutError('timed out after 50 ms'))
    const r = await run.result
    expect(r).toMatchObject({ outcome: 'failure', error: 'timed out after 50 ms' })
    expect(isAlive(shPid)).toBe(false)
  })

  it('kills what the command left running in the background when it exits', async () => {
    const r = await start('sleep 1000 > /dev/null 2>&1 & echo $! > child.pid; exit 0').result
    expect(r.outcome).toBe('success')
    expect(isAlive(Number(readFileSync(join(cwd, 'child.pid'), 'utf8')))).toBe(false)
  })

  it('summarises a run by its last 10 non-blank stdout lines, or says it printed nothing', async () => {
    const r = await start('for i in $(seq 1 30); do echo "line $i"; echo; done').result
    expect(r.summary).toBe(Array.from({ length: 10 }, (_, i) => `line ${21 + i}`).join('\n'))
    expect((await start('true').result).summary).toBe('command exited 0 without output')
  })

  it('reports a run that cannot start (missing worktree) as unavailable, not as a failed attempt', async () => {
    await rm(cwd, { recursive: true })
    const r = await start('true').result
    expect(r.outcome).toBe('unavailable')
    expect(r.error).toContain(`working directory ${cwd} does not exist`)
  })
})
