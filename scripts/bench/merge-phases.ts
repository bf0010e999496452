/**
 * Phases of `npm run bench:merge`: merge-queue throughput on a generated
 * repository (the leader's own merge code against `git merge` one by one in a
 * checkout), and the latency from a task's done to its dependents running on a
 * mesh of real `meshwork node` processes.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { git, gitText } from '../../src/git/git.ts'
import { advanceBranch } from '../../src/git/merge.ts'
import { runBatch, MAX_PLAIN_BATCH, MAX_VERIFY_BATCH, type BatchItem } from '../../src/git/batch.ts'
import { commitEnv } from '../../src/git/worktree.ts'
import { waitFor } from '../../src/util/wait.ts'
import { runCli, startCliMesh, killAllChildren, describeResult } from '../../test/helpers/cli.ts'
import { parseTaskId, type TaskId } from '../../src/crdt/schema.ts'

/** A repository with `branches` finished task branches, each changing its own file. */
export interface MergeRepo {
  repo: string
  base: string
  items: BatchItem[]
}

/** Makes the repository: 200 small files on main, then `n` branches `meshwork/tNNN` each rewriting file NNN. */
export async function makeRepo (root: string, n: number): Promise<MergeRepo> {
  const repo = join(root, 'repo')
  await mkdir(join(repo, 'src'), { recursive: true })
  await git(['init', '-q', '-b', 'main'], { cwd: repo })
  for (let i = 0; i < 200; i++) await writeFile(join(repo, 'src', `m${String(i).padStart(3, '0')}.txt`), `module ${i}\n`.repeat(40))
  await git(['add', '-A'], { cwd: repo })
  await git(['commit', '-q', '-m', 'base'], { cwd: repo, env: commitEnv() })
  const base = await gitText(['rev-parse', 'HEAD'], { cwd: repo })
  const items: BatchItem[] = []
  for (let i = 0; i < n; i++) {
    const id = `t${String(i).padStart(3, '0')}`
    await git(['checkout', '-q', '-B', `meshwork/${id}`, base], { cwd: repo })
    await writeFile(join(repo, 'src', `m${String(i).padStart(3, '0')}.txt`), `module ${i}, changed by ${id}\n`.repeat(40))
    await git(['commit', '-q', '-am', id, '--trailer', `Meshwork-Task: ${id}`], { cwd: repo, env: commitEnv() })
    items.push({ taskId: parseTaskId(id), title: id, head: await gitText(['rev-parse', 'HEAD'], { cwd: repo }) })
  }
  await git(['checkout', '-q', 'main'], { cwd: repo })
  return { repo, base, items }
}

async function resetMain (r: MergeRepo): Promise<void> {
  await git(['checkout', '-q', '-f', 'main'], { cwd: r.repo })
  await git(['reset', '-q', '--hard', r.base], { cwd: r.repo })
}

async function checkMerged (r: MergeRepo, head: string, n: number): Promise<void> {
  const count = Number(await gitText(['rev-list', '--count', '--first-parent', `${r.base}..${head}`], { cwd: r.repo }))
  if (count !== n) throw new Error(`expected ${n} merge commits on main's first-parent history, found ${count}`)
}

/** One measured way of merging every branch. */
export interface ThroughputRow {
  name: string
  merges: number
  ms: number
  verifyRuns: number
  failed: number
}

/** The same merges one by one with `git merge --no-ff` in the checked-out main. */
export async function baselineCheckout (r: MergeRepo): Promise<ThroughputRow> {
  await resetMain(r)
  const t0 = performance.now()
  for (const it of r.items) {
    await git(['merge', '--no-ff', '-q', '-m', `Merge meshwork/${it.taskId}\n\nMeshwork-Task: ${it.taskId}`, `meshwork/${it.taskId}`], { cwd: r.repo, env: commitEnv() })
  }
  const ms = performance.now() - t0
  await checkMerged(r, await gitText(['rev-parse', 'main'], { cwd: r.repo }), r.items.length)
  return { name: '`git merge --no-ff` one by one in a checkout', merges: r.items.length, ms, verifyRuns: 0, failed: 0 }
}

/**
 * The leader's merge queue (`runBatch`, landing with `advanceBranch` on the
 * checked-out main, as the leader does), repeated until the queue is empty.
 * `failing` task ids write nothing special; the verify command fails on them.
 */
export async function leaderQueue (r: MergeRepo, opts: { name: string, batch: number, verify?: string }): Promise<ThroughputRow> {
  await resetMain(r)
  const dataDir = join(r.repo, '..', 'data')
  await mkdir(dataDir, { recursive: true })
  let main = r.base
  let queue = [...r.items]
  let verifyRuns = 0
  let failed = 0
  let merged = 0
  const t0 = performance.now()
  while (queue.length > 0) {
    const res = await runBatch({
      repo: r.repo,
      worktreesDir: dataDir,
      base: main,
      items: queue.slice(0, opts.batch),
      verify: opts.verify,
      land: async (prev, tip) => (await advanceBranch(r.repo, 'main', prev, tip)) !== 'lost-race'
    })
    main = res.main
    verifyRuns += res.verifyRuns
    const done = new Set<string>()
    for (const o of res.outcomes) {
      if (o.kind === 'merged') { merged++; done.add(o.taskId) }
      if (o.kind === 'verify-failed') { failed++; done.add(o.taskId) }
      if (o.kind === 'conflict') throw new Error(`unexpected conflict on ${o.taskId}`)
    }
    if (done.size === 0) throw new Error('the queue made no progress')
    queue = queue.filter(it => !done.has(it.taskId))
  }
  const ms = performance.now() - t0
  await checkMerged(r, main, merged)
  return { name: opts.name, merges: merged, ms, verifyRuns, failed }
}

/** Every throughput scenario of the benchmark, in order. */
export async function runThroughput (r: MergeRepo, verifySeconds: number, log: (s: string) => void): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = []
  const step = async (p: Promise<ThroughputRow>): Promise<void> => {
    const row = await p
    rows.push(row)
    log(`  ${row.name}: ${row.merges} merges in ${(row.ms / 1000).toFixed(2)} s (${(row.merges / (row.ms / 1000)).toFixed(1)}/s, ${row.verifyRuns} verify runs)`)
  }
  await step(baselineCheckout(r))
  await step(leaderQueue(r, { name: `merge queue, no verify, batched (up to ${MAX_PLAIN_BATCH})`, batch: MAX_PLAIN_BATCH }))
  await step(leaderQueue(r, { name: 'merge queue, no verify, one at a time', batch: 1 }))
  const verify = `sleep ${verifySeconds}`
  await step(leaderQueue(r, { name: `merge queue, ${verifySeconds} s verify, batched (up to ${MAX_VERIFY_BATCH})`, batch: MAX_VERIFY_BATCH, verify }))
  // two tasks whose merge breaks the check: the cost of bisecting
  const bad = [r.items[17]?.taskId, r.items[62]?.taskId].filter((x): x is TaskId => x !== undefined)
  const failing = `sleep ${verifySeconds}; ! git log --format=%B -n 200 | grep -q -E '^Meshwork-Task: (${bad.join('|')})$'`
  await step(leaderQueue(r, { name: `merge queue, ${verifySeconds} s verify, batched, ${bad.length} merges failing it`, batch: MAX_VERIFY_BATCH, verify: failing }))
  await step(leaderQueue(r, { name: `merge queue, ${verifySeconds} s verify, one at a time`, batch: 1, verify }))
  return rows
}

/** Latency from a dependency's `done` to its dependent's start, on a real mesh. */
export interface LatencyResult {
  nodes: number
  tasks: number
  edges: number
  /** ms, one per dependency edge: dependent's startedAt − max(doneAt of its deps). */
  samples: number[]
  /** ms: the dependent's start after the last of its dependencies merged. */
  afterMerge: number[]
  /** ms: done → merged of each task with dependents. */
  doneToMerged: number[]
  wallMs: number
}

interface StatusTask { id: string, state: string, deps: string[], doneAt: number | null, startedAt: number | null, mergedAt: number | null }

/**
 * Three `meshwork node` processes (sim agent, 2 slots each) run `chains` chains
 * of `depth` tasks (each 300 ms, writing its own file); the timeline comes from
 * `status --json` once everything merged.
 */
export async function runLatency (chains: number, depth: number, log: (s: string) => void): Promise<LatencyResult> {
  const mesh = await startCliMesh('meshwork-bench-merge-', ['--agent', 'sim', '--slots', '2'])
  try {
    const lines = ['tasks:']
    for (let c = 0; c < chains; c++) {
      for (let d = 0; d < depth; d++) {
        lines.push(`  - id: c${c}-${d}`, `    prompt: step ${d} of chain ${c}`)
        if (d > 0) lines.push(`    deps: [c${c}-${d - 1}]`)
        lines.push(`    sim: { duration: 300ms, write: { "chain${c}/step${d}.txt": "${c} ${d}\\n" } }`)
      }
    }
    const plan = join(mesh.dir, 'plan.yaml')
    await writeFile(plan, lines.join('\n') + '\n')
    const t0 = Date.now()
    const sub = await runCli(['submit', plan, ...mesh.conn], { timeoutMs: 90_000 })
    if (sub.code !== 0) throw new Error(describeResult(['submit'], sub))
    let tasks: StatusTask[] = []
    await waitFor(async () => {
      const r = await runCli(['status', '--json', ...mesh.conn], { timeoutMs: 90_000 })
      if (r.code !== 0) return false
      tasks = (JSON.parse(r.stdout) as { tasks: StatusTask[] }).tasks
      return tasks.length === chains * depth && tasks.every(t => t.state === 'merged')
    }, { timeoutMs: 600_000, intervalMs: 1000, message: () => `not all merged: ${tasks.filter(t => t.state !== 'merged').map(t => `${t.id}=${t.state}`).join(' ')}` })
    const wallMs = Date.now() - t0
    const byId = new Map(tasks.map(t => [t.id, t]))
    const samples: number[] = []
    const afterMerge: number[] = []
    const doneToMerged: number[] = []
    for (const t of tasks) {
      if (t.deps.length === 0 || t.startedAt === null) continue
      const deps = t.deps.map(d => byId.get(d) as StatusTask)
      samples.push(t.startedAt - Math.max(...deps.map(d => d.doneAt ?? 0)))
      afterMerge.push(t.startedAt - Math.max(...deps.map(d => d.mergedAt ?? 0)))
      for (const d of deps) if (d.doneAt !== null && d.mergedAt !== null) doneToMerged.push(d.mergedAt - d.doneAt)
    }
    log(`  ${samples.length} dependency edges measured in ${(wallMs / 1000).toFixed(1)} s`)
    return { nodes: mesh.nodes.length, tasks: chains * depth, edges: samples.length, samples, afterMerge, doneToMerged, wallMs }
  } finally {
    await killAllChildren()
  }
}
