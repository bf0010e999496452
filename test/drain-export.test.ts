/**
 * `meshwork drain NODE` and `meshwork export` on two real nodes: the drained
 * node shows as draining, keeps its running task until it finishes (held on a
 * gate file, not a duration), takes no new work, waits for its task to merge,
 * leaves and exits 0; export prints the whole board, and a backup taken
 * mid-run imports into a new mesh where its tasks merge. Loopback only.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { runCli, startNode, makeTempDir, statusJson, killAllChildren, removeDir, describeResult, type StatusJson } from './helpers/cli.ts'

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

interface Task { id: string, state: string, node: string | null }
const tasksOf = (s: StatusJson): Task[] => s.tasks as Task[]

describe('meshwork drain and export', () => {
  it('drains a node with a running task: draining in status, no new work, its task merged, then it leaves and exits 0; a mid-run export imports into a new mesh', async () => {
    const dir = await makeTempDir('meshwork-drain-')
    dirs.push(dir)
    const keyFile = join(dir, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const gate = join(dir, 'gate')
    // a command agent held on the gate file: the runs end when the test says so
    const agentArgs = ['--agent', 'command', '--agent-cmd', `while [ ! -f '${gate}' ]; do sleep 0.1; done; echo "$MESHWORK_TASK_ID" > "$MESHWORK_TASK_ID.txt"`, '--grace', '120s']
    const a2 = await startNode({ dir, name: 'a', keyFile, extraArgs: agentArgs })
    const b2 = await startNode({ dir, name: 'b', join: a2.info.join, extraArgs: agentArgs })
    const conn = ['--join', a2.info.join]

    const unknown = await runCli(['drain', 'nosuchnode', ...conn], { timeoutMs: 90_000 })
    expect(unknown.code, describeResult(['drain', 'nosuchnode'], unknown)).toBe(2)
    expect(unknown.stderr).toMatch(/no node "nosuchnode" on the board \(nodes: .*\b[ab]\b/)

    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: t1\n    prompt: one\n  - id: t2\n    prompt: two\n')
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    // one slot each: both tasks run, one on each node, held on the gate
    const running = await waitFor(async () => {
      const s = await statusJson(conn, 90_000).catch(() => null)
      return s !== null && tasksOf(s).filter(t => t.state === 'running').length === 2 ? s : null
    }, { timeoutMs: 90_000, intervalMs: 500, message: () => `the two tasks did not both start\n${a2.describe()}\n${b2.describe()}` })
    const onB = tasksOf(running).find(t => t.node === b2.info.peerId)
    expect(onB, JSON.stringify(running.tasks)).toBeDefined()

    const drain = await runCli(['drain', 'b', ...conn], { timeoutMs: 90_000 })
    expect(drain.code, describeResult(['drain', 'b'], drain)).toBe(0)
    expect(drain.stdout).toContain(`draining b (${b2.info.peerId})`)
    const during = await statusJson(conn, 90_000)
    // the contract's states stay alive|suspect|dead|left: a draining node is alive, with `draining` set
    expect(during.nodes.find(n => n.peerId === b2.info.peerId)).toMatchObject({ state: 'alive', draining: true })
    expect(b2.running()).toBe(true)

    // work submitted while b drains goes to a only
    await writeFile(plan, 'tasks:\n  - id: t3\n    prompt: three\n')
    expect((await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })).code).toBe(0)

    // a backup taken mid-run, for the import below
    const midExport = await runCli(['export', ...conn], { timeoutMs: 90_000 })
    expect(midExport.code, describeResult(['export'], midExport)).toBe(0)
    const backup = join(dir, 'backup.json')
    await writeFile(backup, midExport.stdout)

    await writeFile(gate, '')
    const exit = await waitFor(async () => await Promise.race([b2.exited, new Promise<null>(resolve => setTimeout(() => { resolve(null) }, 500))]),
      { timeoutMs: 120_000, intervalMs: 100, message: () => `the drained node did not exit\n${b2.describe()}` })
    expect(exit.code, b2.describe()).toBe(0)
    expect(b2.stderr()).toMatch(/"event":"node:drained"/)
    expect(b2.stderr()).not.toMatch(/node:drain-unmerged/)

    const after = await waitFor(async () => {
      const s = await statusJson(conn, 90_000).catch(() => null)
      return s !== null && tasksOf(s).every(t => t.state === 'merged') && tasksOf(s).length === 3 ? s : null
    }, { timeoutMs: 120_000, intervalMs: 500, message: () => `not every task merged after the drain\n${a2.describe()}` })
    expect(after.nodes.find(n => n.peerId === b2.info.peerId)?.state).toBe('left')
    // b's task was finished by b (not handed back) and t3 never went to b
    const byId = new Map(tasksOf(after).map(t => [t.id.replace(/^.*\//, ''), t]))
    expect(tasksOf(after).find(t => t.id === onB!.id)?.node).toBe(b2.info.peerId)
    expect(byId.get('t3')?.node).toBe(a2.info.peerId)

    const exp = await runCli(['export', ...conn], { timeoutMs: 90_000 })
    expect(exp.code, describeResult(['export'], exp)).toBe(0)
    const board = JSON.parse(exp.stdout) as { format: string, meshId: string, main: { head: string }, tasks: Array<{ id: string, prompt: string, state: string, mergeCommit: string }>, conflicts: unknown[], nodes: Array<{ peerId: string, name: string, drainAt: number | null, leftAt: number | null }> }
    expect(board.format).toBe('meshwork-export/1')
    expect(board.meshId).toBe(after.meshId)
    expect(board.main.head).toBe(after.main.head)
    expect(board.tasks.map(t => [t.id, t.state]).sort()).toEqual(tasksOf(after).map(t => [t.id, 'merged']).sort())
    expect(board.tasks.map(t => t.prompt).sort()).toEqual(['one', 'three', 'two'])
    expect(board.conflicts).toEqual([])
    const bRec = board.nodes.find(n => n.peerId === b2.info.peerId)
    expect(bRec?.name).toBe('b')
    expect(bRec?.leftAt).toBeGreaterThanOrEqual(bRec?.drainAt ?? Infinity)

    // the mid-run backup restores into a new mesh: its three unfinished tasks run and merge there
    const bad = join(dir, 'not-export.json')
    await writeFile(bad, '{"tasks": []}')
    const refused = await runCli(['import', bad, ...conn], { timeoutMs: 60_000 })
    expect(refused.code, describeResult(['import'], refused)).toBe(2)
    expect(refused.stderr).toMatch(/not a meshwork export/)
    const key2 = join(dir, 'swarm2.key')
    expect((await runCli(['init', '--out', key2], { timeoutMs: 30_000 })).code).toBe(0)
    const c = await startNode({ dir, name: 'c', keyFile: key2, extraArgs: agentArgs })
    const conn2 = ['--join', c.info.join]
    const imp = await runCli(['import', backup, ...conn2], { timeoutMs: 90_000 })
    expect(imp.code, describeResult(['import'], imp)).toBe(0)
    expect(imp.stdout).toMatch(/^imported 3 tasks: /)
    // importing again into the same mesh is refused: the ids are taken
    const again = await runCli(['import', backup, ...conn2], { timeoutMs: 90_000 })
    expect(again.code, describeResult(['import'], again)).toBe(2)
    expect(again.stderr).toMatch(/already has tasks/)
    const restored = await waitFor(async () => {
      const s = await statusJson(conn2, 90_000).catch(() => null)
      return s !== null && tasksOf(s).length === 3 && tasksOf(s).every(t => t.state === 'merged') ? s : null
    }, { timeoutMs: 180_000, intervalMs: 500, message: () => `the imported tasks did not all merge in the new mesh\n${c.describe()}` })
    expect(tasksOf(restored).map(t => t.id).sort()).toEqual(tasksOf(after).map(t => t.id).sort())
    expect(restored.meshId).not.toBe(after.meshId)
  }, 700_000)
})
