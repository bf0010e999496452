/**
 * The majority rule and `meshwork forget` through the CLI, on real nodes: in a
 * two-node mesh whose other node is killed -9, the survivor runs a task to
 * done but main does not advance (one of two is no majority), status says so
 * and names the command; `forget` of an alive node is refused (exit 2);
 * `forget` of the dead one lets the task merge. Loopback only.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, killAllChildren, removeDir, describeResult, watchStatusJson, newMeshDir, untilStatus, type StatusJson, type StatusWatch } from './helpers/cli.ts'

const dirs: string[] = []
const watches: StatusWatch[] = []
afterAll(async () => {
  await Promise.all(watches.map(async w => { await w.close() }))
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

interface Task { id: string, state: string }
interface Quorum { ok: boolean, reachable: number, voters: number, missing: string[] }

describe('meshwork forget', () => {
  it('a two-node mesh that lost a node merges nothing until the dead node is forgotten', async () => {
    const { dir, keyFile } = await newMeshDir('meshwork-forget-', dirs)
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: ['--agent', 'sim', '--dead-after', '4s', '--suspect-after', '2s'] })
    // b never leads, so a is the leader whichever peer id is smaller
    const b = await startNode({ dir, name: 'b', join: a.info.join, extraArgs: ['--agent', 'sim', '--no-leader', '--dead-after', '4s', '--suspect-after', '2s'] })
    const conn = ['--join', a.info.join]
    const watch = await watchStatusJson(conn)
    watches.push(watch)
    const until = async (cond: (s: StatusJson) => boolean, timeoutMs: number, what: string): Promise<StatusJson> => await untilStatus(watch, cond, what, { timeoutMs, context: () => a.describe() })
    await until(s => s.nodes.filter(n => n.state === 'alive').length === 2 && s.main.leader === a.info.peerId, 60_000, 'two alive nodes with a leading')

    const refused = await runCli(['forget', 'b', ...conn], { timeoutMs: 60_000 })
    expect(refused.code, describeResult(['forget', 'b'], refused)).toBe(2)
    expect(refused.stderr).toMatch(/b .* is alive .*meshwork drain b/s)

    b.proc.kill('SIGKILL')
    await b.exited
    await until(s => s.nodes.some(n => n.peerId === b.info.peerId && n.state === 'dead'), 60_000, 'b seen dead')
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: t1\n    prompt: write a file\n    sim: { duration: 100ms, write: { "t1.txt": "t1\\n" } }\n')
    const submit = await runCli(['submit', plan, ...conn], { timeoutMs: 60_000 })
    expect(submit.code, describeResult(['submit'], submit)).toBe(0)
    // the task runs to done on a; main does not advance without a majority, and the leader says why
    const held = await until(s => {
      const t = (s.tasks as Task[]).find(x => x.id === 't1')
      const q = (s.main as { quorum?: Quorum | null }).quorum
      return t?.state === 'done' && q != null && !q.ok
    }, 60_000, 't1 done and the leader short of a majority')
    const q = (held.main as { quorum?: Quorum | null }).quorum
    expect(q).toMatchObject({ ok: false, reachable: 1, voters: 2, missing: [b.info.peerId] })
    const human = await runCli(['status', ...conn], { timeoutMs: 60_000 })
    expect(human.code, describeResult(['status'], human)).toBe(0)
    expect(human.stdout).toMatch(/NO MAJORITY: the leader reaches 1 of 2 nodes.*meshwork forget b/)

    const forget = await runCli(['forget', 'b', ...conn], { timeoutMs: 60_000 })
    expect(forget.code, describeResult(['forget', 'b'], forget)).toBe(0)
    expect(forget.stdout).toMatch(/forgot b/)
    await until(s => (s.tasks as Task[]).find(x => x.id === 't1')?.state === 'merged', 60_000, 't1 merged after forget')
    const again = await runCli(['forget', 'b', ...conn], { timeoutMs: 60_000 })
    expect(again.code, describeResult(['forget', 'b'], again)).toBe(0)
    expect(again.stdout).toMatch(/already/)
  })
})
