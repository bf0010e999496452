/**
 * A run whose node is killed -9 after a checkpoint goes on from it on another
 * node (real `meshwork node` processes on loopback, the command agent held on
 * a gate file): the leader runs nothing (--slots 0) and keeps the checkpoint;
 * b runs the task and is killed; c joins and takes the task over from the
 * checkpoint, so the task's file holds both runs' lines.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { runCli, startNode, killAllChildren, removeDir, describeResult, watchStatusJson, newMeshDir, untilStatus, type StatusJson, type StatusWatch } from './helpers/cli.ts'
import { gitText } from '../src/git/git.ts'

const dirs: string[] = []
const watches: StatusWatch[] = []
afterAll(async () => {
  await Promise.all(watches.map(async w => { await w.close() }))
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

interface Task { id: string, state: string, node: string | null }

describe('checkpoints through the CLI', () => {
  it('a task whose node is killed -9 after a checkpoint resumes from it on another node', async () => {
    const { dir, keyFile } = await newMeshDir('meshwork-cp-', dirs)
    const gate = join(dir, 'gate')
    const agent = ['--agent', 'command', '--agent-cmd', `echo "run on $MESHWORK_NODE" >> log.txt; echo "wrote my line"; while [ ! -f '${gate}' ]; do sleep 0.1; done`, '--checkpoint-every', '300ms', '--suspect-after', '1s', '--dead-after', '3s']
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: [...agent, '--slots', '0'] })
    const b = await startNode({ dir, name: 'b', join: a.info.join, extraArgs: [...agent, '--no-leader'] })
    const conn = ['--join', a.info.join]
    const watch = await watchStatusJson(conn)
    watches.push(watch)
    const until = async (cond: (s: StatusJson) => boolean, what: string): Promise<StatusJson> => await untilStatus(watch, cond, what, { context: () => `${a.describe()}\n${b.describe()}` })
    await until(s => s.nodes.filter(n => n.state === 'alive').length === 2 && s.main.leader === a.info.peerId, 'two alive nodes led by a')
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: t1\n    prompt: append a line\n')
    const submit = await runCli(['submit', plan, ...conn], { timeoutMs: 60_000 })
    expect(submit.code, describeResult(['submit'], submit)).toBe(0)
    await until(s => (s.tasks as Task[]).some(t => t.id === 't1' && t.state === 'running' && t.node === b.info.peerId), 't1 running on b')
    // the leader holds b's checkpoint: its log says so
    await waitFor(() => /checkpoint:collected/.test(a.stderr()), { timeoutMs: 60_000, message: () => `a never collected a checkpoint\n${a.describe()}` })
    b.proc.kill('SIGKILL')
    await b.exited
    const c = await startNode({ dir, name: 'c', join: a.info.join, extraArgs: [...agent, '--no-leader'] })
    await until(s => (s.tasks as Task[]).some(t => t.id === 't1' && t.state === 'running' && t.node === c.info.peerId), 't1 taken over by c')
    // the run logs where it started from once its worktree is made (after the board says running)
    await waitFor(() => /task:resumed|task:checkpoint-unavailable/.test(c.stderr()), { timeoutMs: 60_000, message: () => `c logged no resume\n${c.describe()}` })
    expect(c.stderr()).toMatch(/task:resumed/)
    await writeFile(gate, '')
    const done = await until(s => (s.tasks as Task[]).some(t => t.id === 't1' && t.state === 'merged'), 't1 merged')
    const head = done.main.head as string
    const log = await gitText(['show', `${head}:log.txt`], { cwd: join(dir, 'repo-a') })
    expect(log.split('\n'), 'the second run did not start from the killed run\'s checkpoint').toEqual(['run on b', 'run on c'])
  })
})
