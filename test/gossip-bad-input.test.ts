import { describe, it, expect, afterEach } from 'vitest'
import { randomBytes } from 'node:crypto'
import * as A from '@automerge/automerge'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createMesh, waitAllAlive, waitConverged, LOOPBACK, type TestMesh } from './helpers/mesh.ts'
import { createHost, type Host } from '../src/node/host.ts'
import { MAX_GOSSIP_BYTES, topics } from '../src/node/constants.ts'
import { Board, actorForPeer, type BoardDoc } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId } from '../src/crdt/schema.ts'
import { encodePresence, type Presence } from '../src/protocol/presence.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { Transition } from '../src/node/membership.ts'
import { waitFor } from '../src/util/wait.ts'
import { BoardGossipTag, encodeBoardChange } from '../src/protocol/board-gossip.ts'
import { encodeFrame } from '../src/protocol/frame.ts'


let mesh: TestMesh | undefined
let attacker: Host | undefined
afterEach(async () => {
  await attacker?.stop()
  attacker = undefined
  await mesh?.stop()
  mesh = undefined
})

function rejected (node: MeshNode, reason: string): number {
  return node.stats.gossipRejected[reason] ?? 0
}

function subscribed (host: Host, topic: string, peer: string): boolean {
  return host.services.pubsub.getSubscribers(topic).some(p => p.toString() === peer)
}

describe('gossip validation against a peer that holds the swarm key', () => {
  it('counts and drops bad board and presence messages; the mesh keeps working', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [MeshNode, MeshNode]
    await waitAllAlive(mesh.nodes)
    const t = topics(mesh.key.meshId)

    // what node 0 would show if an attack got through
    const transitions: Transition[] = []
    n0.addEventListener('peer:state', evt => { transitions.push(evt.detail) })
    const presences: Presence[] = []
    n0.addEventListener('presence', evt => { presences.push(evt.detail) })

    // a raw libp2p host with the same swarm key: it can connect and publish anything, signed with its own key
    attacker = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: mesh.key, listen: [LOOPBACK], bootstrap: [] })
    await attacker.start()
    const host = attacker
    const evilId = asPeerId(host.peerId.toString())
    const pubsub = host.services.pubsub
    pubsub.subscribe(t.board)
    pubsub.subscribe(t.presence)
    await host.dial(multiaddr(n0.addrs()[0] as string), { signal: AbortSignal.timeout(10_000) })
    await waitFor(() => subscribed(n0.host, t.board, evilId) && subscribed(n0.host, t.presence, evilId), {
      timeoutMs: 10_000, message: 'node 0 never listed the attacker as a subscriber of the board and presence topics'
    })
    await waitFor(() => subscribed(host, t.board, n0.peerId) && subscribed(host, t.presence, n0.peerId), {
      timeoutMs: 10_000, message: 'the attacker never saw node 0 subscribe'
    })

    /** Publishes from the attacker and waits until node 0 counted the rejection under `reason`. */
    const attack = async (topic: string, data: Uint8Array, reason: string): Promise<void> => {
      const before = rejected(n0, reason)
      const res = await pubsub.publish(topic, data)
      expect(res.recipients.map(p => p.toString())).toContain(n0.peerId)
      await waitFor(() => rejected(n0, reason) > before, {
        timeoutMs: 10_000,
        message: () => `node 0 did not count a '${reason}' rejection; counters: ${JSON.stringify(n0.stats.gossipRejected)}`
      })
    }

    // 1. garbage on the board topic
    const garbage = randomBytes(512)
    garbage[0] = 0xee
    await attack(t.board, garbage, 'unknown-tag')
    await attack(t.board, encodeBoardChange(randomBytes(512)), 'bad-change')
    await attack(t.board, encodeFrame(BoardGossipTag.HEADS, new TextEncoder().encode('["not-a-hash"]')), 'bad-heads')

    // 2. a message over MAX_GOSSIP_BYTES (300 KiB) but under gossipsub's inbound limit (4x): our validator drops it
    const big = Board.create(mesh.key.meshId, actorForPeer(evilId))
    const bigChange = big.change('big', addTasks([simpleTask('big-1', { prompt: randomBytes(225 * 1024).toString('base64') })]))!
    const oversized = encodeBoardChange(bigChange)
    expect(oversized.length).toBeGreaterThan(MAX_GOSSIP_BYTES)
    expect(oversized.length).toBeLessThan(MAX_GOSSIP_BYTES * 4)
    await attack(t.board, oversized, 'oversized')

    // 3. a valid change whose actor is node 1's, not the attacker's (impersonation)
    const forger = Board.create(mesh.key.meshId, actorForPeer(n1.peerId))
    const forged = forger.change('forged', addTasks([simpleTask('evil-forged')]))!
    const forgedHash = A.decodeChange(forged).hash!
    await attack(t.board, encodeBoardChange(forged), 'foreign-actor')

    // 4. the attacker's own change that replaces the board's root
    const raw = A.load<BoardDoc>(n0.board.save(), { actor: actorForPeer(evilId) })
    const rootWrite = A.getLastLocalChange(A.change(raw, d => { d.tasks = {} }))!
    await attack(t.board, encodeBoardChange(rootWrite), 'bad-change')

    // 5. presence claiming to be node 1 (and announcing that it left)
    const spoof: Presence = {
      v: 1, peerId: n1.peerId, name: 'evil', slots: 64, running: [], heads: [], addrs: [], lagMs: 0, load: 0,
      rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 1_000_000, leaving: true
    }
    await attack(t.presence, encodePresence(spoof), 'presence-spoofed')

    // 6. malformed presence
    await attack(t.presence, new TextEncoder().encode('{"v":1,"peerId":'), 'bad-presence')
    await attack(t.presence, encodePresence({ ...spoof, peerId: evilId, slots: -1 }), 'bad-presence')

    // the mesh still works: a legitimate change from each node reaches the other
    n0.changeBoard('legit', addTasks([simpleTask('legit-0')]))
    n1.changeBoard('legit', addTasks([simpleTask('legit-1')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('legit-0') !== undefined && n.board.task('legit-1') !== undefined)

    for (const n of mesh.nodes) {
      expect(n.host.status).toBe('started')
      const ids = [...n.board.snapshot().tasks.keys()].sort()
      expect(ids).toEqual(['legit-0', 'legit-1'])
      expect(n.board.hasHeads([forgedHash])).toBe(false)
      expect(n.board.hasHeads([A.decodeChange(bigChange).hash!])).toBe(false)
      expect(n.board.hasHeads([A.decodeChange(rootWrite).hash!])).toBe(false)
      expect(n.board.snapshot().invalid).toEqual([])
      expect(n.stats.gossipRejected['apply-failed']).toBeUndefined()
    }
    // node 1 never saw any of it: node 0 did not forward rejected messages
    expect(n1.stats.gossipRejected).toEqual({})
    expect(n0.stats.gossipRejected).toEqual({
      'unknown-tag': 1, 'bad-change': 2, 'bad-heads': 1, oversized: 1, 'foreign-actor': 1, 'presence-spoofed': 1, 'bad-presence': 2
    })
    // membership was not fooled: node 1 is still alive under its own name, the attacker is unknown
    expect(transitions.filter(x => x.peerId === n1.peerId)).toEqual([])
    expect(n0.membership.get(n1.peerId)?.state).toBe('alive')
    expect(n0.membership.get(n1.peerId)?.name).toBe('n1')
    expect(presences.filter(p => p.name === 'evil' || p.peerId === evilId)).toEqual([])
    expect(n0.membership.get(evilId)).toBeUndefined()
  })

  it('a message above gossipsub\'s inbound limit is refused before our validator: the link to the sender is dropped, the mesh keeps working', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [MeshNode, MeshNode]
    await waitAllAlive(mesh.nodes)
    const t = topics(mesh.key.meshId)

    attacker = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: mesh.key, listen: [LOOPBACK], bootstrap: [] })
    await attacker.start()
    const host = attacker
    const evilId = asPeerId(host.peerId.toString())
    host.services.pubsub.subscribe(t.board)
    await host.dial(multiaddr(n0.addrs()[0] as string), { signal: AbortSignal.timeout(10_000) })
    await waitFor(() => subscribed(n0.host, t.board, evilId) && subscribed(host, t.board, n0.peerId), {
      timeoutMs: 10_000, message: 'the attacker and node 0 never saw each other subscribe to the board topic'
    })

    // a well-formed change with the attacker's own actor, so only its size is wrong
    const big = Board.create(mesh.key.meshId, actorForPeer(evilId))
    const change = big.change('huge', addTasks([simpleTask('huge-1', { prompt: randomBytes(1024 * 1024).toString('base64') })]))!
    const msg = encodeBoardChange(change)
    expect(msg.length).toBeGreaterThan(MAX_GOSSIP_BYTES * 4) // above the receiver's maxInboundDataLength
    const res = await host.services.pubsub.publish(t.board, msg)
    expect(res.recipients.map(p => p.toString())).toContain(n0.peerId)

    // gossipsub's length-prefixed decoder throws on the frame and node 0 forgets the
    // attacker as a gossip peer (its subscriptions with it)
    await waitFor(() => !subscribed(n0.host, t.board, evilId), {
      timeoutMs: 10_000, message: 'node 0 still lists the attacker as a board subscriber after an over-limit frame'
    })
    expect(n0.host.services.pubsub.getPeers().map(String)).not.toContain(evilId)

    // the mesh keeps working and the data never arrived
    n1.changeBoard('legit', addTasks([simpleTask('legit-1')]))
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('legit-1') !== undefined)
    for (const n of mesh.nodes) {
      expect(n.host.status).toBe('started')
      expect(n.board.task('huge-1')).toBeUndefined()
      expect(n.board.hasHeads([A.decodeChange(change).hash!])).toBe(false)
      // our validator never saw the message
      expect(n.stats.gossipRejected).toEqual({})
    }
    expect(subscribed(n0.host, t.board, n1.peerId)).toBe(true)
  })
})
