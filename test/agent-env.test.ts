/**
 * What a node runs for a task (agents, --setup, --verify) never inherits the
 * mesh's secrets from the node's environment.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { agentEnv, SECRET_ENV } from '../src/agent/process.ts'
import { commandAgent } from '../src/agent/command.ts'
import { runSetup } from '../src/git/worktree.ts'
import { runVerify } from '../src/git/merge.ts'
import { git } from '../src/git/git.ts'
import type { Task } from '../src/crdt/schema.ts'

const SECRETS = { MESHWORK_JOIN: 'mw1:JOIN-SECRET-aa11', MESHWORK_SWARM_KEY: '/key/SWARM-SECRET-bb22', MESHWORK_BOOTSTRAP: '/ip4/10.0.0.1/tcp/4001' }
let dir = ''
const saved: Record<string, string | undefined> = {}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshwork-agent-env-'))
  for (const [k, v] of Object.entries(SECRETS)) { saved[k] = process.env[k]; process.env[k] = v }
})
afterEach(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  await rm(dir, { recursive: true, force: true })
})

function expectNoSecret (env: string): void {
  expect(env).not.toContain('SECRET')
  expect(env).not.toMatch(/^MESHWORK_(JOIN|SWARM_KEY|BOOTSTRAP)=/m)
}

describe('no mesh secret in what a node runs for a task', () => {
  it('agentEnv drops the join token, the swarm key and every other MESHWORK_* setting', () => {
    expect(SECRET_ENV).toEqual(['MESHWORK_JOIN', 'MESHWORK_SWARM_KEY'])
    const env = agentEnv()
    for (const k of Object.keys(SECRETS)) expect(env[k]).toBeUndefined()
    expect(env.PATH).toBe(process.env.PATH)
  })

  it('the command agent, --setup and --verify see none of them', async () => {
    const cwd = join(dir, 'wt')
    await mkdir(cwd)
    const agent = commandAgent({ cmd: 'env > agent-env.txt', nodeName: 'n' })
    const task = { id: 't1', title: 'T', prompt: 'p', deps: [] } as unknown as Task
    const r = await agent.run({ task, attempt: 1, node: 'peer', cwd, signal: new AbortController().signal })
    expect(r.outcome, r.error ?? '').toBe('success')
    const agentDump = await readFile(join(cwd, 'agent-env.txt'), 'utf8')
    expect(agentDump).toContain('MESHWORK_TASK_ID=t1')
    expectNoSecret(agentDump)

    await runSetup('env > setup-env.txt', cwd)
    expectNoSecret(await readFile(join(cwd, 'setup-env.txt'), 'utf8'))

    const repo = join(dir, 'repo')
    await mkdir(repo)
    await git(['init', '-q', '-b', 'main'], { cwd: repo })
    await writeFile(join(repo, 'a.txt'), 'a\n')
    await git(['add', '.'], { cwd: repo })
    await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'a'], { cwd: repo })
    const head = (await git(['rev-parse', 'HEAD'], { cwd: repo })).stdout.toString().trim()
    const out = join(dir, 'verify-env.txt')
    const v = await runVerify(repo, join(dir, 'data'), head, `env > ${out}`)
    expect(v).toMatchObject({ ok: true })
    const verifyDump = await readFile(out, 'utf8')
    expect(verifyDump).toContain(`MESHWORK_CANDIDATE=${head}`)
    expectNoSecret(verifyDump)
  })
})
