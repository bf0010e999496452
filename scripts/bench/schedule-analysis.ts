/**
 * Turns the raw trace of one benchmark run (run starts, final board, log
 * events) into the reported figures. Pure: no I/O.
 */
import { listSchedule, mean, percentile, type IdealSchedule } from './schedule-dag.ts'
import type { BenchTask, LogLine, StatsReply, TaskDump } from './schedule-protocol.ts'

/** A run start as a worker reported it. */
export interface RunEvent { taskId: string, epoch: number, node: string, worker: string, at: number }
/** A log line as a worker reported it. */
export interface WorkerLog { worker: string, node: string, line: LogLine }

/** Everything one run of the mesh produced. */
export interface Trace {
  name: string
  nodes: number
  slots: number
  submitAt: number
  runs: RunEvent[]
  logs: WorkerLog[]
  /** The merger's board at the end. */
  board: TaskDump[]
  /** Whether every live node's board showed every task merged at the end. */
  allNodesAgree: boolean
  /** Node killed (SIGKILL) during the run, if any. */
  kill: { worker: string, peerId: string, at: number, runningAtKill: string[] } | null
  timedOut: boolean
  /** When the parent stopped waiting for the last merge (the run's end, or the timeout). */
  gaveUpAt: number
  /** Per worker: when its board first showed the plan's tasks. */
  planSeenAt: Record<string, number>
  /** Host 1-minute load average at submission and at the end. */
  loadAtStart: number
  loadAtEnd: number
  /** Live workers' event-loop lag and CPU time since the plan reached them. */
  workerStats: StatsReply[]
}

export interface Dist { n: number, p50: number, p99: number, max: number, mean: number }

function dist (values: readonly number[]): Dist {
  return { n: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: values.length === 0 ? Number.NaN : Math.max(...values), mean: mean(values) }
}

export interface PhaseResult {
  name: string
  nodes: number
  slots: number
  totalSlots: number
  tasks: number
  merged: number
  allCompleted: boolean
  allNodesAgree: boolean
  timedOut: boolean
  /** Submission -> the last node's board shows the plan. */
  planSpreadMs: number
  /** Submission -> the submitting node's own board shows it (the time to make the change). */
  planLocalMs: number
  loadAtStart: number
  loadAtEnd: number
  /** Worst event-loop lag p99 and max among the live workers; their CPU time in all. */
  workerLagP99Ms: number
  workerLagMaxMs: number
  workerCpuMs: number
  /** Per node on average, since the plan arrived: presence messages received, board changes made and received. */
  perNode: { presenceIn: number, changesOut: number, changesIn: number }
  makespanMs: number
  idealMakespanMs: number
  ratio: number
  /** (makespan - ideal) / tasks. */
  overheadPerTaskMs: number
  /** Busy slot time (every run, lost ones included) / (total slots x makespan). */
  utilization: number
  idealUtilization: number
  runs: number
  /** Tasks started more than once (any reason). */
  tasksRerun: number
  /** Tasks started twice in the same epoch: never allowed. */
  sameEpochDuplicates: string[]
  /** Tasks started more than once for a reason other than a run lost with the killed node (without a fault: any second start). */
  duplicates: string[]
  /** Ready (max(creation, last dep merged)) -> first run start. */
  readyToRun: Dist
  /** Same, only for tasks that became ready while the mesh had a free slot for them. */
  readyToRunFreeSlot: Dist
  /** Ready -> the claim that led to the first run (discovery, owner or steal wait). */
  readyToClaim: Dist
  /** That claim -> run start (the settle window). */
  claimToRun: Dist
  /** Claim -> each live peer's acknowledgement, and -> the last one (all nodes' claims). */
  claimToAck: Dist
  claimToAllAcked: Dist
  /** Slot time spent settling claims that then ran (sum of claim -> run), ms. */
  settleSlotMs: number
  /** The ideal schedule's ready -> start (pure queueing). */
  idealReadyToRun: Dist
  /** done (doneAt) -> merged (mergedAt): the stand-in merger's gossip hop. */
  doneToMerged: Dist
  claims: { byOwner: number, stolen: number }
  /** Log events by name (all nodes). */
  events: Record<string, number>
  /** task:released reasons, peer ids and numbers masked. */
  releaseReasons: Record<string, number>
  /** Waits reported by task:stolen ("left it waiting N ms"). */
  stealWaits: Dist
  /**
   * The realized critical chain: from the last merge back through each task's
   * last-merged dependency. makespan = run time along it + waits from ready to
   * run start + run end (doneAt) to merged (stand-in hop) + the sim agent's own
   * slack; `waitMs` is the sum of ready -> start gaps, `mergeMs` of done -> merged.
   */
  chain: { tasks: number, runMs: number, waitMs: number, mergeMs: number, firstWaitMs: number }
  fault: null | {
    victim: string
    killAtMs: number
    killFractionOfIdeal: number
    runningAtKill: number
    /** Runs of the killed node that never finished and were started again elsewhere. */
    lostRuns: number
    /** First peer:dead of the victim on a live node, ms after the kill. */
    detectedAfterMs: number | null
    /** Last re-start of a lost task, ms after the kill. */
    lastRestartAfterMs: number | null
    /** Ideal with the killed node's slots gone at the kill time (zero detection delay). */
    idealWithLossMs: number
    ratioToIdealWithLoss: number
  }
}

const mask = (s: string): string => s.replace(/12D3Koo[1-9A-HJ-NP-Za-km-z]+/g, '<peer>').replace(/\d+/g, 'N')

/** Computes the figures of one run. */
export function analyze (trace: Trace, dag: readonly BenchTask[], ideal: IdealSchedule): PhaseResult {
  const totalSlots = trace.nodes * trace.slots
  const byId = new Map(trace.board.map(t => [t.id, t]))
  const merged = trace.board.filter(t => t.state === 'merged')
  const lastMerge = Math.max(trace.submitAt, ...merged.map(t => t.mergedAt ?? 0))
  // a run that timed out has no makespan: at least the time waited for it
  const makespanMs = merged.length === dag.length ? lastMerge - trace.submitAt : Math.max(lastMerge, trace.gaveUpAt ?? lastMerge) - trace.submitAt

  const runsOf = new Map<string, RunEvent[]>()
  for (const r of [...trace.runs].sort((a, b) => a.at - b.at)) runsOf.set(r.taskId, [...(runsOf.get(r.taskId) ?? []), r])

  // run intervals: the final run ends at doneAt; a lost run of the killed node at the kill; any other superseded run at the next start
  const intervals: Array<{ id: string, start: number, end: number }> = []
  for (const [id, list] of runsOf) {
    const t = byId.get(id)
    list.forEach((r, i) => {
      const next = list[i + 1]
      let end: number
      if (next === undefined) end = t?.doneAt ?? lastMerge
      else if (trace.kill !== null && r.node === trace.kill.peerId) end = Math.min(trace.kill.at, next.at)
      else end = next.at
      intervals.push({ id, start: r.at, end: Math.max(r.at, end) })
    })
  }
  const busyMs = intervals.reduce((s, i) => s + (i.end - i.start), 0)
  const workMs = dag.reduce((s, t) => s + t.durationMs, 0)

  const sameEpochDuplicates: string[] = []
  const duplicates: string[] = []
  let lostRuns = 0
  let tasksRerun = 0
  for (const [id, list] of runsOf) {
    const epochs = new Set<number>()
    let sameEpoch = false
    for (const r of list) {
      if (epochs.has(r.epoch)) sameEpoch = true
      epochs.add(r.epoch)
    }
    if (sameEpoch) sameEpochDuplicates.push(id)
    if (list.length > 1) tasksRerun++
    // runs lost with the killed node: every run on it before the kill that was not the task's last run
    const lost = trace.kill === null ? 0 : list.slice(0, -1).filter(r => r.node === trace.kill?.peerId && r.at <= (trace.kill?.at ?? 0)).length
    lostRuns += lost
    if (list.length - 1 - lost > 0) duplicates.push(id)
  }

  // readiness: max(creation, last dependency merged)
  const readyAt = new Map<string, number>()
  for (const t of trace.board) {
    let r = t.createdAt
    for (const d of t.deps) r = Math.max(r, byId.get(d)?.mergedAt ?? Number.POSITIVE_INFINITY)
    readyAt.set(t.id, r)
  }
  const firstStart = new Map<string, number>()
  for (const [id, list] of runsOf) if (list[0] !== undefined) firstStart.set(id, list[0].at)
  const readyToRun: number[] = []
  const freeSlot: number[] = []
  for (const [id, start] of firstStart) {
    const r = readyAt.get(id)
    if (r === undefined || !Number.isFinite(r)) continue
    readyToRun.push(start - r)
    const slots = trace.kill !== null && r >= trace.kill.at ? totalSlots - trace.slots : totalSlots
    const busy = intervals.filter(i => i.id !== id && i.start <= r && r < i.end).length
    let waiting = 0
    for (const [o, os] of firstStart) {
      if (o === id) continue
      const orr = readyAt.get(o) ?? Number.POSITIVE_INFINITY
      if (orr <= r && r < os) waiting++
    }
    if (busy + waiting < slots) freeSlot.push(start - r)
  }

  // claim that led to the first run: the last task:claimed / task:stolen of that node, task and epoch before the start
  const claimsOf = new Map<string, Array<{ node: string, epoch: number, time: number }>>()
  let byOwner = 0
  let stolen = 0
  const events: Record<string, number> = {}
  const releaseReasons: Record<string, number> = {}
  const stealWaits: number[] = []
  for (const l of trace.logs) {
    const ev = l.line.event
    events[ev] = (events[ev] ?? 0) + 1
    const task = l.line.fields.task
    if (ev === 'task:claimed' || ev === 'task:stolen') {
      if (ev === 'task:claimed') byOwner++
      else stolen++
      if (typeof task === 'string') claimsOf.set(task, [...(claimsOf.get(task) ?? []), { node: l.node, epoch: Number(l.line.fields.epoch), time: l.line.time }])
      if (ev === 'task:stolen') {
        const m = /waiting (\d+) ms/.exec(String(l.line.fields.reason ?? ''))
        if (m !== null) stealWaits.push(Number(m[1]))
      }
    }
    if (ev === 'task:released') {
      const k = mask(String(l.line.fields.reason ?? ''))
      releaseReasons[k] = (releaseReasons[k] ?? 0) + 1
    }
  }
  const readyToClaim: number[] = []
  const claimToRun: number[] = []
  for (const [id, list] of runsOf) {
    const first = list[0]
    if (first === undefined) continue
    const c = (claimsOf.get(id) ?? []).filter(x => x.node === first.node && x.epoch === first.epoch && x.time <= first.at).at(-1)
    const r = readyAt.get(id)
    if (c === undefined || r === undefined) continue
    readyToClaim.push(c.time - r)
    claimToRun.push(first.at - c.time)
  }

  const idealWait = dag.map(t => (ideal.start.get(t.id) ?? 0) - (ideal.ready.get(t.id) ?? 0))
  const doneToMerged = trace.board.filter(t => t.doneAt !== null && t.mergedAt !== null).map(t => (t.mergedAt as number) - (t.doneAt as number))

  // walk the realized critical chain back from the last merge
  const chain = { tasks: 0, runMs: 0, waitMs: 0, mergeMs: 0, firstWaitMs: 0 }
  let cur = merged.reduce<TaskDump | undefined>((a, t) => a === undefined || (t.mergedAt ?? 0) > (a.mergedAt ?? 0) ? t : a, undefined)
  while (cur !== undefined) {
    const list = runsOf.get(cur.id) ?? []
    const lastRun = list.at(-1)
    const r = readyAt.get(cur.id) ?? cur.createdAt
    if (lastRun === undefined || cur.doneAt === null || cur.mergedAt === null) break
    chain.tasks++
    chain.runMs += cur.doneAt - lastRun.at
    chain.waitMs += lastRun.at - r
    chain.mergeMs += cur.mergedAt - cur.doneAt
    const deps = cur.deps.map(d => byId.get(d)).filter((d): d is TaskDump => d !== undefined)
    const last = deps.reduce<TaskDump | undefined>((a, t) => a === undefined || (t.mergedAt ?? 0) > (a.mergedAt ?? 0) ? t : a, undefined)
    if (last === undefined) chain.firstWaitMs = lastRun.at - r
    cur = last
  }

  let fault: PhaseResult['fault'] = null
  if (trace.kill !== null) {
    const k = trace.kill
    const killAtMs = k.at - trace.submitAt
    const dead = trace.logs.filter(l => l.line.event === 'peer:dead' && l.line.fields.peer === k.peerId && l.node !== k.peerId).map(l => l.line.time)
    const restarts: number[] = []
    for (const list of runsOf.values()) {
      list.forEach((r, i) => {
        const prev = list[i - 1]
        if (prev !== undefined && prev.node === k.peerId && r.at > k.at) restarts.push(r.at - k.at)
      })
    }
    const withLoss = listSchedule(dag, totalSlots, { atMs: killAtMs, slots: trace.slots })
    fault = {
      victim: k.worker,
      killAtMs,
      killFractionOfIdeal: killAtMs / ideal.makespanMs,
      runningAtKill: k.runningAtKill.length,
      lostRuns,
      detectedAfterMs: dead.length === 0 ? null : Math.min(...dead) - k.at,
      lastRestartAfterMs: restarts.length === 0 ? null : Math.max(...restarts),
      idealWithLossMs: withLoss.makespanMs,
      ratioToIdealWithLoss: makespanMs / withLoss.makespanMs
    }
  }

  return {
    name: trace.name,
    nodes: trace.nodes,
    slots: trace.slots,
    totalSlots,
    tasks: dag.length,
    merged: merged.length,
    allCompleted: merged.length === dag.length,
    allNodesAgree: trace.allNodesAgree,
    timedOut: trace.timedOut,
    planSpreadMs: Math.max(0, ...Object.values(trace.planSeenAt).map(t => t - trace.submitAt)),
    planLocalMs: Math.min(...Object.values(trace.planSeenAt).map(t => t - trace.submitAt)),
    loadAtStart: trace.loadAtStart,
    loadAtEnd: trace.loadAtEnd,
    workerLagP99Ms: Math.max(0, ...(trace.workerStats ?? []).map(w => w.lagP99Ms)),
    workerLagMaxMs: Math.max(0, ...(trace.workerStats ?? []).map(w => w.lagMaxMs)),
    workerCpuMs: (trace.workerStats ?? []).reduce((a, w) => a + w.cpuMs, 0),
    perNode: {
      presenceIn: Math.round(mean((trace.workerStats ?? []).map(w => w.presenceIn))),
      changesOut: Math.round(mean((trace.workerStats ?? []).map(w => w.changesOut))),
      changesIn: Math.round(mean((trace.workerStats ?? []).map(w => w.changesIn)))
    },
    makespanMs,
    idealMakespanMs: ideal.makespanMs,
    ratio: makespanMs / ideal.makespanMs,
    overheadPerTaskMs: (makespanMs - ideal.makespanMs) / dag.length,
    utilization: busyMs / (totalSlots * Math.max(1, makespanMs)),
    idealUtilization: workMs / (totalSlots * ideal.makespanMs),
    runs: trace.runs.length,
    tasksRerun,
    sameEpochDuplicates,
    duplicates,
    readyToRun: dist(readyToRun),
    readyToRunFreeSlot: dist(freeSlot),
    readyToClaim: dist(readyToClaim),
    claimToRun: dist(claimToRun),
    settleSlotMs: claimToRun.reduce((a, b) => a + b, 0),
    claimToAck: dist((trace.workerStats ?? []).flatMap(w => w.ackMs ?? [])),
    claimToAllAcked: dist((trace.workerStats ?? []).flatMap(w => w.allAckedMs ?? [])),
    idealReadyToRun: dist(idealWait),
    doneToMerged: dist(doneToMerged),
    claims: { byOwner, stolen },
    events,
    releaseReasons,
    stealWaits: dist(stealWaits),
    chain,
    fault
  }
}
