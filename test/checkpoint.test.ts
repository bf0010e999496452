/**
 * Checkpoints: while an agent works its worktree is committed to
 * `meshwork-checkpoint/<id>` and the leader keeps a copy; when the node
 * running the task goes away, the next run (on another node) starts from the
 * last checkpoint and is told so. In-process nodes, real git, the command
 * agent held on a gate file.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { Worker } from '../src/node/worker.ts'
import { commandAgent } from '../src/agent/command.ts'
import { silentLogger } from '../src/util/logger.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { taskContext } from '../src/node/exec.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh | null = null
const workers: Worker[] = []

afterAll(async () => {
  await Promise.all(workers.map(async w => { await w.stop(0) }))
  await mesh?.stop()
})

describe('checkpoints', { timeout: 120_000 }, () => {
  it('a run lost with its node goes on from its last checkpoint on another node', async () => {
    // a: the leader, runs nothing; b: runs the task and goes away; c: joins later and takes it over
    mesh = await createMesh(1)
    const root = mesh.dirs[0] as string
    const gate = join(root, 'gate')
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    const b = await mesh.add({ eligible: false })
    const a = mesh.nodes[0] as MeshNode
    // each run appends a line, then waits for the gate: two lines on main only if the second run started from the first one's checkpoint
    const agent = commandAgent({ nodeName: 'test', cmd: `echo "run on $MESHWORK_NODE" >> log.txt; echo "wrote a line"; while [ ! -f '${gate}' ]; do sleep 0.1; done` })
    const start = async (node: MeshNode, i: number, slots: number): Promise<Worker> => {
      await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
      const w = new Worker({ node, agent, repo: join(root, `repo${i}`), dataDir: join(root, `w${i}`), branch: 'main', slots, hasBootstrap: i > 0, logger: silentLogger, checkpointEveryMs: 200 })
      workers.push(w)
      await w.start()
      await w.ready
      return w
    }
    await start(a, 0, 0)
    const wb = await start(b, 1, 1)
    await waitAllAlive([a, b], 30_000)
    await waitFor(() => a.board.snapshot().main.leader === a.peerId, { timeoutMs: 30_000, message: 'a did not become leader' })
    a.changeBoard('plan', addTasks([simpleTask('t1', {})]))
    const cp = await waitFor(() => {
      const t = a.board.task('t1')
      return t?.state === 'running' && t.node === b.peerId && t.checkpoint != null && t.checkpoint.node === b.peerId ? t.checkpoint : null
    }, { timeoutMs: 60_000, message: () => `no checkpoint of t1 from b: ${JSON.stringify(a.board.task('t1'))}` })
    expect(cp.recent).toContain('wrote a line')
    // the leader keeps a copy of the checkpoint
    await waitFor(async () => (await git(['cat-file', '-e', `${a.board.task('t1')?.checkpoint?.head ?? ''}^{commit}`], { cwd: join(root, 'repo0'), allowFail: true })).code === 0, { timeoutMs: 30_000, message: 'the leader never fetched the checkpoint' })
    const kept = a.board.task('t1')?.checkpoint?.head as string
    expect(await gitText(['show', `${kept}:log.txt`], { cwd: join(root, 'repo0') })).toMatch(/^run on \S+$/)

    // b goes away without its run finishing; c joins and takes the task over
    await wb.stop(0)
    await b.stop()
    const c = await mesh.add()
    await start(c, 2, 1)
    await waitFor(() => a.board.task('t1')?.state === 'running' && a.board.task('t1')?.node === c.peerId, { timeoutMs: 60_000, message: () => `c did not take t1 over: ${JSON.stringify(a.board.task('t1'))}` })
    await writeFile(gate, '')
    await waitFor(() => a.board.task('t1')?.state === 'merged', { timeoutMs: 60_000, message: () => `t1 not merged: ${JSON.stringify(a.board.task('t1'))}` })
    const head = a.board.snapshot().main.head as string
    const log = (await gitText(['show', `${head}:log.txt`], { cwd: join(root, 'repo0') })).split('\n')
    expect(log, 'the second run did not start from the first run\'s checkpoint').toHaveLength(2)
    // the agent is told it goes on from a lost run's work, and what that run last said
    const text = taskContext({ ...(a.board.task('t1') as NonNullable<ReturnType<typeof a.board.task>>), checkpoint: cp, epoch: cp.epoch + 1 }, a.board.snapshot(), p => p.slice(-6), cp.head)
    expect(text).toMatch(/An earlier run of this task was lost/)
    expect(text).toMatch(/wrote a line/)
  })
})
