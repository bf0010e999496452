/**
 * `--allow`: a node admits connections (both ways) and board changes only
 * from the peers it lists, nodes and clients alike. Real libp2p nodes on
 * loopback; the intruders hold the swarm key.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { join } from 'node:path'
import { rm } from 'node:fs/promises'
import * as AM from '@automerge/automerge'
import { multiaddr } from '@multiformats/multiaddr'
import { LOOPBACK, tempDir, waitConverged } from './helpers/mesh.ts'
import { MeshNode } from '../src/node/mesh-node.ts'
import { Allowlist, parseAllowlist, combineGaters } from '../src/node/allowlist.ts'
import { generateSwarmKey } from '../src/node/swarm-key.ts'
import { loadOrCreateIdentity, loadClientIdentity, peerIdOf } from '../src/node/identity.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { submitTasks } from '../src/api/tasks.ts'
import { Board, BoardAuthorRefusedError, actorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { runSyncSession } from '../src/crdt/sync.ts'
import { SYNC_PROTOCOL } from '../src/protocol/sync.ts'
import { waitFor } from '../src/util/wait.ts'

const A = '12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE'
const B = '12D3KooWNV38ASnTHYdoiGx2myLEypuBC9TmpdGkVgj59btUAAmd'

describe('allowlist file', () => {
  it('one peer id a line, # comments anywhere, every bad line reported at once', () => {
    expect(parseAllowlist(`# the mesh\n${A}  # alpha\n\n   ${B}\n`)).toEqual([A, B])
    expect(() => parseAllowlist(`${A}\nnot-an-id\n${A} ${B}\n`, 'f.txt')).toThrow(/f\.txt: line 2: "not-an-id" is not a peer id; line 3: .* is not a peer id/)
  })

  it('combined gaters deny when any denies; the filters are left alone', async () => {
    const g = combineGaters({ denyDialPeer: () => false }, { denyDialPeer: async () => true, filterMultiaddrForPeer: () => true })
    expect(await g?.denyDialPeer?.(undefined as unknown as Parameters<NonNullable<NonNullable<typeof g>['denyDialPeer']>>[0])).toBe(true)
    expect(g?.filterMultiaddrForPeer).toBeUndefined()
  })
})

describe('board changes by author (unit)', () => {
  const MESH = 'mesh-allow'
  /** Syncs `from` into `to` in memory until neither has anything to send; throws what `to` throws. */
  function sync (from: Board, to: Board): void {
    let [sa, sb] = [initState(), initState()]
    for (let i = 0; i < 20; i++) {
      const [na, ma] = from.generateSyncMessage(sa); sa = na
      if (ma !== null) sb = to.receiveSyncMessage(sb, ma)
      const [nb, mb] = to.generateSyncMessage(sb); sb = nb
      if (mb !== null) sa = from.receiveSyncMessage(sa, mb)
      if (ma === null && mb === null) return
    }
  }
  const initState = (): AM.SyncState => AM.initSyncState()

  it('a change by an unlisted author is refused and rolled back; one a listed peer built on (older history) is kept', () => {
    const listed = Board.create(MESH, actorForPeer(A))
    const guarded = Board.create(MESH, actorForPeer(B))
    guarded.authorFilter = actor => actor.startsWith(actorForPeer(A)) || actor.startsWith(actorForPeer(B))
    // an older version's client session (unsigned, tag + 16 hex digits): history from before the allowlist
    const outsider = Board.create(MESH, actorForPeer('12D3KooWoutsider') + '0123456789abcdef')
    outsider.change('plan', addTasks([simpleTask('forged')]))
    // alone: refused, nothing of it stays
    expect(() => { sync(outsider, guarded) }).toThrow(BoardAuthorRefusedError)
    expect(guarded.task('forged')).toBeUndefined()
    expect(guarded.changeCount()).toBe(1)
    // carried by a listed peer that built on it (history from before the allowlist): kept
    sync(outsider, listed)
    listed.change('plan', addTasks([simpleTask('later')]))
    sync(listed, guarded)
    expect(guarded.task('forged')).toBeDefined()
    expect(guarded.task('later')).toBeDefined()
  })
})

interface Started { nodes: MeshNode[], clients: Client[], root: string }
let env: Started | null = null

afterEach(async () => {
  if (env === null) return
  await Promise.all(env.clients.map(async c => { await c.close() }))
  await Promise.all(env.nodes.map(async n => { await n.stop() }))
  await rm(env.root, { recursive: true, force: true })
  env = null
})

describe('a mesh with --allow', () => {
  it('admits listed nodes and clients, refuses the rest (connections both ways, fast for a client), and refuses unlisted authors on the sync path', async () => {
    const key = generateSwarmKey()
    const root = await tempDir('meshwork-allow-')
    env = { nodes: [], clients: [], root }
    const [id0, id1, intruderId] = await Promise.all(['n0', 'n1', 'intruder'].map(async n => peerIdOf(await loadOrCreateIdentity(join(root, n)))))
    const listedKey = await loadClientIdentity(join(root, 'listed.key'))
    const strangerKey = await loadClientIdentity(join(root, 'stranger.key'))
    const list = [id0 as string, id1 as string, peerIdOf(listedKey)]
    const start = async (name: string, allow: Allowlist | undefined, bootstrap: string[]): Promise<MeshNode> => {
      const n = new MeshNode({ role: 'node', swarmKey: key, dataDir: join(root, name), listen: [LOOPBACK], bootstrap, name, heartbeatMs: 500, suspectAfterMs: 1500, deadAfterMs: 4000, ...(allow !== undefined ? { allow } : {}) })
      await n.start()
      env!.nodes.push(n)
      return n
    }
    const n0 = await start('n0', new Allowlist(list), [])
    const n1 = await start('n1', new Allowlist(list), [n0.addrs()[0] as string])
    await waitConverged([n0, n1], 20_000, n => n.membership.get(n === n0 ? n1.peerId : n0.peerId)?.state === 'alive')
    // a node with the key but not on the list: its dials fail, and the listed nodes never dial it either
    const intruder = await start('intruder', undefined, [])
    expect(intruder.peerId).toBe(intruderId)
    // (noise negotiates the muxer in its handshake, so the intruder's dial may even succeed before n0 hangs up)
    const outcome = await intruder.host.dial(multiaddr(n0.addrs()[0] as string), { signal: AbortSignal.timeout(10_000) }).then(async c => {
      await waitFor(() => c.status !== 'open', { timeoutMs: 5000, message: 'the refused connection stayed open' })
      return c.status
    }, () => 'refused')
    expect(outcome).not.toBe('open')
    await expect(n1.host.dial(multiaddr(intruder.addrs()[0] as string), { signal: AbortSignal.timeout(10_000) })).rejects.toThrow()
    expect(n0.connectedPeers().map(String)).not.toContain(intruderId)
    expect(n1.connectedPeers().map(String)).not.toContain(intruderId)

    // a listed client works
    const listed = await connectClient({ key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000, privateKey: listedKey })
    env.clients.push(listed)
    await submitTasks(listed, [simpleTask('from-listed')])
    await waitFor(() => n1.board.task('from-listed') !== undefined, { timeoutMs: 20_000, message: 'the listed client\'s task did not reach n1' })
    // an unlisted one fails at once, saying why and which id to add
    const t0 = Date.now()
    // (at once: well before a timeout no host is slow enough to reach by itself)
    const refused = await connectClient({ key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 120_000, privateKey: strangerKey }).then(c => { env!.clients.push(c); return null }, (err: Error) => err)
    expect(refused?.name).toBe('MeshUnreachableError')
    expect(refused?.message).toContain(peerIdOf(strangerKey))
    expect(refused?.message).toContain('--allow')
    expect(Date.now() - t0).toBeLessThan(60_000)

    // a listed peer's stream carrying changes of an unlisted author: refused, rolled back, counted by author
    const forger = Board.load(key.meshId, actorForPeer(intruderId as string), n0.board.save())
    forger.change('plan', addTasks([simpleTask('forged')]))
    const stream = await listed.node.dialProtocol(n0.host.peerId, SYNC_PROTOCOL)
    await expect(runSyncSession(forger, stream, true, AbortSignal.timeout(10_000))).rejects.toThrow()
    await waitFor(() => (n0.stats.refusedAuthors[actorForPeer(intruderId as string)] ?? 0) > 0, { timeoutMs: 10_000, message: () => `not counted: ${JSON.stringify(n0.stats.refusedAuthors)}` })
    expect(n0.board.task('forged')).toBeUndefined()
    // and the mesh goes on: the listed client's next change still lands everywhere
    await submitTasks(listed, [simpleTask('after')])
    await waitFor(() => n0.board.task('after') !== undefined && n1.board.task('after') !== undefined, { timeoutMs: 20_000, message: 'a change after the refusal did not land' })
    expect(n1.board.task('forged')).toBeUndefined()
  })
})
