/**
 * Rotating the swarm key (README, "Rotating the swarm key") through the CLI
 * with real `meshwork node` processes: two nodes merge two tasks on key 1;
 * both stop; `meshwork rotate-key` moves one node's board to key 2 and sets
 * the other's aside (--from-peers); restarted on key 2 both nodes hold the
 * same tasks in the same states and the same main, a new task runs and
 * merges on top of it, and a peer with the old key cannot connect. Loopback
 * only.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { runCli, startNode, makeTempDir, statusJson, killAllChildren, removeDir, describeResult, type StatusJson } from './helpers/cli.ts'
import { git } from '../src/git/git.ts'
import { revParse } from './helpers/git.ts'

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

interface Task { id: string, state: string, node: string | null }
const tasksOf = (s: StatusJson): Task[] => s.tasks as Task[]
const states = (s: StatusJson): string[] => tasksOf(s).map(t => `${t.id}=${t.state}`).sort()

describe('meshwork rotate-key', () => {
  it('moves a two-node mesh to a new swarm key: same tasks, states and main; new work merges; the old key is shut out', async () => {
    const dir = await makeTempDir('meshwork-rotate-')
    dirs.push(dir)
    const key1 = join(dir, 'swarm1.key')
    const key2 = join(dir, 'swarm2.key')
    for (const k of [key1, key2]) {
      const init = await runCli(['init', '--out', k], { timeoutMs: 30_000 })
      expect(init.code, describeResult(['init'], init)).toBe(0)
    }
    const agentArgs = ['--agent', 'command', '--agent-cmd', 'echo "$MESHWORK_TASK_ID" > "$MESHWORK_TASK_ID.txt"']
    const a = await startNode({ dir, name: 'a', keyFile: key1, extraArgs: agentArgs })
    const b = await startNode({ dir, name: 'b', join: a.info.join, extraArgs: agentArgs })
    const conn1 = ['--join', a.info.join]
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: t1\n    prompt: one\n  - id: t2\n    prompt: two\n    deps: [t1]\n')
    const sub = await runCli(['submit', plan, ...conn1], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    const before = await waitFor(async () => {
      const s = await statusJson(conn1, 90_000).catch(() => null)
      return s !== null && tasksOf(s).length === 2 && tasksOf(s).every(t => t.state === 'merged') ? s : null
    }, { timeoutMs: 180_000, intervalMs: 500, message: () => `the two tasks did not merge on key 1\n${a.describe()}\n${b.describe()}` })
    // both nodes hold the merged main before the rotation
    await waitFor(async () => await revParse(join(dir, 'repo-b'), 'refs/heads/main') === before.main.head,
      { timeoutMs: 60_000, intervalMs: 500, message: () => `b did not follow main ${before.main.head}\n${b.describe()}` })

    // a running node's data dir is not rotated: the node holds it
    const busy = await runCli(['rotate-key', '--data', a.dataDir, '--swarm-key', key2], { timeoutMs: 30_000 })
    expect(busy.code, describeResult(['rotate-key'], busy)).toBe(2)
    expect(busy.stderr).toMatch(/in use by process/)

    // README's order: the node whose board moves (a) stops last
    expect((await b.stop()).code, b.describe()).toBe(0)
    expect((await a.stop()).code, a.describe()).toBe(0)

    const rotA = await runCli(['rotate-key', '--data', a.dataDir, '--swarm-key', key2], { timeoutMs: 30_000 })
    expect(rotA.code, describeResult(['rotate-key', 'a'], rotA)).toBe(0)
    expect(rotA.stdout).toMatch(new RegExp(`moved the board of mesh ${before.meshId} to mesh \\w+: 2 tasks, 2 nodes, 0 conflicts, main ${before.main.head}`))
    expect(existsSync(join(a.dataDir, `board.am.${before.meshId}`))).toBe(true)
    // a second run finds nothing to do
    const again = await runCli(['rotate-key', '--data', a.dataDir, '--swarm-key', key2], { timeoutMs: 30_000 })
    expect(again.code, describeResult(['rotate-key', 'again'], again)).toBe(2)
    expect(again.stderr).toMatch(/already on mesh/)
    // the help names the command and the procedure
    const help = await runCli(['rotate-key', '--help'], { timeoutMs: 30_000 })
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/--from-peers/)

    // a starts on the new key; b is moved with a's new token (README step 4, --join-file) and joins through it
    const a2 = await startNode({ dir, name: 'a', keyFile: key2, extraArgs: agentArgs })
    const tokenFile = join(dir, 'new.token')
    await writeFile(tokenFile, a2.info.join + '\n', { mode: 0o600 })
    const rotB = await runCli(['rotate-key', '--data', b.dataDir, '--join-file', tokenFile, '--from-peers', '--json'], { timeoutMs: 30_000 })
    expect(rotB.code, describeResult(['rotate-key', 'b'], rotB)).toBe(0)
    const rb = JSON.parse(rotB.stdout) as { from: string, to: string, kept: string[], carried: unknown }
    expect(rb.from).toBe(before.meshId)
    expect(rb.to).toBe((await statusJson(['--join', a2.info.join], 60_000)).meshId)
    expect(rb.carried).toBeNull()
    expect(rb.kept).toContain(join(b.dataDir, `board.am.${before.meshId}`))
    const b2 = await startNode({ dir, name: 'b', join: a2.info.join, extraArgs: agentArgs })
    const viaA = ['--swarm-key', key2, '--bootstrap', a2.info.addrs[0] as string]
    const viaB = ['--swarm-key', key2, '--bootstrap', b2.info.addrs[0] as string]
    for (const [name, conn] of [['a', viaA], ['b', viaB]] as const) {
      const s = await waitFor(async () => {
        const st = await statusJson(conn, 60_000).catch(() => null)
        return st !== null && tasksOf(st).length === 2 ? st : null
      }, { timeoutMs: 90_000, intervalMs: 500, message: () => `${name} does not show the carried board\n${a2.describe()}\n${b2.describe()}` })
      expect(s.meshId).not.toBe(before.meshId)
      expect(states(s), name).toEqual(states(before))
      expect(s.main.head, name).toBe(before.main.head)
      expect(tasksOf(s).map(t => t.node).sort(), name).toEqual(tasksOf(before).map(t => t.node).sort())
    }

    // new work runs and merges on top of the old main
    await writeFile(plan, 'tasks:\n  - id: t3\n    prompt: three\n')
    const sub3 = await runCli(['submit', plan, ...viaA], { timeoutMs: 90_000 })
    expect(sub3.code, describeResult(['submit', 't3'], sub3)).toBe(0)
    const after = await waitFor(async () => {
      const s = await statusJson(viaB, 90_000).catch(() => null)
      return s !== null && tasksOf(s).length === 3 && tasksOf(s).every(t => t.state === 'merged') ? s : null
    }, { timeoutMs: 180_000, intervalMs: 500, message: () => `t3 did not merge on key 2\n${a2.describe()}\n${b2.describe()}` })
    expect(after.main.head).not.toBe(before.main.head)
    const ancestor = await git(['merge-base', '--is-ancestor', before.main.head as string, after.main.head as string], { cwd: join(dir, 'repo-a'), allowFail: true })
    expect(ancestor.code, 'the old main is in the new one').toBe(0)

    // both nodes are registered as running again (the carried records said they had stopped)
    const exp = await runCli(['export', ...viaB], { timeoutMs: 90_000 })
    expect(exp.code, describeResult(['export'], exp)).toBe(0)
    const board = JSON.parse(exp.stdout) as { nodes: Array<{ name: string, leftAt: number | null }> }
    expect(board.nodes.map(n => `${n.name}:${n.leftAt === null ? 'running' : 'left'}`).sort()).toEqual(['a:running', 'b:running'])

    // the old key no longer reaches the mesh
    const old = await runCli(['status', '--json', '--swarm-key', key1, '--bootstrap', a2.info.addrs[0] as string, '--timeout', '5s'], { timeoutMs: 60_000 })
    expect(old.code, describeResult(['status', 'old key'], old)).not.toBe(0)
    expect(old.stdout).not.toMatch(/"tasks"/)

    expect((await a2.stop()).code, a2.describe()).toBe(0)
    expect((await b2.stop()).code, b2.describe()).toBe(0)
  }, 700_000)
})
