/**
 * `/meshwork/status/1` (src/api/status-request.ts, src/api/status-service.ts):
 * a node answers a client's status request with the report a board sync and
 * a members request would give, byte for byte; a node that does not serve it
 * is reported so the client can read the old way; refused addresses, wrong
 * keys and a node whose --allow does not list the client fail at once.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMesh, tempDir, type TestMesh } from './helpers/mesh.ts'
import { serveStatus } from '../src/api/status-service.ts'
import { requestStatus } from '../src/api/status-request.ts'
import { readStatus } from '../src/cli/mesh-client.ts'
import { statusOnce } from '../src/cli/status.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { Allowlist } from '../src/node/allowlist.ts'
import { generateSwarmKey } from '../src/node/swarm-key.ts'
import { encodeJoinToken } from '../src/node/join-token.ts'
import { HANDSHAKE_FAILED } from '../src/node/pnet.ts'
import { str } from '../src/crdt/board.ts'
import { addTasks, asPlan, newTaskRecord, setMeshBudget, simpleTask } from '../src/crdt/ops.ts'
import { ask, approvalIdFor } from '../src/crdt/approvals.ts'
import type { TaskId } from '../src/crdt/schema.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import { waitFor } from '../src/util/wait.ts'
import { NOBODY, closedPort } from './helpers/net.ts'

let mesh: TestMesh | null = null
const clients: Client[] = []
const dirs: string[] = []

afterEach(async () => {
  await Promise.all(clients.splice(0).map(async c => { await c.close() }))
  await mesh?.stop()
  mesh = null
  await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
})

const OID = 'a'.repeat(40)

/** Puts one of everything `status --json` shows on the node's board. */
function fillBoard (node: MeshNode): void {
  const written = node.writeBoard('test:fill', d => {
    d.main.leader = str(node.peerId)
    d.main.term = d.main.term + 1
    d.main.head = str(OID)
    d.main.push = { remote: str('origin'), head: str(OID), ok: false, at: 5, error: str('rejected'), by: str(node.peerId) }
    setMeshBudget(d, { usd: 10, at: 7, by: 'me@host' })
    addTasks(asPlan([simpleTask('a', { title: 'First' }), simpleTask('b', { deps: ['a'] })], 3), 1)(d)
    const merged = newTaskRecord(simpleTask('m', { title: 'Merged one' }), 2)
    merged.state = str('merged')
    merged.attempts = 2
    merged.costUsd = 0.25
    merged.tokens = { input: 10, output: 20, cacheRead: 30, cacheWrite: 40 }
    merged.mergeCommit = str(OID)
    merged.mergedAt = 9
    merged.summary = str('did the thing')
    d.tasks.m = merged
    const running = newTaskRecord(simpleTask('r'), 3)
    running.state = str('running')
    running.node = str(node.peerId)
    running.attempts = 1
    running.startedAt = 4
    d.tasks.r = running
    ask(d, 'r' as TaskId, { id: approvalIdFor('r' as TaskId, 'x1'), node: node.peerId, attempt: 1, tool: 'Bash', input: JSON.stringify({ command: 'ls' }), at: 6 })
    const conflicted = newTaskRecord(simpleTask('c'), 4)
    conflicted.state = str('conflict')
    conflicted.error = str('conflict in a.txt')
    d.tasks.c = conflicted
    d.conflicts['c-1'] = {
      id: str('c-1'),
      taskId: str('c'),
      files: [str('a.txt')],
      hunks: [{ file: str('a.txt'), line: 3, before: str('x\n'), ours: str('main\n'), theirs: str('task\n'), after: str('y\n') }],
      oursFrom: { 'a.txt': str('m') },
      state: str('open'),
      decision: null,
      error: null
    }
  })
  expect(written.kind, JSON.stringify(written)).toBe('written')
  const decided = node.writeBoard('test:decide', d => {
    d.conflicts['c-1']!.decision = { action: str('theirs'), by: str(node.peerId), at: 8, note: str('take it') }
  })
  expect(decided.kind, JSON.stringify(decided)).toBe('written')
}

describe('status in one request', () => {
  it('answers with the report a board sync and a members request give, byte for byte', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    await serveStatus(node)
    fillBoard(node)
    const addr = node.addrs()[0]!
    const client = await connectClient({ key: mesh.key, bootstrap: [addr], timeoutMs: 20_000 })
    clients.push(client)
    const synced = await readStatus(client)
    const answer = await requestStatus({ key: mesh.key, bootstrap: [addr], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519') })
    expect(answer.kind).toBe('report')
    if (answer.kind !== 'report') return
    expect(answer.peer).toBe(node.peerId)
    // every part of the report is filled, so the comparison covers every field
    expect(synced.tasks.map(t => t.id).sort()).toEqual(['a', 'b', 'c', 'm', 'r'])
    expect(synced.conflicts).toHaveLength(1)
    expect(synced.approvals).toHaveLength(1)
    expect(synced.main.push).not.toBeNull()
    expect(synced.budget.plans).toHaveLength(1)
    expect(synced.nodes.map(n => n.peerId)).toEqual([node.peerId])
    expect(JSON.stringify(answer.report, null, 2)).toBe(JSON.stringify(synced, null, 2))
  })

  it('a node that does not serve it: `unsupported`, with the time left', async () => {
    mesh = await createMesh(1)
    const addr = mesh.nodes[0]!.addrs()[0]!
    const answer = await requestStatus({ key: mesh.key, bootstrap: [addr], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519') })
    expect(answer.kind).toBe('unsupported')
    if (answer.kind === 'unsupported') expect(answer.remainingMs).toBeGreaterThan(10_000)
  })

  it('`status` reads through a node that does not serve it the old way (board sync, members view), and through one that does in one request', async () => {
    mesh = await createMesh(2)
    const [old, current] = mesh.nodes as [MeshNode, MeshNode]
    await serveStatus(current)
    fillBoard(old)
    const dir = await tempDir('meshwork-status-once-')
    dirs.push(dir)
    const opts = { 'swarm-key': undefined, bootstrap: [], 'join-file': undefined, 'insecure-no-swarm-key': false, identity: join(dir, 'client.key'), timeout: 20_000 }
    // one address each (a node's own join token carries its live peers' addresses too)
    const viaOld = await statusOnce({ ...opts, join: encodeJoinToken(mesh.key, [old.addrs()[0]!]) })
    expect(viaOld.peer).toBe(old.peerId)
    expect(viaOld.report.tasks.map(t => t.id).sort()).toEqual(['a', 'b', 'c', 'm', 'r'])
    expect(viaOld.report.nodes.map(n => n.peerId).sort()).toEqual([old.peerId, current.peerId].sort())
    await waitFor(() => current.board.snapshot().tasks.size === 5, { timeoutMs: 20_000, message: 'the board did not reach the second node' })
    const viaCurrent = await statusOnce({ ...opts, join: encodeJoinToken(mesh.key, [current.addrs()[0]!]) })
    expect(viaCurrent.peer).toBe(current.peerId)
    expect(viaCurrent.report.tasks).toEqual(viaOld.report.tasks)
  })

  it('fails at once naming each address: refused, wrong swarm key, not admitted by --allow', async () => {
    mesh = await createMesh(1, { allow: new Allowlist([]) })
    const node = mesh.nodes[0]!
    await serveStatus(node)
    const addr = node.addrs()[0]!
    const dead = `/ip4/127.0.0.1/tcp/${await closedPort()}/p2p/${NOBODY}`
    const privateKey = await generateKeyPair('Ed25519')
    const timeoutMs = 120_000
    const fail = async (key: TestMesh['key'], bootstrap: string[]): Promise<{ name: string, message: string, ms: number }> => {
      const t0 = Date.now()
      const err = await requestStatus({ key, bootstrap, timeoutMs, privateKey }).then(a => { throw new Error(`expected a failure, got ${a.kind}`) }, (e: Error) => e)
      return { name: err.name, message: err.message, ms: Date.now() - t0 }
    }
    const refused = await fail(mesh.key, [dead])
    expect(refused.name).toBe('MeshUnreachableError')
    expect(refused.message).toContain(`${dead}: connection refused`)
    const wrongKey = await fail(generateSwarmKey(), [addr])
    expect(wrongKey.message).toContain(`${addr}: ${HANDSHAKE_FAILED}`)
    const stranger = await fail(mesh.key, [addr, dead])
    expect(stranger.message).toContain(`${addr}: the node closed the connection right after the handshake: it does not admit this client`)
    expect(stranger.message).toContain(`${dead}: connection refused`)
    // "at once": far below the timeout (a loaded 2-core machine takes a while for a handshake)
    for (const f of [refused, wrongKey, stranger]) expect(f.ms).toBeLessThan(timeoutMs / 4)
  })

  it('a peer asking faster than its bound is refused and counted; another peer is still answered', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    // two answers, then (practically) no refill: the third request from the same peer id is refused every time
    await serveStatus(node, { limits: { maxConcurrent: 2, perSecond: 0.0001, burst: 2 } })
    const addr = node.addrs()[0]!
    const privateKey = await generateKeyPair('Ed25519')
    for (let i = 0; i < 2; i++) expect((await requestStatus({ key: mesh.key, bootstrap: [addr], timeoutMs: 20_000, privateKey })).kind).toBe('report')
    const third = await requestStatus({ key: mesh.key, bootstrap: [addr], timeoutMs: 3000, privateKey }).then(a => a.kind, (e: Error) => e.name)
    expect(third).toBe('MeshUnreachableError')
    expect(node.stats.streamsRefused['status:too-fast'] ?? 0).toBeGreaterThanOrEqual(1)
    const other = await requestStatus({ key: mesh.key, bootstrap: [addr], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519') })
    expect(other.kind).toBe('report')
  })
})
