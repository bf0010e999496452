/**
 * Refs moved through one long-lived `git update-ref --stdin`
 * (src/git/ref-updater.ts): many updates in one process, each a transaction
 * git locks and logs; a refused one is an error that names git's reason and
 * ends that process, and the next update starts another; an idle process is
 * let go.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GitError, gitText } from '../src/git/git.ts'
import { RefUpdater } from '../src/git/ref-updater.ts'
import { waitFor } from '../src/util/wait.ts'
import { commitFiles, initRepo } from './helpers/git.ts'

let dir = ''
let repo = ''
let c1 = ''
let c2 = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-ref-updater-'))
  repo = await initRepo(join(dir, 'repo'))
  c1 = await commitFiles(repo, { 'a.txt': 'a\n' }, 'one')
  c2 = await commitFiles(repo, { 'a.txt': 'b\n' }, 'two')
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('a ref updater', () => {
  it('moves refs one transaction at a time, logged with its message; a refused update names git\'s reason and the next one works', async () => {
    const u = new RefUpdater(repo, 'meshwork: test')
    await Promise.all([u.update('refs/heads/meshwork/t1', c1), u.update('refs/heads/meshwork/t2', c2), u.update('refs/heads/meshwork/t1', c2)])
    expect(await gitText(['rev-parse', 'refs/heads/meshwork/t1', 'refs/heads/meshwork/t2'], { cwd: repo })).toBe(`${c2}\n${c2}`)
    expect(await gitText(['reflog', '-1', '--format=%gs', 'refs/heads/meshwork/t2'], { cwd: repo })).toBe('meshwork: test')
    expect(u.running).toBe(true)
    // a ref another process holds locked: git refuses, and says why
    await writeFile(join(repo, '.git', 'refs', 'heads', 'meshwork', 't3.lock'), '')
    const err = await u.update('refs/heads/meshwork/t3', c1).then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(GitError)
    expect((err as GitError).stderr).toMatch(/t3\.lock|lock/)
    await rm(join(repo, '.git', 'refs', 'heads', 'meshwork', 't3.lock'))
    await u.update('refs/heads/meshwork/t3', c1)
    expect(await gitText(['rev-parse', 'refs/heads/meshwork/t3'], { cwd: repo })).toBe(c1)
    u.close()
    expect(u.running).toBe(false)
  })

  it('lets an idle process go', async () => {
    const u = new RefUpdater(repo, 'meshwork: test', 100)
    await u.update('refs/heads/meshwork/idle', c1)
    expect(u.running).toBe(true)
    await waitFor(() => !u.running, { timeoutMs: 10_000, message: 'the idle process was kept' })
    await u.update('refs/heads/meshwork/idle', c2)
    expect(await gitText(['rev-parse', 'refs/heads/meshwork/idle'], { cwd: repo })).toBe(c2)
    u.close()
  })

  it('serves many updates with one git process', async () => {
    const module = join(process.cwd(), 'src', 'git', 'ref-updater.ts')
    const logFile = join(dir, 'git-commands.log')
    // in a process of its own: git processes are counted through MESHWORK_BENCH_GIT_LOG, read when git.ts loads
    const script = `import { RefUpdater } from ${JSON.stringify(module)}
const u = new RefUpdater(${JSON.stringify(repo)}, 'meshwork: test')
for (let i = 0; i < 5; i++) await u.update('refs/heads/meshwork/many-' + i, ${JSON.stringify(c1)})
u.close()
console.log('done')`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MESHWORK_BENCH_GIT_LOG: logFile } })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    try {
      await waitFor(() => out.includes('done'), { timeoutMs: 30_000, message: () => `the script did not finish: ${out}` })
      expect((await readFile(logFile, 'utf8')).split('\n').filter(l => l !== '')).toEqual(['update-ref -m meshwork: test --stdin'])
      for (let i = 0; i < 5; i++) expect(await gitText(['rev-parse', `refs/heads/meshwork/many-${i}`], { cwd: repo })).toBe(c1)
    } finally {
      child.kill('SIGKILL')
    }
  })
})
