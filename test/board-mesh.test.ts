import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitConverged, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { str } from '../src/crdt/board.ts'

let mesh: TestMesh | undefined
afterEach(async () => { await mesh?.stop(); mesh = undefined })

function addTask (id: string) {
  return (d: any) => {
    d.tasks[id] = {
      id: str(id), title: str(id), prompt: str('p'), deps: [], files: [], priority: 0, timeoutMs: null, maxAttempts: 3, sim: null,
      state: str('ready'), epoch: 0, attempts: 0, node: null, branch: str(`meshwork/${id}`), head: null, mergeCommit: null,
      costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, createdAt: Date.now(), startedAt: null, doneAt: null,
      mergedAt: null, error: null, claims: {}
    }
  }
}

describe('board over a real mesh', () => {
  it('5 nodes see each other alive and converge on concurrent writes from every node', async () => {
    mesh = await createMesh(5)
    await waitAllAlive(mesh.nodes)
    await Promise.all(mesh.nodes.map(async (n, i) => {
      for (let j = 0; j < 5; j++) n.changeBoard('add', addTask(`t-${i}-${j}`))
    }))
    await waitConverged(mesh.nodes, 20_000, n => n.board.snapshot().tasks.size === 25)
    const ids = mesh.nodes.map(n => [...n.board.snapshot().tasks.keys()].sort().join())
    expect(new Set(ids).size).toBe(1)
    expect(mesh.nodes[0]!.board.snapshot().tasks.size).toBe(25)
    // every node registered itself on the board
    expect(mesh.nodes[3]!.board.snapshot().nodes.size).toBe(5)
  })
})
