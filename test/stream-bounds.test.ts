/**
 * Per-peer bounds on streams (issue 11, case 9), on real in-process libp2p
 * nodes with a hostile peer that holds the swarm key (a raw libp2p host):
 * it opens many sync streams and sends nothing, starts syncs in a loop, keeps
 * a members stream open, and holds git serving slots. Each time it is refused
 * or cut off (counted, logged once) while an honest node still syncs, fetches
 * and converges.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { join } from 'node:path'
import { rm } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { createMesh, tempDir, waitConverged, LOOPBACK, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo, revParse } from './helpers/git.ts'
import { createHost, type Host } from '../src/node/host.ts'
import { SYNC_STARTS_PER_PEER, SYNC_STREAMS_PER_PEER } from '../src/node/constants.ts'
import { SYNC_PROTOCOL } from '../src/protocol/sync.ts'
import { MEMBERS_PROTOCOL } from '../src/protocol/members.ts'
import { GIT_PROTOCOL, GitFrame, fetchFromPeer, serveGit, type GitServer } from '../src/git/transfer.ts'
import { Board, actorForPeer } from '../src/crdt/board.ts'
import { runSyncSession } from '../src/crdt/sync.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { LogFields, Logger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'

/** Idle bound of sync and members streams in these meshes (the product's is STREAM_IDLE_MS). */
const IDLE_MS = 3000

let mesh: TestMesh | undefined
const hosts: Host[] = []
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c().catch(() => {})
  for (const h of hosts.splice(0)) await Promise.resolve(h.stop()).catch(() => {})
  await mesh?.stop()
  mesh = undefined
})

/** A logger that keeps every warning (event and fields). */
function recordingLogger (): { logger: Logger, warnings: Array<{ event: string, fields: LogFields }> } {
  const warnings: Array<{ event: string, fields: LogFields }> = []
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: (event, fields = {}) => { warnings.push({ event, fields }) },
    error: () => {},
    child: () => logger
  }
  return { logger, warnings }
}

/** n0 (whose warnings are recorded) and n1, both honest; sync and members streams idle out after IDLE_MS. */
async function honestPair (): Promise<{ n0: MeshNode, n1: MeshNode, warnings: Array<{ event: string, fields: LogFields }> }> {
  const { logger, warnings } = recordingLogger()
  mesh = await createMesh(0, { streamIdleMs: IDLE_MS })
  const n0 = await mesh.add({ logger })
  const n1 = await mesh.add()
  await waitConverged([n0, n1])
  return { n0, n1, warnings }
}

/** A raw libp2p host with the mesh's swarm key, connected to `node`: it can open any stream and do anything on it. */
async function hostile (node: MeshNode): Promise<Host> {
  const key = mesh?.key
  if (key === undefined) throw new Error('no mesh')
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: key, listen: [LOOPBACK], bootstrap: [] })
  hosts.push(host)
  await host.start()
  await host.dial(multiaddr(node.addrs()[0] as string), { signal: AbortSignal.timeout(10_000) })
  return host
}

function refused (node: MeshNode, key: string): number {
  return node.stats.streamsRefused[key] ?? 0
}

/** An honest change on `from` reaches `to` (gossip, and a sync `from` starts itself). */
async function honestStillSyncs (from: MeshNode, to: MeshNode, id: string): Promise<void> {
  from.changeBoard('test:add', addTasks([simpleTask(id)]))
  expect(await from.requestSync(to.peerId)).toBe(true)
  await waitConverged([from, to], 20_000, n => n.board.task(id) !== undefined)
}

const isOpen = (s: Stream): boolean => s.status === 'open' || s.status === 'closing'

describe('per-peer bounds on sync streams', () => {
  it(`a peer that opens many sync streams and sends nothing gets ${SYNC_STREAMS_PER_PEER} at most, each closed after the idle time; honest peers sync`, async () => {
    const { n0, n1, warnings } = await honestPair()
    const evil = await hostile(n0)
    const evilId = evil.peerId.toString()
    const extra = 3
    const streams: Stream[] = []
    for (let i = 0; i < SYNC_STREAMS_PER_PEER + extra; i++) {
      streams.push(await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) }))
    }
    await waitFor(() => refused(n0, 'sync:too-many-streams') >= extra, {
      timeoutMs: 10_000, message: () => `n0 did not refuse the streams over ${SYNC_STREAMS_PER_PEER}: ${JSON.stringify(n0.stats.streamsRefused)}`
    })
    expect(refused(n0, 'sync:too-many-streams')).toBe(extra)
    // refused at once: reset, while the admitted ones wait for their first frame
    await waitFor(() => streams.filter(s => !isOpen(s)).length >= extra, { timeoutMs: 10_000, message: 'the refused streams were not reset' })

    // meanwhile an honest node syncs with n0 and the boards converge
    await honestStillSyncs(n1, n0, 'while-held')

    // the silent streams are closed once nothing arrived for the idle time
    await waitFor(() => streams.every(s => !isOpen(s)), { timeoutMs: IDLE_MS + 15_000, message: () => `streams still open: ${streams.filter(isOpen).length}` })
    await waitFor(() => refused(n0, 'sync:idle') >= SYNC_STREAMS_PER_PEER, { timeoutMs: 10_000, message: () => `idle streams not counted: ${JSON.stringify(n0.stats.streamsRefused)}` })
    // logged once for the peer, however many were refused
    expect(warnings.filter(w => w.event === 'sync:refused' && w.fields.peer === evilId)).toHaveLength(1)

    // its slots are free again: the same peer may sync properly now
    const board = Board.create(n0.meshId, actorForPeer(evilId))
    await runSyncSession(board, await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) }), true, AbortSignal.timeout(20_000))
    expect(board.task('while-held')).toBeDefined()
  })

  it(`a peer that starts syncs in a loop is refused once it goes faster than ${SYNC_STARTS_PER_PEER.perSecond} a second; honest peers sync`, async () => {
    const { n0, n1, warnings } = await honestPair()
    const evil = await hostile(n0)
    const evilId = evil.peerId.toString()
    const board = Board.create(n0.meshId, actorForPeer(evilId))
    let completed = 0
    let failed = 0
    // sessions one after the other, as fast as they go: far faster than the limit on any host
    for (let i = 0; i < 2000 && refused(n0, 'sync:too-fast') === 0; i++) {
      try {
        const stream = await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
        await runSyncSession(board, stream, true, AbortSignal.timeout(10_000))
        completed++
      } catch {
        failed++
      }
    }
    expect(refused(n0, 'sync:too-fast'), `completed ${completed}, failed ${failed}`).toBeGreaterThan(0)
    // served until it went too fast
    expect(completed).toBeGreaterThan(0)
    // a few more in the loop: refused, logged only once
    for (let i = 0; i < 20; i++) {
      try {
        await runSyncSession(board, await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) }), true, AbortSignal.timeout(10_000))
      } catch {}
    }
    expect(warnings.filter(w => w.event === 'sync:refused' && w.fields.peer === evilId)).toHaveLength(1)

    await honestStillSyncs(n1, n0, 'after-the-loop')
  })
})

describe('idle members streams', () => {
  it('a peer that reads the members answer and never closes the stream has it aborted after the idle time', async () => {
    const { n0, n1 } = await honestPair()
    const evil = await hostile(n0)
    const stream = await evil.dialProtocol(n0.host.peerId, MEMBERS_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const answer = (await lpStream(stream).read({ signal: AbortSignal.timeout(10_000) })).subarray()
    expect(JSON.parse(new TextDecoder().decode(answer))).toMatchObject({ self: n0.peerId })
    // n0 closed its side after answering; the peer never closes its own
    await waitFor(() => !isOpen(stream), { timeoutMs: IDLE_MS + 15_000, message: () => `the members stream is still ${stream.status}` })
    expect(stream.status).toBe('reset')
    // honest askers are answered as before
    const view = await n1.fetchMembers(n0.peerId)
    expect(view.self).toBe(n0.peerId)
  })
})

describe('per-peer git serving slots and the request idle time', () => {
  it('a peer holding its slots with silent requests gets busy for more, each silent one is told timeout; an honest node fetches', async () => {
    const { n0, n1 } = await honestPair()
    const root = await tempDir('meshwork-bounds-git-')
    cleanups.push(async () => { await rm(root, { recursive: true, force: true }) })
    const repo = await initRepo(join(root, 'served'))
    const tip = await commitFiles(repo, { 'a.txt': 'a\n' }, 'first')
    const server: GitServer = await serveGit(n0, repo, { requestIdleMs: IDLE_MS })
    cleanups.push(async () => { await server.close() })
    const evil = await hostile(n0)
    const evilId = evil.peerId.toString()

    const silent: Stream[] = []
    for (let i = 0; i < 2; i++) silent.push(await evil.dialProtocol(n0.host.peerId, GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) }))
    await waitFor(() => server.activeFor(evilId) === 2, { timeoutMs: 10_000, message: () => `the silent requests were not taken (${server.activeFor(evilId)})` })

    // a third from the same peer: busy, although the server has slots left for others
    const third = await evil.dialProtocol(n0.host.peerId, GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const reply = (await lpStream(third).read({ signal: AbortSignal.timeout(10_000) })).subarray()
    expect(reply[0]).toBe(GitFrame.ERROR)
    expect(JSON.parse(new TextDecoder().decode(reply.subarray(1)))).toMatchObject({ code: 'busy' })
    expect(server.stats.busyPerPeer).toBe(1)
    expect(server.active).toBe(2)

    // an honest node fetches meanwhile
    const mine = await initRepo(join(root, 'fetcher'))
    const res = await fetchFromPeer(n1, n0.peerId, mine, 'refs/heads/main', { intoRef: 'refs/heads/from-n0' })
    expect(res.oid).toBe(tip)
    expect(await revParse(mine, 'refs/heads/from-n0')).toBe(tip)

    // the silent requests are told why and their slots freed, well before the transfer's own 10 min bound
    for (const s of silent) {
      const r = (await lpStream(s).read({ signal: AbortSignal.timeout(IDLE_MS + 15_000) })).subarray()
      expect(r[0]).toBe(GitFrame.ERROR)
      expect(JSON.parse(new TextDecoder().decode(r.subarray(1)))).toMatchObject({ code: 'timeout' })
    }
    await waitFor(() => server.activeFor(evilId) === 0, { timeoutMs: 10_000, message: 'the silent requests kept their slots' })
    expect(server.stats.idle).toBe(2)
    for (const s of [...silent, third]) s.abort(new Error('done'))
  })
})
