/**
 * A decision that needs a task's branch (theirs, ours, agent) when no node
 * that held it is left (src/merge/decisions.ts, `branchLost` in
 * src/merge/collect.ts): it fails back to the inbox saying so, rather than
 * wait unseen for a holder that will never come. One real node leading, on a
 * real repository; the holder is a peer that is registered on the board and
 * never heard from (the node seeds it suspect, then holds it dead; past
 * `forgetAfterMs` it no longer counts toward the majority a leader needs).
 */
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { Leadership } from '../src/merge/leadership.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { Board, actorForPeer, str } from '../src/crdt/board.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { asPeerId, type Conflict, type ConflictId, type TaskId } from '../src/crdt/schema.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

const GONE = asPeerId('12D3KooWNV38ASnTHYdoiGx2myLEypuBC9TmpdGkVgj59btUAAmd')

let mesh: TestMesh | null = null
let leadership: Leadership | null = null

afterAll(async () => {
  await leadership?.stop()
  await mesh?.stop()
})

describe('a decision on a conflict whose branch no live node holds', () => {
  it('fails back to the inbox naming why, once its holder is dead', async () => {
    mesh = await createMesh(1, { suspectAfterMs: 1000, deadAfterMs: 3000 })
    const node = mesh.nodes[0] as MeshNode
    const root = mesh.dirs[0] as string
    const repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
    leadership = new Leadership({ node, repo, worktreesDir: join(root, 'data-worktrees'), branch: 'main', logger: silentLogger, electionTimeoutMs: 300, forgetAfterMs: 2000 })
    leadership.start()
    await waitFor(() => leadership!.isLeader(), { timeoutMs: 20_000, message: 'the only node did not become leader' })

    // task "lost" ran on GONE, whose branch only GONE held; its merge conflicted; a human says "theirs"
    const id = 'lost' as TaskId
    const conflictId = 'lost-1' as ConflictId
    node.changeBoard('plan', addTasks([simpleTask(id)]))
    // GONE's own changes (written as an unsigned older node would): it registered, ran the task and held its branch alone
    const gone = Board.load(node.board.meshId, actorForPeer(GONE), node.board.save())
    const run = gone.change('run', d => {
      d.nodes[GONE] = { name: str('gone'), slots: 1, startedAt: 1, leftAt: null }
      lifecycle.claim(d, id, GONE, 0, Date.now() - 1000)
      lifecycle.start(d, id, GONE, 1, Date.now())
      lifecycle.complete(d, id, { peer: GONE, head: 'f'.repeat(40), summary: null, now: Date.now() })
    })
    node.board.applyChanges([run as Uint8Array])
    // its merge conflicted (the leader's record), and a human says "theirs"
    expect(node.changeBoard('test:conflict', d => {
      lifecycle.startMerge(d, id)
      lifecycle.openConflict(d, id, { id: conflictId, files: ['a.txt'], hunks: [], oursFrom: {} })
    })).toBe(true)
    expect(node.changeBoard('test:decision', d => { lifecycle.decide(d, conflictId, { action: 'theirs', by: node.peerId, at: Date.now(), note: '' }) })).toBe(true)
    const conflict = (): Conflict | undefined => node.board.snapshot().conflicts.get(conflictId)

    // GONE is on the board, so this node counts it suspect until it holds it dead
    await waitFor(() => node.membership.get(GONE) !== undefined, { timeoutMs: 10_000, message: 'GONE was never seeded from the board' })
    await waitFor(() => node.membership.get(GONE)?.state === 'dead', { timeoutMs: 30_000, message: () => `GONE never turned dead: ${node.membership.get(GONE)?.state ?? 'unknown'}` })
    await waitFor(() => conflict()?.decision === null, { timeoutMs: 30_000, message: () => `the decision on a branch nobody holds was never failed back: ${JSON.stringify(conflict())}` })
    expect(conflict()?.state).toBe('open')
    expect(conflict()?.error).toMatch(/"theirs" failed: the task's branch at ffffffffffff is on no live node: its holders \(12D3KooW\S+ dead\) are gone; choose rerun or abandon/)
    expect(node.board.task(id)?.state).toBe('conflict')
  })
})
