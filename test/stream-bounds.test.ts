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

/** Idle bound of sync and members streams in the tests of idle streams (the product's is STREAM_IDLE_MS). */
const IDLE_MS = 2000
/** Idle bound in the tests of the other bounds: longer than any of them takes, so no stream idles out on its own there. */
const NO_IDLE_MS = 120_000

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

/** n0 (whose warnings are recorded) and n1, both honest; sync and members streams idle out after `idleMs`. */
async function honestPair (idleMs: number): Promise<{ n0: MeshNode, n1: MeshNode, warnings: Array<{ event: string, fields: LogFields }> }> {
  const { logger, warnings } = recordingLogger()
  mesh = await createMesh(0, { streamIdleMs: idleMs })
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
  it(`a peer that opens many sync streams gets ${SYNC_STREAMS_PER_PEER} at once, the rest are refused; honest peers sync`, async () => {
    const { n0, n1, warnings } = await honestPair(NO_IDLE_MS)
    const evil = await hostile(n0)
    const evilId = evil.peerId.toString()
    const extra = 3
    const streams: Stream[] = []
    // opened and never used: each holds one of its sessions
    for (let i = 0; i < SYNC_STREAMS_PER_PEER + extra; i++) {
      streams.push(await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) }))
    }
    await waitFor(() => refused(n0, 'sync:too-many-streams') >= extra, {
      timeoutMs: 10_000, message: () => `n0 did not refuse the streams over ${SYNC_STREAMS_PER_PEER}: ${JSON.stringify(n0.stats.streamsRefused)}`
    })
    expect(refused(n0, 'sync:too-many-streams')).toBe(extra)
    // refused at once (reset), while the admitted ones wait for their first frame
    await waitFor(() => streams.filter(s => !isOpen(s)).length === extra, { timeoutMs: 10_000, message: 'the refused streams were not reset' })
    expect(streams.slice(0, SYNC_STREAMS_PER_PEER).every(isOpen)).toBe(true)
    // one more: refused too, and the peer is logged once however many were refused
    const more = await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    await waitFor(() => refused(n0, 'sync:too-many-streams') === extra + 1, { timeoutMs: 10_000, message: 'the next stream was not refused' })
    await waitFor(() => !isOpen(more), { timeoutMs: 10_000, message: 'the next refused stream was not reset' })
    expect(warnings.filter(w => w.event === 'sync:refused' && w.fields.peer === evilId)).toHaveLength(1)

    // meanwhile an honest node syncs with n0 and the boards converge
    await honestStillSyncs(n1, n0, 'while-held')

    // once the peer lets go of its streams it may sync properly again
    for (const s of streams) s.abort(new Error('done'))
    const board = Board.create(n0.meshId, actorForPeer(evilId))
    await waitFor(async () => {
      try {
        await runSyncSession(board, await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) }), true, AbortSignal.timeout(20_000))
        return true
      } catch { return false }
    }, { timeoutMs: 15_000, message: 'the peer could not sync after releasing its streams' })
    expect(board.task('while-held')).toBeDefined()
  })

  it('a sync stream on which nothing arrives is closed after the idle time and counted', async () => {
    const { n0, n1 } = await honestPair(IDLE_MS)
    const evil = await hostile(n0)
    const stream = await evil.dialProtocol(n0.host.peerId, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    await waitFor(() => !isOpen(stream), { timeoutMs: IDLE_MS + 15_000, message: () => `the silent stream is still ${stream.status}` })
    expect(stream.status).toBe('reset')
    await waitFor(() => refused(n0, 'sync:idle') === 1, { timeoutMs: 10_000, message: () => `the idle stream was not counted: ${JSON.stringify(n0.stats.streamsRefused)}` })
    // honest sessions, with the same idle bound, go through
    await honestStillSyncs(n1, n0, 'after-idle')
  })

  it(`a peer that starts syncs in a loop is refused once it goes faster than ${SYNC_STARTS_PER_PEER.perSecond} a second; honest peers sync`, async () => {
    const { n0, n1, warnings } = await honestPair(NO_IDLE_MS)
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
    const { n0, n1 } = await honestPair(IDLE_MS)
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
  /** A repository with one commit on main, removed after the test. */
  async function servedRepo (): Promise<{ root: string, repo: string, tip: string }> {
    const root = await tempDir('meshwork-bounds-git-')
    cleanups.push(async () => { await rm(root, { recursive: true, force: true }) })
    const repo = await initRepo(join(root, 'served'))
    return { root, repo, tip: await commitFiles(repo, { 'a.txt': 'a\n' }, 'first') }
  }

  /** Reads one frame from `s`: its tag and JSON body. */
  async function frameOf (s: Stream, timeoutMs: number): Promise<{ tag: number | undefined, body: unknown }> {
    const r = (await lpStream(s).read({ signal: AbortSignal.timeout(timeoutMs) })).subarray()
    return { tag: r[0], body: JSON.parse(new TextDecoder().decode(r.subarray(1))) }
  }

  it('a peer holding its slots gets busy for more while the server has room; an honest node fetches', async () => {
    const { n0, n1 } = await honestPair(NO_IDLE_MS)
    const { root, repo, tip } = await servedRepo()
    const server: GitServer = await serveGit(n0, repo, { requestIdleMs: NO_IDLE_MS })
    cleanups.push(async () => { await server.close() })
    const evil = await hostile(n0)
    const evilId = evil.peerId.toString()

    const silent: Stream[] = []
    for (let i = 0; i < 2; i++) silent.push(await evil.dialProtocol(n0.host.peerId, GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) }))
    await waitFor(() => server.activeFor(evilId) === 2, { timeoutMs: 10_000, message: () => `the silent requests were not taken (${server.activeFor(evilId)})` })

    // a third from the same peer: busy, although the server has slots left for others
    const third = await evil.dialProtocol(n0.host.peerId, GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    expect(await frameOf(third, 10_000)).toMatchObject({ tag: GitFrame.ERROR, body: { code: 'busy' } })
    expect(server.stats.busyPerPeer).toBe(1)
    expect(server.active).toBe(2)

    // an honest node fetches meanwhile
    const mine = await initRepo(join(root, 'fetcher'))
    const res = await fetchFromPeer(n1, n0.peerId, mine, 'refs/heads/main', { intoRef: 'refs/heads/from-n0' })
    expect(res.oid).toBe(tip)
    expect(await revParse(mine, 'refs/heads/from-n0')).toBe(tip)

    // the peer's slots are its own again once it lets go
    for (const s of [...silent, third]) s.abort(new Error('done'))
    await waitFor(() => server.activeFor(evilId) === 0, { timeoutMs: 10_000, message: 'the aborted requests kept their slots' })
  })

  it('a requester that never sends its request is told timeout after the request idle time, well before the transfer bound', async () => {
    const { n0 } = await honestPair(NO_IDLE_MS)
    const { repo } = await servedRepo()
    const server: GitServer = await serveGit(n0, repo, { requestIdleMs: IDLE_MS })
    cleanups.push(async () => { await server.close() })
    const evil = await hostile(n0)
    const silent = await evil.dialProtocol(n0.host.peerId, GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    // the transfer's own bound is 10 min: only the idle bound can end this
    const reply = await frameOf(silent, IDLE_MS + 15_000)
    expect(reply).toMatchObject({ tag: GitFrame.ERROR, body: { code: 'timeout' } })
    expect(JSON.stringify(reply.body)).toContain('sent nothing')
    await waitFor(() => server.active === 0, { timeoutMs: 10_000, message: 'the silent request kept its slot' })
    expect(server.stats.idle).toBe(1)
    silent.abort(new Error('done'))
  })
})
