/**
 * git processes started by the helper process (src/git/spawner.ts, which
 * `meshwork node` and the merge leader turn on) behave as those started by the node did: output, exit codes, stdin,
 * the output limit, and a signal that kills the process and fails the call at once; the helper leaves when idle.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { waitFor } from '../src/util/wait.ts'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText, GitError, spawnGit } from '../src/git/git.ts'
import { createHash } from 'node:crypto'
import { HELPER_IDLE_MS, helperPid, runInHelper, spawnFromHelper } from '../src/git/spawner.ts'
import { initRepo, commitFiles } from './helpers/git.ts'
import { isAlive as alive } from './helpers/proc.ts'

let dir = ''
let repo = ''

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-spawner-'))
  repo = await initRepo(join(dir, 'repo'))
  await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('git from the helper process', () => {
  it('is where git runs once turned on: output, stdin, exit codes and stderr come back as before', async () => {
    // off until turned on (a null: git runs from this process)
    expect(await runInHelper(['--version'], { cwd: repo, env: process.env, maxOutput: 1024 })).toBeNull()
    expect(helperPid()).toBeNull()
    spawnFromHelper()
    expect(await runInHelper(['--version'], { cwd: repo, env: process.env, maxOutput: 1024 })).not.toBeNull()
    // git's parent is the helper, not this process
    const parent = Number((await gitText(['-c', 'alias.ppid=!ps -o ppid= -p $PPID', 'ppid'], { cwd: repo })).trim())
    expect(parent).toBe(helperPid())
    expect(await gitText(['log', '--format=%s'], { cwd: repo })).toBe('first')
    const oid = await gitText(['hash-object', '--stdin'], { cwd: repo, input: 'hello\n' })
    expect(oid).toBe('ce013625030ba8dba906f756967f9e9ca394464a')
    const missing = await git(['rev-parse', '--verify', '--quiet', 'refs/heads/nope'], { cwd: repo, allowFail: true })
    expect(missing.code).toBe(1)
    const err = await git(['cat-file', '-p', 'f'.repeat(40)], { cwd: repo }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(GitError)
    expect((err as GitError).code).toBe(128)
    expect((err as GitError).stderr).toMatch(/fatal/)
    // binary output arrives intact
    const blob = await git(['cat-file', 'blob', 'HEAD:a.txt'], { cwd: repo })
    expect(blob.stdout.equals(Buffer.from('a\n'))).toBe(true)
  })

  it('an output over the limit kills the process and fails the call', async () => {
    const err = await git(['log', '-p'], { cwd: repo, maxOutput: 10 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(GitError)
    expect((err as GitError).message).toMatch(/output larger than 10 bytes/)
  })

  it('a signal kills the process and fails the call at once', async () => {
    const ac = new AbortController()
    // a git that runs until it is killed: the alias's shell writes its pid, then becomes a sleep that outlives git.
    // The sleep ignores SIGTERM: an abort sends git SIGTERM, and git passes it on to its alias's process as it
    // exits, so without that whether the sleep was still there when the call ended depended on the host's speed
    const pidFile = join(repo, '.git', 'sleeper.pid')
    const running = git(['-c', `alias.wait=!echo $$ > '${pidFile}'; trap '' TERM; exec sleep 600`, 'wait'], { cwd: repo, signal: ac.signal })
    const sleeper = await waitFor(() => { try { return Number(readFileSync(pidFile, 'utf8').trim()) || null } catch { return null } }, { timeoutMs: 20_000, message: 'the alias never wrote its pid' })
    try {
      ac.abort(new Error('stop'))
      const err = await running.catch((e: unknown) => e)
      expect((err as Error).name).toBe('AbortError')
      expect(alive(sleeper)).toBe(true)
    } finally {
      try { process.kill(sleeper, 'SIGKILL') } catch {}
    }
    await expect(git(['--version'], { cwd: repo, signal: ac.signal })).rejects.toThrow()
  })

  it('the helper ignores a Ctrl-C to the process group, leaves when idle, and a later call starts another', async () => {
    spawnFromHelper({ idleMs: 300 })
    await gitText(['--version'], { cwd: repo })
    const first = helperPid()
    expect(first).not.toBeNull()
    process.kill(first as number, 'SIGINT')
    process.kill(first as number, 'SIGTERM')
    expect(await gitText(['log', '--format=%s'], { cwd: repo })).toBe('first')
    await waitFor(() => helperPid() === null && !alive(first as number), { timeoutMs: 10_000, message: 'the idle helper did not leave' })
    expect(await gitText(['log', '--format=%s'], { cwd: repo })).toBe('first')
    expect(helperPid()).not.toBe(first)
    expect(helperPid()).not.toBeNull()
    spawnFromHelper({ idleMs: HELPER_IDLE_MS })
  })

  it('the helper exits when its node is killed -9', async () => {
    const spawner = join(process.cwd(), 'src', 'git', 'spawner.ts')
    const script = `import { spawnFromHelper, runInHelper, helperPid } from ${JSON.stringify(spawner)}
spawnFromHelper()
await runInHelper(['--version'], { cwd: ${JSON.stringify(repo)}, env: process.env, maxOutput: 1024 })
console.log(helperPid())
setInterval(() => {}, 1000)`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    try {
      const pid = await waitFor(() => /^\d+\n/.test(out) ? Number(out.trim()) : null, { timeoutMs: 20_000, message: 'the node never reported its helper' })
      expect(alive(pid)).toBe(true)
      child.kill('SIGKILL')
      await waitFor(() => !alive(pid), { timeoutMs: 10_000, message: 'the helper outlived its node' })
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('a helper that dies is reported once: the call it ran fails, and later git runs from the node itself', async () => {
    const spawner = join(process.cwd(), 'src', 'git', 'spawner.ts')
    const gitModule = join(process.cwd(), 'src', 'git', 'git.ts')
    // in a process of its own: a dead helper is not replaced for the rest of the process
    const script = `import { spawnFromHelper, helperPid } from ${JSON.stringify(spawner)}
import { git } from ${JSON.stringify(gitModule)}
import { readFileSync } from 'node:fs'
const lost = []
spawnFromHelper({ onLost: why => { lost.push(why) } })
const pidFile = ${JSON.stringify(join(dir, 'helper-death.pid'))}
const running = git(['-c', "alias.wait=!echo $$ > '" + pidFile + "'; exec sleep 600", 'wait'], { cwd: ${JSON.stringify(repo)} })
const helper = helperPid()
while (true) { try { if (readFileSync(pidFile, 'utf8').trim() !== '') break } catch {} await new Promise(r => setTimeout(r, 20)) }
process.kill(helper, 'SIGKILL')
const failed = await running.then(() => 'ran', e => e.message)
const after = (await git(['rev-parse', 'HEAD'], { cwd: ${JSON.stringify(repo)} })).stdout.toString().trim()
try { process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL') } catch {}
console.log(JSON.stringify({ lost, failed, after, helperAfter: helperPid() }))
process.exit(0)`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    try {
      const line = await waitFor(() => out.includes('\n') ? out.trim() : null, { timeoutMs: 30_000, message: () => `the script reported nothing: ${out}` })
      const r = JSON.parse(line) as { lost: string[], failed: string, after: string, helperAfter: number | null }
      expect(r.lost, 'told once').toHaveLength(1)
      expect(r.lost[0]).toMatch(/git helper process exited \(SIGKILL\)/)
      expect(r.failed).toMatch(/git helper process exited/)
      expect(r.after).toMatch(/^[0-9a-f]{40}$/)
      expect(r.helperAfter, 'no helper after its death').toBeNull()
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('with MESHWORK_BENCH_GIT_LOG set, every git command started is appended to that file, by the helper or not', async () => {
    const spawner = join(process.cwd(), 'src', 'git', 'spawner.ts')
    const gitModule = join(process.cwd(), 'src', 'git', 'git.ts')
    const logFile = join(dir, 'git-commands.log')
    // in a process of its own: the file is named once, when git.ts loads
    const script = `import { spawnFromHelper } from ${JSON.stringify(spawner)}
import { git, spawnGit } from ${JSON.stringify(gitModule)}
await git(['rev-parse', 'HEAD'], { cwd: ${JSON.stringify(repo)} })
spawnFromHelper()
await git(['log', '-1', '--format=%s'], { cwd: ${JSON.stringify(repo)} })
const p = spawnGit(['hash-object', '--stdin'], { cwd: ${JSON.stringify(repo)} })
p.stdin.end('x')
p.stdout.resume()
await p.exited
console.log('done')
process.exit(0)`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MESHWORK_BENCH_GIT_LOG: logFile } })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    try {
      await waitFor(() => out.includes('done'), { timeoutMs: 30_000, message: () => `the script did not finish: ${out}` })
      expect(readFileSync(logFile, 'utf8').split('\n')).toEqual(['rev-parse HEAD', 'log -1 --format=%s', 'hash-object --stdin', ''])
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('streams a process through the helper: stdin with backpressure, stdout paused while unread, a kill', async () => {
    spawnFromHelper()
    // 8 MiB into `hash-object --stdin`, written as a caller does (waiting for 'drain')
    const size = 8 * 1024 * 1024
    const data = Buffer.alloc(size)
    for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i)
    const write = spawnGit(['hash-object', '-w', '--stdin'], { cwd: repo })
    expect(helperPid()).not.toBeNull()
    for (let at = 0; at < size; at += 64 * 1024) {
      if (!write.stdin.write(data.subarray(at, at + 64 * 1024))) await new Promise(resolve => write.stdin.once('drain', resolve))
    }
    write.stdin.end()
    const hashed: Buffer[] = []
    for await (const c of write.stdout) hashed.push(c as Buffer)
    expect((await write.exited).code).toBe(0)
    const oid = Buffer.concat(hashed).toString().trim()
    expect(oid).toBe(createHash('sha1').update(`blob ${size}\0`).update(data).digest('hex'))
    // read back, slowly: the helper holds git's output while this side does not read
    const read = spawnGit(['cat-file', 'blob', oid], { cwd: repo })
    read.stdin.end()
    const got: Buffer[] = []
    for await (const c of read.stdout) {
      got.push(c as Buffer)
      if (got.length % 16 === 0) await new Promise(resolve => setImmediate(resolve))
    }
    expect(Buffer.concat(got).equals(data)).toBe(true)
    expect((await read.exited).code).toBe(0)
    // a killed process is over at once, without a code, even while a process it started still holds its
    // stdout: the alias's shell says its pid, then becomes a sleep that outlives the killed git
    const waiting = spawnGit(['-c', 'alias.wait=!echo $$; exec sleep 600', 'wait'], { cwd: repo })
    waiting.stdin.end()
    let said = ''
    waiting.stdout.on('data', (c: Buffer) => { said += c.toString() })
    const sleeper = await waitFor(() => /^\d+\n/.test(said) ? Number(said.trim()) : null, { timeoutMs: 20_000, message: 'the alias never said its pid' })
    try {
      waiting.kill()
      expect((await waiting.exited).code).toBeNull()
      expect(alive(sleeper)).toBe(true)
    } finally {
      try { process.kill(sleeper, 'SIGKILL') } catch {}
    }
    // a failing git reports its code and stderr
    const bad = spawnGit(['cat-file', 'blob', 'f'.repeat(40)], { cwd: repo })
    bad.stdin.end()
    bad.stdout.resume()
    const r = await bad.exited
    expect(r.code).toBe(128)
    expect(r.stderr).toMatch(/fatal/)
  })
})
