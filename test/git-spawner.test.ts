/**
 * git processes started from the spawner thread (src/git/spawner.ts, which
 * the merge leader turns on) behave as those started from the event loop did: output, exit codes, stdin, the output
 * limit, and a signal that kills the process and fails the call at once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git, gitText, GitError } from '../src/git/git.ts'
import { runInThread, spawnFromThread } from '../src/git/spawner.ts'
import { initRepo, commitFiles } from './helpers/git.ts'

let dir = ''
let repo = ''

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-spawner-'))
  repo = await initRepo(join(dir, 'repo'))
  await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('git from the spawner thread', () => {
  it('is where git runs once turned on: output, stdin, exit codes and stderr come back as before', async () => {
    // off until the merge leader turns it on (a null: git runs from the event loop)
    expect(await runInThread(['--version'], { cwd: repo, env: process.env, maxOutput: 1024 })).toBeNull()
    spawnFromThread()
    expect(await runInThread(['--version'], { cwd: repo, env: process.env, maxOutput: 1024 })).not.toBeNull()
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
    // a git that runs until it is killed (5 s at most: its shell command outlives git by that long at worst)
    const running = git(['-c', 'alias.wait=!sleep 5', 'wait'], { cwd: repo, signal: ac.signal })
    const started = Date.now()
    setTimeout(() => { ac.abort(new Error('stop')) }, 200)
    const err = await running.catch((e: unknown) => e)
    expect((err as Error).name).toBe('AbortError')
    expect(Date.now() - started).toBeLessThan(4000)
    await expect(git(['--version'], { cwd: repo, signal: ac.signal })).rejects.toThrow()
  })
})
