import { resolve } from 'node:path'
import { readPlan } from '../scheduler/plan.ts'
import { cancelTask, retryTask, submitTasks } from '../api/tasks.ts'
import { wholeRecordsNote } from '../crdt/ops.ts'
import type { Task, TaskId } from '../crdt/schema.ts'
import { nextStep } from '../api/hints.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions, clientInit } from './mesh-client.ts'
import { safeText } from '../util/text.ts'
import { connectClient, type Client } from '../api/client.ts'
import { followEntries } from '../api/follow.ts'
import { TaskFollower } from '../api/follow-request.ts'
import type { FollowEntry } from '../protocol/follow.ts'

/** States after which `submit --wait` stops following a task. */
const SETTLED: ReadonlySet<Task['state']> = new Set(['merged', 'failed', 'cancelled', 'conflict'])

/** States whose line carries the task's error (why it is back in line, failed, or waiting). */
const SHOW_ERROR: ReadonlySet<Task['state']> = new Set(['ready', 'failed', 'conflict', 'cancelled'])

export const submitCommand = defineCommand({
  name: 'submit',
  summary: summaryOf('submit'),
  usage: 'meshwork submit PLAN [--wait] [--json] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'An invalid plan is rejected whole, with every problem listed, before anything reaches the board (exit 2); the file is',
    'checked before connecting, and its ids and dependencies against the board once connected.',
    'With --wait, follows progress until every task of the plan is merged, failed, cancelled, waiting on a conflict decision,',
    'or blocked behind such a task (it cannot start until a human acts); exits 0 only if all merged.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a plan file' },
  options: {
    wait: opt.boolean({ description: 'Follow the plan until it settles; exit 0 only if every task merged.' }),
    json: opt.boolean({ description: 'Print JSON: {"tasks": [ids]} (with --wait, one JSON line per change and a final summary).' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts, [planFile]) => {
    const json = opts.json
    const file = resolve(planFile as string)
    // the file's own problems are usage errors that need no mesh: report them at once
    await readPlan(file, 'unchecked')
    const init = await clientInit(opts)
    const client = await connectClient(init)
    try {
      const snap = client.node.board.snapshot()
      // for each id already on the board, what the user can do instead of resubmitting it
      const existing = new Map<string, string>([...snap.tasks.values()].map(t => {
        const step = nextStep(t, snap)
        return [t.id as string, t.state === 'merged' ? 'it is already merged into main, so there is nothing to retry' : `it is ${t.state}${step !== null ? `; ${step.text}` : ''}`]
      }))
      const plan = await readPlan(file, existing)
      const note = wholeRecordsNote(client.node.board.snapshot().nodes, plan.tasks.length)
      const ids = await submitTasks(client, plan.tasks, plan.budgetUsd)
      if (note !== null) process.stderr.write(note + '\n')
      if (json) process.stdout.write(JSON.stringify({ tasks: ids, plan: ids[0] ?? null }) + '\n')
      else process.stdout.write(ids.join('\n') + '\n')
      if (!opts.wait) return 0
      // the plan is followed through a node that sends what changes of it; the board replica this client
      // holds would apply every change of the mesh meanwhile. Nodes of an earlier release, or no node that
      // answers the request (the replica is connected already): through the replica
      const follower = await TaskFollower.open({ ...init, ids }).catch(() => 'unsupported' as const)
      if (follower === 'unsupported') return await followReplica(client, ids, json)
      await client.close()
      try {
        return await followThrough(follower, ids, json)
      } finally {
        await follower.close()
      }
    } finally {
      await client.close()
    }
  }
})

/**
 * What `submit --wait` prints as its plan moves: a line for each state a task
 * is seen in, for each blocker and budget hold, and a summary once the plan
 * settled (every task merged, failed, cancelled, waiting on a conflict
 * decision, or behind such a task or a spent budget).
 */
class PlanPrinter {
  readonly #ids: readonly TaskId[]
  readonly #json: boolean
  readonly #last = new Map<string, string>()
  readonly #lastBlocked = new Map<string, string>()

  constructor (ids: readonly TaskId[], json: boolean) {
    this.#ids = ids
    this.#json = json
  }

  /** Prints what changed in `entries` (by task id); returns the exit code once the plan settled, else null. */
  show (entries: ReadonlyMap<string, FollowEntry>): number | null {
    const json = this.#json
    const last = this.#last
    const lastBlocked = this.#lastBlocked
    const ids = this.#ids
    for (const id of ids) {
      const t = entries.get(id)
      if (t === undefined) continue
      const line = `${t.state}|${t.attempts}|${t.node ?? ''}`
      if (last.get(id) === line) continue
      last.set(id, line)
      if (json) process.stdout.write(JSON.stringify({ id, state: t.state, attempts: t.attempts, node: t.node, error: t.error }) + '\n')
      else process.stdout.write(safeText(`${new Date().toISOString().slice(11, 19)} ${id} ${t.state}${t.state === 'running' || t.state === 'done' ? ` on ${t.nodeName} (attempt ${t.attempts})` : ''}${t.error !== null && SHOW_ERROR.has(t.state) ? `: ${t.error}` : ''}`, { newlines: true }) + '\n')
    }
    const tasks = ids.map(id => entries.get(id)).filter((t): t is FollowEntry => t !== undefined)
    const blocked = new Map(tasks.flatMap(t => t.blockedBy === null ? [] : [[t.id, t.blockedBy] as const]))
    for (const [id, by] of blocked) {
      const line = `${by.id}|${by.state}`
      if (lastBlocked.get(id) === line) continue
      lastBlocked.set(id, line)
      if (json) process.stdout.write(JSON.stringify({ id, state: 'pending', blockedBy: by.id, blockedState: by.state }) + '\n')
      else process.stdout.write(safeText(`${new Date().toISOString().slice(11, 19)} ${id} blocked: its dependency ${by.id} is ${by.state}${by.step !== null ? ` (${by.step})` : ''}`, { newlines: true }) + '\n')
    }
    // a spent budget waits on a human too: its tasks do not start until someone raises it
    for (const t of tasks) {
      if (!t.held || lastBlocked.get(t.id) === 'budget') continue
      lastBlocked.set(t.id, 'budget')
      if (json) process.stdout.write(JSON.stringify({ id: t.id, state: t.state, held: 'budget' }) + '\n')
      else process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${t.id} held: a budget is spent (\`meshwork budget\` shows it and raises it)\n`)
    }
    if (tasks.length < ids.length || !tasks.every(t => SETTLED.has(t.state) || blocked.has(t.id) || t.held)) return null
    const merged = tasks.filter(t => t.state === 'merged').length
    const held = tasks.filter(t => t.held && !blocked.has(t.id)).length
    const summary = { merged, failed: tasks.filter(t => t.state === 'failed').length, cancelled: tasks.filter(t => t.state === 'cancelled').length, conflict: tasks.filter(t => t.state === 'conflict').length, blocked: blocked.size, ...(held > 0 ? { held } : {}) }
    if (json) process.stdout.write(JSON.stringify({ summary }) + '\n')
    else process.stdout.write(`plan settled: ${summary.merged} merged, ${summary.failed} failed, ${summary.cancelled} cancelled, ${summary.conflict} waiting on a decision, ${summary.blocked} blocked behind those${held > 0 ? `, ${held} held by a spent budget` : ''}\n`)
    return merged === ids.length ? 0 : 1
  }
}

/** Follows the plan through a node's `/meshwork/follow/1` messages until it settles; a lost node is said on stderr. */
async function followThrough (follower: TaskFollower, ids: TaskId[], json: boolean): Promise<number> {
  const printer = new PlanPrinter(ids, json)
  const entries = new Map<string, FollowEntry>()
  const wanted = new Set<string>(ids)
  for (;;) {
    const batch = await follower.next((peer, why) => { process.stderr.write(`${new Date().toISOString().slice(11, 19)} lost ${peer} (${safeText(why)}); asking the bootstrap nodes again\n`) })
    // (only the plan's own: a node that sends others is not let grow this map)
    for (const e of batch.entries) if (wanted.has(e.id)) entries.set(e.id, e)
    const code = printer.show(entries)
    if (code !== null) return code
  }
}

/** `submit --wait` reads the plan at most this often when it follows through its own board replica. @default 200 ms */
const FOLLOW_PASS_MS = 200

/** Follows the plan through the client's own board replica (nodes that do not serve `/meshwork/follow/1`). */
async function followReplica (client: Client, ids: TaskId[], json: boolean): Promise<number> {
  const printer = new PlanPrinter(ids, json)
  let lastSync = Date.now()
  for (;;) {
    const code = printer.show(new Map(followEntries(client.node.board.snapshot(), ids).map(e => [e.id, e])))
    if (code !== null) return code
    // gossip brings changes; a periodic sync repairs anything missed. A pass reads the whole plan, so passes
    // are at least FOLLOW_PASS_MS apart: a busy mesh changes the board many times a second
    const passEnded = Date.now()
    await Promise.race([
      new Promise(resolve => { client.node.addEventListener('board:update', resolve, { once: true }) }),
      new Promise(resolve => setTimeout(resolve, 2000))
    ])
    const early = FOLLOW_PASS_MS - (Date.now() - passEnded)
    if (early > 0) await new Promise(resolve => setTimeout(resolve, early))
    if (Date.now() - lastSync > 5000) {
      lastSync = Date.now()
      await client.node.requestSync(client.peer)
    }
  }
}

export const cancelCommand = defineCommand({
  name: 'cancel',
  summary: summaryOf('cancel'),
  usage: 'meshwork cancel TASK_ID (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  positionals: { min: 1, max: 1, names: 'a task id' },
  options: { ...CLIENT_OPTIONS },
  run: async (opts, [id]) => {
    const client = await clientFromOptions(opts)
    try {
      const was = await cancelTask(client, id as string)
      process.stdout.write(was === 'cancelled' ? `${id as string} was already cancelled\n` : `${id as string} cancelled (was ${was})\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})

export const retryCommand = defineCommand({
  name: 'retry',
  summary: summaryOf('retry'),
  usage: 'meshwork retry TASK_ID (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  positionals: { min: 1, max: 1, names: 'a task id' },
  options: { ...CLIENT_OPTIONS },
  run: async (opts, [id]) => {
    const client = await clientFromOptions(opts)
    try {
      await retryTask(client, id as string)
      process.stdout.write(`${id as string} queued again\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})
