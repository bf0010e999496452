import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCli, startCliMesh, killAllChildren, makeTempDir, removeDir, describeResult, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'

const FAKE = resolve(fileURLToPath(new URL('.', import.meta.url)), 'fixtures', 'fake-claude.mjs')

interface TaskJson { id: string, state: string, node: string | null, head: string | null, summary: string | null, costUsd: number, tokens: { input: number, output: number }, progress: { kind: string, text: string } | null }

let dir = ''
let bin = ''
const nodes: CliNode[] = []

beforeAll(async () => {
  // the fake claude on PATH, as a real install would be
  bin = await makeTempDir('meshwork-fakebin-')
  await symlink(FAKE, join(bin, 'claude'))
  const env = { PATH: `${bin}:${process.env.PATH ?? ''}`, FAKE_CLAUDE_FILE: 'out/{task}.txt', FAKE_CLAUDE_DELAY_MS: '5', ANTHROPIC_API_KEY: undefined, CLAUDE_CODE_OAUTH_TOKEN: undefined }
  // node a starts the project's history; b and c start with empty repos and clone main from the mesh
  const mesh = await startCliMesh('meshwork-exec-', ['--slots', '2', '--suspect-after', '1s', '--dead-after', '3s'], {
    env,
    prepare: async (d) => {
      const repoA = join(d, 'repo-a')
      await mkdir(repoA)
      await git(['init', '-q', '-b', 'main'], { cwd: repoA })
      await writeFile(join(repoA, 'README.md'), '# project\n')
      await git(['add', '.'], { cwd: repoA })
      await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'initial'], { cwd: repoA })
    }
  })
  dir = mesh.dir
  nodes.push(...mesh.nodes)
})

afterAll(async () => {
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
  if (bin !== '') await removeDir(bin)
})

describe('agent runs in worktrees across a mesh', { timeout: 300_000 }, () => {
  it('the claude agent (a fake on PATH) runs a plan on three nodes, two cloned from the mesh; every branch reaches the leader', async () => {
    const conn = ['--join', nodes[0]!.info.join]
    const ids = Array.from({ length: 6 }, (_, i) => `feat-${i}`)
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n' + ids.map(id => `  - id: ${id}\n    prompt: implement ${id}\n`).join(''))
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    let last: { main: { leader: string | null, head: string | null }, tasks: TaskJson[], nodes: Array<{ peerId: string, name: string }> } | null = null
    const status = async (): Promise<typeof last> => {
      const r = await runCli(['status', '--json', ...conn], { timeoutMs: 90_000 })
      if (r.code !== 0) throw new Error(describeResult(['status'], r))
      last = JSON.parse(r.stdout)
      return last
    }
    await waitFor(async () => {
      const s = await status()
      return s !== null && s.tasks.filter(t => ids.includes(t.id)).every(t => (t.state === 'done' || t.state === 'merged') && t.head !== null)
    }, { timeoutMs: 120_000, intervalMs: 500, message: () => `not all done: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state]))}\n${nodes.map(n => n.describe()).join('\n')}` })
    const s = last!
    // more than one node ran tasks, and cost from Claude's result is on the board
    expect(new Set(s.tasks.map(t => t.node)).size).toBeGreaterThan(1)
    for (const t of s.tasks) expect(t.costUsd).toBeCloseTo(0.0123, 6)
    // what the agent said it did (Claude's result text) is the task's summary in status --json
    for (const t of s.tasks) expect(t.summary).toBe('Done.')
    // the agents' stream reached the node status reads through, as progress gossip
    expect(s.tasks.filter(t => t.progress !== null).length).toBeGreaterThan(0)
    // a leader was elected and holds every branch with the oid on the board
    await waitFor(async () => (await status())?.main.leader !== null, { timeoutMs: 30_000, message: 'no leader elected' })
    const leader = nodes.find(n => n.info.peerId === last!.main.leader)!
    expect(leader).toBeDefined()
    const leaderRepo = join(dir, `repo-${leader.name}`)
    await waitFor(async () => {
      for (const t of last!.tasks) {
        const r = await git(['rev-parse', '--verify', '--quiet', `refs/heads/meshwork/${t.id}`], { cwd: leaderRepo, allowFail: true })
        if (r.stdout.toString().trim() !== t.head) return false
      }
      return true
    }, { timeoutMs: 60_000, intervalMs: 500, message: () => `the leader ${leader.name} did not collect every branch\n${leader.describe()}` })
    for (const t of last!.tasks) {
      expect(await gitText(['show', `${t.head!}:out/${t.id}.txt`], { cwd: leaderRepo })).toBe(`hello from fake claude for ${t.id}`)
      expect(await gitText(['log', '-1', '--format=%B', t.head!], { cwd: leaderRepo })).toContain(`Meshwork-Task: ${t.id}`)
    }
    // the cloned nodes have the project's history and follow the mesh main
    await waitFor(async () => (await status())?.tasks.every(t => t.state === 'merged'), { timeoutMs: 60_000, intervalMs: 500, message: () => `not all merged: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state]))}` })
    const main = (last as unknown as { main: { head: string } }).main.head
    for (const name of ['b', 'c']) {
      const repo = join(dir, `repo-${name}`)
      await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === main, { timeoutMs: 30_000, message: `node ${name} did not follow main` })
      expect((await gitText(['log', '--format=%s', 'main'], { cwd: repo })).split('\n').at(-1)).toBe('initial')
    }
  })
})
