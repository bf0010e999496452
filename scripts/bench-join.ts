/**
 * `npm run bench:join`: how long a new `meshwork node` takes to be usable in a
 * mesh whose board already holds many tasks, measured on the real CLI (the
 * joiner of bench:board is a stand-in: a MeshNode in a worker process).
 *
 * For each checkout (`--variant`) and each board size it starts node `a` of
 * that checkout on 127.0.0.1 (command agent `sleep`, one slot), submits a plan
 * of N tasks with `meshwork submit` (a gate task that `a` runs for the whole
 * benchmark, and N-1 tasks that depend on it, so the board stays as it is),
 * waits until `a` reports all N, and then, `--rounds` times, starts a fresh
 * joiner `meshwork node --join TOKEN` on an empty repository and data dir.
 * It asks the joiner for its status report over `/meshwork/status/1` every
 * 250 ms (the joiner's own view of the board) and reports, per round:
 *
 *   answers   spawn → the first status report of the joiner
 *   all       spawn → a report of the joiner with all N tasks (the figure the
 *             aim "usable within 2 s at 10,000 tasks" is held against)
 *   cpu       the joiner's CPU time (user + system) up to then
 *   rss       its resident memory then
 *
 * Rounds alternate between variants, so drift in the host's load hits them
 * alike. Nothing is written to docs/: put the figures where they belong by hand.
 *
 * Flags:
 *   --variant NAME=DIR   a checkout to time (repeatable; default: this one)
 *   --tasks LIST         board sizes, comma separated (default 1000,10000)
 *   --rounds R           joiners per size and variant (default 3)
 *   --json FILE          also write every measurement as JSON
 *
 * CPU profiles: `NODE_OPTIONS="--cpu-prof --cpu-prof-dir=DIR"` profiles every
 * process; a joiner is stopped with SIGTERM after its round (killed only if it
 * has not stopped within 30 s), so it writes its profile.
 *
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { parseScriptArgs, variantSpecs, type VariantSpec } from './bench/lib/args.ts'
import { childPids, installExitGuards, killAllChildren, pollUntil, register } from './bench/lib/children.ts'
import { cpuOf } from './bench/lib/proc.ts'
import { median, textTable } from './bench/lib/stats.ts'
import { requestStatus } from '../src/api/status-request.ts'
import { readSwarmKey, type SwarmKey } from '../src/node/swarm-key.ts'
import { closedPort } from '../test/helpers/net.ts'

const HERE = fileURLToPath(new URL('..', import.meta.url))
const log = (line: string): void => { process.stderr.write(line + '\n') }

installExitGuards('bench:join')

const args = parseScriptArgs(import.meta.url, {
  variant: { type: 'string', multiple: true },
  tasks: { type: 'string', default: '1000,10000' },
  rounds: { type: 'string', default: '3' },
  json: { type: 'string' }
})

const ROUNDS = Number(args.rounds)
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`--rounds must be a whole number >= 1, got ${args.rounds}`)
const SIZES = args.tasks.split(',').map(s => Number(s.trim()))
if (SIZES.some(n => !Number.isInteger(n) || n < 2)) throw new Error(`--tasks takes whole numbers >= 2, comma separated; got ${args.tasks}`)
/** How long a node may take to write node.json. */
const NODE_START_MS = 120_000
/** Longest a submit or a joiner may take. */
const BOUND_MS = 10 * 60_000
/** Between status requests to the joiner (a peer may ask 5 a second). */
const POLL_MS = 250
const AGENT = ['--agent', 'command', '--agent-cmd', 'sleep 100000', '--slots', '1']

type Spec = VariantSpec
interface Mesh { spec: Spec, node: string, bin: string, dir: string, join: string, key: SwarmKey, tasks: number }
interface Round { variant: string, tasks: number, answersMs: number | null, allMs: number | null, cpuMs: number | null, rssMiB: number | null, error: string | null }

const privateKey = await generateKeyPair('Ed25519')

/** The number of tasks in the status report of the node at `addr`, or null if it did not answer within `timeoutMs`. */
async function tasksAt (key: SwarmKey, addr: string, timeoutMs: number): Promise<number | null> {
  try {
    const a = await requestStatus({ key, bootstrap: [addr], timeoutMs, privateKey })
    return a.kind === 'report' ? a.report.tasks.length : null
  } catch {
    return null
  }
}

function startNode (m: { node: string, bin: string }, argv: string[]): ChildProcess {
  const child = spawn(m.node, [m.bin, 'node', ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
  let tail = ''
  child.stderr?.on('data', (c: Buffer) => { tail = (tail + c.toString()).slice(-4000) })
  ;(child as ChildProcess & { tail: () => string }).tail = () => tail
  register(child)
  return child
}

/** Node `a` of a checkout with a board of `tasks` tasks that stays as it is. */
async function startMesh (spec: Spec, tasks: number, root: string): Promise<Mesh> {
  const node = join(spec.dir, 'node_modules', 'node', 'bin', 'node')
  const bin = join(spec.dir, 'bin', 'meshwork.js')
  const dir = join(root, `${spec.name}-${tasks}`)
  const keyFile = join(dir, 'swarm.key')
  await mkdir(dir, { recursive: true })
  const init = spawnSync(node, [bin, 'init', '--out', keyFile], { encoding: 'utf8' })
  if (init.status !== 0) throw new Error(`meshwork init (${spec.name}) exited ${init.status}: ${init.stderr}`)
  const data = join(dir, 'a-data')
  const a = startNode({ node, bin }, ['--repo', join(dir, 'a-repo'), '--data', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--name', 'a', '--swarm-key', keyFile, '--init-repo', ...AGENT])
  let info: { join: string, pid: number } | null = null
  const ok = await pollUntil(async () => {
    try {
      const i = JSON.parse(await readFile(join(data, 'node.json'), 'utf8')) as { join: string, pid: number }
      if (i.pid === a.pid) info = i
    } catch {}
    return info !== null || a.exitCode !== null
  }, NODE_START_MS, 100)
  if (!ok || info === null) throw new Error(`node a of ${spec.name} did not start within ${NODE_START_MS / 1000} s`)
  const token = (info as { join: string }).join
  const lines = ['tasks:', '  - id: gate', '    prompt: hold the others back for the whole benchmark']
  for (let i = 1; i < tasks; i++) lines.push(`  - id: t${i}`, `    prompt: task ${i} of the joiner benchmark, waiting for the gate`, '    deps: [gate]')
  const plan = join(dir, 'plan.yaml')
  await writeFile(plan, lines.join('\n') + '\n')
  const t0 = Date.now()
  const sub = spawnSync(node, [bin, 'submit', plan, '--join', token, '--timeout', '10m'], { encoding: 'utf8', timeout: BOUND_MS })
  if (sub.status !== 0) throw new Error(`meshwork submit of ${tasks} tasks (${spec.name}) exited ${sub.status ?? sub.signal}: ${sub.stderr.slice(-2000)}`)
  const key = await readSwarmKey(keyFile)
  const addr = (JSON.parse(readFileSync(join(data, 'node.json'), 'utf8')) as { addrs: string[] }).addrs[0] as string
  const all = await pollUntil(async () => (await tasksAt(key, addr, 60_000)) === tasks, BOUND_MS, 1000)
  if (!all) throw new Error(`node a of ${spec.name} did not report ${tasks} tasks within ${BOUND_MS / 60_000} min`)
  log(`${spec.name}: board of ${tasks} tasks built in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return { spec, node, bin, dir, join: token, key, tasks }
}

/** One joiner: spawn → first report, spawn → all tasks, its CPU and RSS then. */
async function joinOnce (m: Mesh, round: number): Promise<Round> {
  const res: Round = { variant: m.spec.name, tasks: m.tasks, answersMs: null, allMs: null, cpuMs: null, rssMiB: null, error: null }
  const dir = join(m.dir, `joiner-${round}`)
  const port = await closedPort()
  const addr = `/ip4/127.0.0.1/tcp/${port}`
  const t0 = performance.now()
  const b = startNode(m, ['--repo', join(dir, 'repo'), '--data', join(dir, 'data'), '--listen', addr, '--name', `b${round}`, '--join', m.join, ...AGENT])
  try {
    const got = await pollUntil(async () => {
      if (b.exitCode !== null) return true
      const n = await tasksAt(m.key, addr, 2000)
      if (n !== null && res.answersMs === null) res.answersMs = performance.now() - t0
      if (n !== m.tasks) return false
      res.allMs = performance.now() - t0
      const cpu = b.pid !== undefined ? cpuOf(b.pid) : null
      res.cpuMs = cpu === null ? null : cpu.self * 1000
      try {
        const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${b.pid}/status`, 'utf8'))
        res.rssMiB = rss === null ? null : Number(rss[1]) / 1024
      } catch {}
      return true
    }, BOUND_MS, POLL_MS)
    if (b.exitCode !== null) throw new Error(`the joiner exited ${b.exitCode}: ${(b as ChildProcess & { tail: () => string }).tail()}`)
    if (!got) throw new Error(`the joiner did not report ${m.tasks} tasks within ${BOUND_MS / 60_000} min`)
  } catch (err) {
    res.error = (err as Error).message
    log(`  error: ${res.error}`)
  } finally {
    // stopped as a user stops it (a `--cpu-prof` profile is written then), killed if it does not stop
    b.kill('SIGTERM')
    await pollUntil(() => b.exitCode !== null || b.signalCode !== null, 30_000)
    if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL')
    await pollUntil(() => b.exitCode !== null || b.signalCode !== null, 10_000)
    await rm(dir, { recursive: true, force: true })
  }
  return res
}

async function main (): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-join-'))
  const rounds: Round[] = []
  const loads: number[] = []
  try {
    for (const tasks of SIZES) {
      const meshes: Mesh[] = []
      for (const spec of variantSpecs(args.variant, HERE)) meshes.push(await startMesh(spec, tasks, root))
      for (let r = 0; r < ROUNDS; r++) {
        loads.push(loadavg()[0] ?? 0)
        for (const m of meshes) {
          const res = await joinOnce(m, r)
          rounds.push(res)
          log(`  ${m.spec.name}, ${tasks} tasks, round ${r + 1}/${ROUNDS}: first report ${fmt(res.answersMs)}, all tasks ${fmt(res.allMs)}, CPU ${fmt(res.cpuMs)}, RSS ${res.rssMiB?.toFixed(0) ?? 'n/a'} MiB (load ${loadavg()[0]?.toFixed(2)})`)
        }
      }
      killAllChildren()
      await pollUntil(() => childPids().length === 0, 10_000)
    }
    const rows: string[][] = []
    const variants = variantSpecs(args.variant, HERE).map(s => s.name)
    for (const tasks of SIZES) {
      const base = median(rounds.filter(r => r.tasks === tasks && r.variant === variants[0] && r.allMs !== null).map(r => r.allMs as number))
      for (const v of variants) {
        const rs = rounds.filter(r => r.tasks === tasks && r.variant === v)
        const ok = rs.filter(r => r.allMs !== null)
        const all = median(ok.map(r => r.allMs as number))
        rows.push([String(tasks), v, fmt(median(ok.map(r => r.answersMs as number))), fmt(all), ok.map(r => fmt(r.allMs)).join(' '), fmt(median(ok.map(r => r.cpuMs ?? 0))), `${median(ok.map(r => r.rssMiB ?? 0))?.toFixed(0) ?? 'n/a'} MiB`, base !== null && all !== null ? (all / base).toFixed(2) : 'n/a', String(rs.length - ok.length)])
      }
    }
    process.stdout.write(`meshwork node joining a board, ${ROUNDS} joiners per size and variant (load average 1 min at the rounds' starts: ${loads.map(l => l.toFixed(1)).join(' ')})\n`)
    process.stdout.write(textTable(['tasks', 'variant', 'first report', 'all tasks (median)', 'all tasks (each)', 'cpu', 'rss', 'ratio', 'failed'], rows) + '\n')
    if (args.json !== undefined) await writeFile(args.json, JSON.stringify({ rounds: ROUNDS, sizes: SIZES, loads, results: rounds }, null, 2) + '\n')
  } finally {
    // the nodes go first: a node still writing its data dir would race the removal
    killAllChildren()
    await pollUntil(() => childPids().length === 0, 10_000)
    await rm(root, { recursive: true, force: true })
  }
}

function fmt (v: number | null | undefined): string {
  return v === null || v === undefined ? 'n/a' : `${Math.round(v)} ms`
}

await main()
process.exit(0)
