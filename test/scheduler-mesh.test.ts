import { describe, it, expect, afterEach } from 'vitest'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import { simAgent } from '../src/agent/sim.ts'
import { scopesOverlap } from '../src/scheduler/dag.ts'
import { rendezvousScore } from '../src/scheduler/claims.ts'
import type { Agent } from '../src/agent/types.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

const sim = (ms: number, fail = 0) => ({ durationMs: ms, write: {}, append: {}, fail })

function states (n: MeshNode): Record<string, number> {
  const out: Record<string, number> = {}
  for (const t of n.board.snapshot().tasks.values()) out[t.state] = (out[t.state] ?? 0) + 1
  return out
}

async function waitAllDone (n: MeshNode, count: number, timeoutMs: number): Promise<void> {
  await waitFor(() => [...n.board.snapshot().tasks.values()].filter(t => t.state === 'done').length === count, {
    timeoutMs, message: () => `not all ${count} tasks done: ${JSON.stringify(states(n))}`
  })
}

describe('scheduling on a real mesh', () => {
  it('4 nodes x 2 slots run 16 independent sim tasks (two rounds of every slot), each exactly once, spread over the nodes', async () => {
    mesh = await createMesh(4)
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 2))
    mesh.nodes[0]!.changeBoard('plan', addTasks(Array.from({ length: 16 }, (_, i) => simpleTask(`t${i}`, { sim: sim(300) }))))
    await waitAllDone(mesh.nodes[0]!, 16, 60_000)
    await new Promise(resolve => setTimeout(resolve, 0))
    expect(log.duplicates()).toEqual([])
    expect(log.runs.size).toBe(16)
    const perNode = new Map<string, number>()
    for (const l of log.runs.values()) perNode.set(l[0]!.node, (perNode.get(l[0]!.node) ?? 0) + 1)
    expect(perNode.size).toBe(4)
    for (const t of mesh.nodes[0]!.board.snapshot().tasks.values()) expect(t.attempts).toBe(1)
  })

  it('failed attempts retry with back-off, then fail with the error on the board', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 1))
    mesh.nodes[0]!.changeBoard('plan', addTasks([
      simpleTask('flaky', { sim: sim(50, 1), maxAttempts: 3 }),
      simpleTask('broken', { sim: sim(50, 5), maxAttempts: 2 })
    ]))
    const n0 = mesh.nodes[0]!
    await waitFor(() => n0.board.task('flaky')?.state === 'done' && n0.board.task('broken')?.state === 'failed', { timeoutMs: 30_000, message: () => JSON.stringify(states(n0)) })
    expect(n0.board.task('flaky')!.attempts).toBe(2)
    expect(n0.board.task('broken')!.attempts).toBe(2)
    expect(n0.board.task('broken')!.error).toMatch(/fails as configured/)
  })
})

describe('files scopes', () => {
  it('tasks whose scopes overlap never run at once, anywhere in the mesh; tasks with disjoint scopes run in parallel', async () => {
    mesh = await createMesh(3)
    await waitAllAlive(mesh.nodes)
    // every agent run's start and end, mesh-wide, from the agent's side
    const spans: Array<{ id: string, node: string, start: number, end: number }> = []
    const timed = (node: string): Agent => {
      const inner = simAgent()
      return {
        kind: 'timed-sim',
        run: async init => {
          const start = Date.now()
          try {
            return await inner.run(init)
          } finally {
            spans.push({ id: init.task.id, node, start, end: Date.now() })
          }
        }
      }
    }
    const log = new RunLog()
    // stealAfter 0: every node goes for every ready task at once, the worst case for the scope check
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 2, { agent: timed(n.name), stealAfterMs: 0 }))
    const scopes: Record<string, string[]> = {
      'db-a': ['src/db/**'],
      'db-b': ['src/db/users.ts'],
      'db-c': ['src/**'],
      'db-d': ['src/db/**', 'migrations/*.sql'],
      'doc-a': ['docs/a.md'],
      'doc-b': ['docs/b.md'],
      web: ['web/**'],
      api: ['api/**']
    }
    mesh.nodes[0]!.changeBoard('plan', addTasks(Object.entries(scopes).map(([id, files]) => simpleTask(id, { files, sim: sim(700) }))))
    await waitAllDone(mesh.nodes[0]!, 8, 90_000)
    expect(log.duplicates()).toEqual([])
    expect(spans).toHaveLength(8)
    const at = new Map(spans.map(s => [s.id, s]))
    const ids = Object.keys(scopes)
    const together = (a: string, b: string): boolean => at.get(a)!.start < at.get(b)!.end && at.get(b)!.start < at.get(a)!.end
    const clashes: string[] = []
    const parallel: string[] = []
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const [a, b] = [ids[i]!, ids[j]!]
        if (scopesOverlap(scopes[a]!, scopes[b]!)) {
          if (together(a, b)) clashes.push(`${a} (${at.get(a)!.node}) and ${b} (${at.get(b)!.node})`)
        } else if (together(a, b)) parallel.push(`${a}+${b}`)
      }
    }
    // the four src/db tasks all overlap one another: they ran one after another
    expect(scopesOverlap(scopes['db-b']!, scopes['db-c']!)).toBe(true)
    expect(clashes).toEqual([])
    // six slots and four disjoint scopes (plus one src task at a time): several ran side by side
    expect(parallel.length).toBeGreaterThanOrEqual(3)
    const src = ids.filter(id => id.startsWith('db-')).map(id => at.get(id)!).sort((x, y) => x.start - y.start)
    for (let i = 1; i < src.length; i++) expect(src[i]!.start).toBeGreaterThanOrEqual(src[i - 1]!.end)
  })
})

/** Emulates a crash: the node vanishes from the network at once; its runs stop and nothing more it writes reaches anyone. */
async function crash (node: MeshNode, sched: Scheduler): Promise<void> {
  await node.host.stop()
  await sched.stop(0)
}

describe('nodes that come and go', () => {
  it('runs 16 tasks exactly once while one node crashes mid-run and another joins mid-run', async () => {
    mesh = await createMesh(4)
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 2))
    const n0 = mesh.nodes[0]!
    // every run is held until the gate file exists: the slots fill (two runs per node, the victim's
    // among them) and stay full until the joiner runs too, however slow the host
    const gate = join(await mkdtemp(join(tmpdir(), 'meshwork-sched-mesh-')), 'open')
    // 16 tasks: every slot full (8), with as many more waiting for the joiner and for the victim's runs to be taken over
    n0.changeBoard('plan', addTasks(Array.from({ length: 16 }, (_, i) => simpleTask(`t${i}`, { sim: { ...sim(400), until: gate } }))))
    const victim = mesh.nodes[3]!
    await waitFor(() => [...n0.board.snapshot().tasks.values()].some(t => t.state === 'running' && t.node === victim.peerId), { timeoutMs: 60_000, message: 'the victim never ran a task' })
    await crash(victim, scheds[3]!)
    // every run the victim started (from the run log, not n0's view, which may not show its second run yet)
    const lostTasks = [...log.runs].filter(([, runs]) => runs.some(r => r.node === victim.peerId)).map(([id]) => id)
    const joiner = await mesh.add()
    scheds.push(attachScheduler(joiner, log, 2))
    await waitFor(() => [...n0.board.snapshot().tasks.values()].some(t => t.state === 'running' && t.node === joiner.peerId), { timeoutMs: 60_000, message: 'the joiner never ran a task' })
    await writeFile(gate, '')
    const live = mesh.nodes.filter(n => n !== victim)
    await waitAllDone(n0, 16, 90_000)
    // the crashed node's runs were taken over: started again elsewhere in a later epoch
    for (const id of lostTasks) {
      const runs = log.runs.get(id)!
      expect(runs.length).toBeGreaterThanOrEqual(2)
      const final = n0.board.task(id)!
      expect(final.node).not.toBe(victim.peerId)
      expect(final.epoch).toBeGreaterThan(0)
    }
    // every other task ran exactly once
    for (const [id, runs] of log.runs) if (!(lostTasks as string[]).includes(id)) expect(runs.length, id).toBe(1)
    expect(log.runs.size).toBe(16)
    expect(n0.membership.get(victim.peerId)?.state).toBe('dead')
    expect([...log.runs.values()].some(r => r.some(x => x.node === joiner.peerId))).toBe(true)
    for (const n of live) expect(n.board.snapshot().tasks.size).toBe(16)
  })

  it('two nodes racing for the same tasks with gossip delayed 250 ms never both run one', async () => {
    mesh = await createMesh(2, { gossipDelayMs: 250 })
    await waitAllAlive(mesh.nodes)
    const log = new RunLog()
    // stealAfter 0: both nodes go for every ready task at once, the worst case for the settle protocol
    scheds = mesh.nodes.map(n => attachScheduler(n, log, 3, { stealAfterMs: 0 }))
    mesh.nodes[0]!.changeBoard('plan', addTasks(Array.from({ length: 24 }, (_, i) => simpleTask(`r${i}`, { sim: sim(100) }))))
    await waitAllDone(mesh.nodes[0]!, 24, 90_000)
    expect(log.duplicates()).toEqual([])
    expect(log.runs.size).toBe(24)
  })
})

describe('rate limits', () => {
  it('a rate-limited run burns no attempt, the node backs off and the whole mesh lowers its concurrency', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const [a, b] = mesh.nodes as [MeshNode, MeshNode]
    const log = new RunLog()
    let limited = 0
    const limitedAgent = {
      kind: 'limited',
      run: async () => {
        limited++
        return { outcome: 'rate-limited' as const, error: 'Claude AI usage limit reached', costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, retryAt: Date.now() + 4000 }
      }
    }
    const sa = attachScheduler(a, log, 2, { agent: limitedAgent })
    const sb = attachScheduler(b, log, 4)
    scheds = [sa, sb]
    a.changeBoard('plan', addTasks([simpleTask('only-a', { sim: sim(50) })]))
    // whoever runs it first: make sure a gets it by giving b no room until a has tried
    sb.slots = 0
    await waitFor(() => limited > 0, { timeoutMs: 20_000, message: 'a never ran the task' })
    expect(sa.backoffUntil).not.toBeNull()
    expect(sa.effectiveSlots()).toBe(0)
    // a usage limit with a reset time pauses the node until then (its health, in presence and status)
    expect(sa.health.state).toMatchObject({ state: 'paused', until: sa.backoffUntil })
    expect(sa.health.state.reason).toMatch(/^usage limit reached; resets /)
    sb.slots = 4
    // b hears a's back-off through presence and halves its slots
    await waitFor(() => sb.effectiveSlots() === 2, { timeoutMs: 10_000, message: 'b did not lower its concurrency' })
    await waitFor(() => b.board.task('only-a')?.state === 'done', { timeoutMs: 20_000, message: () => JSON.stringify(states(b)) })
    const t = b.board.task('only-a')!
    expect(t.failures).toBe(0)
    expect(t.attempts).toBe(2)
    expect(t.node).toBe(b.peerId)
    // once the reset time has passed, everything is back to normal
    await waitFor(() => sa.backoffUntil === null && sb.effectiveSlots() === 4, { timeoutMs: 15_000, message: 'back-off did not clear' })
    expect(sa.health.state).toEqual({ state: 'ok', reason: null, until: null })
  })

  it('a usage limit pauses every node on the same credentials (by fingerprint) until the reset, and no node on others', async () => {
    mesh = await createMesh(3)
    await waitAllAlive(mesh.nodes)
    const [a, b, c] = mesh.nodes as [MeshNode, MeshNode, MeshNode]
    const log = new RunLog()
    const resetAt = Date.now() + 6000
    const limitedAgent = {
      kind: 'limited',
      run: async () => ({ outcome: 'rate-limited' as const, error: 'Claude AI usage limit reached', costUsd: 0, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, retryAt: resetAt })
    }
    const sa = attachScheduler(a, log, 1, { agent: limitedAgent, credential: 'sha256:aaaa' })
    const sb = attachScheduler(b, log, 0, { credential: 'sha256:aaaa' })
    const sc = attachScheduler(c, log, 0, { credential: 'sha256:cccc' })
    scheds = [sa, sb, sc]
    a.changeBoard('plan', addTasks([simpleTask('limit', { sim: sim(50) })]))
    await waitFor(() => sa.health.paused, { timeoutMs: 20_000, message: 'a never hit the limit' })
    expect(sa.health.state).toMatchObject({ state: 'paused', cause: 'usage-limit', credential: 'sha256:aaaa', until: resetAt })
    // b, on the same credentials, pauses until the same reset without running anything; c does not
    await waitFor(() => sb.health.paused, { timeoutMs: 10_000, message: 'b did not pause with a' })
    expect(sb.health.state).toMatchObject({ state: 'paused', cause: 'usage-limit', until: resetAt })
    expect(sb.health.state.reason).toMatch(/same credentials/)
    expect(sc.health.paused).toBe(false)
    // b's pause is in its presence, as status shows it; the secret is nowhere, only the fingerprint
    await waitFor(() => c.membership.get(b.peerId)?.health?.state === 'paused', { timeoutMs: 10_000, message: 'b\'s pause did not reach c' })
    // the pause ends by itself at the reset
    await waitFor(() => !sa.health.paused && !sb.health.paused, { timeoutMs: 20_000, message: 'the shared pause did not end at the reset' })
    expect(Date.now()).toBeGreaterThanOrEqual(resetAt)
  })
})

/**
 * A node steals a ready task its preferred owner leaves waiting, after the
 * steal wait counted from when it first saw that owner, not from when the task
 * became ready: a task that waited long for a slot anywhere must not be taken
 * from an owner the moment it could claim it (the steal and the owner's claim
 * collided). The owner here is a node with free slots and no scheduler, so it
 * never claims, and the thief's wait is all there is.
 */
const STEAL_AFTER_MS = 3000

describe('stealing a task from its preferred owner', () => {
  it('waits the steal time from when the owner was first seen, though the task has been ready for a minute', async () => {
    mesh = await createMesh(2)
    const [owner, thief] = mesh.nodes as [MeshNode, MeshNode]
    owner.setSlots(2)
    await waitAllAlive(mesh.nodes, 15_000)
    const log = new RunLog()
    scheds = [attachScheduler(thief, log, 1, { stealAfterMs: STEAL_AFTER_MS })]
    await waitFor(() => thief.membership.get(owner.peerId)?.slots === 2, { timeoutMs: 15_000, message: 'the thief never heard the owner\'s two slots' })
    // a task the owner wins by rendezvous in the thief's view (both have room)
    let id = ''
    for (let i = 0; id === ''; i++) if (rendezvousScore(`t${i}`, owner.peerId) > rendezvousScore(`t${i}`, thief.peerId)) id = `t${i}`
    const writtenAt = Date.now()
    thief.changeBoard('plan', d => {
      addTasks([simpleTask(id)])(d)
      const t = d.tasks[id]
      if (t === undefined) throw new Error('no task')
      // ready for a minute already: the old rule stole it at once
      t.readyAt = writtenAt - 60_000
      t.createdAt = writtenAt - 60_000
    })
    await waitFor(() => log.runs.has(id), { timeoutMs: 30_000, message: `the thief never stole ${id}` })
    const claim = thief.board.task(id)?.claims[thief.peerId]
    expect(claim, 'the thief\'s claim').toBeDefined()
    // the thief saw the task no sooner than it wrote it: its claim came the steal time later at the earliest
    expect((claim?.at ?? 0) - writtenAt).toBeGreaterThanOrEqual(STEAL_AFTER_MS)
  })
})
