/**
 * `npm run chaos -- --netns --short`: the chaos run on a network of hosts on
 * this machine. Three `meshwork node` processes, each in a network namespace
 * of its own with its own address on a bridge the script makes, every
 * node-to-node connection through its fault-injecting TCP proxy, the client in
 * the machine's own namespace attached to the bridge. Faults: the merge leader
 * killed with SIGKILL and restarted, a link cut at the proxy and healed, a
 * slow lossy link (200 ms a chunk, 5 % of chunks held a retransmission
 * timeout), a partition by the network (blackhole routes between the sides)
 * and its heal. The script checks every valid task merged exactly once, main
 * identical on every node and only moved forward, no task lost, the minority
 * merged nothing while cut off, and no process left behind: the nodes, the
 * proxy, and the namespaces all gone. Skips where namespaces cannot be made
 * (not root, no `ip`). Slow tier: 3 to 6 minutes on 2 shared cores.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { netnsUnavailable, namespacesWith } from './helpers/netns.ts'

const SCRIPT = fileURLToPath(new URL('../scripts/chaos.ts', import.meta.url))
/** Bound of the whole script run (it bounds each of its own waits). */
const RUN_BOUND_MS = 420_000

let dir = ''
let proc: ChildProcess | null = null

afterAll(async () => {
  // the script kills its nodes and the proxy and removes its namespaces on SIGTERM (and on any exit of its own)
  if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGTERM')
    await new Promise(resolve => { const t = setTimeout(resolve, 15_000); proc?.once('exit', () => { clearTimeout(t); resolve(null) }) })
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  }
  if (dir !== '') await rm(dir, { recursive: true, force: true })
}, 30_000)

interface ChaosJson { seed: number, netns: boolean, faults: Array<{ kind: string, target: string, detail: string }>, checks: Array<{ name: string, ok: boolean, detail: string }>, wallS: number }

describe('npm run chaos -- --netns --short', { timeout: RUN_BOUND_MS + 20_000 }, () => {
  it('on a network of namespaces, survives a leader kill, a link cut, a slow lossy link and a network partition: every task merged once, one main, nothing left', async (ctx) => {
    const why = await netnsUnavailable()
    if (why !== null) { ctx.skip(true, why); return }
    dir = await mkdtemp(join(tmpdir(), 'meshwork-chaos-netns-'))
    const jsonFile = join(dir, 'chaos.json')
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
    const child = spawn(process.execPath, [SCRIPT, '--netns', '--short', '--seed', '1', '--no-docs', '--json', jsonFile], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    proc = child
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-40_000) })
    child.stderr.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-40_000) })
    let timer: NodeJS.Timeout | undefined
    const exit = await Promise.race([
      new Promise<number | null>(resolve => { child.once('exit', code => { resolve(code) }) }),
      new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, RUN_BOUND_MS) })
    ])
    clearTimeout(timer)
    expect(exit, `the chaos script did not finish within ${RUN_BOUND_MS / 1000} s:\n${out}`).not.toBe('timeout')
    expect(exit, out).toBe(0)
    const report = JSON.parse(await readFile(jsonFile, 'utf8')) as ChaosJson
    expect(report.netns).toBe(true)
    expect(report.faults.map(f => f.kind).sort()).toEqual(['leader-kill', 'link-cut', 'net-partition', 'slow-link'])
    const failed = report.checks.filter(c => !c.ok)
    expect(failed, out).toEqual([])
    expect(report.checks.map(c => c.name)).toEqual(expect.arrayContaining([
      'every valid task merged exactly once',
      'main identical on every node and equal to the board',
      'each node\'s main only moved forward (reflog)',
      'no task lost',
      'the partition: both sides ran, the minority merged nothing while cut off',
      'no process left behind'
    ]))
    // the script's namespaces are named after its pid
    expect(namespacesWith(`mwc${child.pid ?? 0}-`)).toEqual([])
  })
})
