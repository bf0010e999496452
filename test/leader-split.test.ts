/**
 * A merge leader that does not yet know it is cut off merges on its own side
 * (it counts the others toward its majority while it heard them within half of
 * its `--dead-after`: here a minute, by configuration, so the majority, whose
 * detector is the default one, elects another leader and merges meanwhile; on
 * a mesh of one configuration the lease runs out before the majority elects). After the heal the mesh keeps
 * one main, moved only forward, with every task's merge on it exactly once and
 * every node's repository on it. (l1, running on n0 at the cut, is run again
 * by the majority once it holds n0 dead: the double run across a partition
 * README's Limits names. Not asserted here.)
 */
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { createMesh, mainTrailers, waitAllAlive, waitOneCompleteMain, type TestMesh } from './helpers/mesh.ts'
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

const step = (what: string): void => { process.stderr.write(`[leader-split] ${new Date().toISOString()} ${what}\n`) }

describe('a leader that merges on its own side of a partition before it knows', { timeout: 300_000 }, () => {
  it('after the heal one main is kept, moved only forward, with every task merged on it exactly once', async () => {
    // n0 leads and holds its peers alive for a minute of silence (its majority lease: half of two minutes): cut off, it still counts a majority
    mesh = await createMesh(0)
    await mesh.add({ suspectAfterMs: 60_000, deadAfterMs: 120_000 })
    const root = mesh.dirs[0] as string
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    const repoOf = (n: MeshNode): string => join(root, `repo${mesh!.nodes.indexOf(n)}`)
    const startWorker = async (node: MeshNode, i: number): Promise<void> => {
      await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
      const w = new Worker({ node, agent: simAgent(), repo: join(root, `repo${i}`), dataDir: join(root, `w${i}`), branch: 'main', slots: 2, hasBootstrap: i > 0, logger: silentLogger })
      workers.push(w)
      await w.start()
      await w.ready
    }
    const lone = mesh.nodes[0] as MeshNode
    await startWorker(lone, 0)
    await waitFor(() => lone.board.snapshot().main.leader === lone.peerId, { timeoutMs: 30_000, message: 'n0 did not lead its mesh of one' })
    // l1 runs on n0 and is held there (a sim step waiting for a file) until the partition is in place
    const release = join(root, 'release-l1')
    lone.changeBoard('plan', addTasks([simpleTask('l1', { sim: { durationMs: 10, write: { 'l1.txt': 'l1\n' }, append: {}, fail: 0, until: release } })]))
    await waitFor(() => lone.board.task('l1')?.state === 'running', { timeoutMs: 30_000, message: () => `l1 did not start on n0: ${lone.board.task('l1')?.state}` })
    for (let i = 1; i < 4; i++) await startWorker(await mesh.add(), i)
    await waitAllAlive(mesh.nodes, 30_000)
    const rest = mesh.nodes.slice(1)
    await waitFor(() => rest.every(n => n.board.snapshot().main.leader === lone.peerId), { timeoutMs: 30_000, message: 'the joiners do not see n0 lead' })
    const mainBefore = lone.board.snapshot().main.head as string
    step('mesh of 4 up, n0 leads, l1 held on n0')

    await mesh.partition([lone], rest)
    await waitFor(() => { const l = rest[0]?.board.snapshot().main.leader; return l != null && l !== lone.peerId ? l : null }, { timeoutMs: 40_000, message: 'the majority side elected no leader' })
    step('partitioned; the majority elected its leader')
    // n0 still counts the others reachable: it merges l1 on its side
    await writeFile(release, 'go\n')
    await waitFor(() => lone.board.task('l1')?.state === 'merged', { timeoutMs: 60_000, message: () => `n0 did not merge l1 on its side: ${lone.board.task('l1')?.state} (quorum ${JSON.stringify(lone.board.snapshot().main.quorum)})` })
    const loneMain = lone.board.snapshot().main.head as string
    expect(loneMain).not.toBe(mainBefore)
    // the majority merges r1
    ;(rest[0] as MeshNode).changeBoard('plan', addTasks([simpleTask('r1', { sim: { durationMs: 10, write: { 'r1.txt': 'r1\n' }, append: {}, fail: 0 } })]))
    await waitFor(() => rest[0]?.board.task('r1')?.state === 'merged', { timeoutMs: 60_000, message: () => `the majority did not merge r1: ${rest[0]?.board.task('r1')?.state}` })
    const majorityMain = (rest[0] as MeshNode).board.snapshot().main.head as string
    step('both sides merged')

    mesh.heal()
    const all = ['l1', 'r1']
    const head = await waitOneCompleteMain(mesh.nodes, repoOf, all, 120_000)
    step('healed: one main')
    for (const n of mesh.nodes) {
      expect(await mainTrailers(repoOf(n)), `${n.name}'s main`).toEqual([...all].sort())
      for (const id of all) expect(await gitText(['show', `${head}:${id}.txt`], { cwd: repoOf(n) })).toBe(id)
    }
    // main moved only forward: one side's main of the partition is an ancestor of the final one
    const firstParent = new Set((await gitText(['rev-list', '--first-parent', head], { cwd: repoOf(rest[0] as MeshNode) })).split('\n'))
    expect(firstParent.has(majorityMain) || firstParent.has(loneMain)).toBe(true)
  })
})
