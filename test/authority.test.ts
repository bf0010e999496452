/**
 * Who may write what, on every path (issue 12, first rules): a hostile peer
 * that holds the swarm key cannot move main from a client, nor claim a task
 * (or register) in another node's name, whether it gossips the change or
 * pushes it through a sync session. After each attempt: main is unchanged on
 * every node, the forgery is refused and counted by author, and the victim's
 * own writes still land.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitConverged, type TestMesh } from './helpers/mesh.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { Board, actorForPeer, sessionActorForPeer, str, type BoardDoc } from '../src/crdt/board.ts'
import { buildStatus } from '../src/api/status.ts'
import { renderStatus } from '../src/cli/render.ts'
import { forbiddenWrite } from '../src/crdt/authors.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { runSyncSession } from '../src/crdt/sync.ts'
import { SYNC_PROTOCOL } from '../src/protocol/sync.ts'
import { waitFor } from '../src/util/wait.ts'
import * as A from '@automerge/automerge'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { signChange, signerFromPrivateKey } from '../src/crdt/signing.ts'
import { topics } from '../src/node/constants.ts'
import { encodeBoardChange } from '../src/protocol/board-gossip.ts'

let mesh: TestMesh | null = null
const clients: Client[] = []
afterEach(async () => {
  await Promise.all(clients.splice(0).map(async c => { await c.close() }))
  await mesh?.stop()
  mesh = null
})

const FAKE_HEAD = 'f'.repeat(40)

describe('forbiddenWrite (unit)', () => {
  it('a client never writes main; an entry keyed by a peer id is written only by that peer', () => {
    const victim = '12D3KooWNV38ASnTHYdoiGx2myLEypuBC9TmpdGkVgj59btUAAmd'
    const evil = '12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE'
    const base = Board.create('m', actorForPeer(victim))
    base.change('t', addTasks([simpleTask('t1')]))
    const mainId = A.getObjectId(A.load<BoardDoc>(base.save()), 'main')
    const as = (actor: string, fn: (d: BoardDoc) => void): A.DecodedChange => {
      const b = Board.load('m', actor, base.save())
      return A.decodeChange(b.change('x', fn)!)
    }
    expect(forbiddenWrite(as(sessionActorForPeer(evil), d => { d.main.head = str(FAKE_HEAD) }), mainId)).toMatch(/a client wrote main\.head/)
    expect(forbiddenWrite(as(actorForPeer(evil), d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(victim), 0, 1) }), mainId)).toMatch(/another peer/)
    expect(forbiddenWrite(as(actorForPeer(evil), d => { d.nodes[victim] = { name: str('me'), slots: 9, startedAt: 1, leftAt: null } }), mainId)).toMatch(/another peer/)
    // what the roles do write
    expect(forbiddenWrite(as(actorForPeer(victim), d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(victim), 0, 1) }), mainId)).toBeNull()
    expect(forbiddenWrite(as(actorForPeer(victim), d => { d.main.head = str(FAKE_HEAD) }), mainId)).toBeNull()
    // a client sets the mesh's budget (main.budget), and nothing else of main
    expect(forbiddenWrite(as(sessionActorForPeer(evil), d => { d.main.budget = { usd: 5, at: 1, by: str('me@host') } }), mainId)).toBeNull()
    expect(forbiddenWrite(as(sessionActorForPeer(evil), d => { d.main.leader = str(evil) }), mainId)).toMatch(/a client wrote main\.leader/)
    expect(forbiddenWrite(as(sessionActorForPeer(evil), d => { lifecycle.cancel(d, 't1' as TaskId) }), mainId)).toBeNull()
  })
})

describe('a hostile peer with the swarm key', () => {
  it('cannot move main from a client, by gossip or by sync', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [NonNullable<TestMesh['nodes'][0]>, NonNullable<TestMesh['nodes'][0]>]
    n0.changeBoard('main', d => { d.main.head = str('a'.repeat(40)) })
    await waitConverged(mesh.nodes, 20_000, n => n.board.snapshot().main.head === 'a'.repeat(40))
    const evilKey = await generateKeyPair('Ed25519')
    const evil = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000, privateKey: evilKey })
    clients.push(evil)

    // gossip: its own signed change (made past the writer's own check, which a hostile peer skips)
    const raw = Board.load(mesh.key.meshId, sessionActorForPeer(evil.node.peerId), n0.board.save())
    const unsigned = raw.change('forge', d => { d.main.head = str(FAKE_HEAD) }) as Uint8Array
    const signed = signChange(A.decodeChange(unsigned), signerFromPrivateKey(evil.node.peerId, evilKey))
    await evil.node.host.services.pubsub.publish(topics(mesh.key.meshId).board, encodeBoardChange(signed))
    await waitFor(() => (n0.stats.gossipRejected['forbidden-write'] ?? 0) > 0, { timeoutMs: 10_000, message: () => `not refused: ${JSON.stringify(n0.stats.gossipRejected)}` })
    // sync: the same forgery in a sync session
    const forger = Board.load(mesh.key.meshId, sessionActorForPeer(evil.node.peerId), n0.board.save())
    forger.change('forge', d => { d.main.head = str(FAKE_HEAD) })
    await expect(runSyncSession(forger, await evil.node.dialProtocol(n0.host.peerId, SYNC_PROTOCOL), true, AbortSignal.timeout(10_000))).rejects.toThrow()
    await waitFor(() => (n0.stats.refusedAuthors[evil.node.peerId] ?? 0) >= 2, { timeoutMs: 10_000, message: () => `not counted by author: ${JSON.stringify(n0.stats.refusedAuthors)}` })
    // and status (through n0) shows them by author
    const report = buildStatus(n0.board.snapshot(), n0.membersView())
    expect(report.refused[evil.node.peerId]).toBeGreaterThanOrEqual(2)
    expect(renderStatus(report, n0.peerId)).toMatch(new RegExp(`REFUSED board changes: \\S*${evil.node.peerId.slice(-6)}\\S* \\d`))

    // the nodes go on: main unchanged everywhere, their own writes land
    n1.changeBoard('plan', addTasks([simpleTask('after')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('after') !== undefined)
    for (const n of mesh.nodes) expect(n.board.snapshot().main.head).toBe('a'.repeat(40))
  })

  it('cannot claim a task, or register, in another node\'s name; the victim\'s own claim still lands', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [NonNullable<TestMesh['nodes'][0]>, NonNullable<TestMesh['nodes'][0]>]
    n0.changeBoard('plan', addTasks([simpleTask('t1')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('t1') !== undefined)
    const evil = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000 })
    clients.push(evil)
    // a node actor of its own (what a hostile node would write with), claiming for n1 and re-registering n1
    const forger = Board.load(mesh.key.meshId, actorForPeer(evil.node.peerId), n0.board.save())
    forger.change('forge', d => {
      lifecycle.claim(d, 't1' as TaskId, n1.peerId, 0, Date.now())
      const rec = d.nodes[n1.peerId]
      if (rec !== undefined) rec.slots = 0
      d.nodes[n1.peerId] = { name: str('hijacked'), slots: 0, startedAt: 0, leftAt: null }
    })
    await expect(runSyncSession(forger, await evil.node.dialProtocol(n0.host.peerId, SYNC_PROTOCOL), true, AbortSignal.timeout(10_000))).rejects.toThrow()
    await waitFor(() => (n0.stats.refusedAuthors[evil.node.peerId] ?? 0) > 0, { timeoutMs: 10_000, message: () => `not counted: ${JSON.stringify(n0.stats.refusedAuthors)}` })
    expect(n0.board.task('t1')?.claims[n1.peerId]).toBeUndefined()
    expect(n0.board.snapshot().nodes.get(n1.peerId)?.name).toBe('n1')
    // the victim's real claim lands everywhere
    n1.changeBoard('claim', d => { lifecycle.claim(d, 't1' as TaskId, n1.peerId, 0, Date.now()) })
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('t1')?.claims[n1.peerId] !== undefined)
  })
})
