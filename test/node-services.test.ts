import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitAllAlive, LOOPBACK, type TestMesh } from './helpers/mesh.ts'
import { MeshNode } from '../src/node/mesh-node.ts'
import type { ProgressEvent } from '../src/protocol/presence.ts'
import { waitFor } from '../src/util/wait.ts'

let mesh: TestMesh | undefined
let client: MeshNode | undefined
afterEach(async () => {
  await client?.stop()
  client = undefined
  await mesh?.stop()
  mesh = undefined
})

describe('a node wired from services', () => {
  it('start and stop are idempotent; slots and heartbeat extras change through methods and reach peers', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [MeshNode, MeshNode]
    await waitAllAlive(mesh.nodes)
    const addrs = n0.addrs()
    await n0.start()
    expect(n0.addrs()).toEqual(addrs)

    expect(() => { n0.setSlots(-1) }).toThrow(RangeError)
    expect(() => { n0.setSlots(1.5) }).toThrow(/whole number/)
    n0.setSlots(7)
    expect(n0.slots).toBe(7)
    n0.setPresenceExtras(() => ({ running: ['t-held'], backoffUntil: null }))
    await waitFor(() => {
      const m = n1.membership.get(n0.peerId)
      return m?.slots === 7 && m.running.includes('t-held')
    }, { timeoutMs: 10_000, message: () => `node 1 never saw node 0's new slots and running task: ${JSON.stringify(n1.membership.get(n0.peerId))}` })
    // the node's own view (what `status` shows) carries them too
    const view = await n1.fetchMembers(n0.peerId)
    expect(view.self).toBe(n0.peerId)
    expect(view.members[0]).toMatchObject({ peerId: n0.peerId, slots: 7, running: ['t-held'], state: 'alive' })

    await n1.stop()
    await n1.stop()
    await waitFor(() => n0.membership.get(n1.peerId)?.state === 'left', { timeoutMs: 10_000, message: 'node 1 did not announce it left' })
  })

  it('a light client hears agent progress once it calls followProgress()', async () => {
    mesh = await createMesh(1)
    const [n0] = mesh.nodes as [MeshNode]
    client = new MeshNode({ role: 'client', swarmKey: mesh.key, listen: [LOOPBACK], bootstrap: [n0.addrs()[0] as string] })
    await client.start()
    await waitFor(() => client!.connectedPeers().length > 0, { timeoutMs: 10_000, message: 'the client never connected' })
    const heard: ProgressEvent[] = []
    client.addEventListener('progress', evt => { heard.push(evt.detail) })
    client.followProgress()
    client.followProgress()
    let i = 0
    // progress is throttled per task and gossip needs the subscription to propagate: publish until heard
    await waitFor(() => {
      n0.publishProgress(`task-${i++}`, 'text', 'working')
      return heard.some(p => p.peerId === n0.peerId && p.text === 'working')
    }, { timeoutMs: 15_000, intervalMs: 300, message: 'the client never heard the node\'s progress' })
    const view = n0.membersView()
    expect(Object.keys(view.progress ?? {}).length).toBeGreaterThan(0)
  })
})
