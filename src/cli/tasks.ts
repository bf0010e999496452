import { resolve } from 'node:path'
import { readPlan } from '../scheduler/plan.ts'
import { cancelTask, retryTask, submitTasks } from '../api/tasks.ts'
import type { PeerIdString, Task, TaskId } from '../crdt/schema.ts'
import { blockedByAll } from '../scheduler/dag.ts'
import { nextStep } from '../api/hints.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'
import { safeText } from '../util/text.ts'
import { waitingOnBudget } from '../scheduler/budget.ts'

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
    const client = await clientFromOptions(opts)
    try {
      const snap = client.node.board.snapshot()
      // for each id already on the board, what the user can do instead of resubmitting it
      const existing = new Map<string, string>([...snap.tasks.values()].map(t => {
        const step = nextStep(t, snap)
        return [t.id as string, t.state === 'merged' ? 'it is already merged into main, so there is nothing to retry' : `it is ${t.state}${step !== null ? `; ${step.text}` : ''}`]
      }))
      const plan = await readPlan(file, existing)
      const ids = await submitTasks(client, plan.tasks, plan.budgetUsd)
      if (json) process.stdout.write(JSON.stringify({ tasks: ids, plan: ids[0] ?? null }) + '\n')
      else process.stdout.write(ids.join('\n') + '\n')
      if (!opts.wait) return 0
      return await follow(client, ids, json)
    } finally {
      await client.close()
    }
  }
})

/** `submit --wait` reads the plan's tasks at most this often (a line for each state it sees). @default 200 ms */
const FOLLOW_PASS_MS = 200

async function follow (client: Awaited<ReturnType<typeof clientFromOptions>>, ids: TaskId[], json: boolean): Promise<number> {
  const last = new Map<string, string>()
  const lastBlocked = new Map<string, string>()
  let lastSync = Date.now()
  const name = (peer: PeerIdString | null): string => peer === null ? '-' : client.node.board.snapshot().nodes.get(peer)?.name ?? peer.slice(-8)
  for (;;) {
    const snap = client.node.board.snapshot()
    for (const id of ids) {
      const t = snap.tasks.get(id)
      if (t === undefined) continue
      const line = `${t.state}|${t.attempts}|${t.node ?? ''}`
      if (last.get(id) === line) continue
      last.set(id, line)
      if (json) process.stdout.write(JSON.stringify({ id, state: t.state, attempts: t.attempts, node: t.node, error: t.error }) + '\n')
      else process.stdout.write(safeText(`${new Date().toISOString().slice(11, 19)} ${id} ${t.state}${t.state === 'running' || t.state === 'done' ? ` on ${name(t.node)} (attempt ${t.attempts})` : ''}${t.error !== null && SHOW_ERROR.has(t.state) ? `: ${t.error}` : ''}`, { newlines: true }) + '\n')
    }
    const tasks = ids.map(id => snap.tasks.get(id)).filter((t): t is Task => t !== undefined)
    const blockers = blockedByAll(snap)
    const blocked = new Map(tasks.flatMap(t => { const by = blockers.get(t.id); return by === undefined ? [] : [[t.id as string, by] as const] }))
    for (const [id, by] of blocked) {
      const line = `${by.id}|${by.state}`
      if (lastBlocked.get(id) === line) continue
      lastBlocked.set(id, line)
      const dep = snap.tasks.get(by.id)
      const step = dep !== undefined ? nextStep(dep, snap) : null
      if (json) process.stdout.write(JSON.stringify({ id, state: 'pending', blockedBy: by.id, blockedState: by.state }) + '\n')
      else process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${id} blocked: its dependency ${by.id} is ${by.state}${step !== null ? ` (${step.text})` : ''}\n`)
    }
    // a spent budget waits on a human too: its tasks do not start until someone raises it
    const onBudget = waitingOnBudget(snap)
    for (const t of tasks) {
      if (!onBudget.has(t.id) || lastBlocked.get(t.id) === 'budget') continue
      lastBlocked.set(t.id, 'budget')
      if (json) process.stdout.write(JSON.stringify({ id: t.id, state: t.state, held: 'budget' }) + '\n')
      else process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${t.id} held: a budget is spent (\`meshwork budget\` shows it and raises it)\n`)
    }
    if (tasks.length === ids.length && tasks.every(t => SETTLED.has(t.state) || blocked.has(t.id) || onBudget.has(t.id))) {
      const merged = tasks.filter(t => t.state === 'merged').length
      const held = tasks.filter(t => onBudget.has(t.id) && !blocked.has(t.id)).length
      const summary = { merged, failed: tasks.filter(t => t.state === 'failed').length, cancelled: tasks.filter(t => t.state === 'cancelled').length, conflict: tasks.filter(t => t.state === 'conflict').length, blocked: blocked.size, ...(held > 0 ? { held } : {}) }
      if (json) process.stdout.write(JSON.stringify({ summary }) + '\n')
      else process.stdout.write(`plan settled: ${summary.merged} merged, ${summary.failed} failed, ${summary.cancelled} cancelled, ${summary.conflict} waiting on a decision, ${summary.blocked} blocked behind those${held > 0 ? `, ${held} held by a spent budget` : ''}\n`)
      return merged === ids.length ? 0 : 1
    }
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
