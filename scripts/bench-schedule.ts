/**
 * `npm run bench:schedule`: the scheduling benchmark over real node processes
 * on loopback.
 *
 *   1. a seeded layered random DAG (200 tasks, 10 layers, 1-3 deps each,
 *      bounded-Pareto durations of 0.5-8 s, mean 2 s), submitted in one change
 *   2. meshes of 4 and 8 nodes x 2 slots, sim agent, heartbeat 1 s, default timeouts
 *   3. the ideal: a zero-overhead centralized list scheduler on the same DAG
 *      and slots (critical path first); reported as makespan_mesh / makespan_ideal
 *   4. duplicate runs, ready->running latency, overhead per task
 *   5. the 4-node run again with one node SIGKILLed ~30% into the run
 *
 * The merge step is an INSTANT STAND-IN run by the submitting worker (done ->
 * merged once every dep is merged, no git; the real leader is bench:merge's
 * subject), so the figures measure scheduling only.
 *
 * Flags:
 *   --quick         smoke run: 60 tasks in 6 layers, 4 nodes only, no kill run;
 *                   does not touch docs/benchmarks.md
 *   --seed N        DAG seed (default 1)
 *   --no-docs       do not rewrite the section in docs/benchmarks.md
 *   --only LIST     phases to run (comma list of n4, n8, kill); implies --no-docs
 *   --json FILE     also write the results as JSON
 *   --trace FILE    also write the raw trace (runs, logs, final boards) as JSON lines
 *   --wait-quiet S  before each run, wait up to S seconds for the host's 1-minute
 *                   load average to drop to the number of cores (default 0: do not wait)
 *
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { mkdtemp, rm, writeFile, appendFile } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs } from './bench/lib/args.ts'
import { generateSwarmKey } from '../src/node/swarm-key.ts'
import { installExitGuards, killAllChildren, pollUntil, Worker } from './bench/schedule-cluster.ts'
import { boundedParetoMean, criticalPathMs, generateDag, listSchedule, mean, percentile, type DagParams, type IdealSchedule } from './bench/schedule-dag.ts'
import { analyze, type PhaseResult, type RunEvent, type Trace, type WorkerLog } from './bench/schedule-analysis.ts'
import { diagnose, machine, markdownSection, textReport, writeSection, type DagSummary, type Results } from './bench/schedule-report.ts'
import type { BenchTask, ProgressReply, ScheduleWorkerEvent, StatsReply, StatusReply, TaskDump } from './bench/schedule-protocol.ts'

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))
const HEARTBEAT_MS = 1000
const SLOTS = 2
const KILL_FRACTION = 0.3

interface PhaseSpec { name: string, nodes: number, kill: boolean }

const log = (line: string): void => { process.stderr.write(line + '\n') }

async function main (): Promise<void> {
  const values = parseScriptArgs(import.meta.url, {
      quick: { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
      'no-docs': { type: 'boolean', default: false },
      only: { type: 'string' },
      json: { type: 'string' },
      trace: { type: 'string' },
      'wait-quiet': { type: 'string', default: '0' }
    })
  const major = Number(process.versions.node.split('.')[0])
  if (major < 22) throw new Error(`Node ${process.version} cannot run libp2p 3; use the pinned Node 24 (npm run bench:schedule, or ./node_modules/.bin/node scripts/bench-schedule.ts)`)
  const quick = values.quick === true
  const seed = Number(values.seed)
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${JSON.stringify(values.seed)}`)
  const phases: PhaseSpec[] = quick
    ? [{ name: 'n4', nodes: 4, kill: false }]
    : [{ name: 'n4', nodes: 4, kill: false }, { name: 'n8', nodes: 8, kill: false }, { name: 'kill', nodes: 4, kill: true }]
  const only = values.only === undefined ? null : new Set(values.only.split(',').map(s => s.trim()))
  const selected = only === null ? phases : phases.filter(p => only.has(p.name))
  const waitQuietMs = Number(values['wait-quiet']) * 1000
  if (!Number.isFinite(waitQuietMs) || waitQuietMs < 0) throw new Error(`--wait-quiet must be a number of seconds, got ${JSON.stringify(values['wait-quiet'])}`)
  const writeDocs = !quick && values['no-docs'] !== true && only === null

  const params: DagParams = { seed, tasks: quick ? 60 : 200, layers: quick ? 6 : 10, paretoAlpha: 0.5, minMs: 500, maxMs: 8000, minDeps: 1, maxDeps: 3 }
  const dag = generateDag(params)
  const durations = dag.map(t => t.durationMs)
  const dagSummary: DagSummary = {
    params,
    theoreticalMeanMs: boundedParetoMean(params.paretoAlpha, params.minMs, params.maxMs),
    meanMs: mean(durations),
    p50Ms: percentile(durations, 50),
    minMs: Math.min(...durations),
    maxMs: Math.max(...durations),
    totalWorkMs: durations.reduce((a, b) => a + b, 0),
    criticalPathMs: criticalPathMs(dag),
    edges: dag.reduce((s, t) => s + t.deps.length, 0)
  }

  installExitGuards('bench:schedule')
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-schedule-'))
  const started = Date.now()
  const results: Results = {
    date: new Date().toISOString(),
    quick,
    durationMs: 0,
    machine: machine(),
    dag: dagSummary,
    heartbeatMs: HEARTBEAT_MS,
    killFraction: KILL_FRACTION,
    phases: [],
    notes: []
  }
  if (values.trace !== undefined) await writeFile(values.trace, '')
  log(`meshwork scheduling benchmark${quick ? ' (quick)' : ''}: ${dag.length} tasks, seed ${seed}, data under ${root}`)
  log('merge step: INSTANT STAND-IN (no git): figures measure scheduling only')
  try {
    for (const spec of selected) {
      if (waitQuietMs > 0) await waitQuiet(waitQuietMs)
      const ideal = listSchedule(dag, spec.nodes * SLOTS)
      log(`\n[${spec.name}] ${spec.nodes} nodes x ${SLOTS} slots${spec.kill ? ', one node killed' : ''}: ideal makespan ${(ideal.makespanMs / 1000).toFixed(1)} s`)
      const trace = await runPhase(root, spec, dag, ideal)
      if (values.trace !== undefined) await appendFile(values.trace, JSON.stringify(trace) + '\n')
      const res = analyze(trace, dag, ideal)
      results.phases.push(res)
      log(`[${spec.name}] makespan ${(res.makespanMs / 1000).toFixed(1)} s, ratio ${res.ratio.toFixed(3)}, ${res.merged}/${res.tasks} merged, duplicates ${res.duplicates.length}`)
    }
  } finally {
    killAllChildren()
    await rm(root, { recursive: true, force: true }).catch(() => {})
  }
  results.durationMs = Date.now() - started
  results.notes = diagnose(results)
  process.stdout.write('\n' + textReport(results) + '\n')
  if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2) + '\n')
  if (writeDocs) {
    await writeSection(DOCS, markdownSection(results))
    process.stdout.write(`\nwrote the "Schedule" section of ${DOCS}\n`)
  } else {
    process.stdout.write(`\n(docs/benchmarks.md not touched: ${quick ? '--quick run' : only !== null ? 'partial run' : '--no-docs'})\n`)
  }
  if (results.phases.some(p => !p.allCompleted)) process.exitCode = 1
}

/**
 * Other work on the host distorts every figure: waits (bounded) until the
 * 1-minute load average is at most the number of cores, and says what it was.
 */
async function waitQuiet (timeoutMs: number): Promise<void> {
  const cores = availableParallelism()
  const quiet = await pollUntil(() => (loadavg()[0] ?? 0) <= cores, timeoutMs, 1000)
  log(`host load ${(loadavg()[0] ?? 0).toFixed(2)} on ${cores} cores${quiet ? '' : ` (still above ${cores} after waiting ${(timeoutMs / 1000).toFixed(0)} s; measuring anyway)`}`)
}

/** Starts the mesh, submits the DAG, optionally kills a node, waits for every merge and collects the trace. */
async function runPhase (root: string, spec: PhaseSpec, dag: BenchTask[], ideal: IdealSchedule): Promise<Trace> {
  const key = generateSwarmKey()
  const dir = join(root, spec.name)
  const runs: RunEvent[] = []
  const logs: WorkerLog[] = []
  const planSeenAt: Record<string, number> = {}
  const workers: Worker[] = []
  const onEvent = (w: Worker, e: ScheduleWorkerEvent): void => {
    if (e.ev === 'run') runs.push({ taskId: e.taskId, epoch: e.epoch, node: e.node, worker: w.name, at: e.at })
    else if (e.ev === 'log') logs.push({ worker: w.name, node: w.peerId, line: e.line })
    else if (e.ev === 'states' && planSeenAt[w.name] === undefined && e.changes.some(c => c.from === null)) planSeenAt[w.name] = e.at
  }
  const spawn = (i: number, bootstrap: string[]): Worker => new Worker({
    swarmKeyHex: key.hex,
    dataDir: join(dir, `n${i}`),
    name: `n${i}`,
    bootstrap,
    slots: SLOTS,
    heartbeatMs: HEARTBEAT_MS,
    merger: i === 0
  }, onEvent)

  try {
    const first = spawn(0, [])
    workers.push(first)
    if (!await pollUntil(() => first.readyAt !== null || first.failed !== null || first.exited, 30_000)) throw new Error('n0 did not start within 30 s')
    if (first.readyAt === null) throw new Error(`n0 failed: ${first.failed ?? 'exited'}`)
    const boot = first.addrs[0]
    if (boot === undefined) throw new Error('n0 has no address')
    for (let i = 1; i < spec.nodes; i++) workers.push(spawn(i, [boot]))
    if (!await pollUntil(() => workers.every(w => w.readyAt !== null || w.failed !== null || w.exited), 60_000)) throw new Error('workers did not start within 60 s')
    const bad = workers.find(w => w.readyAt === null)
    if (bad !== undefined) throw new Error(`${bad.name} failed: ${bad.failed ?? 'exited'}`)
    const allAlive = await pollUntil(async () => {
      const st = await Promise.all(workers.map(async w => await w.request<StatusReply>({ cmd: 'status' })))
      return st.every(s => s.alive.length === spec.nodes - 1)
    }, 60_000, 250)
    if (!allAlive) throw new Error('the mesh did not form within 60 s (not every node saw every other alive)')
    log(`[${spec.name}] mesh formed: ${spec.nodes} nodes alive everywhere`)

    const loadAtStart = loadavg()[0] ?? Number.NaN
    const { at: submitAt } = await first.request<{ at: number }>({ cmd: 'submit', tasks: dag }, 60_000)
    const bound = Math.max(120_000, 4 * ideal.makespanMs) + (spec.kill ? 60_000 : 0)
    const deadline = submitAt + bound
    let kill: Trace['kill'] = null
    let lastPrint = Date.now()

    if (spec.kill) {
      const killAt = submitAt + KILL_FRACTION * ideal.makespanMs
      await pollUntil(() => Date.now() >= killAt, KILL_FRACTION * ideal.makespanMs + 1000, 20)
      // the victim: not the merger; among the others, the one holding the most tasks now
      const candidates = workers.slice(1)
      const held = await Promise.all(candidates.map(async w => ({ w, p: await w.request<ProgressReply>({ cmd: 'progress' }) })))
      held.sort((a, b) => b.p.running.length - a.p.running.length)
      const victim = held[0]
      if (victim === undefined) throw new Error('no node to kill')
      victim.w.kill()
      const at = Date.now()
      kill = { worker: victim.w.name, peerId: victim.w.peerId, at, runningAtKill: victim.p.running }
      log(`[${spec.name}] SIGKILLed ${victim.w.name} at +${((at - submitAt) / 1000).toFixed(1)} s holding ${victim.p.running.length} task(s): ${victim.p.running.join(', ')}`)
    }

    const live = (): Worker[] => workers.filter(w => !w.exited)
    let last: ProgressReply | null = null
    const finished = await pollUntil(async () => {
      last = await first.request<ProgressReply>({ cmd: 'progress' })
      if (Date.now() - lastPrint >= 5000) {
        lastPrint = Date.now()
        log(`[${spec.name}] +${((Date.now() - submitAt) / 1000).toFixed(0)} s: ${JSON.stringify(last.states)}`)
      }
      return (last.states.merged ?? 0) === dag.length
    }, deadline - Date.now(), 250)
    const gaveUpAt = Date.now()
    if (!finished) log(`[${spec.name}] TIMED OUT after ${(bound / 1000).toFixed(0)} s: ${JSON.stringify((last as ProgressReply | null)?.states ?? {})}`)
    // every live node's board converges on the same outcome
    const allNodesAgree = finished && await pollUntil(async () => {
      const ps = await Promise.all(live().map(async w => await w.request<ProgressReply>({ cmd: 'progress' })))
      return ps.every(p => (p.states.merged ?? 0) === dag.length)
    }, 15_000, 250)
    const board = await first.request<TaskDump[]>({ cmd: 'dump' }, 30_000)
    const workerStats = await Promise.all(live().map(async w => await w.request<StatsReply>({ cmd: 'stats' }).catch(() => null)))
    const loadAtEnd = loadavg()[0] ?? Number.NaN
    return { name: spec.name, nodes: spec.nodes, slots: SLOTS, submitAt, runs, logs, board, allNodesAgree, kill, timedOut: !finished, gaveUpAt, planSeenAt, loadAtStart, loadAtEnd, workerStats: workerStats.filter((x): x is StatsReply => x !== null) }
  } finally {
    await Promise.all(workers.map(async w => { await w.stop() }))
  }
}

main().then(
  () => { process.exit(process.exitCode ?? 0) },
  err => {
    killAllChildren()
    process.stderr.write(`bench:schedule failed: ${(err as Error)?.stack ?? String(err)}\n`)
    process.exit(1)
  }
)

export type { PhaseResult }
