/**
 * `/meshwork/follow/1` (src/api/follow-service.ts, src/api/follow-request.ts):
 * `submit --wait` follows its plan through a node. The entries it is sent are
 * the ones its own board replica would give; only what changed is sent after
 * the first message; a node that goes away or falls silent is followed
 * through another; a node that does not serve it is reported so the client
 * follows the old way; a malformed request is refused without harm to others.
 */
import { describe, it, expect, afterEach, vi } from 'vitest'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { encodeJson } from '../src/protocol/frame.ts'
import { createMesh, tempDir, type TestMesh } from './helpers/mesh.ts'
import { encodeJoinToken } from '../src/node/join-token.ts'
import { submitCommand } from '../src/cli/tasks.ts'
import { serveFollow } from '../src/api/follow-service.ts'
import { TaskFollower, type FollowBatch } from '../src/api/follow-request.ts'
import { followEntries } from '../src/api/follow.ts'
import { FOLLOW_PROTOCOL, type FollowEntry } from '../src/protocol/follow.ts'
import { str } from '../src/crdt/board.ts'
import { addTasks, asPlan, newTaskRecord, setMeshBudget, simpleTask } from '../src/crdt/ops.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { BoardDoc } from '../src/crdt/board-types.ts'
import { waitFor } from '../src/util/wait.ts'
import { createClientHost } from '../src/node/client-host.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { FramedStream } from '../src/protocol/frame.ts'

let mesh: TestMesh | null = null
const followers: TaskFollower[] = []

afterEach(async () => {
  await Promise.all(followers.splice(0).map(async f => { await f.close() }))
  await mesh?.stop()
  mesh = null
})

const PLAN = ['a', 'b', 'c', 'd', 'h', 'x']

function write (node: MeshNode, what: string, fn: (d: BoardDoc) => void): void {
  const r = node.writeBoard(what, fn)
  expect(r.kind, JSON.stringify(r)).toBe('written')
}

/**
 * A plan with one of each kind of line: a (running on the node, with its name),
 * b (pending behind c), c (failed, so b is blocked), d (done), h (ready and held
 * by a spent mesh budget), x (not on the board yet).
 */
function fillPlan (node: MeshNode): void {
  write(node, 'test:plan', d => {
    // the node leads, so that it may move tasks to merged
    d.main.leader = str(node.peerId)
    d.main.term = d.main.term + 1
    addTasks(asPlan([simpleTask('a'), simpleTask('b', { deps: ['c'] }), simpleTask('c'), simpleTask('d'), simpleTask('h')], null), 1)(d)
    d.tasks.a!.state = str('running')
    d.tasks.a!.node = str(node.peerId)
    d.tasks.a!.attempts = 1
    d.tasks.b!.state = str('pending')
    d.tasks.c!.state = str('failed')
    d.tasks.c!.error = str('the agent gave up')
    d.tasks.d!.state = str('done')
    d.tasks.d!.node = str('12D3KooWNotOnTheBoardAtAllxxxxxxxxxxxxxxxxxxxxxxxxx')
    const spent = newTaskRecord(simpleTask('paid'), 1)
    spent.state = str('merged')
    spent.costUsd = 2
    d.tasks.paid = spent
    setMeshBudget(d, { usd: 1, at: 2, by: 'me@host' })
  })
}

async function follow (node: MeshNode, ids: string[], extra: Partial<Parameters<typeof TaskFollower.open>[0]> = {}): Promise<TaskFollower> {
  const f = await TaskFollower.open({ key: mesh!.key, bootstrap: [node.addrs()[0]!], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519'), ids, ...extra })
  expect(f).not.toBe('unsupported')
  followers.push(f as TaskFollower)
  return f as TaskFollower
}

/** Reads messages into `seen` until `done` holds of it (bounded). */
async function readUntil (f: TaskFollower, seen: Map<string, FollowEntry>, done: (seen: Map<string, FollowEntry>, last: FollowBatch) => boolean, what: string, onLost?: (peer: string, why: string) => void): Promise<FollowBatch[]> {
  const batches: FollowBatch[] = []
  const deadline = Date.now() + 30_000
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Error(`timed out waiting for ${what}; seen ${JSON.stringify([...seen.values()])}`)
    const b = await Promise.race([f.next(onLost), new Promise<null>(resolve => { setTimeout(() => { resolve(null) }, left).unref() })])
    if (b === null) continue
    batches.push(b)
    for (const e of b.entries) seen.set(e.id, e)
    if (done(seen, b)) return batches
  }
}

describe('following a plan through a node', () => {
  it('sends what a replica would show, every task first, then only what changed', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    await serveFollow(node)
    fillPlan(node)
    const f = await follow(node, PLAN)
    const seen = new Map<string, FollowEntry>()
    const [first] = await readUntil(f, seen, () => true, 'the first message')
    expect(first!.peer).toBe(node.peerId)
    // the first message: every task of the plan on the board, in the plan's order, as the board shows them
    expect(first!.entries).toEqual(followEntries(node.board.snapshot(), PLAN))
    expect(first!.entries.map(e => e.id)).toEqual(['a', 'b', 'c', 'd', 'h'])
    const by = new Map(first!.entries.map(e => [e.id, e]))
    expect(by.get('a')).toMatchObject({ state: 'running', attempts: 1, node: node.peerId, nodeName: node.name, blockedBy: null, held: false })
    expect(by.get('b')).toMatchObject({ state: 'pending', blockedBy: { id: 'c', state: 'failed', step: '`meshwork retry c` runs it again' }, held: false })
    expect(by.get('c')).toMatchObject({ state: 'failed', error: 'the agent gave up' })
    expect(by.get('d')!.nodeName).toBe('xxxxxxxx')
    expect(by.get('h')).toMatchObject({ state: 'ready', held: true, blockedBy: null })

    // one task moves: the next message with a task carries that task alone
    write(node, 'test:merge-a', d => { d.tasks.a!.state = str('merged') })
    const moved = await readUntil(f, seen, s => s.get('a')?.state === 'merged', 'a merged')
    expect(moved.filter(b => b.entries.length > 0).flatMap(b => b.entries.map(e => e.id))).toEqual(['a'])

    // x arrives, c is retried (b is no longer blocked), the budget is raised (h no longer held)
    write(node, 'test:more', d => {
      addTasks([simpleTask('x')], 3)(d)
      d.tasks.c!.state = str('ready')
      d.tasks.c!.error = null
      setMeshBudget(d, { usd: 100, at: 4, by: 'me@host' })
    })
    await readUntil(f, seen, s => s.has('x') && s.get('b')?.blockedBy === null && s.get('h')?.held === false && s.get('c')?.state === 'ready', 'x, c retried, h released')
    expect([...seen.values()].sort((p, q) => p.id.localeCompare(q.id))).toEqual(followEntries(node.board.snapshot(), PLAN).sort((p, q) => p.id.localeCompare(q.id)))
  })

  it('a quiet plan gets keepalives; a node that goes silent or away is followed through another, which sends every task afresh', async () => {
    mesh = await createMesh(2)
    const [n0, n1] = mesh.nodes as [MeshNode, MeshNode]
    await serveFollow(n0, { keepaliveMs: 300 })
    await serveFollow(n1, { keepaliveMs: 300 })
    fillPlan(n0)
    await waitFor(() => n1.board.snapshot().tasks.size === 6, { timeoutMs: 20_000, message: 'the plan did not reach n1' })
    const lost: Array<{ peer: string, why: string }> = []
    const f = await TaskFollower.open({ key: mesh.key, bootstrap: [n0.addrs()[0]!, n1.addrs()[0]!], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519'), ids: PLAN, silentMs: 2000 })
    if (f === 'unsupported') throw new Error('unsupported')
    followers.push(f)
    const seen = new Map<string, FollowEntry>()
    await readUntil(f, seen, s => s.size === 5, 'the first message')
    const via = f.peer
    // nothing changes: empty messages keep coming
    const quiet = await readUntil(f, seen, (_, b) => b.entries.length === 0, 'a keepalive')
    expect(quiet.at(-1)!.entries).toEqual([])
    // the node followed through stops: the next message comes through the other, with every task again
    const gone = via === n0.peerId ? n0 : n1
    const other = via === n0.peerId ? n1 : n0
    await gone.stop()
    const again = await readUntil(f, seen, (_, b) => b.peer === other.peerId && b.entries.length > 0, 'a message through the other node', (peer, why) => { lost.push({ peer, why }) })
    expect(lost.map(l => l.peer)).toEqual([gone.peerId])
    expect(again.at(-1)!.entries).toEqual(followEntries(other.board.snapshot(), PLAN))
  })

  it('a node silent past the bound is taken for lost', async () => {
    mesh = await createMesh(1)
    const n0 = mesh.nodes[0]!
    // n0 answers each request once and never again (a hung process)
    await n0.handle(FOLLOW_PROTOCOL, (stream) => {
      const lp = new FramedStream(stream, { maxDataLength: 1 << 20 })
      void lp.readRaw().then(async () => { await lp.writeRaw(encodeJson({ tasks: [] })) })
    })
    const f = await TaskFollower.open({ key: mesh.key, bootstrap: [n0.addrs()[0]!], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519'), ids: PLAN, silentMs: 1500 })
    if (f === 'unsupported') throw new Error('unsupported')
    followers.push(f)
    expect((await f.next()).entries).toEqual([])
    // once it is silent past the bound, the follower asks again (n0 is all it knows), and n0 answers once more
    const lost: string[] = []
    expect((await f.next((peer, why) => { lost.push(`${peer}: ${why}`) })).entries).toEqual([])
    expect(lost).toEqual([`${n0.peerId}: it sent nothing for too long`])
  })

  it('a node that does not serve it: `unsupported`', async () => {
    mesh = await createMesh(1)
    const answer = await TaskFollower.open({ key: mesh.key, bootstrap: [mesh.nodes[0]!.addrs()[0]!], timeoutMs: 20_000, privateKey: await generateKeyPair('Ed25519'), ids: PLAN })
    expect(answer).toBe('unsupported')
  })

  it('a malformed request gets its stream aborted; the node serves the next client, and a closed follower frees its place', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    await serveFollow(node, { limits: { maxConcurrent: 1, perSecond: 1000, burst: 1000 } })
    fillPlan(node)
    const host = await createClientHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: mesh.key })
    try {
      for (const bad of [{ ids: [] }, { ids: 'a' }, { wrong: true }]) {
        const stream = await host.dialProtocol(multiaddr(node.addrs()[0]!), FOLLOW_PROTOCOL)
        const lp = new FramedStream(stream, { maxDataLength: 1 << 20 })
        await lp.writeRaw(encodeJson(bad))
        const read = await lp.readRaw({ signal: AbortSignal.timeout(20_000) }).then(() => 'a message', (e: Error) => e.name)
        expect(read, JSON.stringify(bad)).not.toBe('a message')
        expect(read).not.toBe('TimeoutError')
      }
    } finally {
      await host.stop()
    }
    // one place a peer: the same client's second follower is admitted once its first closed
    const privateKey = await generateKeyPair('Ed25519')
    const first = await follow(node, PLAN, { privateKey })
    expect((await first.next()).entries).toHaveLength(5)
    await first.close()
    const second = await waitFor(async () => {
      const f = await TaskFollower.open({ key: mesh!.key, bootstrap: [node.addrs()[0]!], timeoutMs: 3000, privateKey, ids: PLAN }).catch(() => null)
      return f === 'unsupported' ? null : f
    }, { timeoutMs: 20_000, message: 'the closed follower\'s place was never freed' })
    followers.push(second)
    expect((await second.next()).entries).toHaveLength(5)
  })
})

describe('submit --wait', () => {
  /**
   * Runs `submit PLAN --wait --json` in this process against `node`, moving
   * each task on the node's board only once the client printed its last
   * state: the lines are then the same whichever way the client follows.
   */
  async function submitAndWatch (node: MeshNode, p: string): Promise<{ code: number, lines: unknown[] }> {
    const dir = await tempDir('meshwork-follow-submit-')
    const out: string[] = []
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => { out.push(String(chunk)); return true })
    try {
      write(node, 'test:lead', d => { d.main.leader = str(node.peerId); d.main.term = d.main.term + 1 })
      const plan = join(dir, 'plan.json')
      await writeFile(plan, JSON.stringify({ tasks: [{ id: `${p}1`, prompt: 'one' }, { id: `${p}2`, prompt: 'two', deps: [`${p}1`] }] }))
      const opts = { wait: true, json: true, 'swarm-key': undefined, bootstrap: [], 'join-file': undefined, 'insecure-no-swarm-key': false, identity: join(dir, 'client.key'), timeout: 20_000, join: encodeJoinToken(mesh!.key, [node.addrs()[0]!]) }
      const run = submitCommand.run(opts as Parameters<typeof submitCommand.run>[0], [plan])
      const lines = (): Array<Record<string, unknown>> => out.join('').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as Record<string, unknown>)
      const printed = async (id: string, state: string): Promise<void> => {
        await waitFor(() => lines().some(l => l.id === id && l.state === state), { timeoutMs: 30_000, message: () => `the client never printed ${id} ${state}: ${out.join('')}` })
      }
      const [t1, t2] = [`${p}1`, `${p}2`]
      await printed(t1, 'ready')
      await printed(t2, 'pending')
      write(node, 'test:run', d => { d.tasks[t1]!.state = str('running'); d.tasks[t1]!.node = str(node.peerId); d.tasks[t1]!.attempts = 1 })
      await printed(t1, 'running')
      write(node, 'test:merge', d => { d.tasks[t1]!.state = str('merged'); d.tasks[t2]!.state = str('ready') })
      await printed(t2, 'ready')
      write(node, 'test:fail', d => { d.tasks[t2]!.state = str('failed'); d.tasks[t2]!.error = str('gave up') })
      const code = await run
      return { code, lines: lines() }
    } finally {
      spy.mockRestore()
      await rm(dir, { recursive: true, force: true })
    }
  }

  const EXPECTED = (p: string, peer: string): unknown[] => [
    { tasks: [`${p}1`, `${p}2`], plan: `${p}1` },
    { id: `${p}1`, state: 'ready', attempts: 0, node: null, error: null },
    { id: `${p}2`, state: 'pending', attempts: 0, node: null, error: null },
    { id: `${p}1`, state: 'running', attempts: 1, node: peer, error: null },
    { id: `${p}1`, state: 'merged', attempts: 1, node: peer, error: null },
    { id: `${p}2`, state: 'ready', attempts: 0, node: null, error: null },
    { id: `${p}2`, state: 'failed', attempts: 0, node: null, error: 'gave up' },
    { summary: { merged: 1, failed: 1, cancelled: 0, conflict: 0, blocked: 0 } }
  ]

  it('follows through a node that serves it, and through its own board replica where none does, printing the same lines', async () => {
    mesh = await createMesh(2)
    const [plain, serving] = mesh.nodes as [MeshNode, MeshNode]
    await serveFollow(serving)
    const through = await submitAndWatch(serving, 's')
    expect(through.code).toBe(1)
    expect(through.lines).toEqual(EXPECTED('s', serving.peerId))
    // the old way: the node answering does not serve the protocol
    const replica = await submitAndWatch(plain, 'r')
    expect(replica.code).toBe(1)
    expect(replica.lines).toEqual(EXPECTED('r', plain.peerId))
  })
})
