/**
 * `meshwork node --agent claude` with the real Claude Code CLI (pinned,
 * installed into a cache outside the repository on first use) against a
 * stand-in Messages API on 127.0.0.1: tasks done by the real CLI are merged; a
 * node whose key the API refuses pauses (health in status), burns no attempt,
 * and resumes by itself once the API takes its key. Nothing here contacts the
 * real API.
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, killAllChildren, makeTempDir, removeDir, describeResult, type CliNode } from './helpers/cli.ts'
import { realClaudeBin, standInEnv, startMessagesApi, type ApiRequest, type MessagesApi, type Reply } from './helpers/messages-api.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'

interface TaskJson { id: string, state: string, node: string | null, attempts: number, costUsd: number, tokens: { input: number, output: number }, error: string | null }
interface NodeJson { peerId: string, name: string, state: string, health: { state: string, reason: string | null, until: number | null } }
interface Status { main: { head: string | null, leader: string | null }, nodes: NodeJson[], tasks: TaskJson[] }

const GOOD = 'sk-ant-good-key'
const BAD = 'sk-ant-refused-key'

let dir = ''
let api: MessagesApi
let bin = ''
let badRefused = true
const nodes: CliNode[] = []

/** The worktree the CLI runs in, as its system prompt names it. */
function workdir (req: ApiRequest): string {
  const body = JSON.stringify(req.body)
  const m = /Primary working directory: (\/[^\s\\"]+)/.exec(body)
  if (m === null) throw new Error(`no working directory in the request: ${body.slice(0, 300)}`)
  return m[1]!
}

/** Each task writes `out/<task id>.txt` with Write, then says it is done. */
function script (req: ApiRequest): Reply {
  if (req.headers['x-api-key'] === BAD && badRefused) return { status: 401, message: 'invalid x-api-key' }
  const id = /task "([^"]+)"/.exec(req.prompt)?.[1]
  if (id === undefined) return { text: 'no task id in the prompt' }
  if (req.turn === 0) return { tool: 'Write', input: { file_path: join(workdir(req), 'out', `${id}.txt`), content: `${id} by the real cli\n` } }
  return { text: `Wrote out/${id}.txt.` }
}

beforeAll(async () => {
  bin = realClaudeBin()
  api = await startMessagesApi(script)
  dir = await makeTempDir('meshwork-claude-cli-')
  const keyFile = join(dir, 'swarm.key')
  const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
  if (init.code !== 0) throw new Error(describeResult(['init'], init))
  const repoA = join(dir, 'repo-a')
  await mkdir(repoA)
  await git(['init', '-q', '-b', 'main'], { cwd: repoA })
  await writeFile(join(repoA, 'README.md'), '# project\n')
  await git(['add', '.'], { cwd: repoA })
  await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'initial'], { cwd: repoA })
  const args = ['--agent', 'claude', '--claude-bin', bin, '--suspect-after', '2s', '--dead-after', '6s', '--credentials-retry', '3s']
  const env = (key: string): Record<string, string | undefined> => ({ ...standInEnv(api, { ANTHROPIC_API_KEY: key }), CLAUDE_CODE_OAUTH_TOKEN: undefined, CLAUDE_CONFIG_DIR: join(dir, `no-login-${key}`) })
  nodes.push(await startNode({ dir, name: 'a', keyFile, extraArgs: args, env: env(GOOD) }))
  nodes.push(await startNode({ dir, name: 'b', join: nodes[0]!.info.join, extraArgs: args, env: env(BAD) }))
}, 900_000)

afterAll(async () => {
  await killAllChildren()
  await api?.close()
  if (dir !== '') await removeDir(dir)
})

describe('meshwork node --agent claude with the real CLI', { timeout: 600_000 }, () => {
  it('runs tasks with the real CLI and merges them; a node whose key is refused pauses without burning attempts, then resumes', async () => {
    const conn = ['--join', nodes[0]!.info.join]
    let last: Status | null = null
    const status = async (): Promise<Status> => {
      const r = await runCli(['status', '--json', ...conn], { timeoutMs: 90_000 })
      if (r.code !== 0) throw new Error(describeResult(['status'], r))
      last = JSON.parse(r.stdout) as Status
      return last
    }
    const explain = (): string => `${JSON.stringify(last, null, 1)}\n${nodes.map(n => n.describe()).join('\n')}`
    const submit = async (ids: string[], name: string): Promise<void> => {
      const plan = join(dir, `${name}.yaml`)
      await writeFile(plan, 'tasks:\n' + ids.map(id => `  - id: ${id}\n    prompt: write out/${id}.txt\n`).join(''))
      const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
      expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    }
    const peerB = nodes[1]!.info.peerId

    const first = ['one', 'two', 'three']
    await submit(first, 'first')
    // b's key is refused: b pauses with the reason in its health
    await waitFor(async () => (await status()).nodes.find(n => n.peerId === peerB)?.health.state === 'paused', { timeoutMs: 180_000, intervalMs: 500, message: () => `b never paused\n${explain()}` })
    const paused = last!.nodes.find(n => n.peerId === peerB)!
    expect(paused.state).toBe('alive')
    expect(paused.health.reason).toContain('credentials')
    expect(paused.health.until).not.toBeNull()
    const text = await runCli(['status', ...conn], { timeoutMs: 90_000 })
    expect(text.stdout).toMatch(/ b: PAUSED .*credentials/)

    // every task is done by a (the real CLI) and merged; b's refused runs used no attempt
    await waitFor(async () => (await status()).tasks.filter(t => first.includes(t.id)).every(t => t.state === 'merged'), { timeoutMs: 300_000, intervalMs: 1000, message: () => `not all merged\n${explain()}` })
    for (const t of last!.tasks.filter(t => first.includes(t.id))) {
      expect(t.node).toBe(nodes[0]!.info.peerId)
      expect(t.attempts, JSON.stringify(t)).toBe(1)
      expect(t.costUsd).toBeGreaterThan(0)
      expect(t.tokens.input).toBeGreaterThan(0)
    }
    // the merged main holds what the real CLI wrote
    const repoA = join(dir, 'repo-a')
    await waitFor(async () => (await git(['rev-parse', 'main'], { cwd: repoA })).stdout.toString().trim() === last!.main.head, { timeoutMs: 30_000, message: 'repo a main is not the mesh main' })
    for (const id of first) expect(await gitText(['show', `main:out/${id}.txt`], { cwd: repoA })).toBe(`${id} by the real cli`) // gitText trims
    // b was refused at least once, and stopped at once each time (no retries of its own)
    const refused = api.requests.filter(q => q.headers['x-api-key'] === BAD).length
    expect(refused).toBeGreaterThan(0)

    // the API takes b's key now: after its pause b tries a run, and resumes
    badRefused = false
    const second = ['four', 'five', 'six', 'seven']
    await submit(second, 'second')
    await waitFor(async () => {
      const s = await status()
      return s.nodes.find(n => n.peerId === peerB)?.health.state === 'ok' && s.tasks.some(t => second.includes(t.id) && t.node === peerB && (t.state === 'done' || t.state === 'merged'))
    }, { timeoutMs: 300_000, intervalMs: 1000, message: () => `b did not resume\n${explain()}` })
    expect(last!.nodes.find(n => n.peerId === peerB)!.health).toEqual({ state: 'ok', reason: null, until: null })
    await waitFor(async () => (await status()).tasks.filter(t => second.includes(t.id)).every(t => t.state === 'merged'), { timeoutMs: 300_000, intervalMs: 1000, message: () => `second plan not merged\n${explain()}` })
    for (const t of last!.tasks) expect(t.attempts, JSON.stringify(t)).toBe(1)
  })
})
