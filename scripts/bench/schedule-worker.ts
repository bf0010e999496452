/**
 * One meshwork node in its own process for `scripts/bench-schedule.ts`: a
 * MeshNode plus a Scheduler running the sim agent, driven over Node IPC (see
 * ./schedule-protocol.ts). Started with
 * `child_process.fork(thisFile, [JSON.stringify(config)], { execPath: process.execPath })`.
 *
 * It reports every run start, every task state change its board goes through
 * and the scheduler's log events, each with a `Date.now()` timestamp. The
 * designated merger worker plays the merge leader with an instant stand-in
 * (the real leader's git work is bench:merge's subject): it turns every `done`
 * task whose dependencies are all merged into `merged` (no git), so the
 * benchmark measures scheduling only.
 *
 * The worker exits when the parent disconnects, so a crashed parent never
 * leaves nodes behind.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import * as A from '@automerge/automerge'
import { MeshNode } from '../../src/node/mesh-node.ts'
import { benchNodeInit, sendToParent, workerConfig } from './lib/worker.ts'
import { Scheduler } from '../../src/scheduler/scheduler.ts'
import { simAgent } from '../../src/agent/sim.ts'
import { addTasks, simpleTask } from '../../src/crdt/ops.ts'
import * as lifecycle from '../../src/crdt/lifecycle.ts'
import type { TaskId } from '../../src/crdt/schema.ts'
import { createLogger } from '../../src/util/logger.ts'
import type {
  BenchTask, LogLine, ProgressReply, ScheduleCommand, ScheduleWorkerConfig, ScheduleWorkerEvent, StatsReply, StatusReply, TaskDump
} from './schedule-protocol.ts'

const send = (e: ScheduleWorkerEvent): void => { sendToParent(e) }
const config = workerConfig<ScheduleWorkerConfig>('schedule-worker')

/** Every log line of the node and the scheduler goes to the parent (JSON format), nothing to the console. */
const logger = createLogger(config.name, {
  level: 'info',
  format: 'json',
  write: text => {
    try {
      const { time, level, ns: _ns, event, ...fields } = JSON.parse(text) as { time: number, level: string, ns: string, event: string } & Record<string, unknown>
      const line: LogLine = { time, level, event, fields }
      send({ ev: 'log', line })
    } catch {}
  }
})

const node = new MeshNode(benchNodeInit(config, config.name, { slots: config.slots, heartbeatMs: config.heartbeatMs, logger: logger.child('node') }))

let scheduler: Scheduler | null = null
const lastState = new Map<string, string>()
/** Event-loop lag and CPU time from the moment the plan reaches this node. */
const lag = monitorEventLoopDelay({ resolution: 10 })
let cpuAtPlan: NodeJS.CpuUsage | null = null
const counts = { presenceIn: 0, changesOut: 0, changesIn: 0 }
node.addEventListener('presence', () => {
  if (cpuAtPlan !== null) counts.presenceIn++
  checkAcks()
})

// acknowledgement latency of this node's claims, observed the way the scheduler's settle step sees it
const ackMs: number[] = []
const allAckedMs: number[] = []
const openClaims: Array<{ hash: string, at: number, waiting: Set<string> }> = []

function trackClaims (changes: Uint8Array[]): void {
  for (const bytes of changes) {
    const c = A.decodeChange(bytes)
    if (c.message !== 'tasks:claim' || c.hash === undefined) continue
    openClaims.push({ hash: c.hash, at: Date.now(), waiting: new Set(node.membership.alive().map(m => m.peerId)) })
  }
}

function checkAcks (): void {
  const now = Date.now()
  for (let i = openClaims.length - 1; i >= 0; i--) {
    const c = openClaims[i] as typeof openClaims[number]
    for (const peer of [...c.waiting]) {
      const m = node.membership.get(peer)
      if (m === undefined || m.state !== 'alive') { c.waiting.delete(peer); continue }
      if (node.board.seenBy(m.heads, c.hash) === true) {
        c.waiting.delete(peer)
        ackMs.push(now - c.at)
      }
    }
    if (c.waiting.size === 0) {
      allAckedMs.push(now - c.at)
      openClaims.splice(i, 1)
    } else if (now - c.at > 30_000) {
      openClaims.splice(i, 1)
    }
  }
}

function reportStates (ids: readonly string[]): void {
  const at = Date.now()
  const changes: Array<{ id: string, from: string | null, to: string, epoch: number, node: string | null }> = []
  for (const id of ids) {
    const t = node.board.task(id)
    if (t === undefined) continue
    const from = lastState.get(id) ?? null
    if (from === t.state) continue
    if (cpuAtPlan === null) {
      cpuAtPlan = process.cpuUsage()
      lag.enable()
    }
    lastState.set(id, t.state)
    changes.push({ id, from, to: t.state, epoch: t.epoch, node: t.node })
  }
  if (changes.length > 0) send({ ev: 'states', at, changes })
}

// ---------------------------------------------------------------------------
// the stand-in merge leader (merger worker only)

let mergeQueued = false
/** The stand-in merges nothing in git: every task's merge commit reads as this placeholder oid. */
const MERGE_COMMIT = '0'.repeat(40)

/** Marks `merged` every done task whose deps are all merged, in one board change (topological within it). */
function mergeDone (): void {
  const snap = node.board.snapshot()
  const merged = new Set<string>()
  for (const t of snap.tasks.values()) if (t.state === 'merged') merged.add(t.id)
  const batch: TaskId[] = []
  for (let progress = true; progress;) {
    progress = false
    for (const t of snap.tasks.values()) {
      if (t.state !== 'done' || merged.has(t.id)) continue
      if (!t.deps.every(d => merged.has(d))) continue
      merged.add(t.id)
      batch.push(t.id)
      progress = true
    }
  }
  if (batch.length === 0) return
  const now = Date.now()
  node.changeBoard('bench:merge', d => {
    // the stand-in leads (a node elects only itself): peers refuse a merge written by a node that does not
    if (String(d.main.leader) !== node.peerId) lifecycle.electLeader(d, node.peerId, Number(d.main.term) + 1)
    // the merge leader's two steps, in one change: into the batch, then merged
    for (const id of batch) {
      lifecycle.startMerge(d, id)
      lifecycle.merge(d, id, MERGE_COMMIT, now)
    }
  })
}

function queueMerge (): void {
  if (!config.merger || mergeQueued) return
  mergeQueued = true
  setImmediate(() => {
    mergeQueued = false
    try { mergeDone() } catch (err) { logger.error('bench:merge-failed', { error: (err as Error).message }) }
  })
}

// ---------------------------------------------------------------------------

node.addEventListener('board:update', evt => {
  if (cpuAtPlan !== null) {
    if (evt.detail.local) counts.changesOut++
    else counts.changesIn++
  }
  if (evt.detail.local) trackClaims(evt.detail.changes)
  else if (openClaims.length > 0) checkAcks()
  reportStates(evt.detail.tasks)
  queueMerge()
})

function submit (tasks: BenchTask[]): { at: number } {
  const at = Date.now()
  node.changeBoard('plan', addTasks(tasks.map(t => simpleTask(t.id, {
    deps: t.deps,
    sim: { durationMs: t.durationMs, write: {}, append: {}, fail: 0 }
  })), at))
  return { at }
}

function status (): StatusReply {
  return { peerId: node.peerId, alive: node.membership.alive().map(m => m.peerId), tasks: node.board.snapshot().tasks.size }
}

function progress (): ProgressReply {
  const states: Record<string, number> = {}
  for (const t of node.board.snapshot().tasks.values()) states[t.state] = (states[t.state] ?? 0) + 1
  return { states, running: scheduler?.busy() ?? [] }
}

function dump (): TaskDump[] {
  return [...node.board.snapshot().tasks.values()].map(t => ({
    id: t.id,
    deps: [...t.deps],
    state: t.state,
    epoch: t.epoch,
    attempts: t.attempts,
    node: t.node,
    createdAt: t.createdAt,
    startedAt: t.startedAt,
    doneAt: t.doneAt,
    mergedAt: t.mergedAt
  }))
}

function stats (): StatsReply {
  const cpu = process.cpuUsage(cpuAtPlan ?? undefined)
  const ms = (ns: number): number => Number.isFinite(ns) ? Math.round(ns / 1e5) / 10 : 0
  return { lagP50Ms: ms(lag.percentile(50)), lagP99Ms: ms(lag.percentile(99)), lagMaxMs: ms(lag.max), cpuMs: Math.round((cpu.user + cpu.system) / 1000), ...counts, ackMs, allAckedMs }
}

async function stop (): Promise<void> {
  await scheduler?.stop(0)
  await node.stop()
}

async function handle (c: ScheduleCommand): Promise<unknown> {
  switch (c.cmd) {
    case 'status': return status()
    case 'submit': return submit(c.tasks)
    case 'progress': return progress()
    case 'dump': return dump()
    case 'stats': return stats()
    case 'stop': await stop(); return undefined
    default: {
      const never: never = c
      throw new Error(`unknown command ${JSON.stringify(never)}`)
    }
  }
}

process.on('message', (msg: ScheduleCommand) => {
  handle(msg).then(
    data => {
      send({ ev: 'reply', reqId: msg.reqId, at: Date.now(), ok: true, data })
      if (msg.cmd === 'stop') setImmediate(() => { process.exit(0) })
    },
    err => { send({ ev: 'reply', reqId: msg.reqId, at: Date.now(), ok: false, error: (err as Error)?.stack ?? String(err) }) }
  )
})

process.on('disconnect', () => { process.exit(0) })

async function main (): Promise<void> {
  await node.start()
  scheduler = new Scheduler({
    node,
    agent: simAgent(),
    slots: config.slots,
    logger: logger.child('sched'),
    onRunStart: (taskId, epoch) => { send({ ev: 'run', taskId, epoch, node: node.peerId, at: Date.now() }) }
  })
  scheduler.start()
  if (config.merger) setInterval(queueMerge, 250).unref()
  send({ ev: 'ready', peerId: node.peerId, addrs: node.addrs(), at: Date.now() })
}

main().catch(err => {
  send({ ev: 'failed', error: (err as Error)?.stack ?? String(err) })
  setImmediate(() => { process.exit(1) })
})
