/** Renders the execution benchmark's results: a text report (stdout) and the Markdown section of docs/benchmarks.md. */
import type { Method, OverheadResult, Phase, SpawnBaseline, ThroughputResult } from './exec-phases.ts'
import { PHASES } from './exec-phases.ts'
import { SECTION, fmtBytes, fmtMiB, fmtMs, fmtRate, mdTable, textTable, type Machine } from './exec-report.ts'

export interface ExecResults {
  date: string
  quick: boolean
  durationMs: number
  machine: Machine
  loadStart: number[]
  loadEnd: number[]
  /** What a trivial git process costs in the benchmark process. */
  spawn: SpawnBaseline
  overhead: OverheadResult[]
  throughput: ThroughputResult | null
}

/** Aims of the issue. */
export const AIM_OVERHEAD_MS = 1000
export const AIM_RATIO = 1.5

interface Verdict { aim: string, measured: string, met: string }

const PHASE_LABEL: Record<Phase | 'total' | 'agent', string> = {
  create: 'worktree create + `--setup true`',
  commit: 'commit of the agent\'s edits',
  cleanup: 'cleanup (worktree remove)',
  transfer: 'transfer of the task branch to the other node',
  total: 'total overhead per task',
  agent: '(sim agent writing 3 files: not overhead)'
}

const METHOD_LABEL: Record<Method, string> = {
  meshwork: 'meshwork `/meshwork/git/2`, both nodes in one process',
  'meshwork-2proc': 'meshwork `/meshwork/git/2`, serving node in its own process',
  git: '`git fetch file://`',
  'git-fsck': '`git -c transfer.fsckObjects=true fetch file://`'
}

const num = (v: number | null, digits = 2): string => v === null ? 'n/a' : v.toFixed(digits)

export function verdicts (r: ExecResults): Verdict[] {
  const out: Verdict[] = []
  const small = r.overhead.find(o => o.name === 'small')
  if (small === undefined) {
    out.push({ aim: `per-task overhead < ${AIM_OVERHEAD_MS} ms on the small repo`, measured: 'not measured', met: 'not measured' })
  } else {
    const { p50, p99 } = small.phases.total
    const met50 = p50 !== null && p50 < AIM_OVERHEAD_MS
    const met99 = p99 !== null && p99 < AIM_OVERHEAD_MS
    out.push({
      aim: `per-task overhead < ${AIM_OVERHEAD_MS} ms on the small repo`,
      measured: `p50 ${fmtMs(p50)}, p99 ${fmtMs(p99)} over ${small.samples.length} tasks`,
      met: met99 ? 'yes (p50 and p99)' : met50 ? 'p50 yes, p99 no' : 'no'
    })
  }
  const tp = r.throughput
  if (tp === null || tp.ratio === null) {
    out.push({ aim: `transfer within ${AIM_RATIO}x of git's local fetch`, measured: 'not measured', met: 'not measured' })
  } else {
    const ok = (x: number | null): string => x === null ? 'not measured' : x <= AIM_RATIO ? 'yes' : 'no'
    out.push({
      aim: `transfer within ${AIM_RATIO}x of git's local fetch`,
      measured: `\`git fetch file://\` ${fmtMs(tp.median.git.ms)}; meshwork ${fmtMs(tp.median.meshwork.ms)} with both nodes in one process (${num(tp.ratio)}x), ${fmtMs(tp.median['meshwork-2proc'].ms)} with the serving node in its own process (${num(tp.ratio2proc)}x); medians of ${tp.params.reps}`,
      met: `one process: ${ok(tp.ratio)}; two processes: ${ok(tp.ratio2proc)}`
    })
  }
  return out
}

function overheadRows (rs: OverheadResult[]): string[][] {
  const keys: Array<Phase | 'total' | 'agent'> = [...PHASES, 'total', 'agent']
  return keys.map(k => [PHASE_LABEL[k], ...rs.flatMap(r => [fmtMs(r.phases[k].p50), fmtMs(r.phases[k].p99), k === 'agent' ? '' : fmtMs(r.cpu[k])])])
}
const overheadHead = (rs: OverheadResult[]): string[] => ['phase', ...rs.flatMap(o => [`${o.name} p50`, `${o.name} p99`, `${o.name} CPU p50`])]

function gitCallRows (rs: OverheadResult[]): string[][] {
  return PHASES.map(p => [PHASE_LABEL[p], ...rs.flatMap(r => {
    const g = r.gitCalls?.[p]
    return g === undefined ? ['n/a', 'n/a'] : [String(g.calls), `${fmtMs(g.gitMs)} of ${fmtMs(g.wallMs)}`]
  })])
}
const gitCallHead = (rs: OverheadResult[]): string[] => ['phase', ...rs.flatMap(o => [`${o.name}: git processes`, `${o.name}: time in git of phase`])]

function repoRows (rs: OverheadResult[]): string[][] {
  return rs.map(r => [
    r.name,
    String(r.repo.files),
    String(r.repo.commits),
    fmtMiB(r.repo.packBytes),
    fmtMiB(r.repo.checkoutBytes),
    `${(r.repo.genMs / 1000).toFixed(1)} s`,
    r.bundleBytesP50 === null ? 'n/a' : fmtBytes(r.bundleBytesP50)
  ])
}
const REPO_HEAD = ['repo', 'files', 'commits', 'objects on disk', 'checkout', 'generated in', 'pack per task (p50)']

function throughputRows (tp: ThroughputResult): string[][] {
  return (['meshwork', 'meshwork-2proc', 'git', 'git-fsck'] as Method[]).map(m => {
    const med = tp.median[m]
    const all = tp.runs.filter(x => x.method === m).map(x => Math.round(x.ms)).join(', ')
    return [
      METHOD_LABEL[m],
      fmtMs(med.ms),
      med.bytes === null ? 'n/a' : fmtMiB(med.bytes),
      med.bytes === null || med.ms === null ? 'n/a' : fmtRate(med.bytes, med.ms),
      fmtMs(med.cpuMs),
      all
    ]
  })
}
const TP_HEAD = ['method', 'median time', 'bytes moved', 'throughput', 'CPU (median)', 'all runs (ms)']

function anatomyRows (tp: ThroughputResult): string[][] {
  const a = tp.anatomy
  if (a === null) return []
  return a.steps.map(s => [s.step, fmtMs(s.ms), `${(100 * s.ms / a.totalMs).toFixed(0)} %`])
}

const load = (l: number[]): string => l.map(v => v.toFixed(2)).join(' / ')

/** Counts of equal strings, in first-seen order: `a x2, b`. */
function countList (items: string[]): string {
  const counts = new Map<string, number>()
  for (const i of items) counts.set(i, (counts.get(i) ?? 0) + 1)
  return [...counts].map(([k, n]) => n > 1 ? `${k} x${n}` : k).join(', ')
}

/** Observations computed from the figures (no number here is fixed in advance). */
export function findings (r: ExecResults): string[] {
  const out: string[] = []
  for (const o of r.overhead) {
    const total = o.phases.total.p50
    if (total === null || total === 0) continue
    const parts = PHASES.map(p => ({ p, v: o.phases[p].p50 ?? 0 })).sort((x, y) => y.v - x.v)
    const top = parts[0]
    if (top === undefined) continue
    let line = `${o.name} repo (${o.repo.files} files): the largest phase at p50 is ${top.p}, ${fmtMs(top.v)} of the ${fmtMs(total)} total (${(100 * top.v / total).toFixed(0)} %).`
    const g = o.gitCalls
    if (g !== null) {
      const calls = PHASES.reduce((a, p) => a + g[p].calls, 0)
      line += ` A task starts ${calls} git processes one after the other (create ${g.create.calls}, commit ${g.commit.calls}, cleanup ${g.cleanup.calls}, transfer ${g.transfer.calls}) plus one shell for \`--setup\`.`
      if (r.spawn.gitMs !== null && o === r.overhead[0]) line += ` A trivial git process (\`git --version\`) started from the benchmark process took ${fmtMs(r.spawn.gitMs)} here (median${r.spawn.blockMs !== null ? `, of which the synchronous \`spawn()\` blocked the event loop ${fmtMs(r.spawn.blockMs)}` : ''}), so process starts alone account for about ${fmtMs(calls * r.spawn.gitMs)} per task.`
      const createShare = g.create.wallMs > 0 ? g.create.gitMs / g.create.wallMs : null
      if (top.p === 'create' && createShare !== null) line += ` In the shimmed run \`git worktree add\` was ${(100 * Math.min(1, createShare)).toFixed(0)} % of create: writing the ${o.repo.files}-file checkout (${fmtMiB(o.repo.checkoutBytes)}) to disk.`
    }
    out.push(line)
  }
  const tr = r.overhead.find(o => o.name === 'small')?.gitCalls?.transfer
  if (tr !== undefined) out.push(`The ${tr.calls} git processes meshwork starts for one task transfer (receiver and server), by command: ${countList(tr.commands)}.`)
  const tp = r.throughput
  const a = tp?.anatomy ?? null
  if (tp != null && a !== null && a.steps.length > 0) {
    const stream = a.steps.find(s => s.key === 'stream')
    const index = a.steps.find(s => s.key === 'index')
    const rest = a.steps.filter(s => s.key !== 'stream').reduce((sum, s) => sum + s.ms, 0)
    if (stream !== undefined && index !== undefined) {
      out.push(`One ${fmtMiB(a.bytes)} meshwork transfer took ${fmtMs(a.totalMs)}: the overlapped stream (\`pack-objects\` on the server, the libp2p stream, \`index-pack --strict\` on the receiver, from HEADER to END) ${fmtMs(stream.ms)} (${fmtRate(a.bytes, stream.ms)}); \`index-pack\` finished ${fmtMs(index.ms)} after the last byte arrived; everything else (haves, the server's resolve, connectivity check, ref update) ${fmtMs(rest)} together.`)
    }
    const one = tp.median.meshwork
    const two = tp.median['meshwork-2proc']
    if (one.ms !== null && two.ms !== null && one.cpuMs !== null && two.cpuMs !== null && two.ms > one.ms) {
      out.push(`With the serving node in a process of its own the transfer was slower (${fmtMs(two.ms)} against ${fmtMs(one.ms)}) and used more CPU in all (${fmtMs(two.cpuMs)} against ${fmtMs(one.cpuMs)}) on this ${r.machine.cores}-core machine; this benchmark does not break that difference down.`)
    }
    if (tp.raw !== null) {
      const gitMs = tp.median.git.ms
      const floor = gitMs !== null && gitMs > 0 ? tp.raw.ms / gitMs : null
      out.push(`The raw libp2p stream between the same two in-process nodes (${fmtBytes(tp.raw.chunkBytes)} frames, no window, no files, no git) moved ${fmtMiB(tp.raw.bytes)} in ${fmtMs(tp.raw.ms)} (${fmtRate(tp.raw.bytes, tp.raw.ms)})${stream !== undefined ? `; the transfer's overlapped stream reached ${fmtRate(a.bytes, stream.ms)}` : ''}.${floor !== null ? ` That stream alone takes ${floor.toFixed(2)}x the time of the whole \`git fetch\`, so ${floor > AIM_RATIO ? `even a transfer as fast as the raw stream could not meet the ${AIM_RATIO}x aim with both nodes in one process` : `the wire alone leaves room for the ${AIM_RATIO}x aim${tp.ratio !== null && tp.ratio > AIM_RATIO ? '; the transfer, at ' + num(tp.ratio) + 'x, does not reach it' : ''}`}.` : ''} Each byte is encrypted twice and decrypted twice in JavaScript/WebAssembly (pnet XSalsa20 over Noise ChaCha20-Poly1305), where \`git fetch file://\` moves it through a pipe.`)
    }
  }
  return out
}

/** Problems found and proposed fixes (the causes are facts of the code; the sizes come from this run). */
export function proposals (r: ExecResults): string[] {
  const out: string[] = []
  const tr = r.overhead.find(o => o.name === 'small')?.gitCalls?.transfer
  out.push(`**Fixed cost of a transfer: ${tr !== undefined ? `${tr.calls} git processes (${countList(tr.commands)})` : 'its git processes'}** (src/git/transfer.ts). \`/meshwork/git/2\` already batches the lookups (one \`cat-file --batch-check\` and one exact \`for-each-ref\` on the server, side by side; \`for-each-ref\` and \`rev-list\` for the haves, side by side), caches the git dir and checks ref names and checked-out branches without git. What is left per fetch is the pack itself (\`pack-objects\`, \`index-pack\`), the connectivity check and \`update-ref\`. Further cuts would need long-lived git processes: one \`cat-file --batch-check\` per served repository fed each request's lines, and haves kept per repository and refreshed when its refs change instead of gathered per fetch.`)
  out.push('**The wire itself** is bounded by libp2p\'s crypto in the Node process (pnet XSalsa20 in WebAssembly over Noise) — the raw-stream figure above. The transfer overlaps it with packing and indexing (compare the overlapped stream\'s rate with the raw stream\'s above); beyond that, going faster needs less crypto work per byte on that path (one layer of encryption for bulk data instead of two, or a different transport for it).')
  const large = r.overhead.find(o => o.name === 'large')
  if (large !== undefined) {
    out.push(`**Large repositories pay the checkout twice per task** (src/git/worktree.ts): \`create\` writes all ${large.repo.files} files (${fmtMiB(large.repo.checkoutBytes)}) and \`cleanup\` deletes them again (p50 ${fmtMs(large.phases.create.p50)} + ${fmtMs(large.phases.cleanup.p50)} here). Proposed: keep a small pool of finished worktrees per node and reuse one for the next task (\`git checkout -f -B meshwork/<id> <base>\` + \`git clean -ffdx\`), which rewrites only the files that differ between the two bases; remove pooled worktrees on shutdown and in \`pruneStale\`.`)
  }
  return out
}

export function textReport (r: ExecResults): string {
  const m = r.machine
  const lines: string[] = []
  lines.push('')
  lines.push(`meshwork execution benchmark${r.quick ? ' (quick)' : ''}, ${r.date}, ${(r.durationMs / 1000).toFixed(0)} s`)
  lines.push(`machine: ${m.cpu}, ${m.cores} cores, ${(m.memBytes / 2 ** 30).toFixed(1)} GiB, Node ${m.node}, Linux ${m.kernel}, git ${m.git}, temp dir on ${m.tmpFs}`)
  lines.push(`load average (1/5/15 min): start ${load(r.loadStart)}, end ${load(r.loadEnd)}`)
  lines.push(`a trivial git process from this process: ${fmtMs(r.spawn.gitMs)} wall, spawn() blocks the event loop ${fmtMs(r.spawn.blockMs)} (medians of 30)`)
  lines.push('two meshwork nodes IN ONE PROCESS (real libp2p hosts on 127.0.0.1: TCP, pnet, Noise, Yamux); git repositories in a temp dir')
  lines.push('')
  if (r.overhead.length > 0) {
    lines.push(textTable(REPO_HEAD, repoRows(r.overhead)))
    lines.push('')
    lines.push(`Per-task overhead (${r.overhead[0]?.samples.length ?? 0} tasks per repo after ${r.overhead[0]?.params.warmup ?? 0} warm-up; p99 is nearest-rank)`)
    lines.push(textTable(overheadHead(r.overhead), overheadRows(r.overhead)))
    lines.push('')
    lines.push(`git processes per phase (one more task, git timed through a PATH shim adding ${r.overhead.map(o => fmtMs(o.shimOverheadMs)).join(' / ')} per call)`)
    lines.push(textTable(gitCallHead(r.overhead), gitCallRows(r.overhead)))
    lines.push('')
  }
  const tp = r.throughput
  if (tp !== null) {
    lines.push(`Transfer throughput: one commit of ${tp.params.files} files x ${fmtBytes(tp.params.bytesPerFile)} of random bytes (${fmtMiB(tp.freshBytes)} fresh) on a ${tp.baseFiles}-file repo, into fresh clones of main; ${tp.params.reps} reps, order rotated`)
    lines.push(textTable(TP_HEAD, throughputRows(tp)))
    lines.push(`ratio meshwork / git fetch: ${num(tp.ratio)}x in one process, ${num(tp.ratio2proc)}x in two; meshwork (one process) / git fetch with fsck: ${num(tp.ratioFsck)}x`)
    if (tp.anatomy !== null) {
      lines.push('')
      lines.push(`Anatomy of one more meshwork transfer (${fmtMs(tp.anatomy.totalMs)}, steps as the fetch marks them)`)
      lines.push(textTable(['step', 'time', 'share'], anatomyRows(tp)))
    }
    if (tp.raw !== null) lines.push(`raw libp2p stream, ${fmtBytes(tp.raw.chunkBytes)} frames: ${fmtMiB(tp.raw.bytes)} in ${fmtMs(tp.raw.ms)} = ${fmtRate(tp.raw.bytes, tp.raw.ms)}`)
    lines.push('')
  }
  lines.push('Aims')
  lines.push(textTable(['aim', 'measured', 'met'], verdicts(r).map(v => [v.aim, v.measured, v.met])))
  const f = findings(r)
  if (f.length > 0) {
    lines.push('')
    lines.push('Observations')
    for (const x of f) lines.push(`- ${x}`)
  }
  lines.push('')
  lines.push('Problems found and proposed fixes')
  for (const x of proposals(r)) lines.push(`- ${x.replace(/\*\*/g, '')}`)
  return lines.join('\n')
}

export function markdownSection (r: ExecResults): string {
  const m = r.machine
  const out: string[] = []
  out.push(SECTION)
  out.push('')
  out.push(`Measured ${r.date.slice(0, 10)} (${r.date}) by \`npm run bench:exec\` in ${(r.durationMs / 1000).toFixed(0)} s.`)
  out.push('')
  out.push(`Machine: ${m.cpu}, ${m.cores} cores, ${(m.memBytes / 2 ** 30).toFixed(1)} GiB RAM, Node ${m.node}, Linux ${m.kernel}, git ${m.git}; repositories in a temp dir on ${m.tmpFs}.`)
  out.push(`Load average (1/5/15 min) at the start ${load(r.loadStart)}, at the end ${load(r.loadEnd)}: other processes were running on the same ${m.cores} cores, so wall times include waiting for a CPU, and the comparison runs interleave meshwork and git to share that noise. A trivial git process (\`git --version\`) started from the benchmark process took ${fmtMs(r.spawn.gitMs)} (median of 30), its synchronous \`spawn()\` blocking the event loop ${fmtMs(r.spawn.blockMs)}.`)
  out.push('')
  out.push(`Setup: two meshwork nodes — real libp2p hosts on 127.0.0.1 with TCP, the pnet swarm key, Noise and Yamux, as \`meshwork node\` runs them — **in one Node process** (\`test/helpers/mesh.ts\`), so both ends of every stream share one thread; the throughput test also runs the serving node in a process of its own (with ${m.cores} cores and other load on them, that process does not get a core to itself either). Node A serves its repository with \`serveGit\`; node B fetches with \`fetchFromPeer\`. Repositories are generated with \`git fast-import\` from pseudo-random bytes (incompressible, no deltas), so the bytes moved are the content's size. All traffic is on loopback; the temp dir is removed at the end.`)
  out.push('')
  out.push('### Aims')
  out.push('')
  out.push(mdTable(['aim', 'measured', 'met'], verdicts(r).map(v => [v.aim, v.measured, v.met])))
  out.push('')
  if (r.overhead.length > 0) {
    const o0 = r.overhead[0] as OverheadResult
    out.push('### Per-task overhead outside the agent')
    out.push('')
    out.push(`Each task, one after the other on node A: \`Worktrees.create\` (\`git worktree add -B meshwork/<id>\` from main, then \`--setup true\`), the sim agent writing 3 small files (timed, not overhead), \`Worktrees.commit\` (\`add -A\`, commit with the trailer), \`Worktrees.remove\`, then node B fetches \`refs/heads/meshwork/<id>\` from A over \`/meshwork/git/2\` into its own repository, a clone of main made before the first task (so only the task's objects move). ${o0.samples.length} tasks per repository after ${o0.params.warmup} warm-up tasks that are not counted; p99 is nearest-rank (with ${o0.samples.length} tasks: the slowest).`)
    out.push('')
    out.push(mdTable(REPO_HEAD, repoRows(r.overhead)))
    out.push('')
    out.push(mdTable(overheadHead(r.overhead), overheadRows(r.overhead)))
    out.push('')
    out.push('CPU is the median CPU time of the phase: this process (both nodes) plus its git children, so it does not grow with waiting for a core as wall time does.')
    out.push('')
    const shimMs = r.overhead.map(o => o.shimOverheadMs).filter((v): v is number => v !== null)
    out.push(`git processes each phase ran, and their summed wall time against the phase's (one more task, every git command timed through a shell shim on \`PATH\` — a shell and two \`date\` processes around the real git, ${shimMs.length > 0 ? `measured to add ${shimMs.map(v => fmtMs(v)).join(' / ')} per call` : 'adding some ms per call'} — so these wall times run high; not among the samples):`)
    out.push('')
    out.push(mdTable(gitCallHead(r.overhead), gitCallRows(r.overhead)))
    out.push('')
    out.push(`Receiver's clone of main: ${r.overhead.map(o => `${o.name} ${fmtMs(o.cloneMs)}`).join(', ')} (local clone, objects hardlinked; once per node, not per task).`)
    out.push('')
  }
  const tp = r.throughput
  if (tp !== null) {
    out.push('### Transfer throughput: meshwork against `git fetch file://`')
    out.push('')
    out.push(`A branch \`bench/big\` off main with one commit of ${tp.params.files} new files of ${fmtBytes(tp.params.bytesPerFile)} random bytes (${fmtMiB(tp.freshBytes)} of fresh objects, packed on the sender) in a ${tp.baseFiles}-file repository. Each rep makes four fresh \`git clone --no-local\` clones of main and fetches the branch into one with each method, in rotated order; ${tp.params.reps} reps, medians shown. Throughput is bytes moved (meshwork: the pack; git: what its object store grew by) over wall time from the call to the ref being updated. CPU is this process (both nodes) plus its git children, and for the two-process run also the serving process and its git children.`)
    out.push('')
    out.push(mdTable(TP_HEAD, throughputRows(tp)))
    out.push('')
    out.push(`Ratio of medians, meshwork / \`git fetch\`: **${num(tp.ratio)}x** with both nodes in one process, **${num(tp.ratio2proc)}x** with the serving node in its own process (\`scripts/bench/exec-worker.ts\`: what a real mesh does, each side encrypting on its own core); meshwork (one process) / \`git fetch\` with \`transfer.fsckObjects\` (whose \`index-pack --strict\` meshwork's receiver runs too): ${num(tp.ratioFsck)}x.`)
    out.push('')
    if (tp.anatomy !== null && tp.anatomy.steps.length > 0) {
      out.push(`Where one more meshwork transfer of the same branch spent its ${fmtMs(tp.anatomy.totalMs)} (steps between the marks \`fetchFromPeer\` reports in its \`git:fetched\` debug event; no shim, git runs as in the timed transfers):`)
      out.push('')
      out.push(mdTable(['step', 'time', 'share'], anatomyRows(tp)))
      out.push('')
    }
    if (tp.raw !== null) {
      out.push(`Raw libp2p stream between the same nodes, the same ${fmtMiB(tp.raw.bytes)} in ${fmtBytes(tp.raw.chunkBytes)} frames with no window, files or git: ${fmtMs(tp.raw.ms)}, ${fmtRate(tp.raw.bytes, tp.raw.ms)}.`)
      out.push('')
    }
  }
  const f = findings(r)
  if (f.length > 0) {
    out.push('### Observations')
    out.push('')
    for (const x of f) out.push(`- ${x}`)
    out.push('')
  }
  out.push('### Problems found and proposed fixes')
  out.push('')
  out.push('Not applied: no file under src/ was changed by this benchmark.')
  out.push('')
  for (const x of proposals(r)) out.push(`- ${x}`)
  out.push('')
  return out.join('\n')
}
