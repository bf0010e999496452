/**
 * A node's main ahead of the mesh main (a person's commit on it, or a merge
 * the leader made and never published) never reaches the mesh and never stops
 * it: the commit is kept on `meshwork/local/...`, main goes back to the mesh
 * main, the leader keeps merging, and the next task of that node starts from
 * the mesh main. In-process nodes, real git.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { Worker } from '../src/node/worker.ts'
import { simAgent } from '../src/agent/sim.ts'
import { silentLogger } from '../src/util/logger.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh | null = null
const workers: Worker[] = []

afterAll(async () => {
  await Promise.all(workers.map(async w => { await w.stop(0) }))
  await mesh?.stop()
})

const sim = (file: string): ReturnType<typeof simpleTask>['sim'] => ({ durationMs: 100, write: { [file]: `${file}\n` }, append: {}, fail: 0 })

describe('a local main ahead of the mesh main', { timeout: 180_000 }, () => {
  it('is kept on a backup branch on the leader and on another node; the mesh goes on merging and never takes the stray commits', async () => {
    mesh = await createMesh(2)
    const root = mesh.dirs[0] as string
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    for (const [i] of mesh.nodes.entries()) await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
    for (const [i, node] of mesh.nodes.entries()) {
      const w = new Worker({ node, agent: simAgent(), repo: join(root, `repo${i}`), dataDir: join(root, `w${i}`), branch: 'main', slots: 1, hasBootstrap: i > 0, logger: silentLogger })
      workers.push(w)
      await w.start()
      await w.ready
    }
    await waitAllAlive(mesh.nodes, 30_000)
    const first = mesh.nodes[0] as MeshNode
    const leaderId = await waitFor(() => first.board.snapshot().main.leader, { timeoutMs: 30_000, message: 'no leader' })
    const leader = mesh.nodes.find(n => n.peerId === leaderId) as MeshNode
    const other = mesh.nodes.find(n => n !== leader) as MeshNode
    const repoOf = (n: MeshNode): string => join(root, `repo${mesh!.nodes.indexOf(n)}`)
    const merged = (ids: string[]): boolean => ids.every(id => mesh!.nodes.every(n => n.board.task(id)?.state === 'merged'))
    const states = (): string => [...first.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state}`).join(',')

    first.changeBoard('plan', addTasks([simpleTask('a1', { sim: sim('a1.txt') })]))
    await waitFor(() => merged(['a1']), { timeoutMs: 60_000, message: () => `a1 not merged: ${states()}` })
    const meshMain = first.board.snapshot().main.head as string
    await waitFor(async () => await gitText(['rev-parse', 'main'], { cwd: repoOf(leader) }) === meshMain && await gitText(['rev-parse', 'main'], { cwd: repoOf(other) }) === meshMain, { timeoutMs: 30_000, message: 'repos not on the mesh main' })

    // a person commits on both nodes' checked-out main
    for (const n of [leader, other]) await commitFiles(repoOf(n), { [`stray-${n.name}.txt`]: 'not for the mesh\n' }, `stray commit on ${n.name}`)
    const strays = new Map<MeshNode, string>()
    for (const n of [leader, other]) strays.set(n, await gitText(['rev-parse', 'main'], { cwd: repoOf(n) }))

    first.changeBoard('plan', addTasks(['b1', 'b2', 'b3'].map(id => simpleTask(id, { sim: sim(`${id}.txt`) }))))
    await waitFor(() => merged(['b1', 'b2', 'b3']), { timeoutMs: 90_000, message: () => `b tasks not merged (the leader stalled?): ${states()}` })
    const head = first.board.snapshot().main.head as string
    for (const n of [leader, other]) {
      const repo = repoOf(n)
      await waitFor(async () => await gitText(['rev-parse', 'main'], { cwd: repo }) === head, { timeoutMs: 30_000, message: `${n.name}'s main is not the mesh main` })
      // the stray commit is on a backup branch, not on main
      const backups = (await gitText(['for-each-ref', '--format=%(refname:short) %(objectname)', 'refs/heads/meshwork/local/'], { cwd: repo })).split('\n').filter(l => l !== '')
      expect(backups.some(l => l.endsWith(strays.get(n) as string)), `${n.name}: ${backups.join(' | ')}`).toBe(true)
      expect((await git(['merge-base', '--is-ancestor', strays.get(n) as string, head], { cwd: repo, allowFail: true })).code, `${n.name}'s stray commit reached main`).not.toBe(0)
      // the checkout followed main: no stray file, every task's file
      expect((await gitText(['status', '--porcelain'], { cwd: repo })), `${n.name}'s checkout`).toBe('')
      for (const id of ['a1', 'b1', 'b2', 'b3']) expect(await gitText(['show', `${head}:${id}.txt`], { cwd: repo })).toBe(`${id}.txt`)
      expect((await git(['cat-file', '-e', `${head}:stray-${n.name}.txt`], { cwd: repo, allowFail: true })).code).not.toBe(0)
    }
  })
})
