/**
 * `npm run bench:idle`: what an idle mesh costs. Starts N real `meshwork node`
 * processes on 127.0.0.1 (sim agent, nothing submitted), waits until every node
 * sees every other alive, a leader is elected and every joiner has cloned main,
 * lets the mesh settle, then measures each node over a window: CPU (utime +
 * stime from /proc/PID/stat, with its reaped children such as git), RSS at the
 * start and the end of the window (/proc/PID/status), git processes started
 * (each node appends the git commands it starts to a file, `MESHWORK_BENCH_GIT_LOG`), the mesh's
 * traffic (TCP payload bytes each node received on its own sockets, `ss`
 * tcp_info `bytes_received`) and how busy the whole host was meanwhile
 * (/proc/stat).
 *
 * Variants compare checkouts (or Node options) back to back on one machine:
 * `--variant before=/work/main --variant after=.` runs a mesh of each in turn,
 * `--rounds R` times (alternating, so drift in the host's load hits both), and
 * prints each variant's medians and the ratio of each to the first.
 *
 * Flags:
 *   --nodes N              nodes per mesh (default 4)
 *   --window S             measuring window in seconds (default 30)
 *   --settle S             wait after the mesh is up, before the window (default 30). The nodes
 *                          are not idle sooner: 15 s after the tasks merged their heaps were still
 *                          shrinking (RSS 158-183 -> 124-141 MiB within the window) and their last git
 *                          processes ran, and a window from there measured 1.07 % CPU a node against
 *                          0.47 % from 30 s (4 nodes, 2 rounds each, 2026-12-05)
 *   --tasks N              first submit N instant tasks and wait until they are merged, so the mesh
 *                          has a main on its board as any mesh that did work has (default 4; 0: a fresh mesh)
 *   --variant NAME=DIR     a checkout whose bin/meshwork.js runs the nodes (repeatable; default: this one)
 *   --env NAME:KEY=VALUE   an environment variable for the nodes of variant NAME (repeatable), e.g.
 *                          `--env small:NODE_OPTIONS=--max-semi-space-size=1`
 *   --rounds R             meshes per variant, alternating (default 1)
 *   --json FILE            also write every measurement as JSON
 *   --keep                 keep the temp dirs (logs, repos) and print where they are
 *
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs, variantSpecs } from './bench/lib/args.ts'
import { parseLog } from './bench/e2e-analysis.ts'
import { installExitGuards, pollUntil, register } from './bench/lib/children.ts'
import { median, textTable } from './bench/lib/stats.ts'
import { readTcpRx, tcpRxDelta } from './bench/board-cluster.ts'
import { seedRepo } from './bench/lib/repo.ts'
import { cpuOf } from './bench/lib/proc.ts'

const HERE = fileURLToPath(new URL('..', import.meta.url))
const log = (line: string): void => { process.stderr.write(line + '\n') }

installExitGuards('bench:idle')

const args = parseScriptArgs(import.meta.url, {
    nodes: { type: 'string', default: '4' },
    window: { type: 'string', default: '30' },
    settle: { type: 'string', default: '30' },
    tasks: { type: 'string', default: '4' },
    variant: { type: 'string', multiple: true },
    env: { type: 'string', multiple: true },
    rounds: { type: 'string', default: '1' },
    json: { type: 'string' },
    keep: { type: 'boolean', default: false }
  })
const NODES = Number(args.nodes)
const WINDOW_MS = Number(args.window) * 1000
const SETTLE_MS = Number(args.settle) * 1000
const ROUNDS = Number(args.rounds)
const TASKS = Number(args.tasks)

interface Variant { name: string, dir: string, env: Record<string, string> }
const variants: Variant[] = variantSpecs(args.variant, HERE).map(v => ({ ...v, env: {} }))
for (const e of args.env ?? []) {
  const m = /^([^:]+):([^=]+)=(.*)$/.exec(e)
  const v = m === null ? undefined : variants.find(x => x.name === m[1])
  if (m === null || v === undefined) throw new Error(`--env NAME:KEY=VALUE with NAME a variant, got "${e}"`)
  v.env[m[2] as string] = m[3] as string
}

function statusKiB (pid: number, field: string): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? Number.NaN : Number(m[1])
  } catch {
    return Number.NaN
  }
}

/** Busy and total jiffies of the whole host (/proc/stat's cpu line). */
function hostJiffies (): { busy: number, total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number)
  const idle = (f[3] ?? 0) + (f[4] ?? 0)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

function lines (file: string): number {
  try { return readFileSync(file, 'utf8').split('\n').filter(l => l !== '').length } catch { return 0 }
}

interface NodeFigures { variant: string, round: number, node: string, leader: boolean, cpuPct: number, childCpuPct: number, rssStartMiB: number, rssEndMiB: number, anonMiB: number, gitPerS: number, rxKiBPerS: number }
interface MeshFigures { variant: string, round: number, hostBusyPct: number, load: number, nodes: NodeFigures[] }

async function measure (v: Variant, round: number): Promise<MeshFigures> {
  const root = await mkdtemp(join(tmpdir(), `meshwork-idle-${v.name}-`))
  const bin = join(v.dir, 'bin', 'meshwork.js')
  const procs: Array<{ name: string, proc: ChildProcess, exited: Promise<void>, logFile: string, gitFile: string }> = []
  try {
    const baseEnv: NodeJS.ProcessEnv = {}
    for (const [k, val] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_') && k !== 'NODE_OPTIONS') baseEnv[k] = val
    const keyFile = join(root, 'swarm.key')
    execFileSync(process.execPath, [bin, 'init', '--out', keyFile], { env: baseEnv, stdio: 'ignore' })
    const repo0 = join(root, 'repo-n0')
    await seedRepo(repo0)

    const start = async (name: string, conn: string[]): Promise<string> => {
      const logFile = join(root, `log-${name}.jsonl`)
      const gitFile = join(root, `git-${name}.log`)
      const fh = await open(logFile, 'w')
      const env = { ...baseEnv, ...v.env, MESHWORK_BENCH_GIT_LOG: gitFile }
      const proc = spawn(process.execPath, [bin, 'node', '--repo', join(root, `repo-${name}`), '--data', join(root, `data-${name}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--name', name, '--agent', 'sim', '--slots', '2', ...conn], { env, stdio: ['ignore', 'ignore', fh.fd] })
      register(proc)
      const exited = new Promise<void>(resolveExit => { proc.once('close', () => { void fh.close(); resolveExit() }) })
      procs.push({ name, proc, exited, logFile, gitFile })
      let token = ''
      const ok = await pollUntil(() => {
        try {
          const info = JSON.parse(readFileSync(join(root, `data-${name}`, 'node.json'), 'utf8')) as { pid: number, join: string }
          token = info.join
          return info.pid === proc.pid
        } catch { return false }
      }, 120_000, 100)
      if (!ok) throw new Error(`node ${name} wrote no node.json in 120 s: ${readFileSync(logFile, 'utf8').slice(-2000)}`)
      return token
    }
    const token = await start('n0', ['--swarm-key', keyFile])
    for (let i = 1; i < NODES; i++) await start(`n${i}`, ['--join', token])
    // up: every node saw every other come alive, a leader was elected, every joiner cloned main
    const up = (): boolean => procs.every(p => {
      const l = parseLog(readFileSync(p.logFile, 'utf8'))
      const alive = new Set(l.filter(x => x.event === 'peer:alive').map(x => String(x.peer)))
      return alive.size >= NODES - 1 && (p.name === 'n0' || l.some(x => x.event === 'repo:cloned'))
    }) && procs.some(p => parseLog(readFileSync(p.logFile, 'utf8')).some(x => x.event === 'leader:elected'))
    if (!await pollUntil(up, 180_000, 250)) throw new Error(`[${v.name}] the mesh did not come up in 180 s (logs in ${root})`)
    if (TASKS > 0) {
      const plan = join(root, 'plan.yaml')
      await writeFile(plan, 'tasks:\n' + Array.from({ length: TASKS }, (_, i) => `  - id: t${i}\n    prompt: write t${i}\n    sim: { duration: 0s, write: { "t${i}.txt": "t${i}\\n" } }\n`).join(''))
      execFileSync(process.execPath, [bin, 'submit', plan, '--join', token, '--wait'], { env: baseEnv, stdio: 'ignore', timeout: 300_000 })
    }
    log(`[${v.name} #${round}] mesh of ${NODES} up${TASKS > 0 ? `, ${TASKS} tasks merged` : ''}; settling ${SETTLE_MS / 1000} s, then measuring ${WINDOW_MS / 1000} s`)
    await new Promise(resolveWait => setTimeout(resolveWait, SETTLE_MS))

    const leaderName = (): string | null => {
      let best: { time: number, name: string } | null = null
      for (const p of procs) {
        for (const l of parseLog(readFileSync(p.logFile, 'utf8'))) if (l.event === 'leader:elected' && (best === null || l.time > best.time)) best = { time: l.time, name: p.name }
      }
      return best?.name ?? null
    }
    const before = procs.map(p => ({ cpu: cpuOf(p.proc.pid as number), git: lines(p.gitFile), rss: statusKiB(p.proc.pid as number, 'VmRSS') }))
    const rx0 = procs.map(p => readTcpRx(new Set([p.proc.pid as number])))
    const host0 = hostJiffies()
    const t0 = Date.now()
    await new Promise(resolveWait => setTimeout(resolveWait, WINDOW_MS))
    const secs = (Date.now() - t0) / 1000
    const host1 = hostJiffies()
    const rx1 = procs.map(p => readTcpRx(new Set([p.proc.pid as number])))
    const leader = leaderName()
    const nodes: NodeFigures[] = procs.map((p, i) => {
      const pid = p.proc.pid as number
      const a = before[i]
      const b = cpuOf(pid)
      const ok = a?.cpu != null && b !== null
      return {
        variant: v.name,
        round,
        node: p.name,
        leader: p.name === leader,
        cpuPct: ok ? 100 * (b.self - (a.cpu?.self ?? 0)) / secs : Number.NaN,
        childCpuPct: ok ? 100 * (b.children - (a.cpu?.children ?? 0)) / secs : Number.NaN,
        rssStartMiB: (a?.rss ?? Number.NaN) / 1024,
        rssEndMiB: statusKiB(pid, 'VmRSS') / 1024,
        anonMiB: statusKiB(pid, 'RssAnon') / 1024,
        gitPerS: (lines(p.gitFile) - (a?.git ?? 0)) / secs,
        rxKiBPerS: (tcpRxDelta(rx0[i] ?? null, rx1[i] ?? null) ?? Number.NaN) / 1024 / secs
      }
    })
    const hostBusyPct = 100 * (host1.busy - host0.busy) / Math.max(1, host1.total - host0.total)
    return { variant: v.name, round, hostBusyPct, load: loadavg()[0] ?? 0, nodes }
  } finally {
    for (const p of procs) { try { p.proc.kill('SIGTERM') } catch {} }
    const stopped = await pollUntil(() => procs.every(p => p.proc.exitCode !== null || p.proc.signalCode !== null), 20_000, 100)
    if (!stopped) for (const p of procs) { try { p.proc.kill('SIGKILL') } catch {} }
    await Promise.all(procs.map(async p => { await p.exited }))
    if (args.keep) log(`[${v.name} #${round}] kept ${root}`)
    else await rm(root, { recursive: true, force: true })
  }
}

const f1 = (x: number): string => Number.isFinite(x) ? x.toFixed(1) : 'n/a'
const f2 = (x: number): string => Number.isFinite(x) ? x.toFixed(2) : 'n/a'

const meshes: MeshFigures[] = []
log(`bench:idle: ${NODES} nodes, window ${WINDOW_MS / 1000} s, ${ROUNDS} round(s) of ${variants.map(v => v.name).join(', ')}; ${availableParallelism()} cores, load ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
for (let r = 1; r <= ROUNDS; r++) {
  // alternate the order, so a drift in the host's load does not always favour one variant
  const order = r % 2 === 1 ? variants : [...variants].reverse()
  for (const v of order) meshes.push(await measure(v, r))
}

const rows: string[][] = []
for (const m of meshes) {
  for (const n of m.nodes) rows.push([m.variant, String(m.round), n.node + (n.leader ? ' (leader)' : ''), f2(n.cpuPct), f2(n.childCpuPct), f1(n.rssStartMiB), f1(n.rssEndMiB), f1(n.anonMiB), f2(n.gitPerS), f2(n.rxKiBPerS)])
}
process.stdout.write(textTable(['variant', 'round', 'node', 'CPU %', 'children %', 'RSS start MiB', 'RSS end MiB', 'anon MiB', 'git/s', 'mesh rx KiB/s'], rows) + '\n\n')

const summary = variants.map(v => {
  const ns = meshes.filter(m => m.variant === v.name).flatMap(m => m.nodes)
  const ms = meshes.filter(m => m.variant === v.name)
  return {
    name: v.name,
    cpu: median(ns.map(n => n.cpuPct + n.childCpuPct)) ?? Number.NaN,
    cpuMax: Math.max(...ns.map(n => n.cpuPct + n.childCpuPct)),
    rss: median(ns.map(n => n.rssEndMiB)) ?? Number.NaN,
    rssMax: Math.max(...ns.map(n => n.rssEndMiB)),
    git: median(ns.map(n => n.gitPerS)) ?? Number.NaN,
    rx: median(ns.map(n => n.rxKiBPerS)) ?? Number.NaN,
    hostBusy: median(ms.map(m => m.hostBusyPct)) ?? Number.NaN,
    load: median(ms.map(m => m.load)) ?? Number.NaN
  }
})
const first = summary[0]
process.stdout.write(textTable(
  ['variant', 'CPU % median (max), self + children', 'RSS MiB median (max)', 'git/s median', 'mesh rx KiB/s median', 'host busy % (all cores)', 'load', 'CPU ratio', 'RSS ratio'],
  summary.map(s => [s.name, `${f2(s.cpu)} (${f2(s.cpuMax)})`, `${f1(s.rss)} (${f1(s.rssMax)})`, f2(s.git), f2(s.rx), f1(s.hostBusy), f2(s.load), first === undefined ? '' : f2(s.cpu / first.cpu), first === undefined ? '' : f2(s.rss / first.rss)])
) + '\n')
if (args.json !== undefined) await writeFile(args.json, JSON.stringify({ nodes: NODES, windowMs: WINDOW_MS, settleMs: SETTLE_MS, variants, meshes }, null, 1) + '\n')
