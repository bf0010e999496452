/**
 * `npm run bench:e2e`: the product as users run it. Real `meshwork node`
 * processes on 127.0.0.1 (sim agent, 2 slots each), real git, real merges by the
 * elected leader, the plan submitted with `meshwork submit --wait`. No stand-ins.
 *
 * Runs (each on a fresh mesh):
 *   indep    40 independent tasks of 1-4 s, each writing one file, 4 nodes x 2 slots
 *   dag      a seeded layered DAG (200 tasks, bench:schedule's shape, --tasks N)
 *   kill     the DAG again with one node (not the leader) SIGKILLed once 30% of the tasks are done
 *   instant  leader throughput: 100 independent tasks of 0 s
 *
 * For each: makespan (board: first createdAt to last merge; and `submit --wait`
 * wall time) against the lower bound (total work / slots) and the ideal list
 * schedule (scripts/bench/schedule-dag.ts), the per-task breakdown from the
 * nodes' JSON logs (ready → claimed → running → agent start → agent end →
 * committed → done → branch on the leader → merged → main on every node) with
 * p50/p99 per phase, the critical path (the chain of tasks whose merges set
 * the makespan, each phase summed over it), CPU per node process (/proc/PID/stat, with its reaped
 * children such as git), git processes per task (each node appends every git
 * command it starts to a file of its own, `MESHWORK_BENCH_GIT_LOG`), idle CPU and git processes over 5 s
 * before the plan, duplicate runs and merges, and a check that main on every
 * live node holds every task's file.
 *
 * Flags:
 *   --quick        smoke run: 12 independent tasks, a 24-task DAG, 20 instant tasks, no kill run;
 *                  does not touch docs/benchmarks.md
 *   --tasks N      DAG size (default 200; quick 24)
 *   --only LIST    runs to do (comma list of indep, dag, kill, instant)
 *   --nodes N      nodes per mesh (default 4)
 *   --seed N       seed of durations and DAG (default 1)
 *   --no-docs      do not rewrite the section in docs/benchmarks.md
 *   --json FILE    also write the results as JSON
 *   --keep         keep the temp dirs (logs, repos) and print where they are
 *
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile, open } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs } from './bench/lib/args.ts'
import { generateDag, listSchedule, prng, type DagParams } from './bench/schedule-dag.ts'
import type { BenchTask } from './bench/schedule-protocol.ts'
import { analyze, parseLog, type Analysis, type LogLine, type PhaseStat } from './bench/e2e-analysis.ts'
import { writeSection } from './bench/lib/docs.ts'
import { installExitGuards, killAllChildren, register } from './bench/lib/children.ts'
import { seedRepo } from './bench/lib/repo.ts'
import { cpuOf, reapedChildrenCpu } from './bench/lib/proc.ts'

const BIN = fileURLToPath(new URL('../bin/meshwork.js', import.meta.url))
const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))
const SECTION_TITLE = '## End to end (npm run bench:e2e)'
const SLOTS = 2
const IDLE_WINDOW_MS = 5000
const KILL_AT_DONE_FRACTION = 0.3
const RUN_BOUND_MS = 20 * 60_000

const log = (line: string): void => { process.stderr.write(line + '\n') }

// ---------------------------------------------------------------------------
// children: nothing outlives the benchmark

installExitGuards('bench:e2e')

interface Exit { code: number | null, signal: NodeJS.Signals | null }

function spawnTracked (args: string[], env: NodeJS.ProcessEnv, stderrFd?: number): { proc: ChildProcess, exited: Promise<Exit>, stdout: () => string, stderr: () => string } {
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', stderrFd ?? 'pipe'] })
  register(proc)
  let out = ''
  let err = ''
  proc.stdout?.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-1_000_000) })
  proc.stderr?.on('data', (b: Buffer) => { err = (err + b.toString()).slice(-100_000) })
  const exited = new Promise<Exit>(resolve => {
    proc.once('close', (code, signal) => { resolve({ code, signal }) })
    proc.once('error', () => { resolve({ code: null, signal: null }) })
  })
  return { proc, exited, stdout: () => out, stderr: () => err }
}

async function cli (args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null, stdout: string, stderr: string, ms: number }> {
  const started = Date.now()
  const c = spawnTracked(args, env)
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([c.exited, new Promise<null>(resolve => { timer = setTimeout(() => { resolve(null) }, timeoutMs) })])
  clearTimeout(timer)
  if (r === null) {
    c.proc.kill('SIGKILL')
    await c.exited
    throw new Error(`meshwork ${args.join(' ')}: no exit within ${timeoutMs} ms\n${c.stderr().slice(-2000)}`)
  }
  return { code: r.code, stdout: c.stdout(), stderr: c.stderr(), ms: Date.now() - started }
}

/** Polls `cond` until it returns a value (not null), or throws `what` after `timeoutMs`. */
async function until<T> (cond: () => Promise<T | null> | T | null, timeoutMs: number, what: () => string, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await cond()
    if (v !== null) return v
    if (Date.now() >= deadline) throw new Error(`bench:e2e: ${what()} (waited ${timeoutMs} ms)`)
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

// ---------------------------------------------------------------------------
// measurements of processes

function rssMiB (pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? Number.NaN : Number(m[1]) / 1024
  } catch {
    return Number.NaN
  }
}

function gitCount (file: string): { total: number, bySub: Map<string, number> } {
  let text = ''
  try { text = readFileSync(file, 'utf8') } catch {}
  const lines = text.split('\n').filter(l => l !== '')
  const bySub = new Map<string, number>()
  for (const l of lines) {
    const words = l.split(' ')
    // skip global options (-C dir, -c k=v) to name the subcommand
    let i = 0
    while (i < words.length && (words[i] === '-C' || words[i] === '-c')) i += 2
    while (i < words.length && (words[i] as string).startsWith('-')) i++
    const sub = words[i] ?? '?'
    bySub.set(sub, (bySub.get(sub) ?? 0) + 1)
  }
  return { total: lines.length, bySub }
}

// ---------------------------------------------------------------------------

interface RunSpec { name: string, title: string, nodes: number, tasks: BenchTask[], kill: boolean, clients: boolean }

/** Wall time of client commands (CLI start-up included) against this mesh. */
interface ClientFigures { okMs: number, okExit: number | null, refusedMs: number, refusedExit: number | null, wrongKeyMs: number, wrongKeyExit: number | null }

interface NodeFigures { name: string, leader: boolean, killed: boolean, cpuPct: number, childCpuPct: number, idleCpuPct: number, idleGitPerS: number, rssMiB: number, idleRssMiB: number, git: number, gossip: GossipFigures | null }

/** What a node's gossip counters (its `--metrics`) moved by over the run. */
interface GossipFigures { received: number, copies: number, sent: number, changesIn: number, changesOut: number }

const GOSSIP_METRICS: Record<keyof GossipFigures, string> = {
  received: 'meshwork_gossip_messages_total{direction="received"}',
  copies: 'meshwork_gossip_copies_total',
  sent: 'meshwork_gossip_messages_total{direction="sent"}',
  changesIn: 'meshwork_board_changes_total{direction="received"}',
  changesOut: 'meshwork_board_changes_total{direction="sent"}'
}

/** A node's gossip counters from its metrics endpoint, or null when it does not answer. */
async function scrapeGossip (port: number): Promise<GossipFigures | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) })
    const values = new Map<string, number>()
    for (const line of (await res.text()).split('\n')) {
      const m = /^(\S+) (\S+)$/.exec(line)
      if (m !== null) values.set(m[1] as string, Number(m[2]))
    }
    const out = {} as GossipFigures
    for (const [k, name] of Object.entries(GOSSIP_METRICS)) out[k as keyof GossipFigures] = values.get(name) ?? 0
    return out
  } catch {
    return null
  }
}

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago. */
async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>(resolve => { srv.listen(0, '127.0.0.1', resolve) })
  const port = (srv.address() as { port: number }).port
  await new Promise<void>(resolve => { srv.close(() => { resolve() }) })
  return port
}

interface RunResult {
  name: string
  title: string
  nodes: number
  slots: number
  tasks: number
  totalWorkMs: number
  lowerBoundMs: number
  idealMs: number
  makespanMs: number
  submitWallMs: number
  /** CPU seconds of the `submit --wait` process (it runs on the same host as the nodes); null when unknown. */
  submitCpuS: number | null
  submitExit: number | null
  mergedOnBoard: number
  killed: string | null
  killedAtMs: number | null
  analysis: Analysis
  perNode: NodeFigures[]
  gitPerTask: number
  gitBySub: Array<[string, number]>
  mainChecked: string
  clients: ClientFigures | null
}

async function runOne (spec: RunSpec, keep: boolean): Promise<RunResult> {
  const root = await mkdtemp(join(tmpdir(), `meshwork-e2e-${spec.name}-`))
  log(`[${spec.name}] ${spec.title}: ${spec.tasks.length} tasks on ${spec.nodes} nodes x ${SLOTS} slots in ${root}`)
  try {
    // each node counts its git processes in a file of its own (MESHWORK_BENCH_GIT_LOG, src/git/git.ts)
    const baseEnv: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) baseEnv[k] = v
    const keyFile = join(root, 'swarm.key')
    const init = await cli(['init', '--out', keyFile], baseEnv, 60_000)
    if (init.code !== 0) throw new Error(`meshwork init failed: ${init.stderr}`)
    const repo0 = join(root, 'repo-n0')
    await seedRepo(repo0)

    const names = Array.from({ length: spec.nodes }, (_, i) => `n${i}`)
    const nodes = new Map<string, { pid: number, proc: ChildProcess, exited: Promise<Exit>, logFile: string, gitFile: string, metricsPort: number }>()
    const startNode = async (name: string, conn: string[]): Promise<string> => {
      const logFile = join(root, `log-${name}.jsonl`)
      const gitFile = join(root, `git-${name}.log`)
      const fh = await open(logFile, 'w')
      const env = { ...baseEnv, MESHWORK_BENCH_GIT_LOG: gitFile }
      // its gossip counters, read before and after the plan
      const metricsPort = await freePort()
      const c = spawnTracked(['node', '--repo', join(root, `repo-${name}`), '--data', join(root, `data-${name}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--name', name, '--agent', 'sim', '--slots', String(SLOTS), '--metrics', `127.0.0.1:${metricsPort}`, ...conn], env, fh.fd)
      void c.exited.finally(() => { void fh.close() })
      nodes.set(name, { pid: c.proc.pid as number, proc: c.proc, exited: c.exited, logFile, gitFile, metricsPort })
      const info = await until(() => {
        try {
          const v = JSON.parse(readFileSync(join(root, `data-${name}`, 'node.json'), 'utf8')) as { pid: number, join: string }
          return v.pid === c.proc.pid ? v : null
        } catch { return null }
      }, 120_000, () => `node ${name} wrote no node.json: ${readFileSync(logFile, 'utf8').slice(-2000)}`)
      return info.join
    }
    const token = await startNode('n0', ['--swarm-key', keyFile])
    await Promise.all(names.slice(1).map(async n => await startNode(n, ['--join', token])))
    const conn = ['--join', token]
    // ready: every node alive in n0's view, a leader elected, and every node's main there
    let leader = ''
    await until(async () => {
      const r = await cli(['status', '--json', ...conn], baseEnv, 120_000).catch(() => null)
      if (r === null || r.code !== 0) return null
      const s = JSON.parse(r.stdout) as { main: { leader: string | null }, nodes: Array<{ peerId: string, name: string, state: string }> }
      const alive = s.nodes.filter(n => n.state === 'alive').length
      const l = s.nodes.find(n => n.peerId === s.main.leader)
      if (alive !== spec.nodes || l === undefined) return null
      leader = l.name
      return true
    }, 180_000, () => 'the mesh did not come up (all nodes alive, a leader)', 500)
    // and every node that joined with an empty repo has cloned main (it takes no work before)
    await until(() => names.slice(1).every(n => parseLog(readFileSync(nodes.get(n)?.logFile as string, 'utf8')).some(l => l.event === 'repo:cloned')) ? true : null,
      300_000, () => `not every node cloned main: ${names.slice(1).filter(n => !parseLog(readFileSync(nodes.get(n)?.logFile as string, 'utf8')).some(l => l.event === 'repo:cloned')).join(', ')}`, 500)
    log(`[${spec.name}] mesh up, leader ${leader}, every node cloned main`)

    // idle: CPU, RSS and git processes over a window with nothing submitted
    const idle0 = new Map([...nodes].map(([n, x]) => [n, { cpu: cpuOf(x.pid), git: gitCount(x.gitFile).total }]))
    await new Promise(resolve => setTimeout(resolve, IDLE_WINDOW_MS))
    const idle = new Map([...nodes].map(([n, x]) => {
      const a = idle0.get(n)
      const b = cpuOf(x.pid)
      const cpuPct = a?.cpu == null || b === null ? Number.NaN : 100 * ((b.self - a.cpu.self) + (b.children - a.cpu.children)) / (IDLE_WINDOW_MS / 1000)
      return [n, { cpuPct, gitPerS: (gitCount(x.gitFile).total - (a?.git ?? 0)) / (IDLE_WINDOW_MS / 1000), rss: rssMiB(x.pid) }]
    }))

    // clients: a status that answers, one at a port where nothing listens, one with another mesh's key
    let clients: ClientFigures | null = null
    if (spec.clients) {
      const info = JSON.parse(readFileSync(join(root, 'data-n0', 'node.json'), 'utf8')) as { peerId: string, addrs: string[] }
      const port = await freePort()
      const wrongKey = join(root, 'wrong.key')
      await cli(['init', '--out', wrongKey], baseEnv, 60_000)
      const ok = await cli(['status', ...conn], baseEnv, 120_000)
      const refused = await cli(['status', '--swarm-key', keyFile, '--bootstrap', `/ip4/127.0.0.1/tcp/${port}/p2p/${info.peerId}`, '--timeout', '60s'], baseEnv, 120_000)
      const wrong = await cli(['status', '--swarm-key', wrongKey, '--bootstrap', info.addrs[0] as string, '--timeout', '60s'], baseEnv, 120_000)
      clients = { okMs: ok.ms, okExit: ok.code, refusedMs: refused.ms, refusedExit: refused.code, wrongKeyMs: wrong.ms, wrongKeyExit: wrong.code }
      log(`[${spec.name}] clients: status ${ok.ms} ms (exit ${ok.code}), refused ${refused.ms} ms (exit ${refused.code}), wrong key ${wrong.ms} ms (exit ${wrong.code})`)
    }

    // the plan
    const plan = { tasks: spec.tasks.map(t => ({ id: t.id, prompt: `write ${t.id}`, deps: t.deps, sim: { duration: `${t.durationMs}ms`, write: { [`work/${t.id}.txt`]: `${t.id}\n` } } })) }
    const planFile = join(root, 'plan.yaml')
    await writeFile(planFile, JSON.stringify(plan, null, 1))
    const cpu0 = new Map([...nodes].map(([n, x]) => [n, cpuOf(x.pid)]))
    const git0 = new Map([...nodes].map(([n, x]) => [n, gitCount(x.gitFile)]))
    const gossip0 = new Map(await Promise.all([...nodes].map(async ([n, x]) => [n, await scrapeGossip(x.metricsPort)] as const)))
    // the submit client's CPU: what this process's reaped children used meanwhile (it is the only one reaped then)
    const reaped0 = reapedChildrenCpu()
    const t0 = Date.now()
    const submit = spawnTracked(['submit', planFile, '--wait', '--json', ...conn], baseEnv)
    let killed: string | null = null
    let killedAt: number | null = null
    let finished = false
    const cpuAtKill = new Map<string, ReturnType<typeof cpuOf>>()
    const gossipAtKill = new Map<string, GossipFigures | null>()
    if (spec.kill) {
      const victim = [...names].reverse().find(n => n !== leader && n !== 'n0') as string
      void (async () => {
        const doneCount = (): number => {
          let n = 0
          for (const x of nodes.values()) n += parseLog(readFileSync(x.logFile, 'utf8')).filter(l => l.event === 'task:done').length
          return n
        }
        await until(() => finished || doneCount() >= spec.tasks.length * KILL_AT_DONE_FRACTION ? true : null, RUN_BOUND_MS, () => 'never reached the kill point', 250).catch(() => {})
        const v = nodes.get(victim)
        if (v === undefined || finished) return
        cpuAtKill.set(victim, cpuOf(v.pid))
        gossipAtKill.set(victim, await scrapeGossip(v.metricsPort))
        v.proc.kill('SIGKILL')
        killed = victim
        killedAt = Date.now()
        log(`[${spec.name}] SIGKILLed ${victim} at ${((killedAt - t0) / 1000).toFixed(1)} s`)
      })()
    }
    let timer: NodeJS.Timeout | undefined
    const sub = await Promise.race([submit.exited, new Promise<null>(resolve => { timer = setTimeout(() => { resolve(null) }, RUN_BOUND_MS) })])
    clearTimeout(timer)
    finished = true
    const submitWallMs = Date.now() - t0
    if (sub === null) { submit.proc.kill('SIGKILL'); await submit.exited }
    const reaped1 = reapedChildrenCpu()
    // (not with a node killed: its CPU is reaped too)
    const submitCpuS = reaped0 === null || reaped1 === null || killed !== null ? null : reaped1 - reaped0
    log(`[${spec.name}] submit --wait exited ${sub?.code ?? 'timeout'} after ${(submitWallMs / 1000).toFixed(1)} s, using ${submitCpuS?.toFixed(1) ?? '?'} s of CPU`)
    // main everywhere: wait (bounded) for every live node to log main at the last tip before reading the figures
    const cpu1 = new Map([...nodes].map(([n, x]) => [n, n === killed ? cpuAtKill.get(n) ?? null : cpuOf(x.pid)]))
    const git1 = new Map([...nodes].map(([n, x]) => [n, gitCount(x.gitFile)]))
    const rss1 = new Map([...nodes].map(([n, x]) => [n, rssMiB(x.pid)]))
    const gossip1 = new Map(await Promise.all([...nodes].map(async ([n, x]) => [n, n === killed ? gossipAtKill.get(n) ?? null : await scrapeGossip(x.metricsPort)] as const)))
    const r = await cli(['status', '--json', ...conn], baseEnv, 120_000)
    const board = JSON.parse(r.stdout) as { main: { head: string | null }, tasks: Array<{ id: string, state: string, createdAt: number, mergedAt: number | null }> }
    const live = names.filter(n => n !== killed)
    const mainHead = board.main.head
    await until(() => live.every(n => {
      try { return execFileSync('git', ['-C', join(root, `repo-${n}`), 'rev-parse', 'refs/heads/main'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() === mainHead } catch { return false }
    }) ? true : null, 60_000, () => 'main did not reach every live node', 250).catch(err => { log(String(err)) })
    // every task's file is on main, on every live node
    let mainChecked = 'ok'
    for (const n of live) {
      let files: Set<string>
      try {
        files = new Set(execFileSync('git', ['-C', join(root, `repo-${n}`), 'ls-tree', '-r', '--name-only', 'main'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n'))
      } catch {
        mainChecked = `${n}: no main`
        continue
      }
      const missing = spec.tasks.filter(t => !files.has(`work/${t.id}.txt`)).length
      if (missing > 0) mainChecked = `${n}: ${missing} task files missing on main`
    }
    // stop the nodes
    for (const [, x] of nodes) { try { x.proc.kill('SIGTERM') } catch {} }
    await Promise.race([Promise.all([...nodes.values()].map(async x => await x.exited)), new Promise(resolve => setTimeout(resolve, 30_000))])
    for (const [, x] of nodes) { try { x.proc.kill('SIGKILL') } catch {} }

    const logs = new Map<string, LogLine[]>()
    for (const [n, x] of nodes) logs.set(n, parseLog(await readFile(x.logFile, 'utf8')))
    const createdAt = new Map(board.tasks.map(t => [t.id, t.createdAt]))
    const analysis = analyze(spec.tasks, createdAt, logs, killed)
    // a task run twice without a kill to explain it: print its story, and keep the logs
    for (const d of analysis.duplicates) log(`[${spec.name}] task ${d.task} ran more than once:\n  ${d.lines.join('\n  ')}`)
    if (analysis.duplicates.length > 0) keep = true
    const mine = board.tasks.filter(t => spec.tasks.some(x => x.id === t.id))
    const mergedOnBoard = mine.filter(t => t.state === 'merged').length
    // a plan that did not merge whole (or a client that failed): what the client and the board said, and the logs kept
    if (sub?.code !== 0 || mergedOnBoard < spec.tasks.length) {
      keep = true
      const unmerged = mine.filter(t => t.state !== 'merged').map(t => `${t.id} ${t.state}`)
      log(`[${spec.name}] ${spec.tasks.length - mergedOnBoard} task(s) not merged (${unmerged.join(', ') || 'none on the board'}); submit --wait's last output:\n  ${[...submit.stdout().trim().split('\n').slice(-8), ...submit.stderr().trim().split('\n').slice(-8)].join('\n  ')}`)
    }
    const first = Math.min(...mine.map(t => t.createdAt))
    const last = Math.max(...mine.map(t => t.mergedAt ?? Number.NaN))
    const totalWorkMs = spec.tasks.reduce((a, t) => a + t.durationMs, 0)
    const slots = spec.nodes * SLOTS
    const idealMs = listSchedule(spec.tasks, slots, spec.kill && killedAt !== null ? { atMs: (killedAt as number) - t0, slots: SLOTS } : undefined).makespanMs
    const wallS = submitWallMs / 1000
    const perNode: NodeFigures[] = names.map(n => {
      const a = cpu0.get(n)
      const b = cpu1.get(n)
      const span = n === killed && killedAt !== null ? ((killedAt as number) - t0) / 1000 : wallS
      const i = idle.get(n)
      return {
        name: n,
        leader: n === leader,
        killed: n === killed,
        cpuPct: a == null || b == null ? Number.NaN : 100 * (b.self - a.self) / span,
        childCpuPct: a == null || b == null ? Number.NaN : 100 * (b.children - a.children) / span,
        idleCpuPct: i?.cpuPct ?? Number.NaN,
        idleGitPerS: i?.gitPerS ?? Number.NaN,
        rssMiB: rss1.get(n) ?? Number.NaN,
        idleRssMiB: i?.rss ?? Number.NaN,
        git: (git1.get(n)?.total ?? 0) - (git0.get(n)?.total ?? 0),
        gossip: gossipDelta(gossip0.get(n) ?? null, gossip1.get(n) ?? null)
      }
    })
    const bySub = new Map<string, number>()
    for (const n of names) {
      const a = git0.get(n)?.bySub ?? new Map<string, number>()
      for (const [s, c] of git1.get(n)?.bySub ?? []) bySub.set(s, (bySub.get(s) ?? 0) + c - (a.get(s) ?? 0))
    }
    const gitTotal = perNode.reduce((s, x) => s + x.git, 0)
    return {
      name: spec.name,
      title: spec.title,
      nodes: spec.nodes,
      slots,
      tasks: spec.tasks.length,
      totalWorkMs,
      lowerBoundMs: totalWorkMs / slots,
      idealMs,
      makespanMs: last - first,
      submitWallMs,
      submitCpuS,
      submitExit: sub?.code ?? null,
      mergedOnBoard,
      killed,
      killedAtMs: killedAt === null ? null : (killedAt as number) - t0,
      analysis,
      perNode,
      gitPerTask: gitTotal / spec.tasks.length,
      gitBySub: [...bySub].filter(([, c]) => c > 0).sort((a, b) => b[1] - a[1]),
      mainChecked,
      clients
    }
  } finally {
    killAllChildren()
    if (keep) log(`[${spec.name}] kept ${root}`)
    else await rm(root, { recursive: true, force: true })
  }
}

function gossipDelta (a: GossipFigures | null, b: GossipFigures | null): GossipFigures | null {
  if (a === null || b === null) return null
  const out = {} as GossipFigures
  for (const k of Object.keys(GOSSIP_METRICS) as Array<keyof GossipFigures>) out[k] = b[k] - a[k]
  return out
}

// ---------------------------------------------------------------------------
// report

const s1 = (ms: number): string => Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'n/a'
const msf = (ms: number): string => Number.isFinite(ms) ? (Math.abs(ms) >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`) : 'n/a'
const pct = (x: number): string => Number.isFinite(x) ? `${x.toFixed(1)} %` : 'n/a'
const ratio = (a: number, b: number): string => b > 0 && Number.isFinite(a / b) ? (a / b).toFixed(2) : 'n/a'
const phaseCell = (p: PhaseStat): string => `${msf(p.p50)} / ${msf(p.p99)}`

function machineLine (): string {
  const sh = (cmd: string): string => { try { return execFileSync('sh', ['-c', cmd]).toString().trim() } catch { return 'unknown' } }
  const model = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1")
  return `${model === '' ? cpus()[0]?.model ?? 'unknown' : model}, nproc ${sh('nproc')}, ${Math.round(totalmem() / 2 ** 30 * 10) / 10} GiB RAM, ${sh('git --version')}, Node ${process.version}; load average at start ${loadavg().map(x => x.toFixed(2)).join(' ')}`
}

function report (results: RunResult[], meta: { date: string, machine: string, quick: boolean, seed: number, wallS: number }): string {
  const out: string[] = []
  out.push(SECTION_TITLE, '')
  out.push(`Measured ${meta.date} on ${meta.machine}. ${meta.quick ? 'QUICK smoke run (small task counts); ' : ''}seed ${meta.seed}; the whole benchmark took ${meta.wallS.toFixed(0)} s.`, '')
  out.push('**How.** Real `meshwork node` processes on 127.0.0.1 (`--agent sim --slots 2`, every other option at its default), started and fed as a user would: `meshwork init`, the first node on a one-commit repo, the others with `--join` on empty repos, the plan through `meshwork submit --wait`. Every task writes one file; the elected leader merges for real. Makespan runs from the plan\'s board change to the last `mergedAt`; the lower bound is total work / slots; the ideal is the zero-overhead list schedule of `scripts/bench/schedule-dag.ts` on the same tasks and slots (with the killed node\'s slots lost at the kill time). Times per phase come from the nodes\' JSON logs (one host clock). CPU is each node process\'s utime+stime over the run (/proc/PID/stat), its children apart (the git processes it started and its git helper with the git processes that one started, running or reaped); each node appends every git command it starts to a file (`MESHWORK_BENCH_GIT_LOG`; until 2026-12-04 a `git` shim first on the nodes\' PATH counted them, whose shell start added about 2 ms of CPU to every git call).', '')
  out.push('| run | tasks | slots | work | lower bound | ideal | makespan | / bound | / ideal | submit --wait | merged | runs | claims lost | re-runs after kill | duplicate runs | duplicate merges | batches (mean size) | main on every node |')
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    const a = r.analysis
    out.push(`| ${r.title}${r.killed !== null ? ` (${r.killed} SIGKILLed at ${s1(r.killedAtMs ?? Number.NaN)})` : ''} | ${r.tasks} | ${r.slots} | ${s1(r.totalWorkMs)} | ${s1(r.lowerBoundMs)} | ${s1(r.idealMs)} | ${s1(r.makespanMs)} | ${ratio(r.makespanMs, r.lowerBoundMs)} | ${ratio(r.makespanMs, r.idealMs)} | ${s1(r.submitWallMs)} (exit ${r.submitExit ?? 'timeout'}; ${r.submitCpuS?.toFixed(1) ?? '?'} s CPU) | ${r.mergedOnBoard}/${r.tasks} | ${a.runs} | ${a.claimsLost} | ${a.rerunsAfterKill} | ${a.duplicateRuns} | ${a.duplicateMerges} | ${a.batches} (${a.meanBatch.toFixed(1)}) | ${r.mainChecked} |`)
  }
  const c = results.find(r => r.clients !== null)?.clients
  if (c != null) out.push('', `Client commands against a live mesh (wall time, CLI start-up included): \`status\` ${msf(c.okMs)} (exit ${c.okExit}); \`status\` at a port where nothing listens, \`--timeout 60s\`: ${msf(c.refusedMs)} (exit ${c.refusedExit}); with another mesh's key: ${msf(c.wrongKeyMs)} (exit ${c.wrongKeyExit}). Aims: a refused or wrong-key client fails in < 3 s, \`status\` < 1 s.`)
  const instant = results.find(r => r.name === 'instant')
  if (instant !== undefined) out.push('', `Leader throughput with instant agents: ${(instant.tasks / (instant.makespanMs / 1000)).toFixed(2)} tasks merged per second end to end (${instant.tasks} tasks in ${s1(instant.makespanMs)}).`)
  out.push('', '### Where the time goes, per task (p50 / p99)', '')
  out.push(`| phase | ${results.map(r => r.name).join(' | ')} |`)
  out.push(`|---|${results.map(() => '---').join('|')}|`)
  const rows = results[0]?.analysis.phases.map(p => p.label) ?? []
  for (let i = 0; i < rows.length; i++) out.push(`| ${rows[i]} | ${results.map(r => phaseCell(r.analysis.phases[i] as PhaseStat)).join(' | ')} |`)
  out.push(`| **done → merged** | ${results.map(r => phaseCell(r.analysis.doneToMerged)).join(' | ')} |`)
  out.push(`| **ready → merged** | ${results.map(r => phaseCell(r.analysis.readyToMerged)).join(' | ')} |`)
  out.push('', '### The critical path', '')
  out.push('The chain of tasks whose merges set the makespan (from the task merged last back through the dependency whose merge made each task ready), each phase summed over the chain: what delayed the last merge. A long ready → claimed on it is a task waiting for a free slot: there the slots bound the makespan, not the chain.', '')
  out.push(`| phase, summed over the chain | ${results.map(r => `${r.name} (${r.analysis.criticalPath.tasks.length} ${r.analysis.criticalPath.tasks.length === 1 ? 'task' : 'tasks'})`).join(' | ')} |`)
  out.push(`|---|${results.map(() => '---').join('|')}|`)
  const chainRows = results[0]?.analysis.criticalPath.phases.map(p => p.label) ?? []
  for (let i = 0; i < chainRows.length; i++) out.push(`| ${chainRows[i]} | ${results.map(r => msf(r.analysis.criticalPath.phases[i]?.ms ?? Number.NaN)).join(' | ')} |`)
  out.push('', '### Processes', '')
  out.push('| run | node | CPU over the run | its children (git) | idle CPU (5 s, nothing submitted) | idle git processes / s | RSS idle / end | git processes in the run |')
  out.push('|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    for (const n of r.perNode) out.push(`| ${r.name} | ${n.name}${n.leader ? ' (leader)' : ''}${n.killed ? ' (killed)' : ''} | ${pct(n.cpuPct)} | ${pct(n.childCpuPct)} | ${pct(n.idleCpuPct)} | ${n.idleGitPerS.toFixed(1)} | ${n.idleRssMiB.toFixed(0)} / ${Number.isFinite(n.rssMiB) ? n.rssMiB.toFixed(0) + ' MiB' : 'n/a'} | ${n.git} |`)
  }
  out.push('', 'git processes per task (all nodes): ' + results.map(r => `${r.name} ${r.gitPerTask.toFixed(1)} (${r.gitBySub.slice(0, 6).map(([s, c]) => `${s} ${(c / r.tasks).toFixed(1)}`).join(', ')})`).join('; ') + '.')
  const gossip = results.map(r => gossipLine(r)).filter(l => l !== null)
  if (gossip.length > 0) out.push('', 'Gossip per task, from each node\'s `--metrics` over the run (mean of the nodes; copies count every copy that arrived, duplicates included): ' + gossip.join('; ') + '.')
  return out.join('\n')
}

function gossipLine (r: RunResult): string | null {
  const g = r.perNode.map(n => n.gossip).filter(x => x !== null)
  if (g.length === 0) return null
  const mean = (k: keyof GossipFigures): string => (g.reduce((a, x) => a + x[k], 0) / g.length / r.tasks).toFixed(1)
  const sum = (k: keyof GossipFigures): string => (g.reduce((a, x) => a + x[k], 0) / r.tasks).toFixed(1)
  return `${r.name}: received ${mean('received')} messages (${mean('copies')} copies) and ${mean('changesIn')} board changes a node; ${sum('changesOut')} board changes and ${sum('sent')} messages sent by all nodes together`
}

// ---------------------------------------------------------------------------

async function main (): Promise<void> {
  const values = parseScriptArgs(import.meta.url, {
      quick: { type: 'boolean', default: false },
      tasks: { type: 'string' },
      only: { type: 'string' },
      nodes: { type: 'string', default: '4' },
      seed: { type: 'string', default: '1' },
      'no-docs': { type: 'boolean', default: false },
      json: { type: 'string' },
      keep: { type: 'boolean', default: false }
    })
  const major = Number(process.versions.node.split('.')[0])
  if (major < 22) throw new Error(`Node ${process.version} cannot run meshwork; use the pinned Node 24 (npm run bench:e2e)`)
  const quick = values.quick === true
  const seed = Number(values.seed)
  const nodes = Number(values.nodes)
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${JSON.stringify(values.seed)}`)
  if (!Number.isInteger(nodes) || nodes < 2 || nodes > 16) throw new Error(`--nodes must be an integer from 2 to 16, got ${JSON.stringify(values.nodes)}`)
  const dagTasks = values.tasks === undefined ? (quick ? 24 : 200) : Number(values.tasks)
  if (!Number.isInteger(dagTasks) || dagTasks < 2) throw new Error(`--tasks must be an integer >= 2, got ${JSON.stringify(values.tasks)}`)
  const known = ['indep', 'dag', 'kill', 'instant']
  const only = values.only === undefined ? null : values.only.split(',').map(s => s.trim())
  for (const o of only ?? []) if (!known.includes(o)) throw new Error(`--only takes a comma list of ${known.join(', ')}; got "${o}"`)
  const want = (n: string): boolean => only === null ? (n !== 'kill' || !quick) : only.includes(n)

  const rand = prng(seed)
  const indep: BenchTask[] = Array.from({ length: quick ? 12 : 40 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, deps: [], durationMs: 1000 + Math.round(rand() * 3000), layer: 0 }))
  const params: DagParams = { seed, tasks: dagTasks, layers: Math.max(2, Math.min(10, Math.round(dagTasks / 20))), paretoAlpha: 0.5, minMs: 500, maxMs: 8000, minDeps: 1, maxDeps: 3 }
  const dag = generateDag(params)
  const instant: BenchTask[] = Array.from({ length: quick ? 20 : 100 }, (_, i) => ({ id: `z${String(i).padStart(3, '0')}`, deps: [], durationMs: 0, layer: 0 }))
  const specs: RunSpec[] = [
    { name: 'indep', title: `${indep.length} independent 1-4 s tasks`, nodes, tasks: indep, kill: false },
    { name: 'dag', title: `DAG of ${dag.length} tasks`, nodes, tasks: dag, kill: false },
    { name: 'kill', title: `DAG of ${dag.length} tasks, one node killed`, nodes, tasks: dag, kill: true },
    { name: 'instant', title: `${instant.length} instant tasks`, nodes, tasks: instant, kill: false }
  ].filter(s => want(s.name)).map((s, i) => ({ ...s, clients: i === 0 }))
  const started = Date.now()
  const machine = machineLine()
  const results: RunResult[] = []
  for (const s of specs) results.push(await runOne(s, values.keep === true))
  const text = report(results, { date: new Date().toISOString(), machine, quick, seed, wallS: (Date.now() - started) / 1000 })
  process.stdout.write(text + '\n')
  if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 1))
  const writeDocs = !quick && values['no-docs'] !== true && only === null
  if (writeDocs) {
    await writeSection(DOCS, SECTION_TITLE, text)
    log(`bench:e2e: wrote the section to ${DOCS}`)
  }
  if (!existsSync(DOCS)) log('bench:e2e: docs/benchmarks.md is missing')
}

main().then(() => { killAllChildren(); process.exit(0) }, (err: unknown) => {
  killAllChildren()
  process.stderr.write(`bench:e2e: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
