/**
 * A leader cut off from the majority in the middle of a merge (its `--verify`
 * still running) does not land it once the check ends: the majority it had
 * when the round began is asked again right before main moves. Found by `npm
 * run chaos`: the minority's leader moved main a moment after it held every
 * node of the other side dead. In-process nodes (a test gater cuts the links),
 * real git, a `--verify` held by a file.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { Worker } from '../src/node/worker.ts'
import { simAgent } from '../src/agent/sim.ts'
import { createLogger } from '../src/util/logger.ts'
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

describe('a leader cut off during a merge', { timeout: 180_000 }, () => {
  it('does not move main when its --verify ends after it lost the majority; the task merges once after the heal', async () => {
    mesh = await createMesh(3, { suspectAfterMs: 1000, deadAfterMs: 2500 })
    const root = mesh.dirs[0] as string
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    const gate = join(root, 'verify-gate')
    // the check waits for the gate (the test holds the merge there), then passes
    const verify = `while test ! -e '${gate}'; do sleep 0.05; done`
    const events = new Map<MeshNode, Array<{ event: string } & Record<string, unknown>>>()
    for (const [i, node] of mesh.nodes.entries()) {
      await git(['clone', '-q', project, join(root, `repo${i}`)], { cwd: root })
      const log: Array<{ event: string } & Record<string, unknown>> = []
      events.set(node, log)
      const logger = createLogger('test', { level: 'info', format: 'json', write: line => { log.push(JSON.parse(line)) } })
      const w = new Worker({ node, agent: simAgent(), repo: join(root, `repo${i}`), dataDir: join(root, `w${i}`), branch: 'main', slots: 1, hasBootstrap: i > 0, logger, verify })
      workers.push(w)
      await w.start()
      await w.ready
    }
    await waitAllAlive(mesh.nodes, 30_000)
    const first = mesh.nodes[0] as MeshNode
    const leaderId = await waitFor(() => { const l = first.board.snapshot().main.leader; return l !== null && mesh!.nodes.every(n => n.board.snapshot().main.leader === l) ? l : null }, { timeoutMs: 30_000, message: 'no leader all agree on' })
    const leader = mesh.nodes.find(n => n.peerId === leaderId) as MeshNode
    const rest = mesh.nodes.filter(n => n !== leader)
    const repoOf = (n: MeshNode): string => join(root, `repo${mesh!.nodes.indexOf(n)}`)
    const mainBefore = leader.board.snapshot().main.head
    const repoMainBefore = await gitText(['rev-parse', 'main'], { cwd: repoOf(leader) })

    leader.changeBoard('plan', addTasks([simpleTask('t1', { sim: { durationMs: 10, write: { 't1.txt': 't1\n' }, append: {}, fail: 0 } })]))
    // the leader's merge is under way, its check held at the gate
    await waitFor(() => leader.board.task('t1')?.state === 'merging', { timeoutMs: 60_000, message: () => `the leader did not start merging t1: ${leader.board.task('t1')?.state}` })
    await mesh.partition([leader], rest)
    await waitFor(() => rest.every(p => leader.membership.get(p.peerId)?.state === 'dead'), { timeoutMs: 30_000, message: 'the cut-off leader did not hold the others dead' })
    // the check ends now: nothing may land on the minority's side
    await writeFile(gate, 'open\n')
    await waitFor(() => (events.get(leader) ?? []).some(e => e.event === 'merge:abandoned' || e.event === 'merge:done'), { timeoutMs: 30_000, message: () => `the leader's merge did not end: t1 ${leader.board.task('t1')?.state}` })
    expect((events.get(leader) ?? []).filter(e => e.event === 'merge:done'), 'the minority\'s leader moved main').toEqual([])
    expect(String((events.get(leader) ?? []).find(e => e.event === 'merge:abandoned')?.reason)).toMatch(/majority/)
    expect(leader.board.snapshot().main.head).toBe(mainBefore)
    expect(await gitText(['rev-parse', 'main'], { cwd: repoOf(leader) })).toBe(repoMainBefore)

    // after the heal t1 merges once (by whichever leader the mesh has then), and every main holds it
    mesh.heal()
    await waitFor(() => mesh!.nodes.every(n => n.board.task('t1')?.state === 'merged'), { timeoutMs: 90_000, message: () => `t1 not merged after the heal: ${mesh!.nodes.map(n => n.board.task('t1')?.state).join(', ')}` })
    const head = await waitFor(async () => {
      const h = first.board.snapshot().main.head
      if (h === null) return null
      for (const n of mesh!.nodes) if (await gitText(['rev-parse', 'main'], { cwd: repoOf(n) }) !== h) return null
      return h
    }, { timeoutMs: 60_000, message: 'not every repo reached the board\'s main' })
    const history = await gitText(['log', '--first-parent', '--format=%B', head], { cwd: repoOf(leader) })
    expect(history.match(/^Meshwork-Task: t1$/gm)?.length).toBe(1)
  })
})
