import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCli, makeTempDir, removeDir, describeResult } from './helpers/cli.ts'
import { taskTimeoutOpt } from '../src/cli/node.ts'
import { findExecutable } from '../src/agent/claude.ts'

const FAKE = resolve(fileURLToPath(new URL('.', import.meta.url)), 'fixtures', 'fake-claude.mjs')

let dir = ''
beforeAll(async () => { dir = await makeTempDir('meshwork-node-opts-') })
afterAll(async () => { if (dir !== '') await removeDir(dir) })

describe('meshwork node options', () => {
  it('refuses to start with --agent claude when there is no claude executable, naming the fix (exit 2)', async () => {
    const empty = join(dir, 'empty-bin')
    await mkdir(empty, { recursive: true })
    const repo = join(dir, 'repo')
    // no claude on PATH (the default --agent is claude)
    const onPath = await runCli(['node', '--repo', repo, '--insecure-no-swarm-key'], { env: { PATH: empty }, timeoutMs: 30_000 })
    expect(onPath.code, describeResult(['node'], onPath)).toBe(2)
    expect(onPath.stderr).toMatch(/no `claude` on PATH/)
    expect(onPath.stderr).toMatch(/--claude-bin PATH/)
    expect(onPath.stderr).toMatch(/--agent command\|sim/)
    // --claude-bin pointing at nothing, or at a file that cannot be run
    const missing = await runCli(['node', '--repo', repo, '--insecure-no-swarm-key', '--claude-bin', join(dir, 'nope')], { timeoutMs: 30_000 })
    expect(missing.code, describeResult(['node'], missing)).toBe(2)
    expect(missing.stderr).toContain(`--claude-bin ${join(dir, 'nope')} is not an executable file`)
    const notExec = join(dir, 'not-exec')
    await writeFile(notExec, '#!/bin/sh\n')
    await chmod(notExec, 0o644)
    expect(await findExecutable(notExec)).toBeNull()
    // found through PATH or given directly
    const bin = join(dir, 'bin')
    await mkdir(bin, { recursive: true })
    await symlink(FAKE, join(bin, 'claude'))
    expect(await findExecutable('claude', `${empty}:${bin}`)).toBe(join(bin, 'claude'))
    expect(await findExecutable(FAKE)).toBe(FAKE)
  })

  it('--task-timeout takes durations, 0 or none for no limit, defaults to 2h, and is in --help', async () => {
    expect(taskTimeoutOpt(undefined)).toBe(2 * 3_600_000)
    expect(taskTimeoutOpt('20m')).toBe(20 * 60_000)
    expect(taskTimeoutOpt('1.5h')).toBe(5_400_000)
    expect(taskTimeoutOpt('0')).toBeNull()
    expect(taskTimeoutOpt('none')).toBeNull()
    expect(() => taskTimeoutOpt('soon')).toThrow(/--task-timeout must be a duration/)
    const help = await runCli(['node', '--help'], { timeoutMs: 30_000 })
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/--task-timeout DURATION[\s\S]*default: 2h/)
    expect(help.stdout).toMatch(/--max-budget-usd X[\s\S]*ends its task failed at once/)
    const bad = await runCli(['node', '--repo', join(dir, 'repo'), '--agent', 'sim', '--task-timeout', 'soon', '--insecure-no-swarm-key'], { timeoutMs: 30_000 })
    expect(bad.code, describeResult(['node'], bad)).toBe(2)
    expect(bad.stderr).toContain('--task-timeout must be a duration')
  })

  it('--claude-config must be a directory and --credentials-retry a positive duration (exit 2, naming the fix); both are in --help', async () => {
    const base = ['node', '--repo', join(dir, 'repo'), '--claude-bin', FAKE, '--insecure-no-swarm-key']
    const noDir = await runCli([...base, '--claude-config', join(dir, 'no-such-config')], { timeoutMs: 30_000 })
    expect(noDir.code, describeResult(['node'], noDir)).toBe(2)
    expect(noDir.stderr).toContain(`--claude-config ${join(dir, 'no-such-config')} is not a directory`)
    expect(noDir.stderr).toContain('~/.claude')
    const zero = await runCli([...base, '--credentials-retry', '0s'], { timeoutMs: 30_000 })
    expect(zero.code, describeResult(['node'], zero)).toBe(2)
    expect(zero.stderr).toContain('--credentials-retry must be a positive duration')
    const help = await runCli(['node', '--help'], { timeoutMs: 30_000 })
    expect(help.stdout).toMatch(/--claude-config DIR[\s\S]*CLAUDE\.md/)
    expect(help.stdout).toMatch(/--credentials-retry DURATION[\s\S]*default: 30s/)
  })
})
