/**
 * `meshwork launch` against real ssh servers: three network namespaces on a
 * bridge (a "laptop" and two hosts, each with its own 10.x address), an sshd
 * the test starts in each host namespace with a throwaway host key and a
 * client key the test made. Launch runs in the laptop namespace, packs this
 * meshwork, installs it on both hosts (Node >= 22 from npm's `node` package
 * when the host's is older), starts the nodes under nohup (no systemd here),
 * and a third, unreachable host fails in one line without stopping the
 * others. The two nodes form a mesh and merge a sim task submitted from the
 * laptop; launching one host again replaces its node in place (same peer id,
 * a new process, the old one stopped) and it rejoins. The namespaces have no route out, so the hosts' npm installs from
 * the npm cache, which the test fills first from the machine's own namespace.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFileSync } from 'node:fs'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../src/util/wait.ts'
import { BIN, makeTempDir, removeDir, tail } from './helpers/cli.ts'
import { createNetwork, netnsUnavailable, type NetNetwork } from './helpers/netns.ts'
import { ensureSshd, makeClientKey, startSshd, type TestSshd } from './helpers/sshd.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')

let net: NetNetwork | null = null
const dirs: string[] = []
const sshds: TestSshd[] = []
afterAll(async () => {
  await net?.destroy()
  await Promise.all(dirs.map(removeDir))
}, 60_000)

/** The environment of launch and the clients: ours minus MESHWORK_* settings. */
function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
  return env
}

/**
 * Fills the npm cache (from this namespace, which reaches the registry) with
 * what the hosts' offline installs need: meshwork's dependencies and npm's
 * `node` package of this Node's version with its platform binary package.
 */
async function warmNpmCache (dir: string): Promise<void> {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
  const v = process.versions.node
  const specs = [...Object.entries(pkg.dependencies).map(([n, r]) => `${n}@${r}`), `node@${v}`, `node-${process.platform}-${process.arch}@${v}`]
  await run('npm', ['install', '--prefix', join(dir, 'warm'), '--no-audit', '--no-fund', '--prefer-offline', '--ignore-scripts', '--no-save', ...specs], { cwd: dir, env: cleanEnv(), timeout: 300_000, maxBuffer: 32 << 20 })
}

describe('meshwork launch over ssh', () => {
  it('launches two nodes through sshd in two namespaces; they form a mesh and merge a task; an unreachable host fails alone; a second launch upgrades in place', async (ctx) => {
    const noNetns = await netnsUnavailable()
    if (noNetns !== null) { ctx.skip(true, noNetns); return }
    const sshd = await ensureSshd()
    if (typeof sshd === 'string') { ctx.skip(true, sshd); return }

    const dir = await makeTempDir('meshwork-launch-')
    dirs.push(dir)
    await warmNpmCache(dir)
    net = await createNetwork(`mwl${process.pid}`, ['laptop', 'h1', 'h2'])
    const laptop = net.host('laptop')
    const [h1, h2] = [net.host('h1'), net.host('h2')]
    const clientKey = await makeClientKey(dir)
    const knownHosts = join(dir, 'known_hosts')
    for (const h of [h1, h2]) sshds.push(await startSshd(net, h, laptop, dir, clientKey, knownHosts))

    const key = join(dir, 'swarm.key')
    await run(process.execPath, [BIN, 'init', '--out', key], { env: cleanEnv() })
    const token = join(dir, 'mesh.token')
    // an address on the bridge where nobody answers: ssh fails there, the others go on
    const nobody = '10.119.0.99'
    const args = [
      BIN, 'launch', `root@${h1.ip}`, `root@${h2.ip}`, `root@${nobody}`,
      '--swarm-key', key, '--init-repo', '--token-out', token,
      '--identity-file', clientKey, '--ssh-opt', 'StrictHostKeyChecking=accept-new', '--ssh-opt', `UserKnownHostsFile=${knownHosts}`, '--ssh-opt', 'ConnectTimeout=5',
      '--prefix', join(dir, '{host}', 'opt'), '--data', join(dir, '{host}', 'data'), '--repo', join(dir, '{host}', 'repo'),
      '--node-args=--agent sim --name {host}'
    ]
    const sshOpts = args.slice(args.indexOf('--identity-file'), args.indexOf('--prefix'))
    const placeArgs = args.slice(args.indexOf('--prefix'))
    const launched = await net.exec(laptop, process.execPath, args, { env: cleanEnv(), timeoutMs: 8 * 60_000 }).then(
      r => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code?: number, stdout?: string, stderr?: string, message: string }) => ({ code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: (err.stderr ?? '') + '\n' + err.message })
    )
    const why = (): string => `launch exited ${launched.code}\n${tail('stdout', launched.stdout)}\n${tail('stderr', launched.stderr, 6000)}\n${sshds.map(s => tail(`sshd ${s.host.name}`, s.log())).join('\n')}`
    const lines = launched.stdout.trim().split('\n')
    expect(launched.code, why()).toBe(1)
    expect(lines.filter(l => l.startsWith('root@')), why()).toHaveLength(3)
    for (const h of [h1, h2]) {
      const line = lines.find(l => l.startsWith(`root@${h.ip}:`)) ?? ''
      expect(line, why()).toMatch(new RegExp(`^root@${h.ip.replace(/\./g, '\\.')}: ok, nohup \\(no systemd on the host; log .*\\), peer 12D3Koo\\w+, pid \\d+, /ip4/${h.ip.replace(/\./g, '\\.')}/tcp/4001/p2p/12D3Koo\\w+.*, health: \\d+ peers connected, \\d+ nodes alive, Node v\\d+`))
    }
    // the joiner's health is read once it has a peer: it reached the first node at launch
    expect(lines.find(l => l.startsWith(`root@${h2.ip}:`)), why()).toMatch(/health: [1-9]\d* peers connected/)
    expect(lines.find(l => l.startsWith(`root@${nobody}:`)), why()).toMatch(/^root@10\.119\.0\.99: FAILED: ssh failed: .+/)
    expect(launched.stdout, why()).toMatch(/join token of the new mesh written to/)

    // the secrets are 0600 files on the hosts, never on a command line
    expect((await stat(join(dir, h1.ip, 'opt', 'etc', 'swarm.key'))).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, h2.ip, 'opt', 'etc', 'join.token'))).mode & 0o777).toBe(0o600)
    expect((await stat(token)).mode & 0o777).toBe(0o600)

    // from the laptop: a task submitted through the mesh is merged, and both hosts are alive in it
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: hello\n    prompt: write hello\n    sim:\n      write: { "hello.txt": "hello\\n" }\n')
    const nodeLog = (h: typeof h1): string => { try { return readFileSync(join(dir, h.ip, 'opt', 'node.log'), 'utf8') } catch { return '(no log)' } }
    const submitted = await net.exec(laptop, process.execPath, [BIN, 'submit', plan, '--wait', '--join-file', token], { env: cleanEnv(), timeoutMs: 180_000 }).catch((err: Error) => {
      throw new Error(`submit --wait failed: ${err.message}\n${tail('h1', nodeLog(h1))}\n${tail('h2', nodeLog(h2))}`)
    })
    expect(submitted.stdout).toMatch(/hello/)
    const status = JSON.parse((await net.exec(laptop, process.execPath, [BIN, 'status', '--json', '--join-file', token], { env: cleanEnv(), timeoutMs: 60_000 })).stdout) as { tasks: Array<{ id: string, state: string, mergeCommit: string | null }>, nodes: Array<{ name: string, state: string }> }
    const task = status.tasks.find(t => t.id.endsWith('hello'))
    expect(task?.state, JSON.stringify(status.tasks)).toBe('merged')
    expect(task?.mergeCommit).toMatch(/^[0-9a-f]{40}$/)
    expect(status.nodes.map(n => `${n.name}=${n.state}`).sort(), `${launched.stdout}\n${tail('h1', nodeLog(h1), 5000)}\n${tail('h2', nodeLog(h2), 5000)}`).toEqual([`${h1.ip}=alive`, `${h2.ip}=alive`])
    // both hosts hold the merged main in their own repository
    for (const h of [h1, h2]) {
      await waitFor(async () => await run('git', ['-C', join(dir, h.ip, 'repo'), 'show', 'main:hello.txt']).then(r => r.stdout === 'hello\n', () => false), {
        timeoutMs: 30_000, intervalMs: 250, message: () => `${h.ip} has no hello.txt on main\n${tail(h.name, nodeLog(h))}`
      })
    }

    // launching again upgrades in place: the old node stops, a new one starts on the same data (same peer id) and rejoins.
    // The tarball is packed from the dist/ the first launch's `npm pack` built (no second build).
    const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, env: cleanEnv(), maxBuffer: 16 << 20 })
    const tgz = join(dir, (JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string }>)[0]?.filename ?? 'none')
    const first = /peer (\S+), pid (\d+)/.exec(lines.find(l => l.startsWith(`root@${h2.ip}:`)) ?? '')
    const again = await net.exec(laptop, process.execPath, [BIN, 'launch', `root@${h2.ip}`, '--join-file', token, '--tarball', tgz, '--json', ...sshOpts, ...placeArgs], { env: cleanEnv(), timeoutMs: 5 * 60_000 })
      .catch((err: { stdout?: string, stderr?: string, message: string }) => { throw new Error(`launch again failed: ${err.message}\n${tail('stdout', err.stdout ?? '')}\n${tail('h2', nodeLog(h2))}`) })
    const [relaunched] = JSON.parse(again.stdout) as Array<{ ok: boolean, peerId: string, pid: number, health: string }>
    expect(relaunched?.ok, again.stdout + again.stderr).toBe(true)
    expect(relaunched?.peerId).toBe(first?.[1])
    expect(relaunched?.pid).not.toBe(Number(first?.[2]))
    expect(relaunched?.health, tail('h2', nodeLog(h2))).toMatch(/^[1-9]\d* peers connected/)
    expect(again.stderr).toMatch(/stopping the node started by an earlier launch/)
    const procStatus = (pid: number): string => { try { return readFileSync(`/proc/${pid}/status`, 'utf8') } catch { return '' } }
    const state = /^State:\s*(\S)/m.exec(procStatus(Number(first?.[2])))?.[1] ?? 'gone'
    expect(['gone', 'Z'], 'the first node of h2 still runs').toContain(state)
  }, 900_000)
})
