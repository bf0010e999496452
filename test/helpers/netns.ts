/**
 * A network of hosts on this machine: Linux network namespaces on one bridge.
 * The bridge lives in a namespace of its own and every host namespace has one
 * veth link to it with an address in a private 10.x subnet, so nothing here
 * touches the machine's own interfaces or addresses: traffic goes only between
 * the namespaces the harness made. `cut`/`heal` take a host's link down and up
 * (a partition); `destroy` kills every process inside the namespaces (all of
 * them started by the test) and deletes the namespaces, even after a failure.
 *
 * With `root: true` the machine's own namespace gets one veth link to the
 * bridge too (address 10.<subnet>.0.2, a route for that /24 and nothing else),
 * so an in-process client can reach the hosts; pick the subnet with
 * `freeSubnet` so that route clashes with nothing. Shared by the tests and
 * `npm run chaos -- --netns` (scripts/chaos/netns.ts), which builds its
 * fault-injecting network on it.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { promisify } from 'node:util'
import { waitFor } from '../../src/util/wait.ts'

const run = promisify(execFile)

/** One host: a namespace with one address on the bridge. */
export interface NetHost {
  name: string
  /** The namespace's name (for `ip netns exec`). */
  ns: string
  /** Its address on the bridge. */
  ip: string
  /** Its port on the bridge (in the bridge's namespace). */
  port: string
}

export interface NetNetwork {
  hosts: NetHost[]
  host: (name: string) => NetHost
  /** The bridge's /24, e.g. `10.119.0.0/24`. */
  cidr: string
  /** The machine's own namespace's address on the bridge (`root: true`), else null. */
  rootIp: string | null
  /** The machine's own namespace's end of its link to the bridge (`root: true`), else null. */
  rootLink: string | null
  /** Every namespace made (the bridge's first). */
  namespaces: () => string[]
  /** Runs `ip -n <host's namespace> ARGS` (routes, rules, links). */
  ip: (host: NetHost, ...args: string[]) => Promise<void>
  /** Sets `net.<key>` (e.g. `ipv4.conf.all.rp_filter`) inside `host`'s namespace. */
  sysctl: (host: NetHost, key: string, value: string) => Promise<void>
  /** Runs a command to completion inside `host`'s namespace. */
  exec: (host: NetHost, cmd: string, args: string[], opts?: { timeoutMs?: number, env?: NodeJS.ProcessEnv, input?: string }) => Promise<{ stdout: string, stderr: string }>
  /** Starts a long-running command inside `host`'s namespace (killed by `destroy` with everything else there). */
  spawn: (host: NetHost, cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv, stdio?: StdioOptions }) => ChildProcess
  /** Takes `host`'s link to the bridge down: it can reach no other host (nor they it). */
  cut: (host: NetHost) => Promise<void>
  /** Brings the link back up. */
  heal: (host: NetHost) => Promise<void>
  /** Pids of every process inside `host`'s namespace. */
  pids: (host: NetHost) => Promise<number[]>
  /** Kills every process in the namespaces, waits (bounded) until they are gone, deletes the namespaces. Idempotent. */
  destroy: () => Promise<void>
  /** The same, synchronous (for a process 'exit' handler): SIGKILL, then delete; no wait. */
  destroySync: () => void
}

/** The namespaces on the machine whose names start with `prefix`. */
export function namespacesWith (prefix: string): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n').map(l => l.trim().split(/\s/)[0] ?? '').filter(n => n !== '' && n.startsWith(prefix))
  } catch {
    return []
  }
}

/** Whether the machine's own namespace has a link named `name`. */
export function rootLinkExists (name: string): boolean {
  try { execFileSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }); return true } catch { return false }
}

/**
 * A subnet byte from `candidates` that nothing in the machine's own namespace
 * routes or addresses (10.<byte>.0.0/16 unused), for `createNetwork(..., { root: true })`.
 */
export async function freeSubnet (candidates: number[]): Promise<number> {
  const used = (await run('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout + (await run('ip', ['-4', 'addr'])).stdout
  const free = candidates.find(b => !new RegExp(`\\b10\\.${b}\\.`).test(used))
  if (free === undefined) throw new Error(`no free 10.x subnet among ${candidates.join(', ')} in this machine's routes`)
  return free
}

/** Why namespaces cannot be made here (not root, no `ip`, no permission), or null when they can. */
export async function netnsUnavailable (): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  const probe = `mwprobe${process.pid}`
  try {
    await run('ip', ['netns', 'add', probe])
  } catch (err) {
    return `cannot make a network namespace: ${(err as Error).message.split('\n')[0] ?? ''}`
  }
  try {
    await run('ip', ['-n', probe, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'b0'])
    await run('ip', ['-n', probe, 'link', 'add', 'br0', 'type', 'bridge'])
    return null
  } catch (err) {
    return `cannot make veth pairs or a bridge in a namespace: ${(err as Error).message.split('\n')[0] ?? ''}`
  } finally {
    await run('ip', ['netns', 'del', probe]).catch(() => {})
  }
}

/**
 * Makes namespaces `<prefix>-<name>` for `names` on a bridge, addresses
 * 10.<subnet>.0.<11+i>/24. `prefix` must be unique on the machine (use the
 * pid): other test runs may make namespaces at the same time.
 */
export async function createNetwork (prefix: string, names: string[], subnet = 0x77, opts: { root?: boolean } = {}): Promise<NetNetwork> {
  const brNs = `${prefix}-br`
  const made: string[] = []
  const hosts: NetHost[] = names.map((name, i) => ({ name, ns: `${prefix}-${name}`, ip: `10.${subnet}.0.${11 + i}`, port: `p${i}` }))
  const rootIp = opts.root === true ? `10.${subnet}.0.2` : null
  // the root end of the root link (interface names: at most 15 characters)
  const rootLink = `${prefix.slice(0, 13)}r`
  let rootLinkMade = false
  let destroyed = false
  const pids = async (h: { ns: string }): Promise<number[]> => {
    const r = await run('ip', ['netns', 'pids', h.ns]).catch(() => ({ stdout: '' }))
    return r.stdout.split('\n').map(s => Number(s.trim())).filter(n => Number.isInteger(n) && n > 0)
  }
  const destroy = async (): Promise<void> => {
    if (destroyed) return
    destroyed = true
    const all = made.map(ns => ({ ns }))
    for (const h of all) for (const pid of await pids(h)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await waitFor(async () => (await Promise.all(all.map(pids))).every(p => p.length === 0), {
      timeoutMs: 15_000, intervalMs: 100, message: 'processes still running in the test namespaces after SIGKILL'
    }).catch(() => {})
    for (const ns of [...made].reverse()) await run('ip', ['netns', 'del', ns]).catch(() => {})
    // deleting the bridge's namespace deleted the root link's other end, and with it this one
    if (rootLinkMade && rootLinkExists(rootLink)) await run('ip', ['link', 'del', rootLink]).catch(() => {})
  }
  const destroySync = (): void => {
    if (destroyed) return
    destroyed = true
    for (const ns of made) {
      let out = ''
      try { out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) } catch {}
      for (const p of out.split('\n').map(x => Number(x.trim())).filter(n => Number.isInteger(n) && n > 0)) { try { process.kill(p, 'SIGKILL') } catch {} }
    }
    for (const ns of [...made].reverse()) { try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }) } catch {} }
    if (rootLinkMade) { try { execFileSync('ip', ['link', 'del', rootLink], { stdio: 'ignore' }) } catch {} }
  }
  const ip = async (...args: string[]): Promise<void> => { await run('ip', args) }
  try {
    await ip('netns', 'add', brNs)
    made.push(brNs)
    await ip('-n', brNs, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', brNs, 'link', 'set', 'br0', 'up')
    for (const h of hosts) {
      await ip('netns', 'add', h.ns)
      made.push(h.ns)
      await ip('-n', h.ns, 'link', 'set', 'lo', 'up')
      // both ends made inside namespaces: the machine's own namespace never sees them
      await ip('-n', h.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', h.port, 'netns', brNs)
      await ip('-n', brNs, 'link', 'set', h.port, 'master', 'br0')
      await ip('-n', brNs, 'link', 'set', h.port, 'up')
      await ip('-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0')
      await ip('-n', h.ns, 'link', 'set', 'eth0', 'up')
    }
    if (rootIp !== null) {
      await ip('link', 'add', rootLink, 'type', 'veth', 'peer', 'name', 'proot', 'netns', brNs)
      rootLinkMade = true
      await ip('-n', brNs, 'link', 'set', 'proot', 'master', 'br0')
      await ip('-n', brNs, 'link', 'set', 'proot', 'up')
      await ip('addr', 'add', `${rootIp}/24`, 'dev', rootLink)
      await ip('link', 'set', rootLink, 'up')
    }
  } catch (err) {
    await destroy()
    throw err
  }
  return {
    hosts,
    cidr: `10.${subnet}.0.0/24`,
    rootIp,
    rootLink: rootIp !== null ? rootLink : null,
    namespaces: () => [...made],
    ip: async (h, ...args) => { await ip('-n', h.ns, ...args) },
    sysctl: async (h, key, value) => { await run('ip', ['netns', 'exec', h.ns, 'sysctl', '-q', '-w', `net.${key}=${value}`]) },
    host: (name) => {
      const h = hosts.find(x => x.name === name)
      if (h === undefined) throw new Error(`no host ${name} in the network`)
      return h
    },
    exec: async (h, cmd, args, opts = {}) => {
      const p = run('ip', ['netns', 'exec', h.ns, cmd, ...args], { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20, ...(opts.env !== undefined ? { env: opts.env } : {}) })
      if (opts.input !== undefined) { p.child.stdin?.end(opts.input) } else { p.child.stdin?.end() }
      return await p
    },
    spawn: (h, cmd, args, opts = {}) => spawn('ip', ['netns', 'exec', h.ns, cmd, ...args], { stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'], ...(opts.env !== undefined ? { env: opts.env } : {}) }),
    cut: async (h) => { await ip('-n', brNs, 'link', 'set', h.port, 'down') },
    heal: async (h) => { await ip('-n', brNs, 'link', 'set', h.port, 'up') },
    pids,
    destroy,
    destroySync
  }
}
