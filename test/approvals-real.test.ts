/**
 * Approvals end to end with the real Claude Code CLI (pinned, installed into a
 * cache outside the repository on first use) against a stand-in Messages API
 * on 127.0.0.1: a `meshwork node --approvals` run asks to use Bash outside
 * `--allowed-tools`, the request waits on the board, and a separate
 * `meshwork approve` process answers it; unanswered, it is denied after
 * `--approval-timeout`. Nothing here contacts the real API.
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { execFile, spawnSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN, runCli, startNode, killAllChildren, makeTempDir, removeDir, describeResult, type CliNode } from './helpers/cli.ts'
import { realClaudeBin, standInEnv, startMessagesApi, type ApiRequest, type MessagesApi, type Reply } from './helpers/messages-api.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'

interface TaskJson { id: string, state: string, node: string | null, attempts: number, error: string | null }
interface ApprovalJson { id: string, taskId: string, node: string, tool: string, input: Record<string, unknown>, state: string, at: number, by: string | null, note: string }
interface Status { main: { head: string | null }, tasks: TaskJson[], approvals: ApprovalJson[] }

const HAS_TMUX = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0
if (!HAS_TMUX) console.warn('test/approvals-real.test.ts: tmux is not installed, so the answer from the TUI in a real terminal is skipped; install tmux to run it')
/** tmux on its own socket: no other tmux session on the machine is touched. */
const SOCKET = `meshwork-approvals-test-${process.pid}`
const run = promisify(execFile)
async function tmux (...args: string[]): Promise<string> {
  const { stdout } = await run('tmux', ['-L', SOCKET, ...args], { timeout: 10_000 })
  return stdout
}

let dir = ''
let api: MessagesApi
let bin = ''
const nodes: CliNode[] = []

/** The worktree the CLI runs in, as its system prompt names it. */
function workdir (req: ApiRequest): string {
  const m = /Primary working directory: (\/[^\s\\"]+)/.exec(JSON.stringify(req.body))
  if (m === null) throw new Error('no working directory in the request')
  return m[1]!
}

/**
 * Every task asks for a Bash command that is not allowed (a permission
 * request), then writes what the tool said into `result-<id>.txt`, then ends.
 */
function script (req: ApiRequest): Reply {
  const id = /task "([^"]+)"/.exec(req.prompt)?.[1]
  if (id === undefined) return { text: 'no task id in the prompt' }
  if (req.turn === 0) return { tool: 'Bash', input: { command: `sh -c 'printenv MESHWORK_TASK_ID > bash-${id}.txt'`, description: 'record the task id' } }
  if (req.turn === 1) return { tool: 'Write', input: { file_path: join(workdir(req), `result-${id}.txt`), content: `tool said: ${req.toolResults.join(' | ')}\n` } }
  return { text: `Done with ${id}.` }
}

/** A one-node mesh on its own repo whose node runs claude with --approvals. */
async function startMesh (name: string, approvalTimeout: string): Promise<{ node: CliNode, conn: string[], repo: string }> {
  const keyFile = join(dir, `${name}.key`)
  const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
  if (init.code !== 0) throw new Error(describeResult(['init'], init))
  const repo = join(dir, `repo-${name}`)
  await mkdir(repo)
  await git(['init', '-q', '-b', 'main'], { cwd: repo })
  await writeFile(join(repo, 'README.md'), '# project\n')
  await git(['add', '.'], { cwd: repo })
  await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'initial'], { cwd: repo })
  const env = { ...standInEnv(api), CLAUDE_CODE_OAUTH_TOKEN: undefined, CLAUDE_CONFIG_DIR: join(dir, 'no-login') }
  const node = await startNode({ dir, name, keyFile, extraArgs: ['--agent', 'claude', '--claude-bin', bin, '--approvals', '--approval-timeout', approvalTimeout], env })
  nodes.push(node)
  return { node, conn: ['--join', node.info.join], repo }
}

beforeAll(async () => {
  bin = realClaudeBin()
  api = await startMessagesApi(script)
  dir = await makeTempDir('meshwork-approvals-real-')
}, 900_000)

afterAll(async () => {
  if (HAS_TMUX) await tmux('kill-server').catch(() => {})
  await killAllChildren()
  await api?.close()
  if (dir !== '') await removeDir(dir)
})

describe('meshwork node --approvals with the real CLI', { timeout: 600_000 }, () => {
  let mesh: Awaited<ReturnType<typeof startMesh>>
  let last: Status | null = null
  const status = async (conn: string[]): Promise<Status> => {
    const r = await runCli(['status', '--json', ...conn], { timeoutMs: 90_000 })
    if (r.code !== 0) throw new Error(describeResult(['status'], r))
    last = JSON.parse(r.stdout) as Status
    return last
  }
  const explain = (): string => `${JSON.stringify(last, null, 1)}\n${nodes.map(n => n.describe()).join('\n')}`
  const submit = async (conn: string[], id: string): Promise<void> => {
    const plan = join(dir, `${id}.yaml`)
    await writeFile(plan, `tasks:\n  - id: ${id}\n    prompt: record the task id with a shell command\n`)
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
  }
  const openRequest = async (conn: string[], id: string): Promise<ApprovalJson> => {
    let found: ApprovalJson | undefined
    await waitFor(async () => { found = (await status(conn)).approvals.find(a => a.taskId === id && a.state === 'open'); return found !== undefined }, { timeoutMs: 240_000, intervalMs: 500, message: () => `no open permission request for ${id}\n${explain()}` })
    return found!
  }
  const merged = async (conn: string[], id: string): Promise<Status> => {
    await waitFor(async () => (await status(conn)).tasks.find(t => t.id === id)?.state === 'merged', { timeoutMs: 240_000, intervalMs: 1000, message: () => `${id} was not merged\n${explain()}` })
    return last!
  }
  const onMain = async (repo: string, head: string, file: string): Promise<string | null> => {
    await waitFor(async () => (await git(['rev-parse', 'main'], { cwd: repo })).stdout.toString().trim() === head, { timeoutMs: 30_000, message: 'the repo\'s main is not the mesh main' })
    const r = await git(['cat-file', '-e', `main:${file}`], { cwd: repo, allowFail: true })
    return r.code === 0 ? await gitText(['show', `main:${file}`], { cwd: repo }) : null
  }

  beforeAll(async () => { mesh = await startMesh('a', '10m') }, 120_000)

  it('a run waits for its Bash request; an approve from another process allows it, and the command\'s effect is merged', async () => {
    await submit(mesh.conn, 'allowed')
    const req = await openRequest(mesh.conn, 'allowed')
    expect(req).toMatchObject({ tool: 'Bash', node: mesh.node.info.peerId, by: null })
    expect(String(req.input.command)).toContain('printenv MESHWORK_TASK_ID > bash-allowed.txt')
    expect(last!.tasks.find(t => t.id === 'allowed')?.state).toBe('running')
    // the status text lists it with the command that answers it
    const text = await runCli(['status', ...mesh.conn], { timeoutMs: 90_000 })
    expect(text.stdout).toContain(`APPROVALS 1 waiting`)
    expect(text.stdout).toContain(req.id)

    const args = ['approve', req.id, '--allow', '--note', 'looks fine', ...mesh.conn]
    const ok = await runCli(args, { timeoutMs: 90_000 })
    expect(ok.code, describeResult(args, ok)).toBe(0)
    expect(ok.stdout).toContain(`${req.id}: allowed by `)

    const s = await merged(mesh.conn, 'allowed')
    const a = s.approvals.find(x => x.id === req.id)!
    expect(a.state).toBe('allowed')
    expect(a.note).toBe('looks fine')
    expect(a.by).toMatch(/^12D3Koo/)
    expect(a.by).not.toBe(mesh.node.info.peerId)
    expect(s.tasks.find(t => t.id === 'allowed')!.attempts).toBe(1)
    // the command ran in the task's worktree: its file is on main
    expect(await onMain(mesh.repo, s.main.head!, 'bash-allowed.txt')).toBe('allowed')
    expect(await onMain(mesh.repo, s.main.head!, 'result-allowed.txt')).not.toMatch(/denied|meshwork:/)
    // a second answer is refused: the request is closed
    const again = await runCli(['approve', req.id, '--deny', ...mesh.conn], { timeoutMs: 90_000 })
    expect(again.code).toBe(2)
    expect(again.stderr).toContain('already allowed')
  })

  it('a deny (by task id) refuses the command; the agent is told the note and goes on', async () => {
    await submit(mesh.conn, 'denied')
    const req = await openRequest(mesh.conn, 'denied')
    const args = ['approve', 'denied', '--deny', '--note', 'no shell today', ...mesh.conn]
    const no = await runCli(args, { timeoutMs: 90_000 })
    expect(no.code, describeResult(args, no)).toBe(0)
    expect(no.stdout).toContain(`${req.id} (the open request of task denied): denied by `)
    const s = await merged(mesh.conn, 'denied')
    expect(s.approvals.find(x => x.id === req.id)).toMatchObject({ state: 'denied', note: 'no shell today' })
    expect(await onMain(mesh.repo, s.main.head!, 'bash-denied.txt')).toBeNull()
    expect(await onMain(mesh.repo, s.main.head!, 'result-denied.txt')).toContain('no shell today')
  })

  it.skipIf(!HAS_TMUX)('the TUI of another client shows the request in its inbox; a then y allows it and the run goes on', async () => {
    const shellQuote = (x: string): string => `'${x.replace(/'/g, `'\\''`)}'`
    const cmd = ['env', '-u', 'CI', '-u', 'MESHWORK_JOIN', '-u', 'MESHWORK_SWARM_KEY', '-u', 'MESHWORK_BOOTSTRAP', process.execPath, BIN, 'tui', '--no-bell', ...mesh.conn].map(shellQuote).join(' ')
    await tmux('new-session', '-d', '-s', 'tui', '-x', '120', '-y', '40', cmd)
    let seen = ''
    const waitScreen = async (what: string, timeoutMs: number, why: string): Promise<void> => {
      await waitFor(async () => { seen = await tmux('capture-pane', '-p', '-t', 'tui').catch(err => `(capture failed: ${(err as Error).message})`); return seen.includes(what) },
        { timeoutMs, intervalMs: 250, message: () => `${why}: the screen never showed ${what}\n--- screen ---\n${seen}\n${explain()}` })
    }
    await waitScreen('1 Tasks', 60_000, 'the TUI did not start')
    await submit(mesh.conn, 'from-tui')
    const req = await openRequest(mesh.conn, 'from-tui')
    await tmux('send-keys', '-t', 'tui', '3')
    await waitScreen(`> APPROVE? ${req.id}`, 60_000, 'the request did not reach the inbox')
    expect(seen).toContain('Bash: sh -c')
    await tmux('send-keys', '-t', 'tui', 'a')
    await waitScreen('Allow Bash for from-tui? [y/n]', 10_000, 'the key did not ask for confirmation')
    await tmux('send-keys', '-t', 'tui', 'y')
    await waitScreen(`${req.id}: allowed; the run goes on`, 30_000, 'the answer was not recorded')
    const s = await merged(mesh.conn, 'from-tui')
    expect(s.approvals.find(x => x.id === req.id)).toMatchObject({ state: 'allowed', note: '' })
    expect(await onMain(mesh.repo, s.main.head!, 'bash-from-tui.txt')).toBe('from-tui')
    await tmux('send-keys', '-t', 'tui', 'q')
  })

  it('an unanswered request is denied after --approval-timeout, with no decider', async () => {
    const short = await startMesh('b', '3s')
    await submit(short.conn, 'unanswered')
    const s = await merged(short.conn, 'unanswered')
    const a = s.approvals.find(x => x.taskId === 'unanswered')
    expect(a, explain()).toMatchObject({ tool: 'Bash', state: 'denied', by: null })
    expect(a!.note).toContain('nobody answered within 3s')
    expect(await onMain(short.repo, s.main.head!, 'bash-unanswered.txt')).toBeNull()
    expect(await onMain(short.repo, s.main.head!, 'result-unanswered.txt')).toContain('nobody answered within 3s')
  })
})
