/**
 * A hung `--verify` never stops the merges: it runs in its own process group,
 * a time limit makes it a failed check with the output it gave, and cancel of
 * the task or node stop kill the whole group.
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startCliMesh, killAllChildren, removeDir, describeResult, makeTempDir, type CliMesh } from './helpers/cli.ts'
import { initRepo, commitFiles } from './helpers/git.ts'
import { isAlive } from './helpers/proc.ts'
import { waitFor } from '../src/util/wait.ts'
import { runVerify, DEFAULT_VERIFY_TIMEOUT_MS } from '../src/git/merge.ts'
import { gitText } from '../src/git/git.ts'
import { verifyTimeoutOpt } from '../src/cli/node.ts'

interface TaskJson { id: string, state: string, error: string | null }

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  for (const d of dirs) await removeDir(d)
})

/** A `--verify` that starts a grandchild, records its pid in `pidFile` when `marker` is in the candidate, and waits on it. */
const hangingVerify = (marker: string, pidFile: string): string =>
  `if test -e ${marker}; then echo "checking ${marker}"; sleep 1000 & echo $! > ${pidFile}; wait; fi; true`

const readPid = (file: string): number | null => existsSync(file) && readFileSync(file, 'utf8').trim() !== '' ? Number(readFileSync(file, 'utf8')) : null

describe('runVerify', () => {
  let repo = ''
  let head = ''
  beforeAll(async () => {
    const dir = await makeTempDir('meshwork-verify-unit-')
    dirs.push(dir)
    repo = await initRepo(join(dir, 'repo'))
    head = await commitFiles(repo, { 'hang.txt': 'x\n' }, 'initial')
  })

  it('a check past its limit is killed with its process group and fails with the output so far', async () => {
    const pidFile = join(repo, '..', 'unit-timeout.pid')
    const v = await runVerify(repo, join(repo, '..', 'data'), head, hangingVerify('hang.txt', pidFile), { timeoutMs: 1500 })
    expect(v.ok).toBe(false)
    expect(v.timedOut).toBe(true)
    expect(v.output).toMatch(/^checking hang\.txt\n--verify timed out after 1\.5 s and was killed with its process group$/)
    const grandchild = readPid(pidFile)
    expect(grandchild).not.toBeNull()
    await waitFor(() => !isAlive(grandchild!), { timeoutMs: 5000, message: `the check's grandchild ${grandchild} outlived the timeout` })
    // the detached worktree of the candidate is gone
    expect(await gitText(['worktree', 'list', '--porcelain'], { cwd: repo })).not.toMatch(/\.verify-/)
  })

  it('aborting it kills the group and rejects with the reason; a quick check is unaffected by the limit', async () => {
    const pidFile = join(repo, '..', 'unit-abort.pid')
    const abort = new AbortController()
    const running = runVerify(repo, join(repo, '..', 'data'), head, hangingVerify('hang.txt', pidFile), { signal: abort.signal, timeoutMs: 60_000 })
    await waitFor(() => readPid(pidFile), { timeoutMs: 20_000, message: 'the check never started' })
    abort.abort(new Error('task t was cancelled'))
    await expect(running).rejects.toThrow('task t was cancelled')
    await waitFor(() => !isAlive(readPid(pidFile)!), { timeoutMs: 5000, message: 'the aborted check\'s grandchild still runs' })
    const ok = await runVerify(repo, join(repo, '..', 'data'), head, 'echo fine; exit 3', { timeoutMs: 60_000 })
    expect(ok).toMatchObject({ ok: false, timedOut: false, output: 'fine' })
  })

  it('--verify-timeout defaults to 30m; 0 and none mean no limit; a bad value is a usage error', () => {
    expect(DEFAULT_VERIFY_TIMEOUT_MS).toBe(30 * 60_000)
    expect(verifyTimeoutOpt(undefined)).toBe(30 * 60_000)
    expect(verifyTimeoutOpt('90s')).toBe(90_000)
    expect(verifyTimeoutOpt('0')).toBeNull()
    expect(verifyTimeoutOpt('none')).toBeNull()
    expect(() => verifyTimeoutOpt('soon')).toThrow(/--verify-timeout must be a duration/)
  })
})

async function tasks (conn: string[]): Promise<TaskJson[]> {
  const r = await runCli(['status', '--json', ...conn], { timeoutMs: 90_000 })
  if (r.code !== 0) throw new Error(describeResult(['status'], r))
  return (JSON.parse(r.stdout) as { tasks: TaskJson[] }).tasks
}

/** Whether the node's log says task `id` landed on main. */
const merged = (mesh: CliMesh, id: string): boolean => new RegExp(`"event":"merge:done","tasks":\\[[^\\]]*"${id}"`).test(mesh.nodes[0]!.stderr())

async function submit (mesh: CliMesh, name: string, text: string): Promise<void> {
  const plan = join(mesh.dir, name)
  await writeFile(plan, text)
  const r = await runCli(['submit', plan, ...mesh.conn], { timeoutMs: 90_000 })
  expect(r.code, describeResult(['submit', name], r)).toBe(0)
}

async function oneNodeMesh (prefix: string, extra: string[]): Promise<CliMesh> {
  const mesh = await startCliMesh(prefix, ['--agent', 'sim', '--slots', '2', ...extra], {
    names: ['a'],
    prepare: async dir => { const repo = await initRepo(join(dir, 'repo-a')); await commitFiles(repo, { 'README.md': '# p\n' }, 'initial') }
  })
  dirs.push(mesh.dir)
  return mesh
}

describe('meshwork node --verify-timeout', { timeout: 240_000 }, () => {
  it('a check past --verify-timeout fails its task with the output so far, and later merges go on', async () => {
    const dir = await makeTempDir('meshwork-verify-pids-')
    dirs.push(dir)
    const pidFile = join(dir, 'slow.pid')
    const mesh = await oneNodeMesh('meshwork-verify-timeout-', ['--verify', hangingVerify('slow.txt', pidFile), '--verify-timeout', '3s'])
    await submit(mesh, 'slow.yaml', 'tasks:\n  - id: slow\n    prompt: p\n    sim: { duration: 100ms, write: { "slow.txt": "x" } }\n')
    await waitFor(() => /"event":"merge:verify-failed","task":"slow"/.test(mesh.nodes[0]!.stderr()), { timeoutMs: 120_000, message: () => mesh.nodes[0]!.describe() })
    const slow = (await tasks(mesh.conn)).find(t => t.id === 'slow')!
    expect(slow.error).toMatch(/--verify failed on the merge with main:\nchecking slow\.txt\n--verify timed out after 3 s and was killed with its process group/)
    await waitFor(() => !isAlive(readPid(pidFile)!), { timeoutMs: 10_000, message: 'the timed-out check\'s grandchild still runs' })
    await submit(mesh, 'next.yaml', 'tasks:\n  - id: next\n    prompt: p\n    sim: { duration: 100ms, write: { "next.txt": "x" } }\n')
    await waitFor(() => merged(mesh, 'next'), { timeoutMs: 120_000, message: () => mesh.nodes[0]!.describe() })
    await mesh.nodes[0]!.stop()
  })

  it('cancel of the task kills a hung check and the merges go on; node stop kills one too', async () => {
    const dir = await makeTempDir('meshwork-verify-pids-')
    dirs.push(dir)
    const hangPid = join(dir, 'hang.pid')
    const stopPid = join(dir, 'stop.pid')
    const verify = `${hangingVerify('hang.txt', hangPid)}; ${hangingVerify('stop.txt', stopPid)}`
    const mesh = await oneNodeMesh('meshwork-verify-cancel-', ['--verify', verify])
    await submit(mesh, 'hang.yaml', 'tasks:\n  - id: hang\n    prompt: p\n    sim: { duration: 100ms, write: { "hang.txt": "x" } }\n')
    await waitFor(() => readPid(hangPid), { timeoutMs: 120_000, message: () => `the check never started\n${mesh.nodes[0]!.describe()}` })
    await submit(mesh, 'after.yaml', 'tasks:\n  - id: after\n    prompt: p\n    sim: { duration: 100ms, write: { "after.txt": "x" } }\n')
    const c = await runCli(['cancel', 'hang', ...mesh.conn], { timeoutMs: 90_000 })
    expect(c.code, describeResult(['cancel', 'hang'], c)).toBe(0)
    await waitFor(() => !isAlive(readPid(hangPid)!), { timeoutMs: 20_000, message: () => `the cancelled task's check still runs\n${mesh.nodes[0]!.describe()}` })
    await waitFor(() => merged(mesh, 'after'), { timeoutMs: 120_000, message: () => mesh.nodes[0]!.describe() })
    expect((await tasks(mesh.conn)).find(t => t.id === 'hang')?.state).toBe('cancelled')
    expect(mesh.nodes[0]!.stderr()).toMatch(/"event":"merge:stopped".*task hang was cancelled/)

    await submit(mesh, 'stop.yaml', 'tasks:\n  - id: stop\n    prompt: p\n    sim: { duration: 100ms, write: { "stop.txt": "x" } }\n')
    await waitFor(() => readPid(stopPid), { timeoutMs: 120_000, message: () => `the check never started\n${mesh.nodes[0]!.describe()}` })
    const grandchild = readPid(stopPid)!
    await mesh.nodes[0]!.stop('SIGTERM', 60_000)
    await waitFor(() => !isAlive(grandchild), { timeoutMs: 10_000, message: `the check's grandchild ${grandchild} outlived its node` })
  })
})
