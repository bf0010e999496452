/**
 * A done task whose branch is not where the board says stays collectable
 * (the stall of a short chaos run: a task `done` for 600 s after a leader
 * kill). A node that restarts on a board from before a merge was undone (a
 * lost main put back, a partition's losing side) may have deleted the task
 * branch at start, as the task read merged there; the commit itself is still
 * reached by another branch of it (main, or the branch a main was kept aside
 * on). The leader fetches a done task's work by its commit, not by the task
 * branch's name; and when the board names the leader itself a holder of a
 * branch it does not have, it fetches it again (or gives the task back when
 * no live node has it), instead of waiting for a merge that never comes.
 * A branch handed to the leader whose commit went missing there (a gc beside
 * the hand-off deleted its pack: bench:e2e, 8 nodes) is fetched again when
 * the merge finds it gone, rather than raised as a conflict of no files.
 * In-process nodes, real git.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { mkdir, writeFile } from 'node:fs/promises'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { Worker } from '../src/node/worker.ts'
import { simAgent } from '../src/agent/sim.ts'
import { createLogger } from '../src/util/logger.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'
import { hasCommit } from '../src/git/merge.ts'
import { commitFiles, configIdentity, createBranch, initRepo } from './helpers/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { TaskId } from '../src/crdt/schema.ts'

let mesh: TestMesh | null = null
const workers: Worker[] = []

afterAll(async () => {
  for (const w of workers) await w.stop(0)
  await mesh?.stop()
})

describe('collecting a done task\'s branch', { timeout: 120_000 }, () => {
  it('by its commit when the holder\'s task branch is gone, and again when the leader is named a holder but lacks it', async () => {
    mesh = await createMesh(2)
    const root = mesh.dirs[0] as string
    const project = await initRepo(join(root, 'project'))
    await commitFiles(project, { 'README.md': 'project\n' }, 'project')
    const [first, second] = mesh.nodes as [MeshNode, MeshNode]
    const repoOf = (n: MeshNode): string => join(root, `repo-${n.name}`)
    // each node's log; the test reads the leader's, whichever node is elected
    const logs = new Map<MeshNode, Array<{ event: string } & Record<string, unknown>>>([[first, []], [second, []]])
    const workerOf = new Map<MeshNode, Worker>()
    for (const node of [first, second]) {
      const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { logs.get(node)!.push(JSON.parse(line)) } })
      await git(['clone', '-q', project, repoOf(node)], { cwd: root })
      // no slots: nothing runs here but what the test writes; the leader loop and git serving run.
      // The check of a branch the board says the leader holds comes after 1 s here, not 10 s.
      const w = new Worker({ node, agent: simAgent(), repo: repoOf(node), dataDir: join(root, `data-${node.name}`), worktreesDir: join(root, `wt-${node.name}`), branch: 'main', slots: 0, hasBootstrap: node === second, logger, heldCheckAfterMs: 1000 })
      workers.push(w)
      workerOf.set(node, w)
      await w.start()
      await w.ready
    }
    await waitAllAlive(mesh.nodes, 30_000)
    await waitFor(() => { const l = first.board.snapshot().main.leader; return l !== null && mesh!.nodes.every(n => n.board.snapshot().main.leader === l) }, { timeoutMs: 60_000, message: 'no leader elected' })
    const lead = first.board.snapshot().main.leader === first.peerId ? first : second
    const runner = lead === first ? second : first
    const events = logs.get(lead)!
    const leaderWorker = workerOf.get(lead)!

    // the two tasks' work, made in a scratch clone and put into the runner's repository: t1 only on a
    // kept-aside branch (its task branch deleted), t2 on its task branch
    const scratch = join(root, 'scratch')
    await git(['clone', '-q', project, scratch], { cwd: root })
    await configIdentity(scratch)
    const heads: Record<string, string> = {}
    for (const id of ['t1', 't2', 't3']) {
      await git(['checkout', '-q', 'main'], { cwd: scratch })
      await createBranch(scratch, `work-${id}`)
      heads[id] = await commitFiles(scratch, { [`${id}.txt`]: `${id}\n` }, `${id}\n\nMeshwork-Task: ${id}`)
    }
    await git(['fetch', '-q', scratch, `refs/heads/work-t1:refs/heads/meshwork/local/20261203T000000Z-${heads.t1!.slice(0, 8)}`, 'refs/heads/work-t2:refs/heads/meshwork/t2', 'refs/heads/work-t3:refs/heads/meshwork/t3'], { cwd: repoOf(runner) })
    expect((await git(['rev-parse', '--verify', '--quiet', 'refs/heads/meshwork/t1'], { cwd: repoOf(runner), allowFail: true })).code).not.toBe(0)

    // t3 was handed to the leader, whose repository lost the commit since: its branch names a commit that is not there
    await mkdir(join(repoOf(lead), '.git', 'refs', 'heads', 'meshwork'), { recursive: true })
    await writeFile(join(repoOf(lead), '.git', 'refs', 'heads', 'meshwork', 't3'), `${heads.t3!}\n`)
    expect(await hasCommit(repoOf(lead), heads.t3!)).toBe(false)
    leaderWorker.leadership!.branchArrived('t3', heads.t3!)

    // on the board: all done by the runner; t2 and t3 name the leader a holder too (as a hand-off does), but the leader has nothing of them
    runner.changeBoard('plan', addTasks([simpleTask('t1'), simpleTask('t2'), simpleTask('t3')]))
    const now = Date.now()
    runner.changeBoard('task:start', d => {
      for (const id of ['t1', 't2', 't3'] as TaskId[]) {
        lifecycle.claim(d, id, runner.peerId, 0, now)
        lifecycle.start(d, id, runner.peerId, 1, now)
      }
    })
    runner.changeBoard('task:success', d => {
      lifecycle.complete(d, 't1' as TaskId, { peer: runner.peerId, head: heads.t1!, summary: null, now })
      lifecycle.complete(d, 't2' as TaskId, { peer: runner.peerId, head: heads.t2!, summary: null, now, also: [lead.peerId] })
      lifecycle.complete(d, 't3' as TaskId, { peer: runner.peerId, head: heads.t3!, summary: null, now, also: [lead.peerId] })
    })
    expect(runner.board.task('t2')?.holders).toEqual([runner.peerId, lead.peerId])
    expect(await gitText(['rev-parse', '--verify', '--quiet', 'refs/heads/meshwork/t2'], { cwd: repoOf(lead) }).catch(() => null)).toBeNull()

    const states = (): string => [...lead.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state}`).join(', ')
    await waitFor(() => mesh!.nodes.every(n => ['t1', 't2', 't3'].every(id => n.board.task(id)?.state === 'merged')), { timeoutMs: 60_000, message: () => `not merged: ${states()}; ${events.filter(e => e.event.startsWith('branch:')).map(e => JSON.stringify(e)).join('\n')}` })
    // t1 came by its commit from the kept-aside branch; t2 was fetched again once the leader found it missing
    expect(events.some(e => e.event === 'branch:collected' && e.task === 't1' && e.from === runner.peerId)).toBe(true)
    expect(events.some(e => e.event === 'branch:collected' && e.task === 't2' && /commit was not here/.test(String(e.note)))).toBe(true)
    const main = lead.board.snapshot().main.head as string
    expect(await gitText(['show', `${main}:t1.txt`], { cwd: repoOf(lead) })).toBe('t1')
    expect(await gitText(['show', `${main}:t2.txt`], { cwd: repoOf(lead) })).toBe('t2')
    // t3: its merge found the commit gone, so it went back to the collector, which fetched it again
    expect(events.some(e => e.event === 'merge:branch-missing' && e.task === 't3' && e.head === heads.t3)).toBe(true)
    expect(events.some(e => e.event === 'branch:collected' && e.task === 't3' && e.from === runner.peerId)).toBe(true)
    expect(events.filter(e => e.event === 'merge:conflict')).toEqual([])
    expect(await gitText(['show', `${main}:t3.txt`], { cwd: repoOf(lead) })).toBe('t3')
  })
})
