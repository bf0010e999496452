/**
 * `npm run bench:exec`: the execution benchmark, on two real libp2p nodes running
 * in this process (loopback TCP with pnet, Noise and Yamux, as `meshwork node`
 * uses) and real git repositories generated in a temp dir.
 *
 *   1. per-task overhead outside the agent, p50/p99: worktree create (with a
 *      trivial `--setup`), commit of the sim agent's edits, cleanup, transfer of
 *      the task branch to the other node; on a small and a large generated repo
 *   2. transfer throughput of a branch with a large fresh commit: meshwork's
 *      `/meshwork/git/2` against `git fetch file://` into equivalent fresh clones,
 *      with the anatomy of one transfer and the raw libp2p stream ceiling
 *
 * Flags:
 *   --quick        smoke run: small repo only, 10 tasks, a 10 MiB transfer, 2 reps;
 *                  does not touch docs/benchmarks.md
 *   --no-docs      do not rewrite the section in docs/benchmarks.md
 *   --json FILE    also write the raw results as JSON
 *   --tasks N      tasks per repo (default 30; implies --no-docs when changed)
 *   --from-json FILE  measure nothing: print the report of a run saved with --json
 *                  and (unless it was a quick run, or --no-docs) write its docs section
 *
 * The temp dir is removed at the end, also on failure or Ctrl-C.
 */
import { rmSync } from 'node:fs'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs } from './bench/lib/args.ts'
import { createMesh, waitAllAlive, type TestMesh } from '../test/helpers/mesh.ts'
import type { RepoSpec } from './bench/exec-repo.ts'
import { runOverhead, runThroughput, spawnBaseline, type OverheadParams, type ThroughputParams } from './bench/exec-phases.ts'
import { currentLoad, machine, writeSection } from './bench/exec-report.ts'
import { markdownSection, textReport, type ExecResults } from './bench/exec-render.ts'

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))

/** The small repository: a few hundred files, a few commits. */
const SMALL_REPO: RepoSpec = { files: 200, minBytes: 500, maxBytes: 4000, commits: 5, changedPerCommit: 20, seed: 1 }
/**
 * The large repository: 20,000 files (about 80 MB checked out) and about 200 MB
 * of incompressible history over 121 commits. Its own working tree is left empty
 * (every task gets a worktree; nothing reads the primary checkout).
 */
const LARGE_REPO: RepoSpec = { files: 20_000, minBytes: 1024, maxBytes: 7168, commits: 120, changedPerCommit: 250, seed: 2, checkout: false }

async function main (): Promise<void> {
  const values = parseScriptArgs(import.meta.url, {
      quick: { type: 'boolean', default: false },
      'no-docs': { type: 'boolean', default: false },
      json: { type: 'string' },
      tasks: { type: 'string' },
      'from-json': { type: 'string' }
    })
  if (values['from-json'] !== undefined) {
    const saved = JSON.parse(await readFile(values['from-json'], 'utf8')) as ExecResults
    process.stdout.write(textReport(saved) + '\n')
    if (!saved.quick && values['no-docs'] !== true) {
      await writeSection(DOCS, markdownSection(saved))
      process.stderr.write(`wrote the execution section of ${DOCS} from ${values['from-json']}\n`)
    }
    return
  }
  const major = Number(process.versions.node.split('.')[0])
  if (major < 22) throw new Error(`Node ${process.version} cannot run libp2p 3 or strip types; use the pinned Node 24 (npm run bench:exec, or ./node_modules/.bin/node scripts/bench-exec.ts)`)
  const quick = values.quick === true
  const tasks = values.tasks !== undefined ? Number(values.tasks) : quick ? 10 : 30
  if (!Number.isInteger(tasks) || tasks < 1) throw new Error(`--tasks must be a positive integer, not ${String(values.tasks)}`)
  const writeDocs = !quick && values['no-docs'] !== true && values.tasks === undefined

  const started = Date.now()
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-exec-'))
  let mesh: TestMesh | undefined
  const cleanup = (): void => { rmSync(root, { recursive: true, force: true }) }
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      cleanup()
      const meshRoot = mesh?.dirs[0]
      if (meshRoot !== undefined) rmSync(meshRoot, { recursive: true, force: true })
      process.stderr.write(`\nbench:exec: ${sig}, temp dirs removed\n`)
      process.exit(130)
    })
  }
  const log = (line: string): void => { process.stderr.write(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s  ${line}\n`) }
  const results: ExecResults = {
    date: new Date().toISOString(),
    quick,
    durationMs: 0,
    machine: machine(root),
    loadStart: currentLoad(),
    loadEnd: [],
    spawn: { gitMs: null, blockMs: null },
    overhead: [],
    throughput: null
  }
  log(`meshwork execution benchmark${quick ? ' (quick)' : ''}: temp dir ${root}`)
  try {
    mesh = await createMesh(2)
    await waitAllAlive(mesh.nodes)
    const [a, b] = mesh.nodes
    if (a === undefined || b === undefined) throw new Error('mesh did not start two nodes')
    const ctx = { root, a, b, swarmKeyHex: mesh.key.hex, log }
    results.spawn = await spawnBaseline(root, 30)
    log(`a trivial git process takes ${results.spawn.gitMs?.toFixed(1) ?? 'n/a'} ms; spawn() blocks the event loop ${results.spawn.blockMs?.toFixed(1) ?? 'n/a'} ms (medians of 30)`)
    const scenarios: OverheadParams[] = [{ name: 'small', repo: SMALL_REPO, tasks, warmup: 2, setup: 'true' }]
    if (!quick) scenarios.push({ name: 'large', repo: LARGE_REPO, tasks, warmup: 2, setup: 'true' })
    for (const s of scenarios) {
      const r = await runOverhead(ctx, s)
      results.overhead.push(r)
      log(`[${s.name}] total per task p50 ${Math.round(r.phases.total.p50 ?? NaN)} ms, p99 ${Math.round(r.phases.total.p99 ?? NaN)} ms`)
    }
    const tp: ThroughputParams = quick
      ? { files: 128, bytesPerFile: 80 * 1024, reps: 2 }
      : { files: 200, bytesPerFile: 256 * 1024, reps: 3 }
    results.throughput = await runThroughput(ctx, tp, SMALL_REPO)
  } finally {
    await mesh?.stop().catch(() => {})
    cleanup()
  }
  results.loadEnd = currentLoad()
  results.durationMs = Date.now() - started

  process.stdout.write(textReport(results) + '\n')
  if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2))
  if (writeDocs) {
    await writeSection(DOCS, markdownSection(results))
    log(`wrote the execution section of ${DOCS}`)
  } else {
    log('docs/benchmarks.md not touched (quick run, --no-docs or --tasks)')
  }
}

main().then(() => { process.exit(0) }, (err: unknown) => {
  process.stderr.write(`bench:exec failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
