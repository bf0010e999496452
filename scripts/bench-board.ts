/**
 * `npm run bench:board`: the board and membership benchmark over real node
 * processes on loopback.
 *
 *   1. board change propagation p50/p99 at 5, 20 and 50 nodes
 *   2. joiner sync time for boards of 1,000 and 10,000 tasks
 *   3. bytes per task lifecycle (gossip payload and real loopback bytes), 5 nodes
 *   4. idle RSS and CPU per node at 5, 20 and 50 nodes
 *   5. dead detection and false positives on a saturated host, 10 nodes, with the default
 *      timeouts (suspect/dead after 3 s/10 s) and again with a lower deadAfter
 *
 * Flags:
 *   --quick         smoke run: sizes 5 and 10, 1,000-task joiner only, shorter windows;
 *                   does not touch docs/benchmarks.md
 *   --no-docs       do not rewrite the section in docs/benchmarks.md
 *   --json FILE     also write the raw results as JSON
 *   --only LIST     run only some phases (comma list of prop, join, dead; prop includes
 *                   idle and bytes); implies --no-docs
 *   --sizes LIST    mesh sizes of the propagation phase (default 5,20,50); implies --no-docs
 *   --per-process N nodes per process in the propagation phase (the first node always runs
 *                   alone). Default: 1 (a process per node) up to 20 nodes, 5 above (the
 *                   50-node mesh runs as 1 + 10 processes: 50 processes of ~200 MiB, each
 *                   with its own V8 and libp2p, do not fit 2 cores); every node is still a
 *                   full libp2p node on its own TCP port. The report states the layout
 *   --dead-after MS deadAfter of the second dead-detection run (default 5000; suspect after
 *                   40 % of it); 0 skips that run
 *   --from-json FILE  print the report of a saved full run (--json) and rewrite the docs
 *                   section from it, measuring nothing
 *   --diag-no-ping-abort  diagnostic: libp2p's connection monitor keeps a connection whose
 *                   ping timed out (not meshwork's configuration); implies --no-docs
 *
 * CPU profiles: `NODE_OPTIONS="--cpu-prof --cpu-prof-dir=DIR"` profiles every
 * process; a phase ends its worker processes with SIGTERM (SIGKILL only past
 * 30 s), so each writes its profile. Nodes killed to be detected dead are
 * killed with SIGKILL, and write none.
 *
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs } from './bench/lib/args.ts'
import { installExitGuards, killAllChildren } from './bench/board-cluster.ts'
import { runDead, runJoiner, runSize, type BenchContext } from './bench/board-phases.ts'
import { currentLoad, machine, markdownSection, textReport, writeSection, type Results } from './bench/board-report.ts'

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))

/** Nodes per process of meshes above 20 nodes (see --per-process). */
const DEFAULT_PER_PROCESS_ABOVE_20 = 5

async function main (): Promise<void> {
  const values = parseScriptArgs(import.meta.url, {
      quick: { type: 'boolean', default: false },
      'no-docs': { type: 'boolean', default: false },
      json: { type: 'string' },
      only: { type: 'string' },
      sizes: { type: 'string' },
      'per-process': { type: 'string' },
      'dead-after': { type: 'string' },
      'diag-no-ping-abort': { type: 'boolean', default: false },
      'from-json': { type: 'string' }
    })
  const major = Number(process.versions.node.split('.')[0])
  if (major < 22) throw new Error(`Node ${process.version} cannot run libp2p 3; use the pinned Node 24 (npm run bench:board, or ./node_modules/.bin/node scripts/bench-board.ts)`)
  const quick = values.quick === true
  const only = new Set((values.only ?? 'prop,join,dead').split(',').map(s => s.trim()))
  const diag = values['diag-no-ping-abort'] === true
  const perProcessFlag = values['per-process'] === undefined ? null : Number(values['per-process'])
  if (perProcessFlag !== null && (!Number.isInteger(perProcessFlag) || perProcessFlag < 1)) throw new Error(`--per-process wants a whole number >= 1, got ${values['per-process'] ?? ''}`)
  const perProcess = (size: number): number => perProcessFlag ?? (size > 20 ? DEFAULT_PER_PROCESS_ABOVE_20 : 1)
  const fastDeadMs = Number(values['dead-after'] ?? 5000)
  if (!Number.isInteger(fastDeadMs) || fastDeadMs < 0) throw new Error(`--dead-after wants whole milliseconds >= 0, got ${values['dead-after'] ?? ''}`)
  const writeDocs = !quick && !diag && values['no-docs'] !== true && values.only === undefined && values.sizes === undefined

  if (values['from-json'] !== undefined) {
    // re-render the report (and the docs section) from a saved full run, measuring nothing
    const saved = JSON.parse(await readFile(values['from-json'], 'utf8')) as Results
    process.stdout.write(textReport(saved) + '\n')
    if (!saved.quick && !saved.diagNoPingAbort && values['no-docs'] !== true) {
      await writeSection(DOCS, markdownSection(saved))
      process.stdout.write(`\nwrote the "Board" section of ${DOCS} from ${values['from-json']} (measured ${saved.date})\n`)
    }
    return
  }

  installExitGuards()
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-'))
  const started = Date.now()
  const ctx: BenchContext = { root, quick, quietBoundMs: quick ? 10_000 : 30_000, diagNoPingAbort: diag, log: line => { process.stderr.write(line + '\n') } }
  const results: Results = {
    date: new Date().toISOString(),
    quick,
    diagNoPingAbort: diag,
    durationMs: 0,
    machine: machine(),
    loadavgAtStart: currentLoad(),
    sizes: [],
    joiners: [],
    dead: null,
    deadFast: null
  }
  ctx.log(`meshwork board benchmark${quick ? ' (quick)' : ''}: data under ${root}`)
  try {
    if (only.has('prop')) {
      const sizes = values.sizes !== undefined ? values.sizes.split(',').map(Number).filter(n => Number.isInteger(n) && n >= 2) : quick ? [5, 10] : [5, 20, 50]
      for (const size of sizes) {
        results.sizes.push(await runSize(ctx, {
          size,
          changes: quick ? 20 : 40,
          intervalMs: 150,
          spawnBoundMs: size >= 50 ? 120_000 : size >= 20 ? 90_000 : 60_000,
          formBoundMs: size >= 50 ? 90_000 : size >= 20 ? 45_000 : 30_000,
          idleWindowMs: quick ? 5000 : 10_000,
          perProcess: perProcess(size),
          lifecycles: size === 5 ? (quick ? 10 : 30) : null,
          loWindowMs: quick ? 5000 : 10_000
        }))
      }
    }
    if (only.has('join')) {
      for (const tasks of quick ? [1000] : [1000, 10_000]) results.joiners.push(await runJoiner(ctx, tasks, 180_000))
    }
    if (only.has('dead')) {
      results.dead = await runDead(ctx, 10, quick ? 20_000 : 30_000, 3000, 90_000)
      if (fastDeadMs > 0) {
        const suspectAfterMs = Math.max(1000, Math.round(fastDeadMs * 0.4))
        results.deadFast = await runDead(ctx, 10, quick ? 20_000 : 30_000, 3000, 90_000, { suspectAfterMs, deadAfterMs: Math.max(fastDeadMs, suspectAfterMs) })
      }
    }
  } finally {
    killAllChildren()
    await rm(root, { recursive: true, force: true }).catch(() => {})
  }
  results.durationMs = Date.now() - started
  process.stdout.write('\n' + textReport(results) + '\n')
  if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2) + '\n')
  if (writeDocs) {
    await writeSection(DOCS, markdownSection(results))
    process.stdout.write(`\nwrote the "Board" section of ${DOCS}\n`)
  } else {
    process.stdout.write(`\n(docs/benchmarks.md not touched: ${quick ? '--quick run' : diag ? 'diagnostic run' : values.only !== undefined || values.sizes !== undefined ? 'partial run' : '--no-docs'})\n`)
  }
}

main().then(
  () => { process.exit(0) },
  err => {
    killAllChildren()
    process.stderr.write(`bench:board failed: ${(err as Error)?.stack ?? String(err)}\n`)
    process.exit(1)
  }
)
