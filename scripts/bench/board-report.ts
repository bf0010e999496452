/** Renders the board benchmark's results as a text report (stdout) and a Markdown section (docs/benchmarks.md). */
import type { DeadResult, Formation, IdleResult, JoinerResult, LifecycleResult, PropagationResult } from './board-phases.ts'
import type { CpuShare } from './board-cluster.ts'
import { LIFECYCLE_STEPS } from './board-protocol.ts'
import { bytes, mdTable, ms, pct, secs, textTable } from './lib/stats.ts'
import { writeSection as writeDocSection, type Machine } from './lib/docs.ts'

export interface Results {
  date: string
  quick: boolean
  /** Diagnostic run with libp2p's ping aborts off (never written to the docs). */
  diagNoPingAbort: boolean
  durationMs: number
  machine: Machine
  loadavgAtStart: number[]
  sizes: PropagationResult[]
  joiners: JoinerResult[]
  /** Dead detection with the default timeouts (3 s / 10 s). */
  dead: DeadResult | null
  /** The same with a lower `deadAfter` (--dead-after), since the default cannot detect in under 10 s; absent in older saved results. */
  deadFast?: DeadResult | null
}


export { currentLoad, machine } from './lib/docs.ts'

/** The 50-node aim of the issue. */
export const AIM_NODES = 50
export const AIM_P99_MS = 1000
export const AIM_DEAD_MS = 10_000

interface Verdict { aim: string, measured: string, met: 'yes' | 'no' | 'not measured' }

function verdicts (r: Results): Verdict[] {
  const out: Verdict[] = []
  const big = r.sizes.find(s => s.formation.size === AIM_NODES)
  if (big === undefined) {
    out.push({ aim: `p99 propagation to all nodes < 1 s at ${AIM_NODES} local nodes`, measured: `no ${AIM_NODES}-node mesh in this run`, met: 'not measured' })
  } else {
    const complete = big.lastNode.complete === big.changes && big.changes > 0 && big.writeErrors === 0
    const p99 = big.lastNode.p99
    const measured = p99 === null
      ? `no change reached all nodes: ${big.formation.started}/${AIM_NODES} nodes started${big.formation.startedAllAlive ? '' : ' and did not all see each other alive'}; ${big.deliveredPairs}/${big.expectedPairs} deliveries within 30 s of the last write${big.error !== null ? ` (${big.error})` : ''}`
      : `p99 ${ms(p99)} (p50 ${ms(big.lastNode.p50)}), ${big.lastNode.complete}/${big.changes} changes reached all ${big.formation.started} nodes${big.formation.formed ? '' : '; mesh never fully formed'}`
    out.push({ aim: `p99 propagation to all nodes < 1 s at ${AIM_NODES} local nodes`, measured, met: p99 !== null && complete && big.formation.formed && p99 < AIM_P99_MS ? 'yes' : 'no' })
  }
  for (const d of [r.dead, ...(r.deadFast !== undefined && r.deadFast !== null ? [r.deadFast] : [])]) {
    const fast = d !== null && d === r.deadFast
    const tag = fast ? ` (deadAfter ${secs(d.deadAfterMs ?? null)})` : ''
    if (d === null || d.error !== null || d.detect.max === null) {
      out.push({ aim: `dead detection < 10 s on a saturated host${tag}`, measured: d?.error ?? 'not run', met: d === null ? 'not measured' : 'no' })
      out.push({ aim: `no false dead declarations while saturated${tag}`, measured: d?.error ?? 'not run', met: d === null ? 'not measured' : 'no' })
    } else {
      out.push({
        aim: `dead detection < 10 s on a saturated host${tag}`,
        measured: `median ${secs(d.detect.median)}, max ${secs(d.detect.max)} (${d.nodes} nodes${d.detect.all ? '' : '; NOT every survivor detected it'})`,
        met: d.detect.all && d.detect.max < AIM_DEAD_MS ? 'yes' : 'no'
      })
      out.push({ aim: `no false dead declarations while saturated${tag}`, measured: `${d.falseDead} false dead (${d.falseSuspect} false suspect) in ${secs(d.windowMs)}`, met: d.falseDead === 0 ? 'yes' : 'no' })
    }
  }
  return out
}

const mib = (v: number | null): string => v === null ? 'n/a' : `${(v / 1024 / 1024).toFixed(0)} MiB`
const cpuP = (v: number | null): string => v === null ? 'n/a' : `${v.toFixed(2)} %`

function propRows (r: Results): string[][] {
  return r.sizes.map(s => [
    String(s.formation.size),
    processesCell(s.formation.processes, s.formation.perProcess),
    `${s.formation.started}/${s.formation.size} in ${secs(s.formation.spawnMs)}`,
    s.formation.formed
      ? `yes, ${secs(s.formation.formationMs)}`
      : s.formation.startedAllAlive ? `NO: only the ${s.formation.started} started` : `NO (min alive ${s.formation.minAlive}/${s.formation.expectedAlive} after ${secs(s.formation.formationMs)})`,
    `${s.formation.connections.min ?? '?'}..${s.formation.connections.max ?? '?'}`,
    `${s.deliveredPairs}/${s.expectedPairs}`,
    ms(s.perDelivery.p50), ms(s.perDelivery.p99),
    ms(s.lastNode.p50), ms(s.lastNode.p99), ms(s.lastNode.max),
    share(s.cpu),
    pct(s.formation.background.otherPct)
  ])
}
/** "20 (1 node each)" or "11 (1 + 5 nodes each)"; older saved results have no layout. */
function processesCell (processes: number | undefined, perProcess: number | undefined): string {
  if (processes === undefined) return 'n/a'
  return perProcess === undefined || perProcess <= 1 ? `${processes} (1 node each)` : `${processes} (1 + ${perProcess} nodes each)`
}

const PROP_HEAD = ['nodes', 'processes', 'started', 'all alive', 'conns/node', 'delivered', 'per-node p50', 'per-node p99', 'all-nodes p50', 'all-nodes p99', 'all-nodes max', 'CPU nodes / other', 'other load before']

/** "nodes % / other %" of all cores. */
function share (c: CpuShare | null): string {
  if (c === null || c.hostPct === null) return 'n/a'
  return `${c.benchPct?.toFixed(0) ?? '?'} % / ${c.otherPct?.toFixed(0) ?? '?'} %`
}

function idleRows (r: Results): string[][] {
  return r.sizes.map(s => s.idle).filter((i): i is IdleResult => i !== null).map(i => [
    String(i.size), i.processes === undefined ? 'n/a' : String(i.processes), secs(i.windowMs), mib(i.rssBytes.median), mib(i.rssBytes.max), cpuP(i.cpuPct.median), cpuP(i.cpuPct.max),
    pct(i.nodesPctOfHost), pct(i.cpu.otherPct)
  ])
}
const IDLE_HEAD = ['nodes', 'processes', 'window', 'RSS median', 'RSS max', 'CPU median (1 core = 100 %)', 'CPU max', 'all nodes, % of host', 'other load, % of host']

function joinRows (r: Results): string[][] {
  return r.joiners.map(j => [
    j.tasks.toLocaleString('en-US'),
    j.builder === null ? 'n/a' : `${j.builder.changes}`,
    secs(j.buildMs),
    ms(j.spawnToAllMs), ms(j.spawnToBootMs), ms(j.startToAllMs), ms(j.readyToAllMs),
    bytes(j.joiner?.saveBytes ?? j.builder?.saveBytes), bytes(j.joiner?.diskBytes),
    share(j.cpu),
    j.error === null ? 'ok' : `ERROR: ${j.error.slice(0, 120)}`
  ])
}
const JOIN_HEAD = ['tasks', 'changes', 'build', 'spawn → all tasks', 'spawn → booted', 'start() → all tasks', 'start() done → all tasks', 'save() size', 'on disk (joiner)', 'CPU nodes / other', 'result']

function lifeRows (r: Results): string[][] | null {
  const l = r.sizes.find(s => s.lifecycle !== null)?.lifecycle
  if (l === undefined || l === null) return null
  const rateOf = (w: { ms: number, loBytes: number } | undefined): string => w === undefined ? 'n/a' : `${bytes(w.loBytes / (w.ms / 1000))}/s`
  const tcpRateOf = (w: { ms: number, tcpBytes: number | null } | undefined): string => w === undefined || w.tcpBytes === null ? 'n/a' : `${bytes(w.tcpBytes / (w.ms / 1000))}/s`
  const ratio = (v: number | null): string => v === null || l.payloadPerLifecycle === 0 ? 'n/a' : `${(v / l.payloadPerLifecycle).toFixed(1)}x`
  const [a, b] = l.idleWindows
  const rate = (w: { ms: number, loBytes: number } | undefined): number | null => w === undefined ? null : w.loBytes / (w.ms / 1000)
  const ra = rate(a); const rb = rate(b)
  // other processes' loopback traffic shows up as idle windows that disagree, or a busy window below the idle rate
  const loSuspect = l.loopbackPerLifecycle === null || l.loopbackPerLifecycle <= 0 || ra === null || rb === null || Math.max(ra, rb) > 2 * Math.min(ra, rb)
  return [
    ...LIFECYCLE_STEPS.map(s => [`payload: ${s}`, bytes(l.stepPayload[s])]),
    ['payload, whole lifecycle', bytes(l.payloadPerLifecycle)],
    ['loopback rx per lifecycle, (busy - idle) / K', `${bytes(l.loopbackPerLifecycle)} (${ratio(l.loopbackPerLifecycle)} the payload)${loSuspect ? '; UNRELIABLE: other loopback traffic on the host (the idle rates disagree)' : ''}`],
    ['mesh TCP payload rx per lifecycle, (busy - idle) / K', `${bytes(l.tcpPerLifecycle)} (${ratio(l.tcpPerLifecycle)} the payload)`],
    ['idle lo rate before / after', `${rateOf(a)} / ${rateOf(b)}`],
    ['idle mesh TCP rate before / after', `${tcpRateOf(a)} / ${tcpRateOf(b)}`],
    ['busy window', `${bytes(l.busy.loBytes)} lo, ${bytes(l.busy.tcpBytes)} mesh TCP in ${secs(l.busy.ms)}; K = ${l.completed}/${l.lifecycles} lifecycles`],
    ['sync sessions: idle before / busy / idle after', `${a?.syncSessions ?? '?'} / ${l.busy.syncSessions} / ${b?.syncSessions ?? '?'}`],
    ['gossiped changes received (all nodes), busy', `${l.busy.changesReceived} (${l.completed * 6 * (l.nodes - 1)} needed)`],
    ...(l.rpcSent !== null ? rpcRows(l) : [])
  ]
}

/** Rows explaining what the nodes sent per lifecycle, from the gossipsub RPC trace. */
function rpcRows (l: LifecycleResult): string[][] {
  const r = l.rpcSent ?? {}
  const get = (k: string): number => r[k] ?? 0
  const rows: string[][] = [['gossipsub RPC bytes sent per lifecycle (all nodes, traced)', bytes(get('bytes'))]]
  // kinds below 1 % of the total are idle-rate noise (they can even come out negative)
  const kinds = Object.keys(r).filter(k => k.startsWith('bytes:') && get(k) >= 0.01 * get('bytes')).sort((x, y) => get(y) - get(x))
  for (const k of kinds) {
    const kind = k.slice('bytes:'.length)
    const count = get(`count:${kind}`)
    rows.push([`  of which ${kind}`, `${bytes(get(k))}${count > 0 ? ` in ${count.toFixed(0)} message sends` : ''}`])
  }
  return rows
}

function deadLines (d: DeadResult | null, cores: number): string[] {
  if (d === null) return ['not run']
  if (d.error !== null) return [`error: ${d.error}`]
  return [
    `${d.nodes} nodes, ${d.burners} CPU burners (busy-loop processes) on ${cores} cores; host CPU busy ${pct(d.cpu?.hostPct)} over the ${secs(d.windowMs)} saturated window (of which other users' work ${pct(d.cpu?.otherPct)}); heartbeat 1 s, suspect ${secs(d.suspectAfterMs ?? 3000)}, dead ${secs(d.deadAfterMs ?? 10_000)}${(d.deadAfterMs ?? 10_000) === 10_000 ? ' (defaults)' : ' (lowered with --dead-after; the defaults are 3 s / 10 s)'}.`,
    `kill -9 of ${d.victim ?? '?'}: suspect after median ${secs(d.suspectMs.median)} (max ${secs(d.suspectMs.max)}); dead after median ${secs(d.detect.median)}, max ${secs(d.detect.max)}; ${d.detectMs.filter(v => v !== null).length}/${d.detectMs.length} survivors reported it dead.`,
    `false dead declarations of other nodes during the window: ${d.falseDead}${d.falseDeadDetail.length > 0 ? ` (${d.falseDeadDetail.slice(0, 5).join('; ')})` : ''}; false suspect transitions: ${d.falseSuspect}.`,
    `largest event-loop lag a node reported in its heartbeat (this widens the peers' timeouts, up to 4x): ${ms(d.maxReportedLagMs)}.`,
    `connections the survivors saw close during the window: ${d.connectionsClosed ?? 'n/a'} (those to the killed node included).`
  ]
}

/** The readable report for stdout. */
export function textReport (r: Results): string {
  const m = r.machine
  const parts: string[] = []
  parts.push(`Board benchmark${r.quick ? ' (--quick smoke run)' : ''}${r.diagNoPingAbort ? ' (DIAGNOSTIC: libp2p ping aborts off)' : ''}, ${r.date}, ${secs(r.durationMs)}`)
  parts.push(`machine: ${m.cpu}, ${m.cores} cores, ${bytes(m.memBytes)} RAM, Node ${m.node}, kernel ${m.kernel}; load average at start ${r.loadavgAtStart.join(' ')}`)
  parts.push('\n1. Board change propagation (ms from the write on a random node until a node applied it; all-nodes = until the LAST node had it)')
  parts.push(textTable(PROP_HEAD, propRows(r)))
  for (const sz of r.sizes) {
    if (sz.error !== null) parts.push(`   ${sz.formation.size} nodes: error: ${sz.error}`)
    for (const n of formationNotes(`${sz.formation.size} nodes`, sz.formation)) parts.push(`   ${n}`)
  }
  parts.push('\n2. Joiner sync (a new node process joins a 2-node mesh that holds the board)')
  parts.push(textTable(JOIN_HEAD, joinRows(r)))
  const lr = lifeRows(r)
  parts.push('\n3. Bytes on the wire per task lifecycle (5 nodes)')
  parts.push(lr === null ? 'not measured' : textTable(['what', 'bytes'], lr))
  parts.push('   Payload = the gossip message data (1 tag byte + the Automerge change) of the six board changes.')
  parts.push('   Loopback counts include every copy gossip sends (each node forwards to its mesh peers), IDONTWANT/IHAVE control,')
  parts.push('   the heartbeat a node brings forward after a remote change (the claim acknowledgement), any sync sessions, and')
  parts.push('   TCP/IP, Noise and Yamux framing; /proc/net/dev also counts other processes\' loopback traffic.')
  parts.push('\n4. Idle cost per node (a process hosting k nodes counts 1/k of its CPU and RSS for each)')
  parts.push(textTable(IDLE_HEAD, idleRows(r)))
  parts.push('\n5. Dead detection on a saturated host')
  parts.push([...deadLines(r.dead, r.machine.cores), ...(r.dead === null ? [] : formationNotes(`${r.dead.nodes} nodes`, r.dead.formation))].map(l => '   ' + l).join('\n'))
  if (r.deadFast !== undefined && r.deadFast !== null) {
    parts.push(`   with deadAfter ${secs(r.deadFast.deadAfterMs ?? null)}:`)
    parts.push([...deadLines(r.deadFast, r.machine.cores), ...formationNotes(`${r.deadFast.nodes} nodes`, r.deadFast.formation)].map(l => '   ' + l).join('\n'))
  }
  parts.push('\nAims (issue):')
  parts.push(textTable(['aim', 'measured', 'met'], verdicts(r).map(v => [v.aim, v.measured, v.met])))
  return parts.join('\n')
}

/** Data-driven remarks on how each mesh formed (what the nodes logged, links that dropped). */
function formationNotes (label: string, f: Formation): string[] {
  const out: string[] = []
  if (f.started < f.size) out.push(`${label}: only ${f.started}/${f.size} nodes started within the start-up bound.`)
  if (!f.startedAllAlive) out.push(`${label}: the started nodes did not all see each other alive within the bound (fewest alive peers seen by one node: ${f.minAlive}/${f.expectedAlive}, after ${secs(f.formationMs)}).`)
  const failed = f.failedStarts.filter(x => !x.error.includes('start-up bound'))
  if (failed.length > 0) out.push(`${label}: ${failed.length} node(s) failed to start: ${failed.slice(0, 2).map(x => `${x.name}: ${x.error.slice(0, 160)}`).join('; ')}${failed.length > 2 ? '; …' : ''}`)
  if (f.statusAnswered < f.started) out.push(`${label}: ${f.started - f.statusAnswered} node(s) did not answer a status request over IPC within 15 s (event loop starved).`)
  if (f.connectionsClosed > 0) out.push(`${label}: ${f.connectionsClosed} connections had closed by the end of formation although no node had stopped.`)
  const dialFails = f.debugEvents['debug:dial:failed'] ?? 0
  if (dialFails > 0) out.push(`${label}: ${dialFails} failed dials (last error: ${f.lastErrors['debug:dial:failed'] ?? '?'}).`)
  const warn = Object.entries(f.warnings)
  if (warn.length > 0) out.push(`${label}: warnings logged by the nodes: ${warn.map(([k, n]) => `${k} x${n}`).join(', ')}.`)
  if (f.background.otherPct !== null && f.background.otherPct >= 20) out.push(`${label}: other work was using ${pct(f.background.otherPct)} of the host when this phase started${f.background.quiet ? '' : ` (did not calm down within ${secs(f.background.waitedMs)})`}.`)
  return out
}

/** The `## Board (npm run bench:board)` section of docs/benchmarks.md. */
export function markdownSection (r: Results): string {
  const m = r.machine
  const v = verdicts(r)
  const big = r.sizes.find(s => s.formation.size === AIM_NODES)
  const lines: string[] = []
  const para = (text: string): void => { lines.push(text, '') }
  lines.push('## Board (npm run bench:board)', '')
  para(`Measured ${r.date} by \`npm run bench:board\`${r.quick ? ' --quick (smoke run)' : ''} in ${secs(r.durationMs)}; this section is rewritten by the script on every full run.`)
  para(`Machine: ${m.cpu}, ${m.cores} cores, ${bytes(m.memBytes)} RAM, Node ${m.node}, Linux ${m.kernel}. Load average when the run started: ${r.loadavgAtStart.join(', ')}.`)
  para(layoutText(r) + ' on 127.0.0.1, all on this one host; every node is a full libp2p node (TCP, Noise, pnet, Yamux, gossipsub) on its own TCP port, and nodes sharing a process talk over loopback TCP like the others. Heartbeat 1 s, suspect/dead after 3 s/10 s (the defaults). Timestamps are taken inside the node processes (one host clock). Before each phase the script waits (≤ 30 s) for other work on the host to use under 20 % of it and records what it found ("other load"): this host is shared, and CPU columns split the benchmark\'s own processes from everything else. Worker processes start with a V8 compile cache (`NODE_COMPILE_CACHE`) to cut their start-up CPU.')
  lines.push('### Aims', '')
  para('Anchors from the issue: Waku measured ~0.5 s average gossipsub propagation at 1,000 nodes; memberlist declares a dead node in roughly 5–50 s at 10–100 nodes. Aim at 50 local nodes: p99 propagation under 1 s, dead detection under 10 s with no false positives while the host is saturated.')
  para(mdTable(['aim', 'measured', 'met'], v.map(x => [x.aim, x.measured, x.met])))
  for (const x of v) lines.push(`- ${x.aim}: **${x.met === 'yes' ? 'met' : x.met === 'no' ? 'not met' : 'not measured'}**.`)
  if (big !== undefined && big.lastNode.p50 !== null && big.formation.formed) {
    lines.push(`- Against Waku's ~0.5 s average at 1,000 nodes: the median delivery to one node of the ${AIM_NODES}-node mesh took ${ms(big.perDelivery.p50)} and the median time until every node had a change ${ms(big.lastNode.p50)}, with all ${AIM_NODES} processes on ${m.cores} cores (CPU during the writes, nodes / other: ${share(big.cpu)} of the host).`)
  } else if (big !== undefined) {
    lines.push(`- Against Waku's ~0.5 s average at 1,000 nodes: no comparable figure; the ${AIM_NODES}-node mesh did not form on this host (see section 1), and the deliveries that did happen took ${ms(big.perDelivery.p50)} at the median.`)
  }
  // the largest mesh below the aim's size that formed and delivered everywhere
  const small = r.sizes.filter(s => s !== big && s.formation.formed && s.lastNode.p99 !== null).sort((a, b) => b.formation.size - a.formation.size)[0]
  if (small !== undefined) {
    lines.push(`- The largest mesh below ${AIM_NODES} nodes that formed here had ${small.formation.size} nodes; there p99 to all nodes was ${ms(small.lastNode.p99)} (p50 ${ms(small.lastNode.p50)}).`)
  }
  if (r.dead !== null && r.dead.detect.median !== null) {
    lines.push(`- Against memberlist's 5–50 s: ${secs(r.dead.detect.median)} median, ${secs(r.dead.detect.max)} max at ${r.dead.nodes} nodes. A peer is declared dead after \`deadAfter\` (10 s by default) of silence counted from its last heartbeat (up to 1 s before the kill), checked once per heartbeat, and widened up to 4x by the event-loop lag nodes report; with the default timeouts detection cannot come in under ~9–10 s by construction, so the "< 10 s" aim needs a lower \`deadAfter\`.`)
  }
  const f = r.deadFast
  if (f !== undefined && f !== null && f.detect.median !== null) {
    lines.push(`- With \`deadAfter\` ${secs(f.deadAfterMs ?? null)} (suspect ${secs(f.suspectAfterMs ?? null)}): dead after ${secs(f.detect.median)} median, ${secs(f.detect.max)} max at ${f.nodes} nodes, ${f.falseDead} false dead and ${f.falseSuspect} false suspect transitions while saturated.`)
  }
  lines.push('')
  lines.push('### 1. Board change propagation', '')
  const p0 = r.sizes[0]
  para(`For each size the nodes start (bootstrapped through the first), the run waits until every node sees every other alive, then makes ${p0?.changes ?? '?'} task-creating changes (one task, ~200-character prompt), one every ${p0?.intervalMs ?? '?'} ms from random nodes. Per node = ms from the write until one node applied it; all nodes = until the last node had it. The mesh is killed before the next size.`)
  para(mdTable(PROP_HEAD, propRows(r)))
  const notes = r.sizes.flatMap(s => [...(s.error !== null ? [`${s.formation.size} nodes: error: ${s.error}`] : []), ...formationNotes(`${s.formation.size} nodes`, s.formation)])
  if (notes.length > 0) para(notes.map(n => `- ${n}`).join('\n'))
  lines.push('### 2. Joiner sync', '')
  para('A 2-node mesh builds the board (changes of 100 tasks, prompts of 200 characters); then a new node process starts, bootstrapped through the first, and the clock runs from its spawn until its board holds every task. "start()" is the call of `MeshNode.start()` inside the new process, after its modules loaded; "start() done" is when that call returned (listening, dials under way). `save()` is the compacted Automerge document; "on disk" is the joiner\'s board.am + board.log after a flush (the log holds uncompressed incremental chunks until it is compacted).')
  para(mdTable(JOIN_HEAD, joinRows(r)))
  lines.push('### 3. Bytes on the wire per task lifecycle (5 nodes)', '')
  para('One lifecycle = six board changes, each written by the product\'s own transition (src/crdt/lifecycle.ts) and signed as every node signs its changes: create (the task record); claim (`claims[peer] = {epoch, at}`, state); running (`start`: state, node, startedAt, attempts, error, summary); done (`addUsage` and `complete`: costUsd, tokens, state, head oid of 40 hex, doneAt, holders, error, summary); merging (`startMerge`: state); merged (`merge`: state, mergeCommit, mergedAt, error). One node creates, another claims and runs, a third (the leader) merges; each step waits until every node has it. Loopback: `lo` received bytes from /proc/net/dev over the busy window (K lifecycles plus a 5 s tail for gossip\'s IHAVE rounds) minus the idle rate (the mean of an idle window before and one after) times its length, divided by K. The mesh TCP row does the same with the TCP payload bytes received on the nodes\' own sockets (`ss` tcp_info `bytes_received`): no headers, and no other process\'s loopback traffic.')
  const lr = lifeRows(r)
  para(lr === null ? 'Not measured.' : mdTable(['what', 'bytes'], lr))
  para('Loopback counts include every copy gossip sends (a message goes to each mesh peer and relays forward it again), IDONTWANT/IHAVE control, the heartbeat a node brings forward after a remote board change (the claim acknowledgement, no extra message), any sync sessions, and TCP/IP, Noise and Yamux framing; /proc/net/dev counts all traffic on `lo`, so other work on the host using loopback during the windows is in it too (compare the two idle rates).')
  lines.push('### 4. Idle cost per node', '')
  para('After the propagation test, a window with no board writes (heartbeats only): VmRSS from /proc/<pid>/status at its end, CPU = utime+stime from /proc/<pid>/stat over the window, in % of one core. Where a process hosts k nodes, each of them is counted with 1/k of the process\'s CPU and RSS (so a shared process\'s fixed cost, its V8 heap and modules, is spread over its nodes). "All nodes" is their sum as % of the whole host (all cores); "other load" is everything else on the host during the window.')
  para(mdTable(IDLE_HEAD, idleRows(r)))
  lines.push('### 5. Dead detection on a saturated host', '')
  const dn = r.dead === null ? [] : formationNotes(`${r.dead.nodes} nodes`, r.dead.formation)
  para([...deadLines(r.dead, m.cores), ...dn].map(l => `- ${l}`).join('\n'))
  if (r.deadFast !== undefined && r.deadFast !== null) {
    para(`With a lower \`deadAfter\` (the default cannot detect a dead node in under 10 s by construction), a second run on a fresh mesh:`)
    para([...deadLines(r.deadFast, m.cores), ...formationNotes(`${r.deadFast.nodes} nodes`, r.deadFast.formation)].map(l => `- ${l}`).join('\n'))
  }
  return lines.join('\n')
}

/** How the nodes were laid out over processes, for the report's preamble. */
function layoutText (r: Results): string {
  const shared = r.sizes.filter(s => (s.formation.perProcess ?? 1) > 1)
  const base = 'Nodes run as Node.js processes (`scripts/bench/board-worker.ts`: `MeshNode`s driven over IPC)'
  if (shared.length === 0) return `${base}, one node per process,`
  const desc = shared.map(s => `the ${s.formation.size}-node mesh ran as ${s.formation.processes} processes (the bootstrap node alone, then ${s.formation.perProcess} nodes per process)`).join('; ')
  return `${base}: one node per process, except that ${desc}, because ${shared.map(s => s.formation.size).join(' and ')} separate processes of ~200 MiB, each with its own V8 and libp2p, cannot run meaningfully on ${r.machine.cores} cores;`
}

const SECTION = '## Board (npm run bench:board)'

/** Writes the board section of `file`, leaving the other sections as they are. */
export async function writeSection (file: string, section: string): Promise<void> {
  await writeDocSection(file, SECTION, section)
}
