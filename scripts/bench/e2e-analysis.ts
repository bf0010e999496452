/**
 * Pure part of `bench:e2e`: turns the nodes' JSON log lines (one host clock) and
 * the final board into a per-task breakdown of where the time goes, phase by
 * phase, plus run and merge counts (duplicates).
 */
import { percentile } from './schedule-dag.ts'
import type { BenchTask } from './schedule-protocol.ts'

/** One JSON log line of a node (`time` in ms since the epoch). */
export interface LogLine { time: number, event: string, [k: string]: unknown }

/** The phases of a task's way from ready to main on every node, in order. */
export const PHASES = [
  ['ready', 'claimed', 'ready → claimed'],
  ['claimed', 'running', 'claimed → running (settle)'],
  ['running', 'agentStart', 'running → agent start (worktree)'],
  ['agentStart', 'agentEnd', 'agent start → end (the work)'],
  ['agentEnd', 'committed', 'agent end → committed'],
  ['committed', 'done', 'committed → done on the board'],
  ['done', 'onLeader', 'done → branch on the leader'],
  ['onLeader', 'merged', 'branch on the leader → merged'],
  ['merged', 'mainEverywhere', 'merged → main on every node']
] as const

export type Stamp = 'ready' | 'claimed' | 'running' | 'agentStart' | 'agentEnd' | 'committed' | 'done' | 'onLeader' | 'merged' | 'mainEverywhere'

export interface TaskTimes { id: string, node: string | null, t: Partial<Record<Stamp, number>> }

export interface PhaseStat { label: string, n: number, p50: number, p99: number, mean: number }

export interface Analysis {
  tasks: TaskTimes[]
  phases: PhaseStat[]
  /** done → merged and ready → merged, the figures users feel. */
  doneToMerged: PhaseStat
  readyToMerged: PhaseStat
  /** Agent runs started (task:started), and the runs beyond one per task. */
  runs: number
  extraRuns: number
  /** Extra runs whose earlier run was on the killed node (re-runs the kill caused). */
  rerunsAfterKill: number
  /** Extra runs not explained by the kill: duplicates. */
  duplicateRuns: number
  /** For each task run more than once (not because of the kill): its log lines on every node, for the report's diagnosis. */
  duplicates: Array<{ task: string, lines: string[] }>
  /** Task merges logged beyond one per task (merge:done listing a task twice). */
  duplicateMerges: number
  /** merge:done events (batches that landed) and tasks merged per batch. */
  batches: number
  meanBatch: number
  /** Tasks whose merge was logged. */
  merged: number
  /** Claims that came to nothing (another node's won, or had started the task already): a board change and a settle wait each, for no run. */
  claimsLost: number
  /** The chain of tasks whose merges set the makespan (`criticalPath`). */
  criticalPath: CriticalPath
}

/**
 * The critical path a run took: from the task merged last back through the
 * dependency whose merge made each task ready, to a task ready at its
 * creation. Its phases summed say where the makespan went beyond the agents'
 * work: every millisecond of a phase on the chain delayed the last merge.
 */
export interface CriticalPath {
  /** Task ids, first to last. */
  tasks: string[]
  /** Each phase from ready to merged, summed over the chain (ms), in `PHASES` order; NaN where a stamp is missing. */
  phases: Array<{ label: string, ms: number }>
}

function stat (label: string, values: number[]): PhaseStat {
  const v = values.filter(x => Number.isFinite(x))
  return { label, n: v.length, p50: percentile(v, 50), p99: percentile(v, 99), mean: v.length === 0 ? Number.NaN : v.reduce((a, b) => a + b, 0) / v.length }
}

const taskOf = (l: LogLine): string | undefined => typeof l.task === 'string' ? l.task : undefined

/**
 * `logs`: every node's lines by node name; `createdAt`: the board's creation
 * time of each task; `killed`: the node SIGKILLed during the run, if any.
 */
export function analyze (tasks: readonly BenchTask[], createdAt: ReadonlyMap<string, number>, logs: ReadonlyMap<string, LogLine[]>, killed: string | null): Analysis {
  const all: Array<LogLine & { node: string }> = []
  for (const [node, lines] of logs) for (const l of lines) all.push({ ...l, node })
  all.sort((a, b) => a.time - b.time)

  // merges: the first merge:done naming each task, and the order of main's tips
  const mergedAt = new Map<string, { time: number, node: string, tip: string }>()
  const tipIndex = new Map<string, number>()
  let mergeNames = 0
  let batches = 0
  for (const l of all) {
    if (l.event !== 'merge:done' || !Array.isArray(l.tasks)) continue
    batches++
    const tip = String(l.main)
    if (!tipIndex.has(tip)) tipIndex.set(tip, tipIndex.size)
    for (const id of l.tasks as string[]) {
      mergeNames++
      if (!mergedAt.has(id)) mergedAt.set(id, { time: l.time, node: l.node, tip })
    }
  }
  // when each node's main reached each tip index (followers log main:updated; the merging node advances at merge:done)
  const mainAt = new Map<string, Array<{ time: number, idx: number }>>()
  for (const l of all) {
    let idx: number | undefined
    if (l.event === 'main:updated') idx = tipIndex.get(String(l.head))
    else if (l.event === 'merge:done') idx = tipIndex.get(String(l.main))
    if (idx === undefined) continue
    const list = mainAt.get(l.node) ?? []
    list.push({ time: l.time, idx })
    mainAt.set(l.node, list)
  }
  const liveNodes = [...logs.keys()].filter(n => n !== killed)
  const reached = (node: string, idx: number): number => {
    for (const e of mainAt.get(node) ?? []) if (e.idx >= idx) return e.time
    return Number.NaN
  }

  const byTask = new Map<string, Array<LogLine & { node: string }>>()
  for (const l of all) {
    const id = taskOf(l)
    if (id === undefined) continue
    const list = byTask.get(id) ?? []
    list.push(l)
    byTask.set(id, list)
  }

  let runs = 0
  let claimsLost = 0
  let extraRuns = 0
  let rerunsAfterKill = 0
  const duplicates: Analysis['duplicates'] = []
  const out: TaskTimes[] = []
  for (const task of tasks) {
    const lines = byTask.get(task.id) ?? []
    const starts = lines.filter(l => l.event === 'task:started')
    runs += starts.length
    claimsLost += lines.filter(l => l.event === 'task:released' && typeof l.reason === 'string' && (l.reason.startsWith('lost the claim') || l.reason.startsWith('superseded'))).length
    let dup = false
    for (let i = 1; i < starts.length; i++) {
      extraRuns++
      if (starts.slice(0, i).some(s => s.node === killed)) rerunsAfterKill++
      else dup = true
    }
    if (dup) {
      const t0 = lines[0]?.time ?? 0
      duplicates.push({ task: task.id, lines: [...lines].sort((a, b) => a.time - b.time).map(l => { const { time, node, event, level: _level, ns: _ns, task: _task, ...rest } = l; return `+${time - t0} ms ${node} ${event} ${JSON.stringify(rest)}` }) })
    }
    const times: TaskTimes = { id: task.id, node: null, t: {} }
    const created = createdAt.get(task.id)
    const depsMerged = task.deps.map(d => mergedAt.get(d)?.time ?? Number.NaN)
    if (created !== undefined) times.t.ready = Math.max(created, ...depsMerged)
    // the run that counted: the last commit of the task
    const commit = [...lines].reverse().find(l => l.event === 'task:committed')
    if (commit !== undefined) {
      const { node, epoch } = commit
      times.node = node
      const same = (ev: string): number | undefined => [...lines].reverse().find(l => l.node === node && l.epoch === epoch && l.event === ev)?.time
      times.t.claimed = same('task:claimed') ?? same('task:stolen')
      times.t.running = same('task:started')
      if (typeof commit.agentStart === 'number') times.t.agentStart = commit.agentStart
      if (typeof commit.agentEnd === 'number') times.t.agentEnd = commit.agentEnd
      times.t.committed = commit.time
      times.t.done = lines.find(l => l.node === node && l.epoch === epoch && l.event === 'task:done')?.time
      const m = mergedAt.get(task.id)
      if (m !== undefined) {
        times.t.merged = m.time
        // collected by the leader after done, or handed to it before done (branch:received): on the leader at done then
        const arrived = m.node === node
          ? times.t.done
          : [...lines].reverse().find(l => l.node === m.node && (l.event === 'branch:collected' || l.event === 'branch:received' || l.event === 'branch:held') && l.time <= m.time)?.time
        times.t.onLeader = arrived !== undefined && times.t.done !== undefined ? Math.max(arrived, times.t.done) : arrived
        const idx = tipIndex.get(m.tip) as number
        times.t.mainEverywhere = Math.max(...liveNodes.map(n => reached(n, idx)))
      }
    }
    out.push(times)
  }
  const between = (a: Stamp, b: Stamp): number[] => out.map(x => (x.t[b] ?? Number.NaN) - (x.t[a] ?? Number.NaN))
  return {
    tasks: out,
    phases: PHASES.map(([a, b, label]) => stat(label, between(a, b))),
    doneToMerged: stat('done → merged', between('done', 'merged')),
    readyToMerged: stat('ready → merged', between('ready', 'merged')),
    runs,
    extraRuns,
    rerunsAfterKill,
    duplicateRuns: extraRuns - rerunsAfterKill,
    duplicates,
    duplicateMerges: mergeNames - mergedAt.size,
    batches,
    meanBatch: batches === 0 ? 0 : mergeNames / batches,
    merged: mergedAt.size,
    claimsLost,
    criticalPath: criticalPath(tasks, out)
  }
}

/** See `CriticalPath`. */
export function criticalPath (tasks: readonly BenchTask[], times: readonly TaskTimes[]): CriticalPath {
  const byId = new Map(times.map(t => [t.id, t]))
  const deps = new Map(tasks.map(t => [t.id, t.deps]))
  let last: TaskTimes | undefined
  for (const t of times) if (t.t.merged !== undefined && (last?.t.merged === undefined || t.t.merged > last.t.merged)) last = t
  const chain: TaskTimes[] = []
  for (let cur = last; cur !== undefined && chain.length <= times.length;) {
    chain.unshift(cur)
    // the dependency merged last made it ready (ready = max(created, deps merged)); none: ready at creation
    let prev: TaskTimes | undefined
    for (const d of deps.get(cur.id) ?? []) {
      const dt = byId.get(d)
      if (dt?.t.merged !== undefined && (prev?.t.merged === undefined || dt.t.merged > prev.t.merged)) prev = dt
    }
    cur = prev !== undefined && prev.t.merged === cur.t.ready ? prev : undefined
  }
  const onChain = PHASES.filter(([, b]) => b !== 'mainEverywhere')
  return {
    tasks: chain.map(t => t.id),
    phases: onChain.map(([a, b, label]) => ({ label, ms: chain.reduce((sum, t) => sum + ((t.t[b] ?? Number.NaN) - (t.t[a] ?? Number.NaN)), 0) }))
  }
}

/** Parses JSON log lines, skipping anything that is not one (a torn last line, plain text). */
export function parseLog (text: string): LogLine[] {
  const out: LogLine[] = []
  for (const raw of text.split('\n')) {
    if (!raw.startsWith('{')) continue
    try {
      const v = JSON.parse(raw) as LogLine
      if (typeof v.time === 'number' && typeof v.event === 'string') out.push(v)
    } catch {}
  }
  return out
}
