/**
 * Actor squatting and refused changes (issue 12), on real in-process nodes.
 *
 * Squatting: a hostile peer that holds the swarm key takes the board, makes a
 * change with `A.change` under the victim's actor (so at the victim's next
 * sequence number) and pushes it to a node through the sync protocol. Before
 * signed changes that node took it, then refused the victim's real change as
 * a duplicate sequence number and parked every later change of the victim for
 * good, across restarts. Now the forgery is refused (counted against its
 * sender), and the victim's later writes land on every node, after a restart
 * too.
 *
 * Refused change: a node that writes a change its role does not allow, then a
 * valid one. Before, peers rolled the first back and parked the second behind
 * it for good; now the writer drops the first itself before it exists
 * (`board:write-withheld`), and the second lands everywhere.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { join } from 'node:path'
import * as A from '@automerge/automerge'
import { multiaddr } from '@multiformats/multiaddr'
import { createMesh, waitConverged, LOOPBACK, type TestMesh } from './helpers/mesh.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { Board } from '../src/crdt/board.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import type { TaskId } from '../src/crdt/schema.ts'
import { runSyncSession } from '../src/crdt/sync.ts'
import { MeshNode } from '../src/node/mesh-node.ts'
import { topics } from '../src/node/constants.ts'
import { encodeBoardChange } from '../src/protocol/board-gossip.ts'
import { SYNC_PROTOCOL } from '../src/protocol/sync.ts'
import { waitFor } from '../src/util/wait.ts'

let mesh: TestMesh | null = null
const extra: MeshNode[] = []
const clients: Client[] = []
afterEach(async () => {
  await Promise.all(clients.splice(0).map(async c => { await c.close() }))
  await Promise.all(extra.splice(0).map(async n => { await n.stop() }))
  await mesh?.stop()
  mesh = null
})

type Node = NonNullable<TestMesh['nodes'][0]>

/** Waits until every node in `nodes` has task `id`. */
async function landsEverywhere (nodes: Node[], id: string, what: string): Promise<void> {
  const name = (peer: string): string => nodes.find(n => n.peerId === peer)?.name ?? peer.slice(-6)
  // who is linked to whom and what each thinks of the others: what a failure here needs to be understood
  const links = (): string => nodes.map(n => `${n.name} connected to [${n.connectedPeers().map(p => name(p.toString())).join(', ')}], sees ${n.membership.members().map(m => `${name(m.peerId)} ${m.state}`).join(', ')}`).join('; ')
  await waitFor(() => nodes.every(n => n.board.task(id) !== undefined), {
    timeoutMs: 20_000,
    message: () => `${what}: task ${id} is not on ${nodes.filter(n => n.board.task(id) === undefined).map(n => n.name).join(', ')} (${links()})`
  })
}

describe('actor squatting', () => {
  it('a change forged under a node\'s actor and pushed through sync is refused; the victim\'s later writes land everywhere, after a restart too', async () => {
    mesh = await createMesh(3)
    const [n0, victim, n2] = mesh.nodes as [Node, Node, Node]
    const first = victim.board.change('plan', addTasks([simpleTask('v1')]))
    expect(first).not.toBeNull()
    const victimActor = A.decodeChange(first as Uint8Array).actor
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('v1') !== undefined)

    const evil = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000 })
    clients.push(evil)
    // the issue's attack: the board as the victim has it, a change under the victim's actor (its next seq), sent over sync
    const forger = Board.load(mesh.key.meshId, victimActor, n0.board.save())
    const forgedBytes = forger.change('forged', addTasks([simpleTask('forged')]))
    const forged = A.decodeChange(forgedBytes as Uint8Array)
    expect(forged.actor).toBe(victimActor)
    expect(forged.seq).toBe(A.decodeChange(first as Uint8Array).seq + 1)
    await runSyncSession(forger, await evil.node.dialProtocol(n0.host.peerId, SYNC_PROTOCOL), true, AbortSignal.timeout(10_000)).catch(() => null)
    // the same forgery gossiped by the hostile peer is refused too (not its actor)
    await evil.node.host.services.pubsub.publish(topics(mesh.key.meshId).board, encodeBoardChange(forgedBytes as Uint8Array)).catch(() => {})

    // the victim writes on: both changes land on every node
    victim.changeBoard('plan', addTasks([simpleTask('v2')]))
    victim.changeBoard('plan', addTasks([simpleTask('v3')]))
    await landsEverywhere(mesh.nodes, 'v3', 'the victim\'s writes after the forgery')
    await landsEverywhere(mesh.nodes, 'v2', 'the victim\'s writes after the forgery')
    for (const n of mesh.nodes) expect(n.board.task('forged'), `${n.name} took the forged change`).toBeUndefined()
    // refused, and counted against the peer that sent it (not the victim)
    await waitFor(() => (n0.stats.refusedAuthors[evil.node.peerId] ?? 0) > 0, { timeoutMs: 10_000, message: () => `not counted against the sender: ${JSON.stringify(n0.stats.refusedAuthors)}` })
    expect(n0.stats.refusedAuthors[victim.peerId]).toBeUndefined()

    // a restart keeps it so: n0 reloads board.am/board.log, the victim still writes through
    const dataDir = join(mesh.dirs[0] as string, 'n0')
    // every node bootstrapped through n0: the victim and n2 link directly once they hear of each other. Until
    // then n0's restart (on a new port) cuts the victim off, which is not what this test is about. Seen in a
    // clean-clone run: "n1 connected to [], sees n0 left, n2 dead", and nobody linked it again within 20 s; the
    // dialer now tries harder in that case (test/dialer.test.ts), but a restart is no test of forgery
    await waitFor(() => victim.host.getConnections(n2.host.peerId).length > 0, { timeoutMs: 30_000, message: 'the victim and n2 never linked directly' })
    await n0.stop()
    const again = new MeshNode({ role: 'node', swarmKey: mesh.key, dataDir, listen: [LOOPBACK], bootstrap: [n2.addrs()[0] as string], name: 'n0', heartbeatMs: 500, suspectAfterMs: 1500, deadAfterMs: 4000 })
    await again.start()
    extra.push(again)
    expect(again.board.task('forged')).toBeUndefined()
    expect(again.board.task('v3')).toBeDefined()
    victim.changeBoard('plan', addTasks([simpleTask('v4')]))
    await landsEverywhere([again, victim, n2], 'v4', 'the victim\'s write after n0 restarted')
    // and the forger gets nowhere with the restarted node either
    const refusedBefore = again.stats.refusedAuthors[evil.node.peerId] ?? 0
    const forger2 = Board.load(mesh.key.meshId, victimActor, again.board.save())
    forger2.change('forged', addTasks([simpleTask('forged')]))
    const stream = await evil.node.host.dialProtocol(multiaddr(again.addrs()[0] as string), SYNC_PROTOCOL)
    await runSyncSession(forger2, stream, true, AbortSignal.timeout(10_000)).catch(() => null)
    await waitFor(() => (again.stats.refusedAuthors[evil.node.peerId] ?? 0) > refusedBefore, { timeoutMs: 10_000, message: () => `the restarted node did not refuse the forgery: ${JSON.stringify(again.stats.refusedAuthors)}` })
    victim.changeBoard('plan', addTasks([simpleTask('v5')]))
    await landsEverywhere([again, victim, n2], 'v5', 'the victim\'s write after a second forgery')
    expect(again.board.task('forged')).toBeUndefined()
  })
})

describe('a refused change', () => {
  it('does not park its writer: a node writes a change its role does not allow, then a valid one; the valid one lands everywhere', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [Node, Node]
    n0.changeBoard('plan', addTasks([simpleTask('t1')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('t1') !== undefined)
    // n1 claims t1 in n0's name: every node refuses that (forbiddenWrite)
    const made = n1.changeBoard('claim', d => { lifecycle.claim(d, 't1' as TaskId, n0.peerId, 0, Date.now()) })
    n1.changeBoard('plan', addTasks([simpleTask('after')]))
    await landsEverywhere(mesh.nodes, 'after', 'the writer\'s valid change after its refused one')
    for (const n of mesh.nodes) expect(n.board.task('t1')?.claims[n0.peerId], `${n.name} holds the forbidden claim`).toBeUndefined()
    // the writer dropped it itself (logged as board:write-withheld): its own board never held it
    expect(made, 'the refused change was made and sent').toBe(false)
    await waitConverged(mesh.nodes, 20_000)
  })
})
