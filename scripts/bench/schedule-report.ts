/**
 * Formats the scheduling benchmark's results: a text report for the terminal
 * and the `## Schedule (npm run bench:schedule)` section of docs/benchmarks.md
 * (replaced in place; every other section of the file is left alone).
 */
import type { PhaseResult, Dist } from './schedule-analysis.ts'
import type { DagParams } from './schedule-dag.ts'
import { ACK_TIMEOUT_MS, CLAIM_TTL_MS, DEFAULT_STEAL_AFTER_MS, MAX_SETTLE_MS, MIN_SETTLE_MS, STARTUP_QUIET_HEARTBEATS } from '../../src/scheduler/scheduler.ts'
import { DEFAULT_DEAD_AFTER_MS, DEFAULT_SUSPECT_AFTER_MS } from '../../src/node/constants.ts'

export const SECTION_TITLE = '## Schedule (npm run bench:schedule)'

/** Aims from the issue. */
export const AIMS = { ratioNoFault: 1.10, ratioNodeLost: 1.25 } as const

export { machine, type Machine } from './lib/docs.ts'
import type { Machine } from './lib/docs.ts'
import { writeSection as writeDocSection } from './lib/docs.ts'


export interface DagSummary {
  params: DagParams
  theoreticalMeanMs: number
  meanMs: number
  p50Ms: number
  minMs: number
  maxMs: number
  totalWorkMs: number
  criticalPathMs: number
  edges: number
}

export interface Results {
  date: string
  quick: boolean
  durationMs: number
  machine: Machine
  dag: DagSummary
  heartbeatMs: number
  killFraction: number
  phases: PhaseResult[]
  notes: string[]
}

const s1 = (ms: number): string => Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'n/a'
const ms0 = (ms: number): string => Number.isFinite(ms) ? `${Math.round(ms)} ms` : 'n/a'
const r3 = (x: number): string => Number.isFinite(x) ? x.toFixed(3) : 'n/a'
const pct = (x: number): string => Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a'
const d2 = (d: Dist): string => d.n === 0 ? 'n/a' : `${ms0(d.p50)} / ${ms0(d.p99)}`
const yn = (b: boolean): string => b ? 'yes' : 'no'

/** Makespan and ratio of a run that did not finish are lower bounds. */
const ge = (p: PhaseResult): string => p.allCompleted ? '' : '≥ '

/**
 * Whether the host was too busy for the run to be a clean measurement of the
 * protocol: the nodes' event loops lagged (p99 of 100 ms or more), or the load
 * average was over twice the cores (the benchmark's own processes included).
 */
function busyHost (p: PhaseResult, m: Machine): boolean {
  return p.loadAtStart > 2 * m.cores || p.workerLagP99Ms >= 100
}

function title (p: PhaseResult): string {
  return `${p.nodes} nodes x ${p.slots} slots${p.fault === null ? ', no fault' : `, ${p.fault.victim} SIGKILLed at ${s1(p.fault.killAtMs)}`}`
}

/** Whether the phase met its ratio aim and (without faults) the zero-duplicate aim. */
export function verdict (p: PhaseResult): { ratioAim: number, ratioMet: boolean, dupMet: boolean } {
  const ratioAim = p.fault === null ? AIMS.ratioNoFault : AIMS.ratioNodeLost
  return { ratioAim, ratioMet: p.allCompleted && p.ratio <= ratioAim, dupMet: p.duplicates.length === 0 && p.sameEpochDuplicates.length === 0 }
}

function topReasons (rec: Record<string, number>, n = 6): string[] {
  return Object.entries(rec).sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${v} x ${k}`)
}

/**
 * What the figures say about where the time went, derived from the measured
 * values of each run (nothing here is a fixed figure).
 */
export function diagnose (r: Results): string[] {
  const notes: string[] = []
  for (const p of r.phases) {
    const excess = p.makespanMs - p.idealMakespanMs
    if (!(excess > 0)) continue
    const parts: string[] = []
    parts.push(`the plan reached the last board ${s1(p.planSpreadMs)} after submission (${s1(p.planLocalMs)} of it to make the one ${p.tasks}-task change on the submitting node); no other node can claim before that`)
    if (p.claimToAllAcked.n > 0 && p.claimToRun.p50 - p.claimToAllAcked.p50 >= 100) parts.push(`a claim had every live peer's acknowledgement after ${ms0(p.claimToAllAcked.p50)} (p50) but started after ${ms0(p.claimToRun.p50)} (p50): the difference is the settle floor and the tick`)
    parts.push(`claims settled in ${ms0(p.claimToRun.mean)} on average (p99 ${ms0(p.claimToRun.p99)}) with the slot idle meanwhile: ${s1(p.settleSlotMs)} of slot time, ${pct(p.settleSlotMs / (p.totalSlots * Math.max(1, p.makespanMs)))} of the mesh's capacity over the run`)
    parts.push(`along the realized critical chain (${p.chain.tasks} tasks) ${s1(p.chain.waitMs)} went on ready→running waits and ${s1(p.chain.mergeMs)} on the stand-in merge hop`)
    const expectedBeats = (p.nodes - 1) * p.makespanMs / r.heartbeatMs
    parts.push(`each node received ${p.perNode.presenceIn} presence messages where heartbeats alone would be about ${Math.round(expectedBeats)}: the rest are claim acknowledgements (every node answers every remote board change, so they grow with nodes x changes)`)
    parts.push(`the ${p.nodes} node processes used ${s1(p.workerCpuMs)} of CPU, ${(p.workerCpuMs / Math.max(1, p.makespanMs)).toFixed(2)} of the host's ${r.machine.cores} cores on average over the run`)
    if (busyHost(p, r.machine)) parts.push(`the host was busy (1-minute load ${p.loadAtStart.toFixed(1)} at submission on ${r.machine.cores} cores; worker event-loop lag p99 up to ${ms0(p.workerLagP99Ms)}), which stretches every one of these steps`)
    if (p.sameEpochDuplicates.length > 0 || (p.events['task:settle-timeout'] ?? 0) > 0) parts.push(`${p.events['task:settle-timeout'] ?? 0} claims hit the ${s1(ACK_TIMEOUT_MS)} acknowledgement timeout without every acknowledgement and started anyway; ${p.sameEpochDuplicates.length} tasks were started twice in one epoch`)
    notes.push(`${title(p)}, ${ge(p)}${s1(excess)} over the ideal: ${parts.join('; ')}.`)
  }
  return notes
}

export function textReport (r: Results): string {
  const out: string[] = []
  const m = r.machine
  out.push(`meshwork scheduling benchmark${r.quick ? ' (quick)' : ''}, ${r.date}`)
  out.push(`machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, Node ${m.node}, Linux ${m.kernel}; load at start ${m.loadAtStart.join(' ')}`)
  const d = r.dag
  out.push(`DAG: seed ${d.params.seed}, ${d.params.tasks} tasks in ${d.params.layers} layers, ${d.params.minDeps}-${d.params.maxDeps} deps each (${d.edges} edges), durations bounded Pareto alpha ${d.params.paretoAlpha} on [${d.params.minMs}, ${d.params.maxMs}] ms: mean ${ms0(d.meanMs)} (theory ${ms0(d.theoreticalMeanMs)}), p50 ${ms0(d.p50Ms)}, max ${ms0(d.maxMs)}; total work ${s1(d.totalWorkMs)}, critical path ${s1(d.criticalPathMs)}`)
  out.push('merge step: INSTANT STAND-IN (one node turns done -> merged as soon as every dep is merged; no git): figures measure scheduling only')
  for (const p of r.phases) {
    const v = verdict(p)
    out.push('')
    out.push(`${title(p)} (${p.totalSlots} slots)`)
    out.push(`  completed ${p.merged}/${p.tasks} merged${p.timedOut ? ' (TIMED OUT)' : ''}; every node's board agrees: ${yn(p.allNodesAgree)}; host load ${p.loadAtStart.toFixed(1)} at submission, ${p.loadAtEnd.toFixed(1)} at the end`)
    out.push(`  the plan (one change of ${p.tasks} tasks) reached every node's board ${s1(p.planSpreadMs)} after submission`)
    out.push(`  workers: event-loop lag p99 up to ${ms0(p.workerLagP99Ms)} (max ${ms0(p.workerLagMaxMs)}); CPU ${s1(p.workerCpuMs)} in all over ${s1(p.makespanMs)} of makespan; per node: ${p.perNode.presenceIn} presence messages received, ${p.perNode.changesOut} board changes made, ${p.perNode.changesIn} received`)
    out.push(`  makespan ${ge(p)}${s1(p.makespanMs)}, ideal ${s1(p.idealMakespanMs)}, ratio ${ge(p)}${r3(p.ratio)} (aim <= ${v.ratioAim.toFixed(2)}: ${v.ratioMet ? 'met' : 'NOT met'})`)
    out.push(`  overhead (makespan - ideal) / tasks: ${ms0(p.overheadPerTaskMs)} per task`)
    out.push(`  runs ${p.runs} for ${p.tasks} tasks; tasks rerun ${p.tasksRerun}; duplicates ${p.duplicates.length}${p.duplicates.length > 0 ? ` (${p.duplicates.slice(0, 8).join(', ')})` : ''}; same-epoch duplicates ${p.sameEpochDuplicates.length}`)
    out.push(`  ready->running p50 / p99: ${d2(p.readyToRun)} (max ${ms0(p.readyToRun.max)}); ideal (queueing only) ${d2(p.idealReadyToRun)}`)
    out.push(`  ready->running when a slot was free (${p.readyToRunFreeSlot.n} tasks): ${d2(p.readyToRunFreeSlot)} (mean ${ms0(p.readyToRunFreeSlot.mean)})`)
    out.push(`  ready->claim ${d2(p.readyToClaim)}; claim->run (settle) ${d2(p.claimToRun)}; done->merged (stand-in hop) ${d2(p.doneToMerged)}`)
    out.push(`  claim->each peer's acknowledgement ${d2(p.claimToAck)}; claim->last acknowledgement ${d2(p.claimToAllAcked)} (${p.claimToAllAcked.n} claims)`)
    out.push(`  claims: ${p.claims.byOwner} by the preferred owner, ${p.claims.stolen} stolen (steal waits p50 / p99 ${d2(p.stealWaits)})`)
    out.push(`  slot utilization ${pct(p.utilization)} (ideal ${pct(p.idealUtilization)})`)
    out.push(`  realized critical chain: ${p.chain.tasks} tasks, running ${s1(p.chain.runMs)} + waiting ready->run ${s1(p.chain.waitMs)} (first task ${s1(p.chain.firstWaitMs)}) + done->merged ${s1(p.chain.mergeMs)}`)
    const rel = topReasons(p.releaseReasons)
    if (rel.length > 0) out.push(`  task:released: ${rel.join('; ')}`)
    const warn = Object.entries(p.events).filter(([k]) => /lost|timeout|ignored|failed|retry|suspect|dead/.test(k)).map(([k, n]) => `${k} ${n}`)
    if (warn.length > 0) out.push(`  events: ${warn.join(', ')}`)
    if (p.fault !== null) {
      const f = p.fault
      out.push(`  fault: killed at ${s1(f.killAtMs)} (${pct(f.killFractionOfIdeal)} of the ideal makespan) while it held ${f.runningAtKill} task(s); lost runs ${f.lostRuns}; declared dead ${f.detectedAfterMs === null ? 'never' : `after ${s1(f.detectedAfterMs)}`}; last lost task restarted ${f.lastRestartAfterMs === null ? 'n/a' : `${s1(f.lastRestartAfterMs)} after the kill`}`)
      out.push(`  ideal with the node's slots gone at the kill (zero detection delay): ${s1(f.idealWithLossMs)}, ratio to it ${r3(f.ratioToIdealWithLoss)}`)
    }
  }
  for (const n of r.notes) out.push('', n)
  out.push('', `benchmark took ${s1(r.durationMs)}`)
  return out.join('\n')
}

/** How the protocol spends that time (read from the code; no figures). */
const CAUSES = [
  '**How the protocol spends that time (from the code), and what was done about it:**',
  '',
  `1. *Every claim idles its slot until it settles.* A claim starts once every live peer's heartbeat heads contain it and this board has every change those heads name (so a concurrent claim of theirs is here too), and not before a floor of two observed gossip delays (clamped to ${MIN_SETTLE_MS}-${MAX_SETTLE_MS} ms); the last acknowledgement wakes the claim at once. The floor used to be 200 ms plus three delays, which hid joiners claiming before anyone waited for them; since a new node waits ${STARTUP_QUIET_HEARTBEATS} heartbeats before its first claim, the round trip is enough. With 0.5-8 s tasks the settle time is a visible fraction of the work; with agent runs of minutes it is not. Not done: claiming the next task ahead while a slot is still busy.`,
  '2. *The plan arrives as one large Automerge change.* Making it and applying it on every node takes a while (the "plan on every board" column), and nothing can be claimed elsewhere until it is applied. Not done: submitting large plans in batches (a client that dies between batches would leave half a plan on the board).',
  `3. *The settle quorum is the peers this node hears.* A suspect peer is still waited for, a dead one is not, and after ${ACK_TIMEOUT_MS / 1000} s a claim starts without the missing acknowledgements; on a starved host either can let two nodes start one task in the same epoch (the fencing then stops one, but an agent run has been paid for). A node that just started claims nothing for ${STARTUP_QUIET_HEARTBEATS} heartbeats, so its peers know it before it can race them.`,
  '4. *Acknowledgements.* Only remote claims are acknowledged at once (one extra presence message); other changes ride the next heartbeat.',
  `5. *Claim TTL.* Other nodes release a claim that has not become a run after ${CLAIM_TTL_MS / 1000} s, longer than the ${ACK_TIMEOUT_MS / 1000} s a claimant waits for acknowledgements, so a claim still settling is never released under its claimant.`
].join('\n')

/** The markdown section (without trailing newline). */
export function markdownSection (r: Results): string {
  const m = r.machine
  const d = r.dag
  const L: string[] = []
  L.push(SECTION_TITLE, '')
  L.push('> **Stand-in figures:** merges here are instant and involve no git. The product as users run it (real nodes, git and merges) is measured by `npm run bench:e2e`, in "End to end" below.', '')
  L.push(`Measured ${r.date.slice(0, 10)} (${r.date}) on ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB RAM, Node ${m.node}, Linux ${m.kernel}; load average at start ${m.loadAtStart.join(' ')}. The whole run took ${s1(r.durationMs)}.`, '')
  L.push('**How.** Every node is a real process (`scripts/bench/schedule-worker.ts`, forked by `scripts/bench-schedule.ts`): one `MeshNode` plus one `Scheduler` with the sim agent, on 127.0.0.1, reporting run starts, board state changes and scheduler log events to the parent over IPC with `Date.now()` timestamps (one host clock). One node submits the whole DAG in one board change.', '')
  L.push('**The merge step is an instant stand-in (no git):** to measure scheduling alone, without git, the submitting node (never the one killed) turns every `done` task whose deps are all `merged` into `merged` (`mergedAt = Date.now()`) as soon as it sees it. The figures therefore measure scheduling only: claims, settling, stealing, recovery and gossip, plus one gossip hop for the stand-in merge.', '')
  L.push(`**The ideal** is a centralized, zero-overhead, non-preemptive list scheduler (event-driven simulation) on the same DAG, durations and total slots, highest remaining critical path first (the order meshwork claims in), merges instant. Ratio = makespan_mesh / makespan_ideal, where makespan_mesh runs from the plan's board change to the last \`mergedAt\`.`, '')
  L.push(`**Parameters.** Seed ${d.params.seed}; ${d.params.tasks} tasks in ${d.params.layers} layers of ${Math.floor(d.params.tasks / d.params.layers)}; every task past layer 0 depends on one task of the previous layer plus up to ${d.params.maxDeps - 1} more of any earlier layer (${d.params.minDeps}-${d.params.maxDeps} deps, ${d.edges} edges in all). Durations: bounded Pareto, shape ${d.params.paretoAlpha} on [${d.params.minMs / 1000}, ${d.params.maxMs / 1000}] s (theoretical mean ${s1(d.theoreticalMeanMs)}); drawn: mean ${ms0(d.meanMs)}, median ${ms0(d.p50Ms)}, min ${ms0(d.minMs)}, max ${ms0(d.maxMs)}; total work ${s1(d.totalWorkMs)}, critical path ${s1(d.criticalPathMs)}. Heartbeat ${r.heartbeatMs / 1000} s; suspect / dead after ${DEFAULT_SUSPECT_AFTER_MS / 1000} s / ${DEFAULT_DEAD_AFTER_MS / 1000} s, steal after ${DEFAULT_STEAL_AFTER_MS / 1000} s, settle window ${MIN_SETTLE_MS}-${MAX_SETTLE_MS} ms adapted to the gossip delay (all defaults). Fault run: one node (not the merger) SIGKILLed ${Math.round(r.killFraction * 100)}% of the ideal makespan after submission, chosen among the nodes holding the most tasks then.`, '')
  L.push('| run | slots | makespan | ideal | ratio | overhead / task | runs | tasks rerun | duplicates | ready→running p50 / p99 | same, slot free p50 / p99 | all merged |')
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const p of r.phases) {
    L.push(`| ${title(p)} | ${p.totalSlots} | ${ge(p)}${s1(p.makespanMs)} | ${s1(p.idealMakespanMs)} | ${ge(p)}${r3(p.ratio)} | ${ge(p)}${ms0(p.overheadPerTaskMs)} | ${p.runs} | ${p.tasksRerun} | ${p.duplicates.length} (same epoch: ${p.sameEpochDuplicates.length}) | ${d2(p.readyToRun)} | ${d2(p.readyToRunFreeSlot)} (n=${p.readyToRunFreeSlot.n}) | ${p.merged}/${p.tasks}${p.timedOut ? ' (timed out)' : p.allNodesAgree ? '' : ' (boards disagree)'} |`)
  }
  L.push('')
  L.push('Where the ready→running time goes (p50 / p99): ')
  L.push('')
  L.push('| run | plan on every board | ready→claim | claim→last ack | claim→run (settle) | ideal ready→start (queueing only) | done→merged (stand-in hop) | claims by owner / stolen | steal waited | slot utilization (ideal) | host load start / end | worker loop lag p99 (max) | worker CPU |')
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const p of r.phases) {
    L.push(`| ${title(p)} | ${s1(p.planSpreadMs)} | ${d2(p.readyToClaim)} | ${d2(p.claimToAllAcked)} | ${d2(p.claimToRun)} | ${d2(p.idealReadyToRun)} | ${d2(p.doneToMerged)} | ${p.claims.byOwner} / ${p.claims.stolen} | ${d2(p.stealWaits)} | ${pct(p.utilization)} (${pct(p.idealUtilization)}) | ${p.loadAtStart.toFixed(1)} / ${p.loadAtEnd.toFixed(1)} | ${ms0(p.workerLagP99Ms)} (${ms0(p.workerLagMaxMs)}) | ${s1(p.workerCpuMs)} |`)
  }
  L.push('')
  const fault = r.phases.find(p => p.fault !== null)
  if (fault?.fault != null) {
    const f = fault.fault
    L.push(`**Node lost.** ${f.victim} was killed at ${s1(f.killAtMs)} (${pct(f.killFractionOfIdeal)} of the ideal makespan) holding ${f.runningAtKill} task(s); ${f.lostRuns} run(s) were lost with it and started again elsewhere; the survivors declared it dead ${f.detectedAfterMs === null ? 'never' : `${s1(f.detectedAfterMs)} after the kill`} and the last lost task restarted ${f.lastRestartAfterMs === null ? 'n/a' : `${s1(f.lastRestartAfterMs)} after it`}. Every task completed: ${yn(fault.allCompleted)}. Duplicates beyond the lost runs: ${fault.duplicates.length}. For reference, an ideal that loses the node's slots at the kill with zero detection delay (its runs restart at once) needs ${s1(f.idealWithLossMs)}: the mesh's ratio to that is ${r3(f.ratioToIdealWithLoss)}.`, '')
  }
  L.push('**Which overhead figure.** "Overhead / task" is (makespan_mesh − makespan_ideal) / tasks: the whole-run cost of scheduling spread over the tasks (it can be negative if the mesh happens to beat the list heuristic). Ready→running is measured per task from max(creation, last dependency\'s `mergedAt`) to the run start; it includes queueing for a busy slot, which the ideal has too (its column above), so the "slot free" column restricts it to tasks that became ready while the mesh had a slot for them (running + other waiting ready tasks < slots): that is the pure dispatch delay of the protocol.', '')
  L.push('**Aims (from the issue).**', '')
  for (const p of r.phases) {
    const v = verdict(p)
    const dup = p.fault === null
      ? `; zero duplicate runs: ${v.dupMet ? 'met' : `NOT met (${p.duplicates.length})`}`
      : `; duplicates outside the lost runs: ${p.duplicates.length}, every task completed: ${yn(p.allCompleted)}`
    const caveat = busyHost(p, r.machine) ? ` (measured on a busy host: load ${p.loadAtStart.toFixed(1)} on ${r.machine.cores} cores at submission, worker event-loop lag p99 up to ${ms0(p.workerLagP99Ms)}; not a clean figure for the protocol)` : ''
    L.push(`- ${title(p)}: ratio ${ge(p)}${r3(p.ratio)} against the aim ≤ ${v.ratioAim.toFixed(2)}: **${v.ratioMet ? 'met' : 'not met'}**${p.allCompleted ? '' : ` (timed out with ${p.merged}/${p.tasks} merged)`}${dup}${caveat}.`)
  }
  L.push('')
  const noFault = r.phases.filter(p => p.fault === null)
  L.push(`Anchors: Dask's scheduler adds about 1 ms per task and Ray's less than 1 ms. meshwork's overhead here is ${noFault.map(p => `${ms0(p.overheadPerTaskMs)} per task of makespan with ${p.nodes} nodes`).join(', ')}, and a task that becomes ready while a slot is free waits ${noFault.map(p => p.readyToRunFreeSlot.n === 0 ? `(no such task with ${p.nodes} nodes: a ready task was always waiting)` : `${ms0(p.readyToRunFreeSlot.p50)} (p50, ${p.nodes} nodes)`).join(', ')} to start: far more than those in-memory schedulers, by design (every claim settles over gossip). With agent tasks that last minutes, a per-task cost of this size is a small fraction of each run; what matters is the ratio to the ideal and zero duplicate runs.`)
  if (r.notes.length > 0) {
    L.push('', '**Where the time over the ideal went (derived from this run\'s figures).**', '')
    for (const n of r.notes) L.push(`- ${n}`)
  }
  L.push('', CAUSES)
  return L.join('\n')
}

/** Writes this benchmark's section of `file` (by default the schedule section), leaving the other sections as they are. */
export async function writeSection (file: string, section: string, title = SECTION_TITLE): Promise<void> {
  await writeDocSection(file, title, section)
}
