import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitConverged, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'

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

describe('late joiners and partitions', () => {
  it('a late joiner catches up on a board of 1,000 tasks', async () => {
    mesh = await createMesh(2)
    // ~2 KB prompts: the joiner's sync moves megabytes through the swarm-key cipher
    const tasks = Array.from({ length: 1000 }, (_, i) => simpleTask(`task-${i}`, { prompt: `prompt ${i} `.repeat(200) }))
    // ten coarse changes of 100 tasks, as ten plan submissions would make
    for (let i = 0; i < 10; i++) mesh.nodes[0]!.changeBoard('plan', addTasks(tasks.slice(i * 100, (i + 1) * 100)))
    await waitConverged(mesh.nodes, 20_000, n => n.board.snapshot().tasks.size === 1000)
    const late = await mesh.add()
    await waitConverged(mesh.nodes, 30_000, n => n.board.snapshot().tasks.size === 1000)
    expect(late.board.task('task-999')?.prompt).toBe('prompt 999 '.repeat(200))
    // the mesh keeps working after the large transfer
    mesh.nodes[1]!.changeBoard('after', addTasks([simpleTask('after-sync')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('after-sync') !== undefined)
    expect(late.stats.syncSessions).toBeGreaterThan(0)
  })

  it('a partitioned mesh reconverges after the heal, keeping the writes of both sides', async () => {
    mesh = await createMesh(4)
    await waitAllAlive(mesh.nodes)
    const [a, b, c, d] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0], typeof mesh.nodes[0], typeof mesh.nodes[0]]
    await mesh.partition([a, b], [c, d])
    await waitFor(() => a.membership.get(c.peerId)?.state === 'dead' || a.membership.get(c.peerId)?.state === 'suspect', { timeoutMs: 15_000, message: 'a never noticed the partition' })
    a.changeBoard('left side', addTasks([simpleTask('left-1'), simpleTask('left-2')]))
    c.changeBoard('right side', addTasks([simpleTask('right-1')]))
    await waitConverged([a, b], 10_000, n => n.board.task('left-2') !== undefined)
    await waitConverged([c, d], 10_000, n => n.board.task('right-1') !== undefined)
    expect(a.board.task('right-1')).toBeUndefined()
    expect(c.board.task('left-1')).toBeUndefined()
    mesh.heal()
    await waitConverged(mesh.nodes, 30_000, n => n.board.snapshot().tasks.size === 3)
    await waitAllAlive(mesh.nodes, 30_000)
  })
})
