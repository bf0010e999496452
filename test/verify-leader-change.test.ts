/** A change of leader or term stops the merge in progress and kills its hung --verify; stopping the leadership does too. */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { isAlive } from './helpers/proc.ts'
import { Leadership } from '../src/merge/leadership.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { Board, actorForPeer, str } from '../src/crdt/board.ts'
import { createLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import { git } from '../src/git/git.ts'

let mesh: TestMesh | null = null
let leadership: Leadership | null = null
afterAll(async () => {
  await leadership?.stop()
  await mesh?.stop()
})

describe('a hung --verify and the leadership', () => {
  it('a new term kills the check and puts the task back; stopping the leadership kills the next one', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    const root = mesh.dirs[0]!
    const repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
    const pids = join(root, 'verify.pids')
    const readPids = (): number[] => existsSync(pids) ? readFileSync(pids, 'utf8').split('\n').filter(l => l !== '').map(Number) : []
    const events: Array<{ event: string } & Record<string, unknown>> = []
    const logger = createLogger('test', { level: 'debug', format: 'json', write: line => { events.push(JSON.parse(line)) } })
    leadership = new Leadership({ node, repo, worktreesDir: join(root, 'worktrees'), branch: 'main', logger, electionTimeoutMs: 300, verify: `sleep 1000 & echo $! >> ${pids}; wait`, verifyTimeoutMs: null })
    leadership.start()
    await waitFor(() => leadership!.isLeader(), { timeoutMs: 20_000, message: 'the only node did not become leader' })
    await git(['checkout', '-q', '-B', 'meshwork/t', 'main'], { cwd: repo })
    const head = await commitFiles(repo, { 't.txt': 't\n' }, 't')
    await git(['checkout', '-q', 'main'], { cwd: repo })
    node.changeBoard('test:done', d => {
      addTasks([simpleTask('t')])(d)
      const rec = d.tasks.t as Record<string, unknown>
      rec.state = str('done')
      rec.head = str(head)
      rec.holders = [str(node.peerId)]
    })
    await waitFor(() => readPids().length >= 1, { timeoutMs: 30_000, message: 'the check never started' })
    const first = readPids()[0]!
    const term = node.board.snapshot().main.term
    // another node takes over in a later term
    // (its election, as that node writes it: a node elects only itself)
    const other = '12D3KooWSomeoneElseSomeoneElseSomeoneElseSomeone'
    const rival = Board.load(node.meshId, actorForPeer(other), node.board.save())
    node.board.applyChanges([rival.change('leader:elected', d => { d.main.leader = str(other); d.main.term = term + 1 }) as Uint8Array])
    await waitFor(() => !isAlive(first), { timeoutMs: 15_000, message: `the check ${first} outlived the change of term` })
    expect(events.find(e => e.event === 'merge:stopped')?.reason).toBe(`this node is no longer the merge leader of term ${term}`)
    expect(node.board.task('t')?.state).not.toBe('merged')
    // this node leads again (the other is not in the mesh) and checks again; stopping the leadership kills that check
    await waitFor(() => readPids().length >= 2, { timeoutMs: 30_000, message: () => `no second check: ${JSON.stringify(node.board.snapshot().main)} ${node.board.task('t')?.state}` })
    const second = readPids()[1]!
    await leadership.stop()
    await waitFor(() => !isAlive(second), { timeoutMs: 15_000, message: `the check ${second} outlived the leadership's stop` })
    expect(node.board.task('t')?.state).not.toBe('merged')
  })
})
