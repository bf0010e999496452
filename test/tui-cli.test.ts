/**
 * The TUI through a real terminal: `meshwork tui` runs in tmux (120x40) against
 * a live local mesh of `meshwork node` processes with the sim agent; a
 * conflict appears on screen, keys resolve it, the task merges. Also the plain
 * output without a terminal. tmux runs on its own socket, so no other tmux
 * session on the machine is touched.
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { execFile, spawn, spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN, describeResult, killAllChildren, removeDir, runCli, startCliMesh, tail, type CliMesh } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

const run = promisify(execFile)
const HAS_TMUX = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0
if (!HAS_TMUX) console.warn('test/tui-cli.test.ts: tmux is not installed (not on PATH), so the real-terminal test of `meshwork tui` is skipped; install tmux to run it')
const SOCKET = `meshwork-tui-test-${process.pid}`
const SESSION = 'tui'

interface Status {
  tasks: Array<{ id: string, state: string }>
  conflicts: Array<{ id: string, taskId: string, files: string[], hunks: Array<{ ours: string, theirs: string }>, state: string, decision: { action: string, by: string } | null }>
}

let mesh: CliMesh | null = null
let last: Status | null = null

async function status (): Promise<Status> {
  const r = await runCli(['status', '--json', ...mesh!.conn], { timeoutMs: 90_000 })
  if (r.code !== 0) throw new Error(describeResult(['status'], r))
  last = JSON.parse(r.stdout) as Status
  return last
}

async function tmux (...args: string[]): Promise<string> {
  const { stdout } = await run('tmux', ['-L', SOCKET, ...args], { timeout: 10_000 })
  return stdout
}

async function screen (): Promise<string> {
  return await tmux('capture-pane', '-p', '-t', SESSION)
}

async function sessionAlive (): Promise<boolean> {
  return await tmux('has-session', '-t', SESSION).then(() => true, () => false)
}

/** Waits until the captured screen matches; resolves with the screen. */
async function waitScreen (what: string | RegExp, timeoutMs: number, why: string): Promise<string> {
  let seen = ''
  return await waitFor(async () => {
    seen = await screen().catch(err => `(capture failed: ${(err as Error).message})`)
    return (typeof what === 'string' ? seen.includes(what) : what.test(seen)) ? seen : null
  }, { timeoutMs, intervalMs: 200, message: () => `${why}: the screen never showed ${String(what)}\n--- screen ---\n${seen}\n${mesh?.nodes.map(n => n.describe()).join('\n') ?? ''}` })
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

beforeAll(async () => {
  mesh = await startCliMesh('meshwork-tui-', ['--agent', 'sim', '--slots', '2', '--suspect-after', '1s', '--dead-after', '3s'], { names: ['a', 'b'] })
}, 120_000)

afterAll(async () => {
  if (HAS_TMUX) await tmux('kill-server').catch(() => {})
  await killAllChildren()
  if (mesh !== null) await removeDir(mesh.dir)
})

describe.skipIf(!HAS_TMUX)('meshwork tui in a real terminal (tmux; skipped when tmux is not installed)', { timeout: 300_000 }, () => {
  it('shows a conflict as it happens; t then y resolves it with "theirs"; the task merges; q quits', async () => {
    const m = mesh!
    // CI=true would make ink print only a final frame: this is a terminal, so the TUI must not care, but unset it anyway
    // to run as a user's shell would; MESHWORK_* variables of the test's environment must not leak in
    const cmd = ['env', '-u', 'CI', '-u', 'MESHWORK_JOIN', '-u', 'MESHWORK_SWARM_KEY', '-u', 'MESHWORK_BOOTSTRAP', process.execPath, BIN, 'tui', ...m.conn].map(shellQuote).join(' ')
    await tmux('new-session', '-d', '-s', SESSION, '-x', '120', '-y', '40', cmd)
    // both nodes are seen alive (a node that just joined may take a heartbeat or two)
    const first = await waitScreen(/nodes 2\/2/, 60_000, 'the TUI did not connect or did not see both nodes')
    expect(first).toContain('1 Tasks')
    expect(first).toContain('No tasks on the board yet')
    // the frame fills the terminal: the keys are on its 40th line (waited for: a capture can catch a frame mid-write)
    await waitScreen(/^(?:.*\n){39}.*q quit/, 10_000, 'the frame does not fill the 40-line terminal')

    const plan = join(m.dir, 'plan.yaml')
    // two tasks racing to write the same file from the same main: the second to merge conflicts. Both are
    // held until both run, so the second starts from the same main even when the two nodes' views gave it
    // to each other and it is only stolen
    const release = join(m.dir, 'release')
    await writeFile(plan, `tasks:
  - id: red
    title: Paint it red
    prompt: Make the colour red.
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "color.txt": "red\\n" } }
  - id: blue
    title: Paint it blue
    prompt: Make the colour blue.
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "color.txt": "blue\\n" } }
`)
    const sub = await runCli(['submit', plan, ...m.conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    await waitFor(async () => { const s = await status(); return ['red', 'blue'].every(id => s.tasks.find(t => t.id === id)?.state === 'running') },
      { timeoutMs: 90_000, intervalMs: 200, message: () => `red and blue never ran at once: ${JSON.stringify(last?.tasks)}` })
    await writeFile(release, '')

    // the conflict is impossible to miss: the header says so
    await waitScreen('INBOX 1 waiting on you', 120_000, 'no conflict reached the inbox')
    const c = (await status()).conflicts.find(x => x.state === 'open')
    expect(c, JSON.stringify(last)).toBeDefined()
    const loser = c!.taskId
    await tmux('send-keys', '-t', SESSION, '3')
    const inbox = await waitScreen(`> CONFLICT ${c!.id}`, 10_000, 'the inbox view did not open')
    expect(inbox).toContain('color.txt')
    expect(inbox).toContain(`prompt  Make the colour ${loser}.`)
    if (c!.hunks.length > 0) {
      // 120 columns: main's side and the task's side on one line
      const winner = loser === 'red' ? 'blue' : 'red'
      // main's side names the task that put it there
      expect(inbox).toMatch(new RegExp(`ours: main, from ${winner} +│ theirs: task`))
      expect(inbox).toMatch(new RegExp(`- ${winner} +│ \\+ ${loser}`))
    } else {
      expect(inbox).toContain('recorded no hunks')
    }

    await tmux('send-keys', '-t', SESSION, 't')
    await waitScreen(`Resolve ${c!.id} with "theirs"? [y/n]`, 10_000, 'the key did not ask for confirmation')
    await tmux('send-keys', '-t', SESSION, 'y')
    await waitScreen(`${c!.id}: decision "theirs" recorded`, 30_000, 'the decision was not recorded')

    await waitFor(async () => (await status()).tasks.find(t => t.id === loser)?.state === 'merged', { timeoutMs: 90_000, intervalMs: 500, message: () => `the decision was not carried out: ${JSON.stringify(last)}` })
    const resolved = last!.conflicts.find(x => x.id === c!.id)!
    expect(resolved.state).toBe('resolved')
    expect(resolved.decision?.action).toBe('theirs')
    // the client's peer id (its --identity), not a self-asserted user@host
    expect(resolved.decision?.by).toMatch(/^12D3KooW/)
    // and the screen follows: the inbox empties, the task shows merged
    await waitScreen('inbox 0', 30_000, 'the inbox did not empty')
    await tmux('send-keys', '-t', SESSION, '1')
    await waitScreen(new RegExp(`\\n  ${loser} +merged `), 30_000, 'the task view did not show the merge')

    await tmux('send-keys', '-t', SESSION, 'q')
    await waitFor(async () => !await sessionAlive(), { timeoutMs: 15_000, message: 'the TUI did not exit on q' })
  })

})

describe('meshwork tui without a terminal', { timeout: 300_000 }, () => {
  it('prints the status and the inbox when they change, and exits 0 on SIGINT', async () => {
    const m = mesh!
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
    const child = spawn(process.execPath, [BIN, 'tui', ...m.conn], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    child.stderr.on('data', (c: Buffer) => { err += c.toString() })
    const exited = new Promise<number | null>(resolve => { child.once('close', code => { resolve(code) }) })
    try {
      await waitFor(() => out.includes('TASKS') && out.includes('NODES 2 alive of 2'), { timeoutMs: 60_000, message: () => `no plain frame\n${tail('stdout', out)}\n${tail('stderr', err)}` })
      expect(err).toContain('no terminal here')
      expect(out).toMatch(/^--- \d{4}-\d\d-\d\dT/)
      expect(out).not.toContain('\x1b[')
      // a task that fails reaches the plain inbox in a new frame
      const plan = join(m.dir, 'plain.yaml')
      await writeFile(plan, 'tasks:\n  - id: plain-fail\n    prompt: fails once\n    maxAttempts: 1\n    sim: { duration: 200ms, fail: 1 }\n')
      const sub = await runCli(['submit', plan, ...m.conn], { timeoutMs: 90_000 })
      expect(sub.code, describeResult(['submit'], sub)).toBe(0)
      await waitFor(() => out.includes('FAILED plain-fail: sim: attempt 1 fails as configured'), { timeoutMs: 90_000, message: () => `the failure never reached the plain inbox\n${tail('stdout', out)}` })
      expect(out).toMatch(/INBOX \d+ waiting on a human/)
      child.kill('SIGINT')
      const code = await Promise.race([exited, new Promise<'timeout'>(resolve => setTimeout(() => { resolve('timeout') }, 20_000))])
      expect(code, `${tail('stdout', out)}\n${tail('stderr', err)}`).toBe(0)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })
})
