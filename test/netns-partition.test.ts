/**
 * Real separate hosts, as near as this machine gets: three `meshwork node`
 * processes, each in its own network namespace with its own address on a
 * bridge, and the clients in a fourth. One node's link is cut (a partition:
 * its packets go nowhere, connections time out rather than close); the other
 * two see it dead, keep working and merge a task without it. When the link
 * comes back the cut node is alive again and its repository and board hold
 * the task merged on the main the others made. Skips where namespaces
 * cannot be made.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { execFile, type ChildProcess } from 'node:child_process'
import { promisify } from 'node:util'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { BIN, makeTempDir, readNodeInfo, removeDir, tail, type NodeInfo } from './helpers/cli.ts'
import { createNetwork, netnsUnavailable, type NetHost, type NetNetwork } from './helpers/netns.ts'

const run = promisify(execFile)

let net: NetNetwork | null = null
const dirs: string[] = []
afterAll(async () => {
  await net?.destroy()
  await Promise.all(dirs.map(removeDir))
}, 60_000)

function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
  return env
}

interface NsNode { host: NetHost, proc: ChildProcess, out: () => string, info: NodeInfo, repo: string }

interface Status { main: { head: string | null }, nodes: Array<{ name: string, state: string }>, tasks: Array<{ id: string, state: string }> }

describe('nodes in separate network namespaces', () => {
  it('a node cut off by a link down is seen dead, the others merge without it, and after the heal it holds their main', async (ctx) => {
    const why = await netnsUnavailable()
    if (why !== null) { ctx.skip(true, why); return }
    const dir = await makeTempDir('meshwork-netns-')
    dirs.push(dir)
    net = await createNetwork(`mwp${process.pid}`, ['client', 'a', 'b', 'c'], 0x78)
    const network = net
    const client = network.host('client')
    const key = join(dir, 'swarm.key')
    await run(process.execPath, [BIN, 'init', '--out', key], { env: cleanEnv() })

    const start = async (h: NetHost, conn: string[]): Promise<NsNode> => {
      const data = join(dir, `data-${h.name}`)
      const repo = join(dir, `repo-${h.name}`)
      const first = conn.includes('--swarm-key')
      const proc = network.spawn(h, process.execPath, [BIN, 'node', '--repo', repo, '--data', data, '--listen', `/ip4/${h.ip}/tcp/4001`, '--name', h.name, '--agent', 'sim',
        '--suspect-after', '1s', '--dead-after', '4s', ...(first ? ['--init-repo'] : []), ...conn], { env: cleanEnv() })
      let out = ''
      proc.stdout?.on('data', (c: Buffer) => { out += c.toString() })
      proc.stderr?.on('data', (c: Buffer) => { out += c.toString() })
      const info = await waitFor(async () => {
        if (proc.exitCode !== null) throw new Error(`node ${h.name} exited ${proc.exitCode}\n${tail(h.name, out)}`)
        return await readNodeInfo(data)
      }, { timeoutMs: 60_000, intervalMs: 100, message: () => `node ${h.name} wrote no node.json\n${tail(h.name, out)}` })
      return { host: h, proc, out: () => out, info, repo }
    }
    const a = await start(network.host('a'), ['--swarm-key', key])
    // every address a node reports is its own namespace's (no other interface is there)
    expect(a.info.addrs.every(x => x.startsWith(`/ip4/${a.host.ip}/tcp/4001/p2p/`)), a.info.addrs.join(' ')).toBe(true)
    const [b, c] = await Promise.all([start(network.host('b'), ['--join', a.info.join]), start(network.host('c'), ['--join', a.info.join])])
    const nodes = [a, b, c]
    const logs = (): string => nodes.map(n => tail(n.host.name, n.out(), 1500)).join('\n')

    const status = async (via: NsNode): Promise<Status> => {
      const r = await network.exec(client, process.execPath, [BIN, 'status', '--json', '--join', via.info.join, '--timeout', '10s'], { env: cleanEnv(), timeoutMs: 30_000 })
      return JSON.parse(r.stdout) as Status
    }
    const states = (s: Status): string => s.nodes.map(n => `${n.name}=${n.state}`).sort().join(' ')
    let last: Status | null = null
    const until = async (via: NsNode, what: string, ok: (s: Status) => boolean, timeoutMs = 60_000): Promise<Status> => await waitFor(async () => {
      last = await status(via).catch(() => null)
      return last !== null && ok(last) ? last : null
    }, { timeoutMs, intervalMs: 500, message: () => `${what}; last status via ${via.host.name}: ${last === null ? '(none)' : `${states(last)} tasks ${JSON.stringify(last.tasks.map(t => `${t.id}=${t.state}`))}`}\n${logs()}` })

    await until(a, 'the three nodes did not all become alive', s => states(s) === 'a=alive b=alive c=alive')

    // partition: c's link goes down; a and b see it dead and still merge
    await network.cut(c.host)
    await until(a, 'a did not see c dead after its link was cut', s => states(s) === 'a=alive b=alive c=dead')
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: during-cut\n    prompt: write a file while c is cut off\n    sim:\n      write: { "cut.txt": "written while c was cut off\\n" }\n')
    await network.exec(client, process.execPath, [BIN, 'submit', plan, '--wait', '--join', a.info.join], { env: cleanEnv(), timeoutMs: 120_000 }).catch((err: Error) => { throw new Error(`submit --wait during the cut failed: ${err.message}\n${logs()}`) })
    const merged = await until(a, 'the task was not merged without c', s => s.tasks.some(t => t.id.endsWith('during-cut') && t.state === 'merged'))
    const head = merged.main.head
    expect(head).toMatch(/^[0-9a-f]{40}$/)
    expect(c.proc.exitCode, `c exited while cut off\n${logs()}`).toBeNull()

    // heal: c is alive again, its board has the task merged and its repository the same main
    await network.heal(c.host)
    await until(c, 'after the heal, c did not see all three alive with the task merged', s => states(s) === 'a=alive b=alive c=alive' && s.tasks.some(t => t.id.endsWith('during-cut') && t.state === 'merged'), 90_000)
    await until(a, 'after the heal, a did not see c alive', s => states(s) === 'a=alive b=alive c=alive')
    await waitFor(async () => await run('git', ['-C', c.repo, 'rev-parse', 'main']).then(r => r.stdout.trim() === head, () => false), {
      timeoutMs: 60_000, intervalMs: 250, message: () => `c's main did not reach ${head ?? '?'} after the heal\n${logs()}`
    })
    const file = await run('git', ['-C', c.repo, 'show', 'main:cut.txt'])
    expect(file.stdout).toBe('written while c was cut off\n')
  }, 400_000)
})
