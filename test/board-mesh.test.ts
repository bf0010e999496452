import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitConverged, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'

let mesh: TestMesh | undefined
afterEach(async () => { await mesh?.stop(); mesh = undefined })

describe('board over a real mesh', () => {
  it('5 nodes see each other alive and converge on concurrent writes from every node', async () => {
    mesh = await createMesh(5)
    await waitAllAlive(mesh.nodes)
    await Promise.all(mesh.nodes.map(async (n, i) => {
      for (let j = 0; j < 5; j++) n.changeBoard('add', addTasks([simpleTask(`t-${i}-${j}`)]))
    }))
    await waitConverged(mesh.nodes, 20_000, n => n.board.snapshot().tasks.size === 25)
    const ids = mesh.nodes.map(n => [...n.board.snapshot().tasks.keys()].sort().join())
    expect(new Set(ids).size).toBe(1)
    expect(mesh.nodes[0]!.board.snapshot().tasks.size).toBe(25)
    // every node registered itself on the board
    expect(mesh.nodes[3]!.board.snapshot().nodes.size).toBe(5)
  })
})
