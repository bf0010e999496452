import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { git, gitText } from '../git/git.ts'
import { commitEnv } from '../git/worktree.ts'
import { decodeJoinToken } from '../node/join-token.ts'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateSwarmKey, writeSwarmKey } from '../node/swarm-key.ts'
import { connectClient, type Client } from '../api/client.ts'
import { submitTasks, resolveConflict, type ResolveAction } from '../api/tasks.ts'
import { parsePlan } from '../scheduler/plan.ts'
import { waitFor } from '../util/wait.ts'
import { silentLogger } from '../util/logger.ts'
import type { PeerIdString, Task, TaskId } from '../crdt/schema.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { UsageError } from '../util/errors.ts'
import { RESOLVE_KEYS } from '../tui/keys.ts'
import { access, constants as fsConstants } from 'node:fs/promises'
import { delimiter } from 'node:path'

const BIN = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'meshwork.js')

/** The demo's plan: independent tasks of different lengths, one that fails once, one long enough to be cut by a crash. */
export const DEMO_PLAN = `tasks:
  - id: users-table
    title: Add the users table
    prompt: Create a migration that adds the users table.
    priority: 2
    sim: { duration: 3s, write: { "db/001_users.sql": "create table users (id integer primary key, email text);\\n" } }
  - id: login-form
    title: Build the login form
    prompt: Build the login form on top of the users table.
    deps: [users-table]
    sim: { duration: 2s, write: { "web/login.html": "<form id=login></form>\\n" } }
  - id: users-api
    title: Add the /users endpoint
    prompt: Add the /users endpoint on top of the users table.
    deps: [users-table]
    sim: { duration: 2.5s, write: { "api/users.js": "export function users () { return [] }\\n" } }
  - id: rate-limiter
    title: Add a rate limiter
    prompt: Add a token-bucket rate limiter to the API.
    sim: { duration: 4s, write: { "api/limits.js": "export const perMinute = 60\\n" } }
  - id: backfill
    title: Backfill emails (fails once)
    prompt: Backfill the email column.
    sim: { duration: 1.5s, fail: 1, write: { "scripts/backfill.sh": "echo backfill\\n" } }
  - id: search-index
    title: Build the search index
    prompt: Add a search index over posts.
    sim: { duration: 4s, write: { "search/index.js": "export const fields = ['title']\\n" } }
  - id: port-8080
    title: Serve on port 8080
    prompt: Change the server port to 8080.
    priority: 1
    sim: { duration: 1.5s, write: { "config/server.json": "{ \\"port\\": 8080 }\\n" } }
  - id: port-9000
    title: Serve on port 9000
    prompt: Change the server port to 9000.
    priority: 1
    sim: { duration: 2.5s, write: { "config/server.json": "{ \\"port\\": 9000 }\\n" } }
  - id: api-docs
    title: Write the API docs
    prompt: Document every endpoint.
    deps: [users-api, login-form]
    sim: { duration: 1.5s, write: { "docs/api.md": "# API\\n" } }
`

type DemoAgent = 'sim' | 'claude'

interface DemoNode { name: string, proc: ChildProcess, data: string, peerId: string, join: string, stderr: string[] }

async function startNode (dir: string, name: string, keyFile: string | null, join: string | null, agent: DemoAgent): Promise<DemoNode> {
  const data = join === null && keyFile === null ? '' : resolve(dir, name, 'data')
  const args = ['node', '--repo', resolve(dir, name, 'repo'), '--data', data, '--name', name, '--listen', '/ip4/127.0.0.1/tcp/0',
    '--agent', agent, '--slots', '2', '--suspect-after', '1s', '--dead-after', '3s', '--grace', '2s', '--log-level', 'info']
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
  }, { timeoutMs: 120_000, intervalMs: 100, message: `node ${name} did not start within 2 minutes` })
  return { name, proc, data, peerId: info.peerId, join: info.join, stderr }
}

async function onPath (exe: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    try {
      await access(join(dir, exe), fsConstants.X_OK)
      return true
    } catch {}
  }
  return false
}

/** The demo's live footer on a terminal: tasks by state and what runs where, with elapsed times. */
function liveLine (clockText: string, tasks: readonly Task[], name: (peer: string | null) => string): string {
  const count = (state: Task['state']): number => tasks.filter(t => t.state === state).length
  const running = tasks.filter(t => t.state === 'running').map(t => `${t.id}@${name(t.node)} ${((Date.now() - (t.startedAt ?? Date.now())) / 1000).toFixed(1)}s`)
  const waiting = tasks.filter(t => t.state === 'pending' || t.state === 'ready' || t.state === 'claimed').length
  return `${clockText}  [merged ${count('merged')}/${tasks.length} · waiting ${waiting} · done ${count('done') + count('merging')} · conflict ${count('conflict')}] running: ${running.length === 0 ? '-' : running.join(', ')}`
}

/** The two tasks that both set the server port: the demo's deliberate conflict. */
export const CONFLICT_PAIR: readonly string[] = ['port-8080', 'port-9000']

/**
 * The node the demo kills: not the merge leader, running a long task (2.5 s or
 * more, for half a second already), and holding no part of the deliberate
 * conflict (a port task running there, or done there and not yet collected by
 * the leader): a port task run again after the other merged would start from a
 * main that has it, and the conflict the demo promises would not happen. Until
 * both port tasks are placed it picks nobody: one still ready may be claimed by
 * the victim a moment later (the demo's view of a claim can lag it).
 */
function pickVictim (nodes: readonly DemoNode[], tasks: readonly Task[], leader: PeerIdString | null): { node: DemoNode, task: TaskId } | null {
  // a port task not yet placed may still go to the victim (its claim can be on the way): wait until both are
  const unplaced = tasks.some(t => CONFLICT_PAIR.includes(t.id) && (t.state === 'pending' || t.state === 'ready'))
  if (unplaced) return null
  for (const n of nodes) {
    if (n.peerId === leader || n.proc.exitCode !== null) continue
    // a claim names its node only in `claims` (`node` is set when the run starts)
    const holdsConflict = tasks.some(t => CONFLICT_PAIR.includes(t.id) && (
      (t.state === 'claimed' && t.claims[n.peerId]?.epoch === t.epoch) ||
      (t.node === n.peerId && (t.state === 'running' || (t.state === 'done' && (leader === null || !t.holders.includes(leader)))))))
    if (holdsConflict) continue
    const long = tasks.find(t => t.state === 'running' && t.node === n.peerId && t.sim !== null && t.sim.durationMs >= 2500 && Date.now() - (t.startedAt ?? 0) > 500)
    if (long !== undefined) return { node: n, task: long.id }
  }
  return null
}

const clock = (t0: number): string => `${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s`

async function makeSampleRepo (repo: string): Promise<void> {
  await mkdir(repo, { recursive: true })
  await git(['init', '-q', '-b', 'main'], { cwd: repo })
  await writeFile(join(repo, 'README.md'), '# sample app\n\nA small web app that meshwork\'s demo builds on.\n')
  await git(['add', '.'], { cwd: repo })
  await git(['commit', '-q', '-m', 'sample app'], { cwd: repo, env: commitEnv() })
}

/** The key that settles a conflict with "theirs" besides `t`: Enter, the demo's default. */
const ENTER_KEYS = new Set(['\r', '\n'])

/**
 * Single key presses on a terminal (raw mode), for the conflict prompt: the
 * same keys as the TUI's inbox (o ours, t theirs, r rerun, a agent, x
 * abandon; Enter takes theirs). The demo's loop goes on printing progress
 * while a prompt waits. Ctrl-C still interrupts.
 */
class KeyPrompt {
  #wanted: ((action: ResolveAction) => void) | null = null
  #onData = (chunk: Buffer): void => {
    const text = chunk.toString('utf8')
    if (text === '\x03') { this.close(); process.kill(process.pid, 'SIGINT'); return }
    const key = text.toLowerCase()
    const action = ENTER_KEYS.has(key) ? 'theirs' : RESOLVE_KEYS[key]
    if (action === undefined || this.#wanted === null) return
    const done = this.#wanted
    this.#wanted = null
    done(action)
  }

  constructor () {
    process.stdin.setRawMode(true)
    process.stdin.on('data', this.#onData)
    process.stdin.resume()
  }

  /** Resolves with the action of the next key that names one. */
  ask (): Promise<ResolveAction> {
    return new Promise(resolveKey => { this.#wanted = resolveKey })
  }

  close (): void {
    process.stdin.off('data', this.#onData)
    if (process.stdin.isTTY === true) process.stdin.setRawMode(false)
    process.stdin.pause()
  }
}

/** The prompt line of a conflict: the TUI's keys, one press each. */
export function decisionPrompt (taskId: string): string {
  const keyOf = (action: ResolveAction): string => Object.entries(RESOLVE_KEYS).find(([, a]) => a === action)?.[0] ?? '?'
  return `settle it with one key: ${keyOf('ours')} ours keeps main, ${keyOf('theirs')} theirs takes ${taskId}, ${keyOf('rerun')} rerun, ${keyOf('agent')} agent resolves it, ${keyOf('abandon')} abandon (Enter: theirs)`
}

export const demoCommand = defineCommand({
  name: 'demo',
  summary: summaryOf('demo'),
  usage: 'meshwork demo [--agent sim|claude] [--clean]',
  details: [
    'No credentials, nothing but 127.0.0.1. Three real `meshwork node` processes share one board, run a sample',
    'plan with dependencies in git worktrees, retry a task that fails once, survive one node killed with kill -9',
    'mid-run, merge every branch into main in dependency order, and stop at a real merge conflict: on a terminal',
    'you decide (ours, theirs, rerun, agent, abandon); without one the demo takes "theirs". It ends with a summary and',
    'the path of the merged repository. With --agent claude the same plan runs with real Claude Code (the',
    '`claude` executable and its credentials: ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN); that costs money and',
    'takes minutes, and whether the two port tasks conflict is then up to the model.'
  ].join('\n'),
  options: {
    agent: opt.choice(['sim', 'claude'], { arg: 'KIND', default: 'sim', description: 'sim (built in, no model, under a minute) or claude (real Claude Code).' }),
    clean: opt.boolean({ description: 'Remove the demo\'s workspace at the end instead of keeping it for a look.' })
  },
  run: async (opts) => {
    const agent = opts.agent
    if (agent === 'claude' && !await onPath('claude')) throw new UsageError('--agent claude needs the `claude` executable (Claude Code) on PATH; install it or run the demo with the sim agent.')
    const t0 = Date.now()
    const dir = await mkdtemp(join(tmpdir(), 'meshwork-demo-'))
    // on a terminal a live footer (tasks by state, what runs where) sits under the event lines
    const tty = process.stdout.isTTY === true
    let footer = ''
    const clearFooter = (): void => { if (tty && footer !== '') process.stdout.write('\r\x1b[2K') }
    const drawFooter = (): void => { if (tty && footer !== '') process.stdout.write(footer.slice(0, Math.max(20, (process.stdout.columns ?? 80) - 1))) }
    const out = (line: string): void => { clearFooter(); process.stdout.write(`${clock(t0)}  ${line}\n`); drawFooter() }
    const key = generateSwarmKey()
    const keyFile = join(dir, 'swarm.key')
    await writeSwarmKey(keyFile, key)
    await makeSampleRepo(resolve(dir, 'alpha', 'repo'))
    out(`mesh ${key.meshId}: starting 3 nodes on 127.0.0.1 (workspace ${dir})`)
    const nodes: DemoNode[] = []
    let client: Client | null = null
    let closePrompt = (): void => {}
    const stopAll = async (): Promise<void> => {
      closePrompt()
      await client?.close().catch(() => {})
      for (const n of nodes) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM')
      await Promise.all(nodes.map(async n => {
        if (n.proc.exitCode !== null || n.proc.signalCode !== null) return
        await new Promise(resolveExit => { n.proc.once('exit', resolveExit); setTimeout(() => { n.proc.kill('SIGKILL'); resolveExit(null) }, 8000) })
      }))
    }
    try {
      nodes.push(await startNode(dir, 'alpha', keyFile, null, agent))
      const first = nodes[0] as DemoNode
      nodes.push(...await Promise.all([startNode(dir, 'beta', null, first.join, agent), startNode(dir, 'gamma', null, first.join, agent)]))
      const names = new Map(nodes.map(n => [n.peerId, n.name]))
      const name = (peer: string | null): string => peer === null ? '?' : names.get(peer) ?? peer.slice(-8)
      client = await connectClient({ key, bootstrap: decodeJoinToken(first.join).bootstrap, timeoutMs: 20_000, logger: silentLogger })
      const c = client
      await waitFor(async () => (await c.node.fetchMembers(c.peer)).members.filter(m => m.state === 'alive').length === 3, { timeoutMs: 30_000, message: 'the three nodes did not see each other' })
      out('3 nodes alive: alpha (has the project), beta and gamma (cloned it from the mesh), 2 slots each')
      const tasks = parsePlan(DEMO_PLAN, new Set(c.node.board.snapshot().tasks.keys()), 'demo plan')
      await submitTasks(c, tasks)
      out(`submitted ${tasks.length} tasks (users-table -> login-form, users-api -> api-docs; two tasks both set the server port)`)
      const last = new Map<string, string>()
      const decided = new Set<string>()
      // on a terminal, conflicts are settled with one key press while progress keeps printing
      const prompt = process.stdin.isTTY === true && process.stdout.isTTY === true ? new KeyPrompt() : null
      closePrompt = () => { prompt?.close() }
      let asking: { conflictId: string, done: Promise<void> } | null = null
      let wake = (): void => {}
      let killed: { node: DemoNode, task: TaskId } | null = null
      // generous for a loaded machine; time spent waiting for your key does not count
      const deadlineMs = agent === 'sim' ? 10 * 60_000 : 60 * 60_000
      let deadline = Date.now() + deadlineMs
      for (;;) {
        const snap = c.node.board.snapshot()
        const mine = tasks.map(t => snap.tasks.get(t.id)).filter((t): t is Task => t !== undefined)
        for (const t of mine) {
          const key2 = `${t.state}|${t.epoch}`
          if (last.get(t.id) === key2) continue
          last.set(t.id, key2)
          const id = t.id.padEnd(13)
          if (t.state === 'running') out(`${id} running on ${name(t.node)} (attempt ${t.attempts})`)
          else if (t.state === 'done') out(`${id} done on ${name(t.node)}, branch meshwork/${t.id} @ ${(t.head ?? '').slice(0, 7)}`)
          else if (t.state === 'merged') out(`${id} merged into main @ ${(t.mergeCommit ?? '').slice(0, 7)}`)
          else if (t.state === 'ready' && t.epoch > 0 && t.error !== null) out(`${id} failed, will retry: ${t.error}`)
          else if (t.state === 'ready' && t.epoch > 0) out(`${id} back to ready, epoch ${t.epoch} (its node is gone)`)
          else if (t.state === 'failed') out(`${id} FAILED: ${t.error ?? ''}`)
          else if (t.state === 'cancelled') out(`${id} cancelled`)
        }
        for (const conflict of snap.conflicts.values()) {
          // asked again when a decision could not be carried out (an agent that left markers): the leader clears it
          if (conflict.state !== 'open' || conflict.decision !== null) continue
          if (asking?.conflictId === conflict.id) continue
          if (decided.has(conflict.id) && prompt === null) continue
          const t = snap.tasks.get(conflict.taskId)
          if (decided.has(conflict.id)) out(`${conflict.id}: the decision was not carried out: ${conflict.error ?? 'no reason given'}`)
          else out(`CONFLICT ${conflict.id}: ${conflict.taskId} (${t?.title ?? ''}) conflicts with main in ${conflict.files.join(', ')}`)
          decided.add(conflict.id)
          if (prompt === null) {
            await resolveConflict(c, conflict.id, 'theirs', 'decided in meshwork demo')
            out(`decision for ${conflict.id}: theirs (no terminal to ask: the demo takes theirs)`)
            continue
          }
          if (asking !== null) continue
          out(`         ${decisionPrompt(conflict.taskId)}`)
          const cid: string = conflict.id
          const askedAt = Date.now()
          // progress goes on printing while the prompt waits for its key
          asking = {
            conflictId: cid,
            done: prompt.ask().then(async action => {
              await resolveConflict(c, cid, action, 'decided in meshwork demo')
              out(`decision for ${cid}: ${action}`)
              deadline += Date.now() - askedAt
              asking = null
              wake()
            })
          }
          asking.done.catch((err: unknown) => { out(`decision for ${cid} failed: ${(err as Error).message}`); decided.delete(cid); asking = null; wake() })
        }
        if (killed === null) {
          const victim = pickVictim(nodes, mine, snap.main.leader)
          if (victim !== null) {
            victim.node.proc.kill('SIGKILL')
            killed = { node: victim.node, task: victim.task }
            out(`killing ${victim.node.name} (kill -9) while it runs ${victim.task}: the mesh must notice and run it elsewhere`)
          }
        }
        if (tty) {
          clearFooter()
          footer = (asking !== null ? `[o/t/r/a/x for ${asking.conflictId}] ` : '') + liveLine(clock(t0), mine, name)
          drawFooter()
        }
        if (mine.length === tasks.length && mine.every(t => t.state === 'merged' || t.state === 'failed' || t.state === 'cancelled')) break
        if (asking === null && Date.now() > deadline) throw new Error(`the demo did not finish within ${deadlineMs / 60_000} minutes; its workspace is ${dir} (node logs: */data)`)
        await Promise.race([
          new Promise(resolveUpdate => { c.node.addEventListener('board:update', resolveUpdate, { once: true }) }),
          new Promise(resolveTick => setTimeout(resolveTick, 250)),
          new Promise<void>(resolveWake => { wake = resolveWake })
        ])
      }
      clearFooter()
      footer = ''
      const snap = c.node.board.snapshot()
      const merged = tasks.filter(t => snap.tasks.get(t.id)?.state === 'merged').length
      // a task dropped by the human's own "abandon" is the outcome asked for, not a failure
      const abandoned = [...snap.conflicts.values()].filter(x => x.decision?.action === 'abandon' && snap.tasks.get(x.taskId)?.state === 'cancelled').map(x => x.taskId as string)
      const repo = resolve(dir, 'alpha', 'repo')
      await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === snap.main.head, { timeoutMs: 20_000, message: 'alpha did not follow the mesh main' })
      const history = await gitText(['log', '--first-parent', '--format=%h %s', 'main'], { cwd: repo })
      out('')
      out(`summary: ${merged} of ${tasks.length} tasks merged in ${((Date.now() - t0) / 1000).toFixed(1)} s; main @ ${(snap.main.head ?? '').slice(0, 7)} (leader ${name(snap.main.leader)}, term ${snap.main.term})`)
      if (abandoned.length > 0) out(`abandoned by your decision: ${abandoned.join(', ')} (cancelled, its changes dropped)`)
      if (killed !== null) out(`${killed.node.name} was killed mid-run; ${killed.task} ran again on ${name(snap.tasks.get(killed.task)?.node ?? null)}`)
      out('main, first-parent history (one merge commit per task, in dependency order):')
      for (const line of history.split('\n')) out(`  ${line}`)
      out(opts.clean ? 'workspace removed (--clean)' : `the merged repository: ${repo}   (nodes' data: ${dir}/*/data)`)
      return merged + abandoned.length === tasks.length ? 0 : 1
    } finally {
      await stopAll()
      if (opts.clean) await rm(dir, { recursive: true, force: true })
    }
  }
})
