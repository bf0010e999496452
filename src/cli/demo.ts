import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateSwarmKey, writeSwarmKey } from '../node/swarm-key.ts'
import { connectClient, type Client } from '../api/client.ts'
import { submitTasks } from '../api/tasks.ts'
import { parsePlan } from '../scheduler/plan.ts'
import { waitFor } from '../util/wait.ts'
import { silentLogger } from '../util/logger.ts'
import type { Task } from '../crdt/schema.ts'
import { flag, type Command } from './command.ts'

const BIN = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'meshwork.js')

/** The demo's plan: independent tasks of different lengths, one that fails once, one long enough to be cut by a crash. */
export const DEMO_PLAN = `tasks:
  - id: users-table
    title: Add the users table
    prompt: Create a migration that adds the users table.
    priority: 2
    sim: { duration: 3s }
  - id: login-form
    title: Build the login form
    prompt: Build the login form component.
    sim: { duration: 2s }
  - id: rate-limiter
    title: Add a rate limiter
    prompt: Add a token-bucket rate limiter to the API.
    sim: { duration: 4s }
  - id: flaky-migration
    title: Backfill emails (fails once)
    prompt: Backfill the email column.
    sim: { duration: 1.5s, fail: 1 }
  - id: search-index
    title: Build the search index
    prompt: Add a search index over posts.
    sim: { duration: 5s }
  - id: audit-log
    title: Audit log
    prompt: Record every admin action in an audit log.
    sim: { duration: 2.5s }
  - id: docs
    title: Write the API docs
    prompt: Document every endpoint.
    sim: { duration: 2s }
  - id: metrics
    title: Export metrics
    prompt: Export request metrics.
    sim: { duration: 3s }
  - id: cleanup
    title: Remove dead code
    prompt: Remove unused modules.
    sim: { duration: 1s }
`

interface DemoNode { name: string, proc: ChildProcess, data: string, peerId: string, join: string, stderr: string[] }

async function startNode (dir: string, name: string, keyFile: string | null, join: string | null): Promise<DemoNode> {
  const data = join === null && keyFile === null ? '' : resolve(dir, name, 'data')
  const args = ['node', '--repo', resolve(dir, name, 'repo'), '--data', data, '--name', name, '--listen', '/ip4/127.0.0.1/tcp/0',
    '--agent', 'sim', '--slots', '2', '--suspect-after', '1s', '--dead-after', '3s', '--grace', '2s', '--log-level', 'info']
  if (keyFile !== null) args.push('--swarm-key', keyFile)
  if (join !== null) args.push('--join', join)
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  const stderr: string[] = []
  proc.stderr?.on('data', (c: Buffer) => { stderr.push(c.toString()) })
  const info = await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`node ${name} exited (${proc.exitCode}): ${stderr.join('').slice(-500)}`)
    try {
      return JSON.parse(await readFile(join === null && keyFile === null ? '' : resolve(data, 'node.json'), 'utf8')) as { peerId: string, join: string }
    } catch {
      return null
    }
  }, { timeoutMs: 30_000, intervalMs: 100, message: `node ${name} did not start` })
  return { name, proc, data, peerId: info.peerId, join: info.join, stderr }
}

const clock = (t0: number): string => `${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s`

export const demoCommand: Command = {
  name: 'demo',
  summary: 'Start a local three-node mesh on loopback, run a sample plan with the sim agent and show it work.',
  usage: 'meshwork demo [--keep]',
  details: [
    'No credentials, nothing but 127.0.0.1. Three real `meshwork node` processes share one board, claim the',
    'sample plan\'s tasks, retry the one that fails once, and one node is killed (kill -9) mid-run: its task',
    'goes back to the mesh and runs elsewhere. Preview: task branches, merging and the conflict question come',
    'with the execution and merge-leader work, so tasks end at `done`.'
  ].join('\n'),
  options: {
    keep: { type: 'boolean', description: 'Leave the nodes\' data directories in place and print where they are.' }
  },
  run: async (opts) => {
    const t0 = Date.now()
    const dir = await mkdtemp(join(tmpdir(), 'meshwork-demo-'))
    const out = (line: string): void => { process.stdout.write(`${clock(t0)}  ${line}\n`) }
    const key = generateSwarmKey()
    const keyFile = join(dir, 'swarm.key')
    await writeSwarmKey(keyFile, key)
    out(`mesh ${key.meshId}: starting 3 nodes on 127.0.0.1 (workspace ${dir})`)
    const nodes: DemoNode[] = []
    let client: Client | null = null
    const stopAll = async (): Promise<void> => {
      await client?.close().catch(() => {})
      for (const n of nodes) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM')
      await Promise.all(nodes.map(async n => {
        if (n.proc.exitCode !== null || n.proc.signalCode !== null) return
        await new Promise(resolveExit => { n.proc.once('exit', resolveExit); setTimeout(() => { n.proc.kill('SIGKILL'); resolveExit(null) }, 8000) })
      }))
    }
    try {
      nodes.push(await startNode(dir, 'alpha', keyFile, null))
      const first = nodes[0] as DemoNode
      nodes.push(...await Promise.all([startNode(dir, 'beta', null, first.join), startNode(dir, 'gamma', null, first.join)]))
      const names = new Map(nodes.map(n => [n.peerId, n.name]))
      client = await connectClient({ key, bootstrap: [first.join].flatMap(j => JSON.parse(Buffer.from(j.slice(4), 'base64url').toString()).a as string[]), timeoutMs: 20_000, logger: silentLogger })
      const c = client
      await waitFor(async () => (await c.node.fetchMembers(c.peer)).members.filter(m => m.state === 'alive').length === 3, { timeoutMs: 20_000, message: 'the three nodes did not see each other' })
      out('3 nodes alive: alpha, beta, gamma (2 slots each)')
      const tasks = parsePlan(DEMO_PLAN, new Set(c.node.board.snapshot().tasks.keys()), 'demo plan')
      await submitTasks(c, tasks)
      out(`submitted ${tasks.length} tasks`)
      const last = new Map<string, string>()
      let killed: { node: DemoNode, task: string } | null = null
      const deadline = Date.now() + 60_000
      for (;;) {
        const snap = c.node.board.snapshot()
        const mine = tasks.map(t => snap.tasks.get(t.id as never)).filter((t): t is Task => t !== undefined)
        for (const t of mine) {
          const key2 = `${t.state}|${t.epoch}`
          if (last.get(t.id) === key2) continue
          last.set(t.id, key2)
          const where = t.node === null ? '' : ` on ${names.get(t.node) ?? t.node.slice(-8)}`
          if (t.state === 'running') out(`${t.id.padEnd(16)} running${where} (attempt ${t.attempts})`)
          else if (t.state === 'done') out(`${t.id.padEnd(16)} done${where}`)
          else if (t.state === 'ready' && t.error !== null) out(`${t.id.padEnd(16)} failed, will retry: ${t.error}`)
          else if (t.state === 'ready' && t.epoch > 0) out(`${t.id.padEnd(16)} back to ready, epoch ${t.epoch} (its node is gone)`)
          else if (t.state === 'failed') out(`${t.id.padEnd(16)} FAILED: ${t.error ?? ''}`)
        }
        if (killed === null) {
          const victim = nodes.find(n => n.name === 'gamma')
          const running = mine.find(t => t.state === 'running' && t.node === victim?.peerId && t.sim !== null && t.sim.durationMs >= 2500)
          if (victim !== undefined && running !== undefined && Date.now() - (running.startedAt ?? 0) > 500) {
            victim.proc.kill('SIGKILL')
            killed = { node: victim, task: running.id }
            out(`killing gamma (kill -9) while it runs ${running.id}: the mesh must notice and rerun it`)
          }
        }
        if (mine.length === tasks.length && mine.every(t => t.state === 'done' || t.state === 'failed')) break
        if (Date.now() > deadline) throw new Error('the demo did not finish within 60 s; run `meshwork demo --keep` and look at the node logs')
        await Promise.race([
          new Promise(resolveUpdate => { c.node.addEventListener('board:update', resolveUpdate, { once: true }) }),
          new Promise(resolveTick => setTimeout(resolveTick, 250))
        ])
      }
      const snap = c.node.board.snapshot()
      const perNode = new Map<string, number>()
      for (const t of tasks) {
        const done = snap.tasks.get(t.id as never)
        if (done?.node != null) perNode.set(names.get(done.node) ?? '?', (perNode.get(names.get(done.node) ?? '?') ?? 0) + 1)
      }
      const view = await c.node.fetchMembers(c.peer).catch(() => null)
      const gamma = view?.members.find(m => m.peerId === killed?.node.peerId)
      out('')
      out(`summary: ${tasks.length} tasks done in ${((Date.now() - t0) / 1000).toFixed(1)} s; by node: ${[...perNode].map(([n, k]) => `${n} ${k}`).join(', ')}`)
      if (killed !== null) out(`gamma was killed mid-run and is ${gamma?.state ?? 'gone'}; ${killed.task} ran again on ${names.get(snap.tasks.get(killed.task as never)?.node ?? '') ?? '?'}`)
      out(flag(opts, 'keep') ? `nodes' data (boards, identities, logs) kept in ${dir}` : `workspace ${dir} (pass --keep to keep it)`)
      out('next: `meshwork init` and `meshwork node` on your own machines (README: "Start a mesh on real VMs")')
      return 0
    } finally {
      await stopAll()
      if (!flag(opts, 'keep')) await import('node:fs/promises').then(async fs => { await fs.rm(dir, { recursive: true, force: true }) })
    }
  }
}
