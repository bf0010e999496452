/**
 * A mesh main that no live node has (its leader published it and died before
 * anyone fetched it): nodes hold their claims instead of failing tasks on it,
 * and the new leader puts main back to the last main it has, after which the
 * mesh merges again. In-process nodes, real git.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { Worker } from '../src/node/worker.ts'
import { simAgent } from '../src/agent/sim.ts'
import { silentLogger } from '../src/util/logger.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh | null = null
const workers = new Map<MeshNode, Worker>()

afterAll(async () => {
  await Promise.all([...workers.values()].map(async w => { await w.stop(0) }))
  await mesh?.stop()
})

const sim = (file: string): ReturnType<typeof simpleTask>['sim'] => ({ durationMs: 50, write: { [file]: `${file}\n` }, append: {}, fail: 0 })
const LOST = 'b'.repeat(40)

describe('a mesh main on no live node', { timeout: 120_000 }, () => {
  it('holds claims (no task fails on it) and the new leader goes back to the last main it has', async () => {
    mesh = await createMesh(3, { suspectAfterMs: 1000, deadAfterMs: 3000 })
    const root = mesh.dirs[0] as string
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    for (const [i, node] of mesh.nodes.entries()) {
      await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
      const w = new Worker({ node, agent: simAgent(), repo: join(root, `repo${i}`), dataDir: join(root, `w${i}`), branch: 'main', slots: 1, hasBootstrap: i > 0, logger: silentLogger, mainLostMs: 2000 })
      workers.set(node, w)
      await w.start()
      await w.ready
    }
    await waitAllAlive(mesh.nodes, 30_000)
    const first = mesh.nodes[0] as MeshNode
    const states = (n: MeshNode): string => [...n.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state}${t.error !== null ? `(${t.error})` : ''}`).join(', ')
    first.changeBoard('plan', addTasks([simpleTask('t1', { sim: sim('t1.txt') })]))
    await waitFor(() => mesh!.nodes.every(n => n.board.task('t1')?.state === 'merged'), { timeoutMs: 60_000, message: () => `t1 not merged: ${states(first)}` })
    const kept = first.board.snapshot().main.head as string
    const leader = mesh.nodes.find(n => n.peerId === first.board.snapshot().main.leader) as MeshNode
    const rest = mesh.nodes.filter(n => n !== leader)
    for (const n of rest) await waitFor(async () => await gitText(['rev-parse', 'main'], { cwd: join(root, `repo${mesh!.nodes.indexOf(n)}`) }) === kept, { timeoutMs: 30_000, message: 'main not followed' })
    // the leader publishes a main nobody else has, and dies
    leader.changeBoard('main:advance', d => { lifecycle.advanceMain(d, LOST) })
    await waitFor(() => rest.every(n => n.board.snapshot().main.head === LOST), { timeoutMs: 20_000, message: 'the lost main did not reach the others' })
    await workers.get(leader)?.stop(0)
    workers.delete(leader)
    await leader.stop()
    const other = rest[0] as MeshNode
    other.changeBoard('plan', addTasks([simpleTask('t2', { sim: sim('t2.txt') })]))
    // nobody fails t2 on the missing main; the new leader goes back to `kept`, and t2 merges on top of it
    await waitFor(() => rest.every(n => n.board.task('t2')?.state === 'merged'), { timeoutMs: 90_000, message: () => `t2 not merged: ${states(other)}; main ${other.board.snapshot().main.head ?? 'null'}` })
    const t2 = other.board.task('t2')!
    expect(t2.failures).toBe(0)
    expect(t2.infraFailures).toEqual({})
    const head = other.board.snapshot().main.head as string
    expect(head).not.toBe(LOST)
    const repo = join(root, `repo${mesh.nodes.indexOf(other)}`)
    await waitFor(async () => await gitText(['rev-parse', 'main'], { cwd: repo }) === head, { timeoutMs: 30_000, message: 'the node did not follow the new main' })
    expect((await git(['merge-base', '--is-ancestor', kept, head], { cwd: repo, allowFail: true })).code).toBe(0)
    expect(await gitText(['show', `${head}:t2.txt`], { cwd: repo })).toBe('t2.txt')
  })
})
