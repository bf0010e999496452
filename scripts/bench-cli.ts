/**
 * `npm run bench:cli`: how long the CLI takes to answer. For each checkout
 * (`--variant`) it starts a one-node mesh on 127.0.0.1 with that checkout's
 * `meshwork node` (sim agent, empty board), then times whole CLI runs of that
 * checkout, each a fresh process as a user would start it:
 *
 *   help       `meshwork --help`
 *   status     `meshwork status --json --join TOKEN` against the running node
 *   refused    `status` with one --bootstrap address where nothing listens (exit 1)
 *   wrong-key  `status` against the node with another mesh's key (exit 1)
 *   npx-status the `status` run through `npx meshwork ...` (with --npx)
 *
 * Commands run directly with the pinned Node (node_modules/node/bin/node), as
 * `node bin/meshwork.js ...`. Variants alternate within each round, so drift in
 * the host's load hits them alike. Reported per case and variant: the median,
 * lowest and highest wall time, and the median CPU time (user + system of the
 * process and its children, from /proc/self/stat's cutime and cstime around
 * each run), plus the ratio of each variant's median to the first's.
 *
 * Flags:
 *   --variant NAME=DIR   a checkout to time (repeatable; default: this one)
 *   --rounds R           runs of each case per variant (default 10)
 *   --npx                also time `status` through npx
 *   --json FILE          also write every measurement as JSON
 *
 * Nothing is written to docs/: put the figures where they belong by hand.
 * Every child process is killed when the script ends, fails or is interrupted.
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseScriptArgs, variantSpecs } from './bench/lib/args.ts'
import { childPids, installExitGuards, killAllChildren, pollUntil, register } from './bench/lib/children.ts'
import { cpuOf } from './bench/lib/proc.ts'
import { max, median, min, textTable } from './bench/lib/stats.ts'
import { NOBODY, closedPort } from '../test/helpers/net.ts'

const HERE = fileURLToPath(new URL('..', import.meta.url))
const log = (line: string): void => { process.stderr.write(line + '\n') }

installExitGuards('bench:cli')

const args = parseScriptArgs(import.meta.url, {
  variant: { type: 'string', multiple: true },
  rounds: { type: 'string', default: '10' },
  npx: { type: 'boolean', default: false },
  json: { type: 'string' }
})

const ROUNDS = Number(args.rounds)
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`--rounds must be a whole number >= 1, got ${args.rounds}`)
/** How long a node may take to write node.json. */
const NODE_START_MS = 60_000
/** Longest single CLI run before the bench gives up on it. */
const RUN_TIMEOUT_MS = 120_000

interface Variant {
  name: string
  dir: string
  /** The pinned Node of that checkout. */
  node: string
  join: string
  keyFile: string
  wrongKeyFile: string
  addr: string
}

interface Case {
  name: string
  /** Arguments after `meshwork`, for this variant. */
  args: (v: Variant) => string[]
  /** The exit code the run must end with. */
  code: number
  npx?: boolean
}

/** Starts a one-node mesh with the checkout's own `meshwork node` and waits for its node.json. */
async function startMesh (spec: { name: string, dir: string }, root: string): Promise<Variant> {
  const node = join(spec.dir, 'node_modules', 'node', 'bin', 'node')
  const bin = join(spec.dir, 'bin', 'meshwork.js')
  const dir = join(root, spec.name)
  const keyFile = join(dir, 'swarm.key')
  const wrongKeyFile = join(dir, 'other.key')
  await mkdir(dir, { recursive: true })
  for (const k of [keyFile, wrongKeyFile]) {
    const r = spawnSync(node, [bin, 'init', '--out', k], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`meshwork init (${spec.name}) exited ${r.status}: ${r.stderr}`)
  }
  const data = join(dir, 'data')
  const child = spawn(node, [bin, 'node', '--repo', join(dir, 'repo'), '--data', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--name', spec.name, '--swarm-key', keyFile, '--init-repo', '--agent', 'sim'], { stdio: ['ignore', 'ignore', 'ignore'] })
  register(child)
  let info: { join: string, addrs: string[], pid: number } | null = null
  const ok = await pollUntil(async () => {
    try {
      const i = JSON.parse(await readFile(join(data, 'node.json'), 'utf8')) as { join: string, addrs: string[], pid: number }
      if (i.pid === child.pid) info = i
    } catch {}
    return info !== null || child.exitCode !== null
  }, NODE_START_MS, 100)
  if (!ok || info === null) throw new Error(`the node of ${spec.name} did not write ${join(data, 'node.json')} within ${NODE_START_MS / 1000} s (exit ${child.exitCode})`)
  const { join: token, addrs } = info as { join: string, addrs: string[] }
  return { name: spec.name, dir: spec.dir, node, join: token, keyFile, wrongKeyFile, addr: addrs[0] as string }
}

/** Runs one CLI command to its end; its wall time and CPU time (with its children) in ms. */
function timeRun (v: Variant, c: Case): { wallMs: number, cpuMs: number } {
  const argv = c.args(v)
  const [cmd, cmdArgs] = c.npx === true ? ['npx', ['meshwork', ...argv]] : [v.node, [join(v.dir, 'bin', 'meshwork.js'), ...argv]]
  const before = cpuOf('self')?.children ?? 0
  const t0 = process.hrtime.bigint()
  const r = spawnSync(cmd, cmdArgs, { cwd: v.dir, encoding: 'utf8', timeout: RUN_TIMEOUT_MS })
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6
  const cpuMs = ((cpuOf('self')?.children ?? 0) - before) * 1000
  if (r.status !== c.code) throw new Error(`${v.name} ${c.name}: \`${[cmd, ...cmdArgs].join(' ')}\` exited ${r.status ?? r.signal} (expected ${c.code})\n${r.stderr}`)
  return { wallMs, cpuMs }
}

async function main (): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'meshwork-bench-cli-'))
  try {
    const dead = `/ip4/127.0.0.1/tcp/${await closedPort()}/p2p/${NOBODY}`
    const variants: Variant[] = []
    for (const spec of variantSpecs(args.variant, HERE)) variants.push(await startMesh(spec, root))
    const cases: Case[] = [
      { name: 'help', args: () => ['--help'], code: 0 },
      { name: 'status', args: v => ['status', '--json', '--join', v.join], code: 0 },
      { name: 'refused', args: v => ['status', '--swarm-key', v.keyFile, '--bootstrap', dead, '--timeout', '5m'], code: 1 },
      { name: 'wrong-key', args: v => ['status', '--swarm-key', v.wrongKeyFile, '--bootstrap', v.addr, '--timeout', '5m'], code: 1 },
      ...(args.npx ? [{ name: 'npx-status', args: (v: Variant) => ['status', '--json', '--join', v.join], code: 0, npx: true }] : [])
    ]
    const results = new Map<string, Array<{ wallMs: number, cpuMs: number }>>()
    const key = (c: Case, v: Variant): string => `${c.name}|${v.name}`
    const loads: number[] = []
    // one untimed run of each first: V8's compile cache is filled by a checkout's first run
    for (const c of cases) for (const v of variants) timeRun(v, c)
    for (let r = 0; r < ROUNDS; r++) {
      loads.push(loadavg()[0] ?? 0)
      for (const c of cases) {
        for (const v of variants) {
          const m = timeRun(v, c)
          results.set(key(c, v), [...(results.get(key(c, v)) ?? []), m])
        }
      }
      log(`round ${r + 1}/${ROUNDS} done (load ${loadavg()[0]?.toFixed(2)})`)
    }
    const rows: string[][] = []
    for (const c of cases) {
      const base = median((results.get(key(c, variants[0] as Variant)) ?? []).map(m => m.wallMs))
      for (const v of variants) {
        const ms = results.get(key(c, v)) ?? []
        const wall = ms.map(m => m.wallMs)
        const med = median(wall)
        rows.push([c.name, v.name, fmt(med), fmt(min(wall)), fmt(max(wall)), fmt(median(ms.map(m => m.cpuMs))), base !== null && med !== null ? (med / base).toFixed(2) : 'n/a'])
      }
    }
    process.stdout.write(`meshwork CLI, ${ROUNDS} runs of each (load average 1 min at the rounds' starts: ${loads.map(l => l.toFixed(1)).join(' ')})\n`)
    process.stdout.write(textTable(['case', 'variant', 'median', 'min', 'max', 'cpu median', 'ratio'], rows) + '\n')
    if (args.json !== undefined) await writeFile(args.json, JSON.stringify({ rounds: ROUNDS, loads, variants: variants.map(v => ({ name: v.name, dir: v.dir })), results: Object.fromEntries(results) }, null, 2) + '\n')
  } finally {
    // the nodes go first: a node still writing its data dir would race the removal
    killAllChildren()
    await pollUntil(() => childPids().length === 0, 10_000)
    await rm(root, { recursive: true, force: true })
  }
}

function fmt (v: number | null): string {
  return v === null ? 'n/a' : `${Math.round(v)} ms`
}

await main()
process.exit(0)
