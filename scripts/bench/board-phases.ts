/**
 * The measurements of `npm run bench:board`, each over real node processes
 * (see ./board-cluster.ts and ./board-worker.ts). Each phase starts its own mesh with
 * a fresh swarm key and kills it before returning, success or failure.
 */
import { availableParallelism, loadavg } from 'node:os'
import { generateSwarmKey } from '../../src/node/swarm-key.ts'
import {
  CpuMeter, Worker, childPids, delay, killMesh, pollUntil, readCpuTicks, readLoRxBytes, readRss, readTcpRx, startBurners, startMesh,
  stopBurners, tcpRxDelta, waitAllAlive, waitQuiet, type CpuShare, type Mesh, type UpdateEvent
} from './board-cluster.ts'
import { LIFECYCLE_STEPS, type LifecycleStep, type SaveReply, type StatusReply, type WroteReply } from './board-protocol.ts'
import { max, median, min, percentile } from './lib/stats.ts'
import { CLK_TCK } from './lib/proc.ts'

export interface BenchContext {
  root: string
  quick: boolean
  /** How long a phase waits for other work on the host to calm down before it starts anyway. */
  quietBoundMs: number
  /** Diagnostic: libp2p's connection monitor does not abort connections on a ping timeout. */
  diagNoPingAbort: boolean
  log: (line: string) => void
}

/** The host's state when a phase started. */
export interface Background {
  quiet: boolean
  waitedMs: number
  /** CPU used by other processes (not this benchmark) just before the phase, % of all cores. */
  otherPct: number | null
  loadavg: number[]
}

async function background (ctx: BenchContext): Promise<Background> {
  const q = await waitQuiet(QUIET_OTHER_PCT, ctx.quietBoundMs, ctx.log)
  return { ...q, loadavg: loadavg().map(v => Math.round(v * 100) / 100) }
}

const HEARTBEAT_MS = 1000

/** Spawn concurrency after the first node: enough to overlap process boot with I/O, not so much that 2 cores starve the running nodes. */
const SPAWN_CONCURRENCY = Math.max(2, availableParallelism() * 2)

export interface Spread { min: number | null, median: number | null, max: number | null }
const spread = (v: number[]): Spread => ({ min: min(v), median: median(v), max: max(v) })

/** Other processes may use at most this share of all cores before a phase starts (see `waitQuiet`). */
const QUIET_OTHER_PCT = 20

// ---------------------------------------------------------------------------
// mesh start-up shared by the phases

export interface Formation {
  background: Background
  /** Nodes that answered the status request after formation (a starved node may not within 15 s). */
  statusAnswered: number
  size: number
  /** Node processes the mesh ran in (equal to `size` when every node had its own). */
  processes: number
  /** Nodes per process after the first node (which always runs alone: it is the bootstrap). */
  perProcess: number
  started: number
  failedStarts: Array<{ name: string, error: string }>
  spawnMs: number
  formed: boolean
  /** ms from the last node's start until every node saw every other alive (or the bound). */
  formationMs: number
  /** Fewest peers one started node saw alive, out of `expectedAlive` (the other started nodes). */
  minAlive: number
  expectedAlive: number
  /** Every started node saw every other started node alive within the bound. */
  startedAllAlive: boolean
  /** From a status sweep after formation. */
  connections: Spread
  /** Connections closed so far, summed over the nodes (no node had stopped). */
  connectionsClosed: number
  boardMeshPeers: Spread
  /** warn/error log events of the nodes, summed (debug events are in `debugEvents`). */
  warnings: Record<string, number>
  debugEvents: Record<string, number>
  lastErrors: Record<string, string>
}

async function statusSweep (workers: Worker[]): Promise<StatusReply[]> {
  const out = await Promise.all(workers.filter(w => !w.exited && w.readyAt !== null).map(async w => {
    try { return await w.request<StatusReply>({ cmd: 'status' }, 15_000) } catch { return null }
  }))
  return out.filter((s): s is StatusReply => s !== null)
}

function sumCounts (list: Array<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const c of list) for (const [k, v] of Object.entries(c)) out[k] = (out[k] ?? 0) + v
  return out
}

interface MeshInit {
  reportUpdates?: boolean
  traceRpc?: boolean
  /** Nodes per process after the first. @default 1 */
  perProcess?: number
  deadAfterMs?: number
  suspectAfterMs?: number
}

async function formMesh (ctx: BenchContext, size: number, prefix: string, spawnBoundMs: number, formBoundMs: number, init: MeshInit = {}): Promise<{ mesh: Mesh, formation: Formation }> {
  const bg = await background(ctx)
  const key = generateSwarmKey()
  const per = Math.max(1, init.perProcess ?? 1)
  const procs = 1 + Math.ceil((size - 1) / per)
  ctx.log(`  starting ${size} nodes in ${procs} processes (${per === 1 ? 'one node each' : `the first alone, then ${per} nodes per process`}; bootstrap through the first, ${SPAWN_CONCURRENCY} processes at a time, ≤ ${spawnBoundMs / 1000} s)`)
  const mesh = await startMesh({
    size, swarmKeyHex: key.hex, root: ctx.root, prefix, heartbeatMs: HEARTBEAT_MS, reportUpdates: init.reportUpdates ?? true,
    concurrency: SPAWN_CONCURRENCY, readyTimeoutMs: 90_000, spawnBoundMs, diagNoPingAbort: ctx.diagNoPingAbort, traceRpc: init.traceRpc ?? false,
    perProcess: per,
    ...(init.deadAfterMs !== undefined ? { deadAfterMs: init.deadAfterMs } : {}),
    ...(init.suspectAfterMs !== undefined ? { suspectAfterMs: init.suspectAfterMs } : {})
  })
  const started = mesh.workers.filter(w => w.readyAt !== null).length
  ctx.log(`  ${started}/${size} started in ${(mesh.spawnMs / 1000).toFixed(1)} s; waiting (≤ ${formBoundMs / 1000} s) until every node sees all others alive`)
  const alive = started >= 2 ? await waitAllAlive(mesh.workers, formBoundMs) : { ok: false, ms: 0, minAlive: 0, expected: started - 1 }
  const st = await statusSweep(mesh.workers)
  const counts = sumCounts(st.map(s => s.logCounts))
  if (st.length < started) ctx.log(`  ${started - st.length} node(s) did not answer a status request within 15 s`)
  const formation: Formation = {
    background: bg,
    statusAnswered: st.length,
    size,
    processes: mesh.processes,
    perProcess: per,
    started,
    failedStarts: mesh.failed,
    spawnMs: mesh.spawnMs,
    formed: alive.ok && started === size,
    formationMs: alive.ms,
    minAlive: alive.minAlive,
    expectedAlive: Math.max(0, started - 1),
    startedAllAlive: alive.ok,
    connections: spread(st.map(s => s.connections)),
    connectionsClosed: st.reduce((a, s) => a + s.connectionsClosed, 0),
    boardMeshPeers: spread(st.map(s => s.boardMeshPeers)),
    warnings: Object.fromEntries(Object.entries(counts).filter(([k]) => !k.startsWith('debug:'))),
    debugEvents: Object.fromEntries(Object.entries(counts).filter(([k]) => k.startsWith('debug:'))),
    lastErrors: Object.assign({}, ...st.map(s => s.lastErrors)) as Record<string, string>
  }
  ctx.log(`  ${formation.formed ? 'mesh formed' : started < size ? `mesh NOT formed: only ${started}/${size} nodes started${alive.ok ? ' (those saw each other alive)' : ''}` : 'mesh NOT formed'} after ${(alive.ms / 1000).toFixed(1)} s (fewest alive peers seen by a started node: ${alive.minAlive}/${Math.max(0, started - 1)}; connections per node ${formation.connections.min}..${formation.connections.max}, ${formation.connectionsClosed} closed so far; board-topic mesh peers ${formation.boardMeshPeers.min}..${formation.boardMeshPeers.max})`)
  return { mesh, formation }
}

// ---------------------------------------------------------------------------
// 1. propagation latency

export interface PropagationResult {
  formation: Formation
  changes: number
  intervalMs: number
  writeErrors: number
  deliveredPairs: number
  expectedPairs: number
  /** Per (change, receiving node): ms from the write until that node applied it. */
  perDelivery: { p50: number | null, p99: number | null, max: number | null }
  /** Per change: ms from the write until the LAST node applied it (only changes that reached every node). */
  lastNode: { p50: number | null, p99: number | null, max: number | null, complete: number }
  /** CPU during the writes and their delivery. */
  cpu: CpuShare | null
  idle: IdleResult | null
  lifecycle: LifecycleResult | null
  error: string | null
}

export interface IdleResult {
  size: number
  /** Processes the nodes ran in; with several nodes in a process, per-node figures are the process's divided by its nodes. */
  processes: number
  windowMs: number
  rssBytes: Spread
  cpuPct: Spread
  /** Sum of the nodes' CPU over the window, in percent of the whole host (all cores). */
  nodesPctOfHost: number | null
  cpu: CpuShare
}

async function measurePropagation (ctx: BenchContext, workers: Worker[], changes: number, intervalMs: number, prefix: string): Promise<Omit<PropagationResult, 'formation' | 'idle' | 'lifecycle' | 'error'>> {
  const live = workers.filter(w => w.peerId !== null && !w.exited)
  const deliveries = new Map<string, Map<string, number>>()
  const onUpdate = (w: Worker, u: UpdateEvent): void => {
    for (const id of u.taskIds) {
      if (!id.startsWith(prefix)) continue
      let m = deliveries.get(id)
      if (m === undefined) deliveries.set(id, m = new Map())
      if (!m.has(w.name)) m.set(w.name, u.at)
    }
  }
  for (const w of live) w.onUpdate = onUpdate
  const writes: Array<{ id: string, writer: Worker, at: number | null }> = []
  const pending: Array<Promise<void>> = []
  let writeErrors = 0
  const meter = new CpuMeter(childPids)
  for (let k = 0; k < changes; k++) {
    const writer = live[Math.floor(Math.random() * live.length)] as Worker
    const rec = { id: `${prefix}${k}`, writer, at: null as number | null }
    writes.push(rec)
    pending.push(writer.request<WroteReply>({ cmd: 'write', id: rec.id }, 30_000).then(r => { rec.at = r.at }, () => { writeErrors++ }))
    await delay(intervalMs) // pacing of the writes, not a wait for a condition
  }
  await Promise.all(pending)
  const others = live.length - 1
  const bound = 30_000
  const complete = await pollUntil(() => writes.every(wr => wr.at === null || (deliveries.get(wr.id)?.size ?? 0) >= others), bound, 50)
  const cpu = meter.read()
  if (!complete) ctx.log(`  not every change reached every node within ${bound / 1000} s of the last write`)
  for (const w of live) w.onUpdate = null
  const perDelivery: number[] = []
  const lastNode: number[] = []
  let delivered = 0
  for (const wr of writes) {
    if (wr.at === null) continue
    const m = deliveries.get(wr.id) ?? new Map<string, number>()
    const lat = [...m.entries()].filter(([name]) => name !== wr.writer.name).map(([, at]) => at - (wr.at as number))
    delivered += lat.length
    perDelivery.push(...lat)
    if (lat.length >= others) lastNode.push(Math.max(...lat))
  }
  return {
    changes,
    intervalMs,
    writeErrors,
    deliveredPairs: delivered,
    expectedPairs: writes.filter(w => w.at !== null).length * others,
    perDelivery: { p50: percentile(perDelivery, 50), p99: percentile(perDelivery, 99), max: max(perDelivery) },
    lastNode: { p50: percentile(lastNode, 50), p99: percentile(lastNode, 99), max: max(lastNode), complete: lastNode.length },
    cpu
  }
}

// ---------------------------------------------------------------------------
// 4. idle RSS and CPU

async function measureIdle (workers: Worker[], windowMs: number): Promise<IdleResult> {
  const live = workers.filter(w => !w.exited && w.readyAt !== null)
  // per process: a process hosting k nodes counts k nodes, each with 1/k of its CPU and RSS
  const procs = [...new Set(live.map(w => w.proc))]
  const t0 = Date.now()
  const meter = new CpuMeter(childPids)
  const c0 = procs.map(p => readCpuTicks(p.child.pid ?? -1))
  await delay(windowMs) // the measurement window
  const c1 = procs.map(p => readCpuTicks(p.child.pid ?? -1))
  const share = meter.read()
  const elapsed = (Date.now() - t0) / 1000
  const cpu: number[] = []
  const rss: number[] = []
  let cpuSum = 0
  procs.forEach((p, i) => {
    const k = p.nodes.filter(w => live.includes(w)).length
    const a = c0[i]; const b = c1[i]
    if (a !== null && a !== undefined && b !== null && b !== undefined) {
      const pctOfCore = 100 * (b - a) / CLK_TCK / elapsed
      cpuSum += pctOfCore
      for (let j = 0; j < k; j++) cpu.push(pctOfCore / k)
    }
    const r = readRss(p.child.pid ?? -1)
    if (r !== null) for (let j = 0; j < k; j++) rss.push(r / k)
  })
  const cores = availableParallelism()
  return {
    size: live.length,
    processes: procs.length,
    windowMs: Math.round(elapsed * 1000),
    rssBytes: spread(rss),
    cpuPct: spread(cpu),
    nodesPctOfHost: cpuSum / cores,
    cpu: share
  }
}

// ---------------------------------------------------------------------------
// 3. bytes per task lifecycle

export interface LifecycleResult {
  nodes: number
  lifecycles: number
  completed: number
  /** Mean gossip payload (1 tag byte + Automerge change) per step. */
  stepPayload: Record<LifecycleStep, number>
  payloadPerLifecycle: number
  idleWindows: Window[]
  idleRateBps: number
  busy: Window
  /** (busy lo bytes - idle lo rate x busy time) / lifecycles. */
  loopbackPerLifecycle: number | null
  /** The same from the mesh processes' own TCP sockets (payload bytes received; no other traffic, no headers). */
  tcpPerLifecycle: number | null
  /** Gossipsub RPC bytes sent by the nodes per lifecycle, by kind ((busy - idle rate x busy time) / K), from the RPC trace. */
  rpcSent: Record<string, number> | null
  error: string | null
}

/** One measurement window: lo rx bytes, the mesh's TCP payload bytes and what the nodes did. */
export interface Window {
  ms: number
  loBytes: number
  tcpBytes: number | null
  syncSessions: number
  changesReceived: number
  /** Gossipsub RPCs sent in the window, summed over the nodes (when traced). */
  rpcSent: Record<string, number> | null
}

const STEP_STATE: Record<LifecycleStep, string> = { create: 'ready', claim: 'claimed', running: 'running', done: 'done', merging: 'merging', merged: 'merged' }

interface NodeStatsLike { syncSessions: number, changesReceived: number }

async function nodeCounters (workers: Worker[]): Promise<{ syncSessions: number, changesReceived: number, rpcSent: Record<string, number> | null }> {
  const st = await statusSweep(workers)
  let syncSessions = 0; let changesReceived = 0
  for (const s of st) {
    const n = s.stats as NodeStatsLike
    syncSessions += n.syncSessions
    changesReceived += n.changesReceived
  }
  const traced = st.filter(s => s.rpcSent !== null)
  return { syncSessions, changesReceived, rpcSent: traced.length === 0 ? null : sumCounts(traced.map(s => s.rpcSent as Record<string, number>)) }
}

function diffCounts (a: Record<string, number> | null, b: Record<string, number> | null): Record<string, number> | null {
  if (a === null || b === null) return null
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(b)) out[k] = v - (a[k] ?? 0)
  return out
}

async function measureLifecycleBytes (ctx: BenchContext, workers: Worker[], lifecycles: number, idleWindowMs: number, tailMs: number): Promise<LifecycleResult> {
  const live = workers.filter(w => w.peerId !== null && !w.exited)
  const pids = new Set(live.map(w => w.pid))
  const seen = new Map<string, Map<string, string | null>>()
  const onUpdate = (w: Worker, u: UpdateEvent): void => {
    u.taskIds.forEach((id, i) => {
      let m = seen.get(id)
      if (m === undefined) seen.set(id, m = new Map())
      m.set(w.name, u.states[i] ?? null)
    })
  }
  for (const w of live) w.onUpdate = onUpdate
  const window = async (body: () => Promise<void>): Promise<Window> => {
    const c0 = await nodeCounters(live)
    const t0 = Date.now(); const l0 = readLoRxBytes(); const p0 = readTcpRx(pids)
    await body()
    const ms = Date.now() - t0; const loBytes = readLoRxBytes() - l0; const tcpBytes = tcpRxDelta(p0, readTcpRx(pids))
    const c1 = await nodeCounters(live)
    return { ms, loBytes, tcpBytes, syncSessions: c1.syncSessions - c0.syncSessions, changesReceived: c1.changesReceived - c0.changesReceived, rpcSent: diffCounts(c0.rpcSent, c1.rpcSent) }
  }
  const idle = async (): Promise<void> => { await delay(idleWindowMs) } // the measurement window
  const stepBytes: Record<string, number[]> = {}
  let completed = 0
  let error: string | null = null
  const idleBefore = await window(idle)
  const busy = await window(async () => {
    for (let i = 0; i < lifecycles && error === null; i++) {
      const id = `life-${i}`
      // the planner creates, a worker node claims and runs, the merge leader merges
      const creator = live[i % live.length] as Worker
      const runner = live[(i + 1) % live.length] as Worker
      const leader = live[(i + 2) % live.length] as Worker
      for (const step of LIFECYCLE_STEPS) {
        const writer = step === 'create' ? creator : step === 'merging' || step === 'merged' ? leader : runner
        const r = await writer.request<WroteReply>({ cmd: 'step', id, step }, 15_000)
        ;(stepBytes[step] ??= []).push(...r.changeBytes.map(b => b + 1))
        const want = STEP_STATE[step]
        const ok = await pollUntil(() => live.every(w => w === writer || seen.get(id)?.get(w.name) === want), 15_000, 5)
        if (!ok) { error = `lifecycle ${id} step ${step} did not reach every node within 15 s`; break }
      }
      if (error === null) completed++
    }
    await delay(tailMs) // keep counting while gossip's IHAVE/IWANT rounds for these messages run out
  })
  const idleAfter = await window(idle)
  for (const w of live) w.onUpdate = null
  if (error !== null) ctx.log(`  ${error}`)
  const rate = (get: (w: Window) => number | null): number | null => {
    const a = get(idleBefore); const b = get(idleAfter)
    return a === null || b === null ? null : (a + b) / ((idleBefore.ms + idleAfter.ms) / 1000)
  }
  const loRate = rate(w => w.loBytes) as number
  const tcpRate = rate(w => w.tcpBytes)
  const mean = (v: number[] | undefined): number => v === undefined || v.length === 0 ? 0 : v.reduce((a, b) => a + b, 0) / v.length
  const stepPayload = Object.fromEntries(LIFECYCLE_STEPS.map(s => [s, mean(stepBytes[s])])) as Record<LifecycleStep, number>
  return {
    nodes: live.length,
    lifecycles,
    completed,
    stepPayload,
    payloadPerLifecycle: Object.values(stepPayload).reduce((a, b) => a + b, 0),
    idleWindows: [idleBefore, idleAfter],
    idleRateBps: loRate,
    busy,
    loopbackPerLifecycle: completed > 0 ? (busy.loBytes - loRate * busy.ms / 1000) / completed : null,
    tcpPerLifecycle: completed > 0 && tcpRate !== null && busy.tcpBytes !== null ? (busy.tcpBytes - tcpRate * busy.ms / 1000) / completed : null,
    rpcSent: completed > 0 ? perLifecycle(idleBefore, busy, idleAfter, completed) : null,
    error
  }
}

/** Per-lifecycle RPC counters: (busy - idle rate x busy time) / K for every key. */
function perLifecycle (a: Window, busy: Window, b: Window, k: number): Record<string, number> | null {
  if (a.rpcSent === null || busy.rpcSent === null || b.rpcSent === null) return null
  const out: Record<string, number> = {}
  const idleS = (a.ms + b.ms) / 1000
  for (const key of Object.keys(busy.rpcSent)) {
    const idleRate = ((a.rpcSent[key] ?? 0) + (b.rpcSent[key] ?? 0)) / idleS
    out[key] = ((busy.rpcSent[key] ?? 0) - idleRate * busy.ms / 1000) / k
  }
  return out
}

// ---------------------------------------------------------------------------
// phases 1 + 3 + 4 per mesh size

export interface SizeOptions {
  size: number
  changes: number
  intervalMs: number
  spawnBoundMs: number
  formBoundMs: number
  idleWindowMs: number | null
  lifecycles: number | null
  loWindowMs: number
  /** Nodes per process after the first. @default 1 */
  perProcess?: number
}

export async function runSize (ctx: BenchContext, o: SizeOptions): Promise<PropagationResult> {
  ctx.log(`\n[mesh of ${o.size}]`)
  const { mesh, formation } = await formMesh(ctx, o.size, `m${o.size}`, o.spawnBoundMs, o.formBoundMs, { traceRpc: o.lifecycles !== null, perProcess: o.perProcess ?? 1 })
  const res: PropagationResult = {
    formation, changes: 0, intervalMs: o.intervalMs, writeErrors: 0, deliveredPairs: 0, expectedPairs: 0,
    perDelivery: { p50: null, p99: null, max: null }, lastNode: { p50: null, p99: null, max: null, complete: 0 },
    cpu: null, idle: null, lifecycle: null, error: null
  }
  try {
    if (formation.started < 2) throw new Error(`only ${formation.started} node(s) started: ${formation.failedStarts.map(f => `${f.name}: ${f.error.slice(0, 300)}`).join('; ')}`)
    if (!formation.formed) ctx.log('  measuring propagation anyway, on the partly formed mesh (marked in the results)')
    ctx.log(`  ${o.changes} task-creating changes, one every ${o.intervalMs} ms from random nodes`)
    Object.assign(res, await measurePropagation(ctx, mesh.workers, o.changes, o.intervalMs, `p${o.size}-`))
    ctx.log(`  delivered ${res.deliveredPairs}/${res.expectedPairs}; to all nodes p50 ${fmt(res.lastNode.p50)} p99 ${fmt(res.lastNode.p99)}; per delivery p50 ${fmt(res.perDelivery.p50)} p99 ${fmt(res.perDelivery.p99)}`)
    if (o.idleWindowMs !== null) {
      ctx.log(`  idle window of ${o.idleWindowMs / 1000} s (RSS, CPU per node)`)
      res.idle = await measureIdle(mesh.workers, o.idleWindowMs)
      ctx.log(`  RSS median ${mib(res.idle.rssBytes.median)} MiB, CPU median ${res.idle.cpuPct.median?.toFixed(2)} % max ${res.idle.cpuPct.max?.toFixed(2)} %`)
    }
    if (o.lifecycles !== null) {
      ctx.log(`  ${o.lifecycles} task lifecycles (loopback: idle ${o.loWindowMs / 1000} s, busy, idle ${o.loWindowMs / 1000} s)`)
      res.lifecycle = await measureLifecycleBytes(ctx, mesh.workers, o.lifecycles, o.loWindowMs, 5000)
      ctx.log(`  payload ${Math.round(res.lifecycle.payloadPerLifecycle)} B per lifecycle; loopback ${res.lifecycle.loopbackPerLifecycle === null ? 'n/a' : Math.round(res.lifecycle.loopbackPerLifecycle)} B per lifecycle`)
    }
  } catch (err) {
    res.error = (err as Error).message
    ctx.log(`  error: ${res.error}`)
  } finally {
    await killMesh(mesh.workers)
  }
  return res
}

const fmt = (v: number | null): string => v === null ? 'n/a' : `${Math.round(v)} ms`
const mib = (v: number | null): string => v === null ? 'n/a' : (v / 1024 / 1024).toFixed(0)

// ---------------------------------------------------------------------------
// 2. joiner sync

export interface JoinerResult {
  tasks: number
  batch: number
  promptChars: number
  buildMs: number | null
  builder: SaveReply | null
  /** Spawn of the joiner's process until its board had every task. */
  spawnToAllMs: number | null
  /** Spawn until the worker's modules were loaded (process boot). */
  spawnToBootMs: number | null
  /** `MeshNode.start()` called until every task was on the board. */
  startToAllMs: number | null
  /** `start()` resolved (listening, bootstrap dial under way) until every task was on the board. */
  readyToAllMs: number | null
  joiner: SaveReply | null
  /** The host when the phase started, and CPU from the joiner's spawn until it had every task. */
  background: Background | null
  cpu: CpuShare | null
  error: string | null
}

export async function runJoiner (ctx: BenchContext, tasks: number, boundMs: number): Promise<JoinerResult> {
  ctx.log(`\n[joiner, board of ${tasks} tasks]`)
  const res: JoinerResult = {
    tasks, batch: 100, promptChars: 200, buildMs: null, builder: null, spawnToAllMs: null, spawnToBootMs: null,
    startToAllMs: null, readyToAllMs: null, joiner: null, background: null, cpu: null, error: null
  }
  const { mesh, formation } = await formMesh(ctx, 2, `j${tasks}`, 60_000, 30_000, { reportUpdates: false })
  res.background = formation.background
  let joiner: Worker | null = null
  try {
    if (!formation.formed) throw new Error('the 2-node mesh did not form')
    const [a, b] = mesh.workers as [Worker, Worker]
    const t0 = Date.now()
    await a.request<WroteReply>({ cmd: 'bulk', prefix: 'task', count: tasks, batch: res.batch, promptChars: res.promptChars }, boundMs)
    const both = await pollUntil(async () => (await b.request<StatusReply>({ cmd: 'status' })).tasks >= tasks, boundMs, 200)
    if (!both) throw new Error(`the second builder node did not get all ${tasks} tasks within ${boundMs / 1000} s`)
    res.buildMs = Date.now() - t0
    res.builder = await a.request<SaveReply>({ cmd: 'save' }, 60_000)
    ctx.log(`  built in ${(res.buildMs / 1000).toFixed(1)} s (${res.builder.changes} changes, save() ${res.builder.saveBytes} B); starting the joiner`)
    const meter = new CpuMeter(childPids)
    joiner = new Worker({
      swarmKeyHex: a.config.swarmKeyHex,
      dataDir: `${ctx.root}/j${tasks}-joiner`,
      name: `j${tasks}-joiner`,
      bootstrap: [a.addrs[0] as string],
      heartbeatMs: HEARTBEAT_MS,
      reportUpdates: false,
      expectTasks: tasks,
      ...(ctx.diagNoPingAbort ? { diagNoPingAbort: true } : {})
    })
    const j = joiner
    const got = await pollUntil(() => j.hasAllAt !== null || j.exited || j.failure !== null, boundMs, 20)
    res.cpu = meter.read()
    if (!got || j.hasAllAt === null) throw new Error(`the joiner did not get all ${tasks} tasks within ${boundMs / 1000} s${j.failure !== null ? `: ${j.failure.slice(0, 400)}` : ''}`)
    res.spawnToAllMs = j.hasAllAt - j.spawnAt
    res.spawnToBootMs = j.bootAt === null ? null : j.bootAt - j.spawnAt
    res.startToAllMs = j.startingAt === null ? null : j.hasAllAt - j.startingAt
    res.readyToAllMs = j.readyAt === null ? null : j.hasAllAt - j.readyAt
    res.joiner = await j.request<SaveReply>({ cmd: 'save' }, 60_000)
    ctx.log(`  joiner had all tasks ${res.spawnToAllMs} ms after spawn (${res.startToAllMs} ms after start()); saved board ${res.joiner.saveBytes} B (on disk ${res.joiner.diskBytes} B)`)
  } catch (err) {
    res.error = (err as Error).message
    ctx.log(`  error: ${res.error}`)
  } finally {
    await killMesh(joiner === null ? mesh.workers : [...mesh.workers, joiner])
  }
  return res
}

// ---------------------------------------------------------------------------
// 5. dead detection on a saturated host

export interface DeadResult {
  nodes: number
  /** The failure detector's timeouts in this run (absent in older saved results: the defaults, 3 s / 10 s). */
  suspectAfterMs?: number
  deadAfterMs?: number
  formation: Formation
  burners: number
  windowMs: number
  /** CPU over the saturated window (the burners count as the benchmark's). */
  cpu: CpuShare | null
  victim: string | null
  /** Per survivor: ms from kill -9 until it reported the victim dead (null: not within the bound). */
  detectMs: Array<number | null>
  detect: { median: number | null, max: number | null, all: boolean }
  suspectMs: { median: number | null, max: number | null }
  /** `dead` transitions of any node other than the victim during the saturated window. */
  falseDead: number
  falseDeadDetail: string[]
  falseSuspect: number
  /** Largest event-loop lag the nodes reported in their heartbeats (what widens the timeouts). */
  maxReportedLagMs: number | null
  /** Connections the survivors saw close during the window (those to the killed node included). */
  connectionsClosed: number | null
  error: string | null
}

/** Failure-detector timeouts of a dead-detection run. */
export interface DetectorTimeouts { suspectAfterMs: number, deadAfterMs: number }

export async function runDead (ctx: BenchContext, nodes: number, windowMs: number, preKillMs: number, detectBoundMs: number, timeouts: DetectorTimeouts = { suspectAfterMs: 3000, deadAfterMs: 10_000 }): Promise<DeadResult> {
  ctx.log(`\n[dead detection, ${nodes} nodes, saturated host, suspect/dead after ${timeouts.suspectAfterMs / 1000} s/${timeouts.deadAfterMs / 1000} s]`)
  const { mesh, formation } = await formMesh(ctx, nodes, `d${timeouts.deadAfterMs}`, 120_000, 60_000, { reportUpdates: false, ...timeouts })
  const burnerCount = Math.max(2, availableParallelism())
  const res: DeadResult = {
    nodes, ...timeouts, formation, burners: burnerCount, windowMs: 0, cpu: null, victim: null, detectMs: [],
    detect: { median: null, max: null, all: false }, suspectMs: { median: null, max: null },
    falseDead: 0, falseDeadDetail: [], falseSuspect: 0, maxReportedLagMs: null, connectionsClosed: null, error: null
  }
  let burners: ReturnType<typeof startBurners> = []
  try {
    if (!formation.formed) throw new Error(`the ${nodes}-node mesh did not form (${formation.started}/${nodes} started; fewest alive peers seen by a started node: ${formation.minAlive}/${formation.expectedAlive})`)
    const live = mesh.workers
    const victim = live[1 + Math.floor(Math.random() * (live.length - 1))] as Worker
    const survivors = live.filter(w => w !== victim)
    const victimId = victim.peerId as string
    res.victim = victim.name
    ctx.log(`  ${burnerCount} CPU burners on ${availableParallelism()} cores; kill -9 ${victim.name} after ${preKillMs / 1000} s; saturated window ≥ ${windowMs / 1000} s`)
    const closedBefore = (await statusSweep(survivors)).reduce((a, s) => a + s.connectionsClosed, 0)
    burners = startBurners(burnerCount)
    const satStart = Date.now()
    const meter = new CpuMeter(childPids)
    await delay(preKillMs) // saturate before the kill (a measurement window)
    const killAt = Date.now()
    victim.child.kill('SIGKILL')
    const detected = (s: Worker): number | null => s.peerEvents.find(e => e.peerId === victimId && e.to === 'dead' && e.at >= killAt)?.at ?? null
    await pollUntil(() => survivors.every(s => detected(s) !== null), detectBoundMs, 100)
    const rest = satStart + windowMs - Date.now()
    if (rest > 0) await delay(rest) // the rest of the saturated window (false-positive count)
    const st = await statusSweep(survivors)
    res.cpu = meter.read()
    const satEnd = Date.now()
    await stopBurners(burners)
    res.windowMs = satEnd - satStart
    res.detectMs = survivors.map(s => { const at = detected(s); return at === null ? null : at - killAt })
    const got = res.detectMs.filter((v): v is number => v !== null)
    res.detect = { median: median(got), max: max(got), all: got.length === survivors.length }
    const sus = survivors.map(s => s.peerEvents.find(e => e.peerId === victimId && e.to === 'suspect' && e.at >= killAt)?.at).filter((v): v is number => v !== undefined).map(v => v - killAt)
    res.suspectMs = { median: median(sus), max: max(sus) }
    const names = new Map(live.map(w => [w.peerId as string, w.name]))
    for (const s of survivors) {
      for (const e of s.peerEvents) {
        if (e.peerId === victimId || e.at < satStart || e.at > satEnd) continue
        if (e.to === 'dead') { res.falseDead++; res.falseDeadDetail.push(`${s.name} declared ${names.get(e.peerId) ?? e.peerId} dead at +${e.at - satStart} ms`) }
        if (e.to === 'suspect') res.falseSuspect++
      }
    }
    // the lag each node reported about itself, as seen by the others
    res.connectionsClosed = st.length === survivors.length ? st.reduce((a, s) => a + s.connectionsClosed, 0) - closedBefore : null
    const lags = st.map(s => s.maxPeerLagMs)
    res.maxReportedLagMs = max(lags)
    ctx.log(`  host busy ${res.cpu?.hostPct?.toFixed(0)} % (other work ${res.cpu?.otherPct?.toFixed(0)} %); dead after median ${fmt(res.detect.median)}, max ${fmt(res.detect.max)} (${got.length}/${survivors.length} survivors); false dead: ${res.falseDead}; false suspect: ${res.falseSuspect}`)
  } catch (err) {
    res.error = (err as Error).message
    ctx.log(`  error: ${res.error}`)
  } finally {
    await stopBurners(burners)
    await killMesh(mesh.workers)
  }
  return res
}
