/**
 * `npm run bench:merge`: the merge benchmark.
 *
 *   1. throughput: 100 finished task branches touching disjoint files, merged
 *      into main by the leader's merge queue (`runBatch` from src/git/batch.ts,
 *      landing on the checked-out main as the leader does) with no verify and
 *      with a 2 s verify, batching on and off, against the same merges done one
 *      by one with `git merge --no-ff` in a checkout, in the same run
 *   2. latency: time from a task's `done` to its dependents running (p50/p99) on
 *      three real `meshwork node` processes with the sim agent
 *
 * Flags:
 *   --quick       20 branches, a 1 s verify, 4 short chains; does not touch docs/benchmarks.md
 *   --no-docs     do not rewrite the section in docs/benchmarks.md
 *   --json FILE   also write the raw results as JSON
 *
 * The temp dir is removed at the end, also on failure or Ctrl-C.
 */
import { rmSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs } from './bench/lib/args.ts'
import { makeRepo, runLatency, runThroughput } from './bench/merge-phases.ts'
import { markdownSection, textReport, writeMergeSection, type MergeResults } from './bench/merge-report.ts'
import { currentLoad, machine } from './bench/exec-report.ts'

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))

async function main (): Promise<void> {
  const values = parseScriptArgs(import.meta.url, { quick: { type: 'boolean', default: false }, 'no-docs': { type: 'boolean', default: false }, json: { type: 'string' } })
  const quick = values.quick === true
  const branches = quick ? 20 : 100
  const verifySeconds = quick ? 1 : 2
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-merge-'))
  const cleanup = (): void => { rmSync(root, { recursive: true, force: true }) }
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => { cleanup(); process.exit(130) })
  const log = (s: string): void => { process.stderr.write(s + '\n') }
  const started = Date.now()
  try {
    const loadBefore = currentLoad()
    log(`making a repository with ${branches} task branches …`)
    const repo = await makeRepo(root, branches)
    log('throughput:')
    const throughput = await runThroughput(repo, verifySeconds, log)
    const loadAfterThroughput = currentLoad()
    log('latency from done to dependents running (3 node processes):')
    const latency = await runLatency(quick ? 4 : 10, 3, log)
    const results: MergeResults = {
      at: new Date(started).toISOString(),
      quick,
      wallMs: Date.now() - started,
      machine: machine(root),
      load: { before: loadBefore, afterThroughput: loadAfterThroughput, end: currentLoad() },
      branches,
      verifySeconds,
      throughput,
      latency
    }
    process.stdout.write(textReport(results) + '\n')
    if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2))
    if (!quick && values['no-docs'] !== true) {
      await writeMergeSection(DOCS, markdownSection(results))
      log(`wrote the merge section of ${DOCS}`)
    }
  } finally {
    cleanup()
  }
}

main().catch(err => {
  process.stderr.write(`bench:merge failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
