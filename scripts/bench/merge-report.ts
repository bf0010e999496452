/**
 * Text and Markdown rendering of `npm run bench:merge`; statistics and machine
 * facts come from the execution benchmark's helpers.
 */
import { writeSection } from './lib/docs.ts'
import { fmtMs, mdTable, percentile, textTable, type Machine } from './exec-report.ts'
import type { LatencyResult, ThroughputRow } from './merge-phases.ts'

export interface MergeResults {
  at: string
  quick: boolean
  wallMs: number
  machine: Machine
  load: { before: number[], afterThroughput: number[], end: number[] }
  branches: number
  verifySeconds: number
  throughput: ThroughputRow[]
  latency: LatencyResult
}

export const SECTION = '## Merge (npm run bench:merge)'

const rate = (r: ThroughputRow): number => r.merges / (r.ms / 1000)

function rows (r: MergeResults): string[][] {
  const base = r.throughput[0]
  return r.throughput.map(t => [t.name, String(t.merges), `${(t.ms / 1000).toFixed(2)} s`, `${rate(t).toFixed(1)}/s`, String(t.verifyRuns), String(t.failed), base === undefined ? '' : `${(rate(t) / rate(base)).toFixed(2)}x`])
}

interface Aim { aim: string, measured: string, met: boolean }

function aims (r: MergeResults): Aim[] {
  const find = (re: RegExp): ThroughputRow | undefined => r.throughput.find(t => re.test(t.name))
  const base = r.throughput[0]
  const plain = find(/no verify, batched/)
  const vb = find(/s verify, batched \(/)
  const vu = find(/s verify, one at a time/)
  const out: Aim[] = []
  if (base !== undefined && plain !== undefined) {
    const x = rate(plain) / rate(base)
    out.push({ aim: 'disjoint merges, no verify: merge queue >= 5x one-by-one checkout merges', measured: `${x.toFixed(2)}x (${rate(plain).toFixed(1)}/s vs ${rate(base).toFixed(1)}/s)`, met: x >= 5 })
  }
  if (vb !== undefined && vu !== undefined) {
    const x = rate(vb) / rate(vu)
    out.push({ aim: `${r.verifySeconds} s verify: batching >= 3x unbatched`, measured: `${x.toFixed(2)}x (${rate(vb).toFixed(2)}/s vs ${rate(vu).toFixed(2)}/s)`, met: x >= 3 })
  }
  return out
}

function latencyRows (l: LatencyResult): string[][] {
  const row = (name: string, v: number[]): string[] => [name, String(v.length), fmtMs(percentile(v, 50)), fmtMs(percentile(v, 99)), fmtMs(v.length === 0 ? null : Math.max(...v))]
  return [row('dependency done → dependent running', l.samples), row('  of which: dependency done → merged', l.doneToMerged), row('  of which: last dependency merged → dependent running', l.afterMerge)]
}

export function textReport (r: MergeResults): string {
  const m = r.machine
  return [
    `bench:merge ${r.at}${r.quick ? ' (quick)' : ''}, ${(r.wallMs / 1000).toFixed(0)} s`,
    `machine: ${m.cpu}, ${m.cores} cores, Node ${m.node}, git ${m.git}, ${m.tmpFs}; load ${r.load.before.join(', ')} at start, ${r.load.afterThroughput.join(', ')} after throughput, ${r.load.end.join(', ')} at end`,
    '',
    textTable(['how', 'merges', 'time', 'rate', 'verify runs', 'failed', 'vs checkout'], rows(r)),
    '',
    textTable(['latency', 'n', 'p50', 'p99', 'max'], latencyRows(r.latency)),
    '',
    ...aims(r).map(a => `${a.met ? 'met' : 'NOT met'}: ${a.aim}: ${a.measured}`)
  ].join('\n')
}

export function markdownSection (r: MergeResults): string {
  const m = r.machine
  const l = r.latency
  return [
    SECTION,
    '',
    `Measured ${r.at} by \`npm run bench:merge\` in ${(r.wallMs / 1000).toFixed(0)} s; this section is rewritten by the script on every full run.`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, Node ${m.node}, git ${m.git}, temp dir on ${m.tmpFs}. Load average (1, 5, 15 min): ${r.load.before.join(', ')} at the start, ${r.load.afterThroughput.join(', ')} after the throughput runs, ${r.load.end.join(', ')} at the end. The host is shared with other work.`,
    '',
    '### Aims',
    '',
    mdTable(['aim', 'measured', 'met'], aims(r).map(a => [a.aim, a.measured, a.met ? 'yes' : 'no'])),
    '',
    '### Throughput',
    '',
    `${r.branches} finished task branches, each rewriting its own file of a 200-file repository, merged into main. "merge queue" is the leader's own code (\`runBatch\` in src/git/batch.ts: \`git merge-tree --write-tree\` and \`commit-tree\` per task, stacked; \`--verify\` in a throwaway worktree of the top of the stack; main moved by compare-and-swap with the checked-out worktree brought along, as the leader does), called in a loop until the queue is empty; the board is not involved. The baseline is \`git merge --no-ff\` of each branch in turn in the checked-out main. The verify command is \`sleep ${r.verifySeconds}\`; in the failing row it also fails whenever one of two given tasks is in the candidate's history, so the queue has to bisect. Every row is checked: main ends with one merge commit per merged task on its first-parent history.`,
    '',
    mdTable(['how', 'merges', 'time', 'rate', 'verify runs', 'failed', 'vs checkout'], rows(r)),
    '',
    '### Latency from done to dependents running',
    '',
    `${l.nodes} \`meshwork node\` processes (sim agent, 2 slots each) on 127.0.0.1 run ${l.tasks} tasks in ${l.tasks / 3} chains of 3 (each 300 ms, its own file), no verify. For each dependency edge: the dependent's \`startedAt\` minus its dependency's \`doneAt\`, from \`status --json\` (one host clock). Done → merged includes collecting the branch from the node that made it over \`/meshwork/git/2\`; merged → running includes the claim settling (every live peer's acknowledgement) and the worktree. Whole run ${(l.wallMs / 1000).toFixed(1)} s.`,
    '',
    mdTable(['latency', 'n', 'p50', 'p99', 'max'], latencyRows(l)),
    ''
  ].join('\n')
}

/** Writes the merge section of `file`, leaving the other sections as they are. */
export async function writeMergeSection (file: string, section: string): Promise<void> {
  await writeSection(file, SECTION, section)
}
