/**
 * The TUI through a real terminal (tmux, its own socket) when the node it reads
 * through stops: within a few seconds the screen says it lost that node and
 * stops showing its facts as live, then the TUI reconnects through the other
 * node it heard of and shows the mesh live again (the stopped node dead).
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { execFile, spawnSync } from 'node:child_process'
import { promisify } from 'node:util'
import { BIN, killAllChildren, removeDir, startCliMesh, type CliMesh } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

const run = promisify(execFile)
const HAS_TMUX = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0
if (!HAS_TMUX) console.warn('test/tui-lost.test.ts: tmux is not installed (not on PATH), so the real-terminal test of `meshwork tui` is skipped; install tmux to run it')
const SOCKET = `meshwork-tui-lost-${process.pid}`
const SESSION = 'tui'

let mesh: CliMesh | null = null

async function tmux (...args: string[]): Promise<string> {
  const { stdout } = await run('tmux', ['-L', SOCKET, ...args], { timeout: 10_000 })
  return stdout
}

async function waitScreen (what: string | RegExp, timeoutMs: number, why: string): Promise<string> {
  let seen = ''
  return await waitFor(async () => {
    seen = await tmux('capture-pane', '-p', '-t', SESSION).catch(err => `(capture failed: ${(err as Error).message})`)
    return (typeof what === 'string' ? seen.includes(what) : what.test(seen)) ? seen : null
  }, { timeoutMs, intervalMs: 200, message: () => `${why}: the screen never showed ${String(what)}\n--- screen ---\n${seen}\n${mesh?.nodes.map(n => n.describe()).join('\n') ?? ''}` })
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

beforeAll(async () => {
  mesh = await startCliMesh('meshwork-tui-lost-', ['--agent', 'sim', '--slots', '1', '--suspect-after', '1s', '--dead-after', '3s'], { names: ['a', 'b'] })
}, 120_000)

afterAll(async () => {
  if (HAS_TMUX) await tmux('kill-server').catch(() => {})
  await killAllChildren()
  if (mesh !== null) await removeDir(mesh.dir)
})

describe.skipIf(!HAS_TMUX)('meshwork tui when its node stops (tmux)', { timeout: 300_000 }, () => {
  it('shows the lost node within seconds, never as live, and reconnects through the other node', async () => {
    const m = mesh!
    const [a, b] = m.nodes
    // the TUI reads through a (the join token names only a's addresses)
    const cmd = ['env', '-u', 'CI', '-u', 'MESHWORK_JOIN', '-u', 'MESHWORK_SWARM_KEY', '-u', 'MESHWORK_BOOTSTRAP', process.execPath, BIN, 'tui', ...m.conn].map(shellQuote).join(' ')
    await tmux('new-session', '-d', '-s', SESSION, '-x', '120', '-y', '40', cmd)
    await waitScreen(/nodes 2\/2/, 90_000, 'the TUI did not connect or did not see both nodes')
    await tmux('send-keys', '-t', SESSION, '2')
    await waitScreen(/\na +alive /, 10_000, 'the nodes view did not show a alive')

    a!.proc.kill('SIGKILL')
    const killedAt = Date.now()
    const lost = await waitScreen('LOST CONNECTION to a', 30_000, 'the TUI did not say it lost its node')
    const tookMs = Date.now() - killedAt
    // a few seconds: three missed polls, plus a loaded machine's scheduling
    expect(tookMs, `the lost node showed after ${tookMs} ms`).toBeLessThan(15_000)
    expect(lost).toMatch(/not live/)
    // the stale view never claims anyone is alive, nor "now"
    if (!/liveness unknown/.test(lost)) expect(lost).not.toMatch(/ alive /)

    // it moves to b and is live again: a is seen dead through b
    const back = await waitScreen(/nodes 1\/2/, 60_000, 'the TUI did not reconnect through b')
    expect(back).not.toContain('LOST CONNECTION')
    await waitScreen(/\na +dead /, 30_000, 'a was not shown dead after the reconnect')
    await waitScreen(/\nb +alive /, 10_000, 'b was not shown alive after the reconnect')
    expect(b!.running()).toBe(true)

    await tmux('send-keys', '-t', SESSION, 'q')
    await waitFor(async () => !await tmux('has-session', '-t', SESSION).then(() => true, () => false), { timeoutMs: 15_000, message: 'the TUI did not exit on q' })
  })
})
