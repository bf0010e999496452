/**
 * A board change larger than libp2p's default stream buffer (4 MiB) reaches
 * every node: a plan of ten thousand tasks is one change of about 5.5 MB, too
 * large for gossip (peers get its heads and sync), and every sync frame up to
 * MAX_STREAM_FRAME_BYTES must be read whole. Before the fix every sync of such
 * a change failed with "Read buffer overflow" and the change never left its
 * writer. Large prompts of random text stand in for many tasks here (the same
 * bytes, far fewer Automerge operations to build).
 */
import { describe, it, expect, afterEach } from 'vitest'
import { randomBytes } from 'node:crypto'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { addTasks, asPlan, simpleTask } from '../src/crdt/ops.ts'
import { MAX_GOSSIP_BYTES } from '../src/node/constants.ts'
import { waitFor } from '../src/util/wait.ts'

let mesh: TestMesh | null = null
afterEach(async () => {
  await mesh?.stop()
  mesh = null
})

describe('a board change of several megabytes', () => {
  it('reaches the other node by sync (too large for gossip, larger than the 4 MiB stream buffer)', async () => {
    mesh = await createMesh(2)
    const [a, b] = mesh.nodes as [NonNullable<TestMesh['nodes'][0]>, NonNullable<TestMesh['nodes'][0]>]
    // random text: Automerge compresses what it sends, and a repeated letter would shrink to nothing
    const prompt = (i: number): string => `${i} ${randomBytes(768 * 1024).toString('base64')}`
    const tasks = asPlan(Array.from({ length: 6 }, (_, i) => simpleTask(`big-${i}`, { prompt: prompt(i) })), null)
    a.changeBoard('test:large plan', addTasks(tasks))
    expect(tasks.reduce((n, t) => n + t.prompt.length, 0)).toBeGreaterThan(Math.max(4 * 1024 * 1024, MAX_GOSSIP_BYTES))
    await waitFor(() => b.board.snapshot().tasks.size === tasks.length, { timeoutMs: 90_000, message: () => `the second node has ${b.board.snapshot().tasks.size} of ${tasks.length} tasks (sync failures: ${b.stats.syncFailures + a.stats.syncFailures})` })
    expect(b.board.snapshot().tasks.get(tasks[5]!.id)?.prompt).toBe(tasks[5]!.prompt)
  })
})
