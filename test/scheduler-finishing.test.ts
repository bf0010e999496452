/**
 * A finished run leaves its slot as soon as its work is committed: the branch
 * goes to the leader, the worktree is removed and `done` is written in the
 * background while the slot runs the next task (src/scheduler/scheduler.ts,
 * `FINISHING_PER_SLOT`). Real git (an `Execution` over a temp repository), a
 * real mesh node's board, and a hand-off hook the test holds open.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { join } from 'node:path'
import { createMesh, tempDir, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { initRepo, commitFiles } from './helpers/git.ts'
import { addTasks, setMeshBudget, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { waitFor } from '../src/util/wait.ts'
import { createLogger } from '../src/util/logger.ts'
import { gitText } from '../src/git/git.ts'
import { Execution } from '../src/node/exec.ts'
import { STUCK_RUN_GRACE_MS, type Scheduler } from '../src/scheduler/scheduler.ts'
import { rendezvousOwner } from '../src/scheduler/claims.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import type { PeerIdString, Task, TaskId } from '../src/crdt/schema.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

const sim = (file: string) => ({ durationMs: 20, write: { [file]: `${file}\n` }, append: {}, fail: 0 })

/** A repository with one commit and an Execution (its worktrees in their own dir) over it. */
async function execution (node: MeshNode): Promise<{ repo: string, exec: Execution }> {
  const dir = await tempDir('meshwork-finishing-')
  mesh!.dirs.push(dir)
  const repo = await initRepo(join(dir, 'repo'))
  await commitFiles(repo, { 'README.md': '# project\n' }, 'initial')
  const exec = new Execution({ node, repo, worktreesDir: join(dir, 'worktrees'), branch: 'main', logger: createLogger('x', { level: 'silent' }) })
  await exec.start()
  return { repo, exec }
}

/** A hand-off hook the test opens task by task; `calls` in order, each with the signal it got. */
function heldHandoff (takenBy: PeerIdString[]) {
  const gates = new Map<string, () => void>()
  const calls: Array<{ task: string, head: string, signal: AbortSignal }> = []
  const hook = async (t: Task, head: string, signal: AbortSignal): Promise<PeerIdString[]> => {
    calls.push({ task: t.id, head, signal })
    return await new Promise<PeerIdString[]>(resolve => {
      gates.set(t.id, () => { resolve(takenBy) })
      // as BranchHandoff does: a run stopped (node stopping past its grace, claim lost) is done without the leader
      signal.addEventListener('abort', () => { resolve([]) }, { once: true })
    })
  }
  const open = (id: string): void => {
    const g = gates.get(id)
    if (g === undefined) throw new Error(`no hand-off of ${id} is waiting`)
    g()
  }
  return { hook, calls, open }
}

/** One turn of the event loop: a scheduler pass queued by a board change before this call has run when it resolves. */
const afterSchedulerPass = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)); await new Promise(resolve => setImmediate(resolve)) }

describe('a finished run frees its slot before its hand-off ends', () => {
  it('the next task runs while the branch is handed off; done waits for the leader; one hand-off per slot at a time; one finished run per slot in the background, then the slot waits', async () => {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const [runner, leader] = mesh.nodes as [MeshNode, MeshNode]
    // the other node leads (it writes its own election), so the hand-off's peer is a holder at done
    leader.changeBoard('leader:elected', d => { lifecycle.electLeader(d, leader.peerId, 1) })
    await waitFor(() => runner.board.snapshot().main.leader === leader.peerId, { timeoutMs: 10_000, message: 'the runner never saw the election' })
    const { repo, exec } = await execution(runner)
    const held = heldHandoff([leader.peerId])
    const log = new RunLog()
    const started: string[] = []
    const committed: string[] = []
    const logger = createLogger('runner', { level: 'info', format: 'json', write: line => { const e = JSON.parse(line) as { event: string, task?: string }; if (e.event === 'task:committed' && e.task !== undefined) committed.push(e.task) } })
    scheds = [attachScheduler(runner, log, 1, {
      logger,
      prepare: exec.prepare,
      finish: exec.finish,
      cleanup: exec.cleanup,
      handOff: held.hook,
      onRunStart: id => { started.push(id); log.record(runner.peerId, id, 0) }
    })]
    runner.changeBoard('plan', addTasks([simpleTask('a', { sim: sim('a.txt') }), simpleTask('b', { sim: sim('b.txt') })]))

    // the first run committed and its hand-off waits: the other runs on the one slot meanwhile, and the first is not done yet
    await waitFor(() => held.calls.length === 1, { timeoutMs: 20_000, message: () => `no run reached its hand-off: ${JSON.stringify([runner.board.task('a'), runner.board.task('b')])}` })
    const first = held.calls[0]!.task
    const second = first === 'a' ? 'b' : 'a'
    await waitFor(() => committed.includes(second), { timeoutMs: 20_000, message: () => `${second} never ran and committed while ${first}'s hand-off was held: started ${started.join(',')}, ${second} ${JSON.stringify(runner.board.task(second))}` })
    await afterSchedulerPass()
    expect(started).toEqual([first, second])
    expect(runner.board.task(first)?.state).toBe('running')
    expect(runner.board.task(second)?.state).toBe('running')
    // one hand-off per slot at once: the second waits for its turn here, not in the leader's queue
    expect(held.calls.map(c => c.task)).toEqual([first])
    // the commit is on the branch the leader is asked to take
    expect(held.calls[0]!.head).toBe(await gitText(['rev-parse', `refs/heads/meshwork/${first}`], { cwd: repo }))

    // two finished runs in the background on one slot is past FINISHING_PER_SLOT: a new task waits for one to end
    runner.changeBoard('plan', addTasks([simpleTask('c', { sim: sim('c.txt') })]))
    await afterSchedulerPass()
    expect(runner.board.task('c')?.state).toBe('ready')
    expect(started).toEqual([first, second])

    // the watchdog that gives back a task the board says runs here but no run holds leaves a run finishing
    // in the background alone: past twice its grace (the scheduler's passes run every tick meanwhile), the
    // first is still running at its first epoch and attempt
    const heldSince = Date.now()
    await waitFor(() => Date.now() - heldSince > 2 * STUCK_RUN_GRACE_MS, { timeoutMs: 20_000, message: 'the clock did not move' })
    await afterSchedulerPass()
    expect(runner.board.task(first)).toMatchObject({ state: 'running', epoch: 0, attempts: 1, error: null })

    // the leader takes the first: it is done with the leader as a second holder, the second's hand-off
    // gets its turn, and the slot takes c
    held.open(first)
    await waitFor(() => runner.board.task(first)?.state === 'done', { timeoutMs: 20_000, message: () => JSON.stringify(runner.board.task(first)) })
    expect([...runner.board.task(first)!.holders].sort()).toEqual([runner.peerId, leader.peerId].sort())
    await waitFor(() => held.calls.length === 2, { timeoutMs: 20_000, message: () => `${second}'s hand-off never started after ${first}'s ended` })
    expect(held.calls[1]!.task).toBe(second)
    await waitFor(() => committed.includes('c'), { timeoutMs: 20_000, message: () => `c never ran after ${first}'s hand-off ended: ${JSON.stringify(runner.board.task('c'))}` })
    held.open(second)
    await waitFor(() => held.calls.length === 3, { timeoutMs: 20_000, message: () => `c's hand-off never started after ${second}'s ended` })
    held.open('c')
    await waitFor(() => [second, 'c'].every(id => runner.board.task(id)?.state === 'done'), { timeoutMs: 20_000, message: () => JSON.stringify([second, 'c'].map(id => runner.board.task(id))) })
    expect(log.duplicates()).toEqual([])
    for (const id of ['a', 'b', 'c']) expect(runner.board.task(id)?.attempts).toBe(1)
  })

  it('done is written once the hand-off ends, without waiting for the worktree\'s removal; the run stays this node\'s until that ends', async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const { exec } = await execution(node)
    // a removal the test holds (a large checkout takes a while to delete)
    let release: () => void = () => {}
    const removing = new Promise<void>(resolve => { release = resolve })
    const cleaned: string[] = []
    const cleanup = async (t: Task): Promise<void> => { cleaned.push(t.id); await removing; await exec.cleanup(t) }
    const s = attachScheduler(node, new RunLog(), 1, { prepare: exec.prepare, finish: exec.finish, cleanup })
    scheds = [s]
    node.changeBoard('plan', addTasks([simpleTask('a', { sim: sim('a.txt') })]))
    await waitFor(() => node.board.task('a')?.state === 'done', { timeoutMs: 20_000, message: () => `a not done while its worktree is removed: ${JSON.stringify(node.board.task('a'))}` })
    expect(cleaned).toEqual(['a'])
    expect(s.busy()).toEqual(['a'])
    release()
    await waitFor(() => s.busy().length === 0, { timeoutMs: 20_000, message: () => `a still finishing after its removal: ${JSON.stringify(s.busy())}` })
  })

  it('stop waits for a hand-off in the background; past its grace the hand-off is stopped and the task is done with this node as holder', async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const { exec } = await execution(node)
    const held = heldHandoff([])
    const s = attachScheduler(node, new RunLog(), 1, { prepare: exec.prepare, finish: exec.finish, cleanup: exec.cleanup, handOff: held.hook })
    scheds = [s]
    node.changeBoard('plan', addTasks([simpleTask('a', { sim: sim('a.txt') })]))
    await waitFor(() => held.calls.length === 1, { timeoutMs: 20_000, message: () => `a never reached its hand-off: ${JSON.stringify(node.board.task('a'))}` })
    expect(s.busy()).toEqual(['a'])
    // the hand-off ends while stop waits: stop resolves only once a's done is written
    const stopping = s.stop(60_000)
    held.open('a')
    await stopping
    expect(node.board.task('a')?.state).toBe('done')

    // a second scheduler, whose hand-off never ends: stop(0) stops the wait, and the task is done here only
    const held2 = heldHandoff([])
    const s2 = attachScheduler(node, new RunLog(), 1, { prepare: exec.prepare, finish: exec.finish, cleanup: exec.cleanup, handOff: held2.hook })
    scheds = [s2]
    node.changeBoard('plan', addTasks([simpleTask('b', { sim: sim('b.txt') })]))
    await waitFor(() => held2.calls.length === 1, { timeoutMs: 20_000, message: () => `b never reached its hand-off: ${JSON.stringify(node.board.task('b'))}` })
    await s2.stop(0)
    expect(held2.calls[0]!.signal.aborted).toBe(true)
    const b = node.board.task('b')!
    expect(b.state).toBe('done')
    expect([...b.holders]).toEqual([node.peerId])
  })
  it('a budget a finished run spent holds the next task while that run\'s done (with its cost) waits for its hand-off', async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const { exec } = await execution(node)
    const held = heldHandoff([])
    const started: string[] = []
    scheds = [attachScheduler(node, new RunLog(), 1, { prepare: exec.prepare, prepareEarly: exec.prepareEarly, dropEarly: exec.dropEarly, finish: exec.finish, cleanup: exec.cleanup, handOff: held.hook, onRunStart: id => { started.push(id) } })]
    // a mesh budget of $0.50 and two runs of $0.50: the first spends it all
    node.changeBoard('budget', d => { setMeshBudget(d, { usd: 0.5, at: Date.now(), by: node.peerId }) })
    const costly = (file: string) => ({ ...sim(file), costUsd: 0.5 })
    node.changeBoard('plan', addTasks([simpleTask('a', { sim: costly('a.txt'), priority: 2 }), simpleTask('b', { sim: costly('b.txt'), priority: 1 })]))
    await waitFor(() => held.calls.length === 1, { timeoutMs: 20_000, message: () => `a never reached its hand-off: ${JSON.stringify(node.board.task('a'))}` })
    // the slot is free and a's cost is not on the board yet (its done waits for the hand-off): b is held all the same
    expect(node.board.task('a')).toMatchObject({ state: 'running', costUsd: 0 })
    await afterSchedulerPass()
    expect(started).toEqual(['a'])
    expect(node.board.task('b')?.state).toBe('ready')
    held.open('a')
    await waitFor(() => node.board.task('a')?.state === 'done', { timeoutMs: 20_000, message: () => `a was not done: ${JSON.stringify(node.board.task('a'))}` })
    expect(node.board.task('a')?.costUsd).toBe(0.5)
    await afterSchedulerPass()
    expect(started).toEqual(['a'])
    expect(node.board.task('b')).toMatchObject({ state: 'ready', attempts: 0 })
  })

  it('the slot is free once the agent succeeded: the next task runs while the first one\'s work is still being committed', async () => {
    mesh = await createMesh(1)
    await waitAllAlive(mesh.nodes)
    const node = mesh.nodes[0]!
    const { repo, exec } = await execution(node)
    const commits: string[] = []
    let release: (() => void) | null = null
    const held = new Promise<void>(resolve => { release = resolve })
    const started: string[] = []
    // the first run's commit waits for the test; every later one goes straight through
    const finish = async (t: Task): Promise<string | null> => {
      commits.push(t.id)
      if (commits.length === 1) await held
      return await exec.finish(t)
    }
    const log = new RunLog()
    scheds = [attachScheduler(node, log, 1, { prepare: exec.prepare, finish, cleanup: exec.cleanup, onRunStart: id => { started.push(id); log.record(node.peerId, id, 0) } })]
    node.changeBoard('plan', addTasks([simpleTask('a', { sim: sim('a.txt') }), simpleTask('b', { sim: sim('b.txt') })]))
    await waitFor(() => commits.length === 1, { timeoutMs: 20_000, message: () => `no run reached its commit: ${JSON.stringify([node.board.task('a'), node.board.task('b')])}` })
    const first = commits[0]!
    const second = first === 'a' ? 'b' : 'a'
    // one slot, and the first run's commit is held: the second starts and reaches its own commit all the same
    await waitFor(() => commits.length === 2, { timeoutMs: 20_000, message: () => `${second} never ran while ${first}'s commit was held: started ${started.join(',')}, ${JSON.stringify(node.board.task(second))}` })
    expect(started).toEqual([first, second])
    expect(node.board.task(first)?.state).toBe('running')
    release!()
    await waitFor(() => ['a', 'b'].every(id => node.board.task(id)?.state === 'done'), { timeoutMs: 20_000, message: () => JSON.stringify([node.board.task('a'), node.board.task('b')]) })
    for (const id of ['a', 'b']) {
      expect(node.board.task(id)?.head).toBe(await gitText(['rev-parse', `refs/heads/meshwork/${id}`], { cwd: repo }))
      expect(node.board.task(id)?.attempts).toBe(1)
    }
    expect(log.duplicates()).toEqual([])
  })
  it('two nodes whose runs hand off at once each take the task the mesh\'s rendezvous gives it, not both the head of the queue', async () => {
    // a and b run; c (no scheduler) writes the plans, which reach a and b by gossip at about the same moment
    mesh = await createMesh(3)
    await waitAllAlive(mesh.nodes)
    const [a, b, c] = mesh.nodes as [MeshNode, MeshNode, MeshNode]
    // c runs nothing: with no slots it is no runner of the mesh's rendezvous
    c.setSlots(0)
    await waitFor(() => [a, b].every(n => n.membership.get(c.peerId)?.slots === 0), { timeoutMs: 20_000, message: 'c\'s slots never reached a and b' })
    const runners = [a.peerId, b.peerId]
    /** The first id of `prefix`0, `prefix`1, … whose rendezvous owner among a and b is `peer`. */
    const ownedBy = (prefix: string, peer: string): string => {
      for (let i = 0; ; i++) if (rendezvousOwner(`${prefix}${i}`, runners) === peer) return `${prefix}${i}`
    }
    const claims: Array<{ node: string, task: string }> = []
    const lost: string[] = []
    const loggerOf = (name: string) => createLogger(name, { level: 'info', format: 'json', write: line => {
      const e = JSON.parse(line) as { event: string, task?: string, reason?: string }
      if (e.event === 'task:claimed' || e.event === 'task:stolen') claims.push({ node: name, task: e.task ?? '' })
      if (e.event === 'task:released' && (e.reason ?? '').startsWith('lost the claim')) lost.push(`${name}: ${e.task ?? ''}`)
    } })
    const held = heldHandoff([])
    const log = new RunLog()
    for (const [node, name] of [[a, 'a'], [b, 'b']] as const) {
      const { exec } = await execution(node)
      // no steals while the test looks (a slow host would let one node take the other's task)
      scheds.push(attachScheduler(node, log, 1, { logger: loggerOf(name), prepare: exec.prepare, finish: exec.finish, cleanup: exec.cleanup, handOff: held.hook, stealAfterMs: 120_000 }))
    }
    // one run each (tasks ranked alike go by the rendezvous), both held in their hand-off: each node has a
    // slot free that the other sees taken (its task is still running on the board)
    const first = [ownedBy('wa', a.peerId), ownedBy('wb', b.peerId)]
    c.changeBoard('plan', addTasks(first.map(id => simpleTask(id, { sim: sim(`${id}.txt`) }))))
    await waitFor(() => held.calls.length === 2, { timeoutMs: 30_000, message: () => `both runs did not reach their hand-off: ${JSON.stringify(held.calls.map(x => x.task))}, claims ${JSON.stringify(claims)}` })
    expect(held.calls.map(x => x.task).sort()).toEqual([...first].sort())
    await waitFor(() => first.every(id => a.board.task(id as TaskId)?.state === 'running' && b.board.task(id as TaskId)?.state === 'running'), { timeoutMs: 20_000, message: 'the runs were not seen running on both nodes' })
    // the head of the queue is b's by the rendezvous, the next a's
    const head = ownedBy('hb', b.peerId)
    const next = ownedBy('ha', a.peerId)
    const before = claims.length
    c.changeBoard('plan', addTasks([simpleTask(head, { priority: 2, sim: sim(`${head}.txt`) }), simpleTask(next, { priority: 1, sim: sim(`${next}.txt`) })]))
    // (their hand-offs wait for the first ones': one a slot at a time)
    await waitFor(() => [head, next].every(id => log.runs.has(id)), { timeoutMs: 30_000, message: () => `the second runs did not start: claims ${JSON.stringify(claims.slice(before))}, lost ${lost.join(', ')}` })
    const later = claims.slice(before)
    // each took its own at once; neither went for the head and lost it
    expect(later.find(x => x.node === 'a')?.task).toBe(next)
    expect(later.find(x => x.node === 'b')?.task).toBe(head)
    expect(lost).toEqual([])
    for (const id of first) held.open(id)
    await waitFor(() => held.calls.length === 4, { timeoutMs: 30_000, message: () => `the second runs never reached their hand-off: ${JSON.stringify(held.calls.map(x => x.task))}` })
    for (const id of [head, next]) held.open(id)
    await waitFor(() => [...first, head, next].every(id => c.board.task(id as TaskId)?.state === 'done'), { timeoutMs: 30_000, message: () => JSON.stringify([...first, head, next].map(id => c.board.task(id as TaskId)?.state)) })
    expect(log.duplicates()).toEqual([])
  })
})
