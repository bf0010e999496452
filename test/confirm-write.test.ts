/**
 * A client's write is recorded locally, then confirmed by the node it reads
 * through (`confirmWrite`: one sync session). When the node cannot confirm
 * it, the command fails with a message naming the change, the node and what
 * to do, and at once when the node is gone, not after the whole wait.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { cancelTask, submitTasks } from '../src/api/tasks.ts'
import { simpleTask } from '../src/crdt/ops.ts'
import { SYNC_SESSION_MS } from '../src/node/constants.ts'

let mesh: TestMesh | null = null
const clients: Client[] = []

afterEach(async () => {
  await Promise.all(clients.splice(0).map(async c => { await c.close() }))
  await mesh?.stop()
  mesh = null
})

describe('a write the node does not confirm', () => {
  it('fails with the change, the node and what to do, as soon as the node is gone; the change stays recorded on the client', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    const client = await connectClient({ key: mesh.key, bootstrap: [node.addrs()[0] as string], timeoutMs: 20_000 })
    clients.push(client)
    // confirmed while the node is there
    await submitTasks(client, [simpleTask('before')])
    expect(node.board.task('before')).toBeDefined()
    await mesh.stop()
    mesh = null
    const started = Date.now()
    const err = await cancelTask(client, 'before').then(() => null, (e: unknown) => e as Error)
    expect(err, 'cancel confirmed by a node that is gone').toBeInstanceOf(Error)
    // (failed at once: the message says the sync failed, not that the node was slow)
    expect(err?.message).toMatch(new RegExp(`^the change is recorded locally but not confirmed by ${client.peer}: the sync with it failed \\(it closed the connection or stopped\\); check the node and run the command again$`))
    // a node that is gone refuses the dial: no sync session's wait
    expect(Date.now() - started).toBeLessThan(SYNC_SESSION_MS)
    expect(client.node.board.task('before')?.state).toBe('cancelled')
  })
})
