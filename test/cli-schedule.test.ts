import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startCliMesh, killAllChildren, removeDir, describeResult, watchStatusJson, type CliNode, type StatusWatch } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

interface TaskJson { id: string, state: string, node: string | null, attempts: number, error: string | null }

let dir = ''
const nodes: CliNode[] = []
let conn: string[] = []
/** One status client for the whole file, through node a (never the one killed). */
let watch: StatusWatch | null = null

async function tasks (): Promise<TaskJson[]> {
  return ((await watch!.fresh()) as { tasks: TaskJson[] }).tasks
}

/** Every node's log lines about one task, for failure messages. */
function history (id: string): string {
  return nodes.flatMap(n => n.stderr().split('\n').filter(l => l.includes(`"task":"${id}"`)).map(l => `${n.name}: ${l}`)).join('\n')
}

beforeAll(async () => {
  const mesh = await startCliMesh('meshwork-sched-', ['--agent', 'sim', '--slots', '2', '--suspect-after', '2s', '--dead-after', '6s', '--log-level', 'info'])
  dir = mesh.dir
  nodes.push(...mesh.nodes)
  conn = mesh.conn
  watch = await watchStatusJson(conn)
})

afterAll(async () => {
  await watch?.close()
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
})

// timeouts a little above the minimum: under load a live node declared dead too early loses its run,
// which is correct behaviour but would make "the rest run once" flaky
describe('scheduling through the CLI', () => {
  it('a task whose node is killed -9 mid-run reruns elsewhere and finishes; the rest run once', async () => {
    const plan = join(dir, 'plan.yaml')
    const ids = Array.from({ length: 6 }, (_, i) => `job-${i}`)
    // every run is held until the test creates `release`: the victim is killed while it runs,
    // however slow the host (a fixed duration could end before a status call sees the run)
    const release = join(dir, 'release-1')
    await writeFile(plan, 'tasks:\n' + ids.map(id => `  - id: ${id}\n    prompt: do ${id}\n    sim: { duration: 0s, until: ${JSON.stringify(release)} }\n`).join(''))
    // every node has its repository and runs its scheduler (it advertises its slots)
    await waitFor(async () => ((await watch!.fresh()) as { nodes: Array<{ slots: number }> }).nodes.filter(n => n.slots === 2).length === 3,
      { timeoutMs: 90_000, intervalMs: 100, message: 'the nodes never advertised their slots' })
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    expect(sub.stdout.trim().split('\n')).toEqual(ids)

    // pick a victim among the non-bootstrap nodes the moment its own log says it started a task
    // (read from its stderr, not by polling status: under load a status call can take longer than a task)
    let victim: CliNode | undefined
    let lost: string[] = []
    let finishedByVictim: string[] = []
    await waitFor(() => {
      victim = nodes.slice(1).find(n => /"event":"task:started"/.test(n.stderr()))
      return victim !== undefined
    }, { timeoutMs: 90_000, intervalMs: 50, message: () => `no task ever started on nodes b or c; node a log:\n${nodes[0]!.stderr().slice(-3000)}` })
    // and the rest of the mesh has seen it running there (so the rerun is a second attempt)
    let seenRunning: string[] = []
    await waitFor(async () => {
      seenRunning = (await tasks()).filter(t => t.state === 'running' && t.node === victim!.info.peerId).map(t => t.id)
      return seenRunning.length > 0
    }, { timeoutMs: 60_000, intervalMs: 100, message: () => `the mesh never saw ${victim!.name}'s run` })
    victim!.proc.kill('SIGKILL')
    await victim!.exited
    // what the victim really had when it died, from its own log: started and not finished
    const events = victim!.stderr().split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { event: string, task?: string })
    const started = new Set(events.filter(e => e.event === 'task:started').map(e => e.task))
    const finished = new Set(events.filter(e => e.event === 'task:done').map(e => e.task))
    lost = ids.filter(id => started.has(id) && !finished.has(id))
    finishedByVictim = ids.filter(id => finished.has(id))
    await writeFile(release, '')

    let seen: TaskJson[] = []
    const final = await waitFor(async () => {
      seen = await tasks()
      return seen.length === ids.length && seen.every(t => t.state === 'merged') ? seen : null
    }, { timeoutMs: 90_000, intervalMs: 100, message: () => `tasks did not all finish: ${JSON.stringify(seen)}` })

    for (const t of final) {
      if (lost.includes(t.id)) {
        // running on the victim when it died: run again elsewhere; a second attempt if the mesh had
        // seen the first (a start the victim could not broadcast before dying counts for nothing)
        expect(t.node, `${t.id} finished on the killed node`).not.toBe(victim!.info.peerId)
        if (seenRunning.includes(t.id)) expect(t.attempts, `${t.id} was seen running on the victim`).toBe(2)
        else expect([1, 2]).toContain(t.attempts)
      } else if (finishedByVictim.includes(t.id)) {
        // done on the victim: kept if the leader had collected its branch, else run again (SPEC)
        expect(t.attempts === 1 || (t.attempts === 2 && t.node !== victim!.info.peerId), `${t.id}: attempts ${t.attempts} on ${t.node ?? '?'}`).toBe(true)
      } else {
        expect(t.attempts, `${t.id} ran more than once (victim ${victim!.name}, lost ${lost.join(',')}):\n${history(t.id)}`).toBe(1)
      }
    }
    // the victim did real work: it died running tasks, or held finished ones
    expect(lost.length + finishedByVictim.length).toBeGreaterThan(0)
    // the survivors explain what they did in their logs
    const logs = nodes.filter(n => n !== victim).map(n => n.stderr()).join('\n')
    expect(logs).toMatch(/"event":"task:released".*"reason":"node \S+ is dead"/)
  })

  it('cancel and retry through the CLI', async () => {
    const plan = join(dir, 'plan2.yaml')
    // held until the test creates `release`: it cannot finish before the cancel, however slow the host
    const release = join(dir, 'release-2')
    await writeFile(plan, `tasks:\n  - id: slow\n    prompt: slow\n    sim: { duration: 0s, until: ${JSON.stringify(release)} }\n`)
    expect((await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })).code).toBe(0)
    await waitFor(async () => (await tasks()).find(t => t.id === 'slow')?.state === 'running', { timeoutMs: 30_000, intervalMs: 100, message: 'slow never ran' })
    const c = await runCli(['cancel', 'slow', ...conn], { timeoutMs: 90_000 })
    expect(c.code, describeResult(['cancel'], c)).toBe(0)
    expect(c.stdout).toMatch(/cancelled \(was running\)/)
    const runner = nodes.find(n => n.running() && /"event":"task:started","task":"slow"/.test(n.stderr()))
    await waitFor(() => runner !== undefined && /"event":"task:lost","task":"slow".*cancelled/.test(runner.stderr()), { timeoutMs: 20_000, message: 'the running node never stopped the cancelled run' })
    const again = await runCli(['retry', 'done-nothing', ...conn], { timeoutMs: 90_000 })
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/no task "done-nothing"/)
    const r = await runCli(['retry', 'slow', ...conn], { timeoutMs: 90_000 })
    expect(r.code, describeResult(['retry'], r)).toBe(0)
    await waitFor(async () => (await tasks()).find(t => t.id === 'slow')?.state === 'running', { timeoutMs: 30_000, intervalMs: 300, message: 'slow did not run again after retry' })
    const t = (await tasks()).find(x => x.id === 'slow')!
    expect(t.attempts).toBe(1)
    await writeFile(release, '')
    await waitFor(async () => (await tasks()).find(x => x.id === 'slow')?.state === 'merged', { timeoutMs: 60_000, intervalMs: 300, message: 'slow did not merge once released' })
  })

  it('submit --wait --json: a failed task settles the plan with its dependents blocked behind it, exit 1', async () => {
    const plan = join(dir, 'plan3.yaml')
    await writeFile(plan, [
      'tasks:',
      '  - id: w-ok', '    prompt: fine', '    sim: { duration: 300ms }',
      '  - id: w-bad', '    prompt: always fails', '    maxAttempts: 1', '    sim: { duration: 200ms, fail: 9 }',
      '  - id: w-child', '    prompt: after bad', '    deps: [w-bad]',
      '  - id: w-grandchild', '    prompt: after child', '    deps: [w-child, w-ok]', ''
    ].join('\n'))
    const r = await runCli(['submit', plan, '--wait', '--json', ...conn], { timeoutMs: 120_000 })
    expect(r.code, describeResult(['submit', '--wait'], r)).toBe(1)
    const lines = r.stdout.trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
    expect(lines[0]).toEqual({ plan: 'w-ok', tasks: ['w-ok', 'w-bad', 'w-child', 'w-grandchild'] })
    expect(lines.at(-1)).toEqual({ summary: { merged: 1, failed: 1, cancelled: 0, conflict: 0, blocked: 2 } })
    expect(lines).toContainEqual({ id: 'w-grandchild', state: 'pending', blockedBy: 'w-bad', blockedState: 'failed' })
    expect(lines).toContainEqual(expect.objectContaining({ id: 'w-bad', state: 'failed' }))
  })

  it('submit: a plan with problems exits 2 at once, before looking for a mesh', async () => {
    const plan = join(dir, 'bad.yaml')
    await writeFile(plan, 'tasks:\n  - id: Bad Id\n    prompt: ""\n  - id: a\n    prompt: x\n    deps: [b]\n  - id: b\n    prompt: y\n    deps: [a]\n')
    // an address nobody listens on: a client would wait for its --timeout there
    const r = await runCli(['submit', plan, '--swarm-key', join(dir, 'swarm.key'), '--bootstrap', '/ip4/127.0.0.1/tcp/9/p2p/12D3KooWLRPJAA5o6RB1pnZqDvsdgqm6bjTDbRKNdHKHNsMk6AQp', '--timeout', '60s'], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['submit', 'bad.yaml'], r)).toBe(2)
    expect(r.stderr).toMatch(/malformed id/)
    expect(r.stderr).toMatch(/empty prompt/)
    expect(r.stderr).toMatch(/dependency cycle: (a -> b -> a|b -> a -> b)/)
    expect(r.stderr).toMatch(/nothing was submitted/)
  })
})
