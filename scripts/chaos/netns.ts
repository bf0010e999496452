/**
 * The network of `npm run chaos -- --netns`: one namespace per node on a
 * bridge (test/helpers/netns.ts), the machine's own namespace on the bridge
 * too (the run's client: the observer and the CLI calls), and a proxy
 * namespace through which every node-to-node connection goes, so that any
 * link can be slowed or cut (scripts/chaos/proxy.ts; this kernel has no
 * netem, and no iptables or nft here).
 *
 * How a connection between two nodes goes through the proxy, with no change
 * to meshwork: each node listens on its own address only (port 4001), and
 * that address is what it announces (heartbeats, identify, join tokens). In
 * every node's namespace the other nodes' addresses are routed (/32) via the
 * proxy's address; the proxy namespace has a `local` route for every node
 * address ("AnyIP"), so it accepts a connection to any of them, reads the
 * dialed node from the socket's local address and the dialing node from its
 * remote one, and connects on from its own address. Its own outgoing packets
 * skip those local routes (policy rule `iif lo` to a table with the bridge
 * route, ahead of the local table), it answers no ARP for them (arp_ignore=1,
 * arp_announce=2), so the client's direct path to each node is untouched.
 * A node cannot bypass the proxy: whatever address it learns for a peer is
 * that peer's own, which its routes send to the proxy; nothing else is on the
 * bridge. The client's connections (from the machine's namespace) go direct.
 *
 * The faults: a link cut and a slow, lossy link are the proxy's (see its
 * header); the partition is the network's: each side's namespaces get
 * blackhole routes for the other side's addresses (and the minority's for the
 * client's), with strict reverse-path filtering in every node namespace, so
 * no packet crosses either way until the heal puts the routes back.
 */
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { register } from '../bench/lib/children.ts'
import { createNetwork, freeSubnet, namespacesWith, rootLinkExists, type NetHost, type NetNetwork } from '../../test/helpers/netns.ts'
import type { LinkStats, LinkFaults, ProxyCommand } from './proxy.ts'

export { netnsUnavailable } from '../../test/helpers/netns.ts'

const PROXY = fileURLToPath(new URL('./proxy.ts', import.meta.url))
/** The port every node listens on, in its own namespace. */
export const NODE_PORT = 4001
const PROXY_TABLE = '100'

export type LinkState = LinkStats & LinkFaults

export class ChaosNet {
  readonly net: NetNetwork
  readonly prefix: string
  /** The node hosts, n0..n(N-1). */
  readonly hosts: NetHost[]
  readonly proxyHost: NetHost
  #proxy: ChildProcess | null = null
  #nextId = 1
  readonly #waiting = new Map<number, (v: Record<string, unknown>) => void>()
  /** Blackhole routes the partition added: [host, address]. */
  #blackholes: Array<[NetHost, string]> = []
  /** Processes (pid and command line) still inside the namespaces when they were deleted (after every node and the proxy stopped). */
  leftovers: string[] = []

  private constructor (net: NetNetwork, prefix: string) {
    this.net = net
    this.prefix = prefix
    this.hosts = net.hosts.filter(h => h.name !== 'px')
    this.proxyHost = net.host('px')
  }

  /**
   * Makes the namespaces, the routes through the proxy and starts the proxy
   * (`env`: its environment, carrying the run's marker). `prefix` must be unique on the machine.
   */
  static async create (prefix: string, nodeCount: number, env: NodeJS.ProcessEnv, seed: number): Promise<ChaosNet> {
    const subnet = await freeSubnet([0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f])
    const net = await createNetwork(prefix, ['px', ...Array.from({ length: nodeCount }, (_, i) => `n${i}`)], subnet, { root: true })
    const c = new ChaosNet(net, prefix)
    try {
      await c.#setUp()
      await c.#startProxy(env, seed)
    } catch (err) {
      await c.destroy(0)
      throw err
    }
    return c
  }

  get clientIp (): string { return this.net.rootIp as string }

  host (name: string): NetHost { return this.net.host(name) }

  async #setUp (): Promise<void> {
    const px = this.proxyHost
    for (const [k, v] of [['arp_ignore', '1'], ['arp_announce', '2'], ['rp_filter', '0'], ['accept_local', '1']] as const) {
      for (const dev of ['all', 'eth0']) await this.net.sysctl(px, `ipv4.conf.${dev}.${k}`, v)
    }
    // the proxy's own packets (iif lo: locally generated) go out by the bridge route, never to its local routes
    await this.net.ip(px, 'route', 'add', this.net.cidr, 'dev', 'eth0', 'src', px.ip, 'table', PROXY_TABLE)
    await this.net.ip(px, 'rule', 'add', 'pref', '10', 'iif', 'lo', 'lookup', PROXY_TABLE)
    await this.net.ip(px, 'rule', 'add', 'pref', '100', 'lookup', 'local')
    await this.net.ip(px, 'rule', 'del', 'pref', '0')
    for (const h of this.hosts) await this.net.ip(px, 'route', 'add', 'local', `${h.ip}/32`, 'dev', 'lo')
    for (const h of this.hosts) {
      for (const dev of ['all', 'eth0']) await this.net.sysctl(h, `ipv4.conf.${dev}.rp_filter`, '1')
      for (const o of this.hosts) if (o !== h) await this.net.ip(h, 'route', 'add', `${o.ip}/32`, 'via', px.ip)
    }
  }

  async #startProxy (env: NodeJS.ProcessEnv, seed: number): Promise<void> {
    const hosts = this.hosts.map(h => `${h.name}=${h.ip}`).join(',')
    const proc = this.net.spawn(this.proxyHost, process.execPath, [PROXY, '--port', String(NODE_PORT), '--source', this.proxyHost.ip, '--hosts', hosts, '--seed', String(seed)], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    register(proc)
    this.#proxy = proc
    let err = ''
    proc.stderr?.on('data', (b: Buffer) => { err = (err + b.toString()).slice(-4000) })
    const listening = new Promise<void>((resolve, reject) => {
      proc.once('exit', (code, signal) => { reject(new Error(`the proxy exited (${code ?? signal}) before it listened: ${err}`)) })
      createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        let v: Record<string, unknown>
        try { v = JSON.parse(line) as Record<string, unknown> } catch { return }
        if (v.event === 'listening') resolve()
        const w = typeof v.id === 'number' ? this.#waiting.get(v.id) : undefined
        if (w !== undefined) { this.#waiting.delete(v.id as number); w(v) }
      })
    })
    let timer: NodeJS.Timeout | undefined
    await Promise.race([listening, new Promise<never>((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`the proxy did not listen within 30 s: ${err}`)) }, 30_000) })]).finally(() => { clearTimeout(timer) })
  }

  /** The proxy's pid (-1 when not running). */
  get proxyPid (): number { return this.#proxy?.pid ?? -1 }

  async #command (c: ProxyCommand): Promise<Record<string, unknown>> {
    const proc = this.#proxy
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) throw new Error('the proxy is not running')
    const id = this.#nextId++
    const answer = new Promise<Record<string, unknown>>(resolve => { this.#waiting.set(id, resolve) })
    proc.stdin?.write(JSON.stringify({ ...c, id }) + '\n')
    let timer: NodeJS.Timeout | undefined
    const v = await Promise.race([answer, new Promise<never>((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`the proxy did not answer ${c.cmd} within 10 s`)) }, 10_000) })]).finally(() => { clearTimeout(timer) })
    if (v.ok !== true) throw new Error(`proxy ${c.cmd}: ${String(v.error)}`)
    return v
  }

  /** The link of `a` and `b` as the proxy keys it. */
  static link (a: string, b: string): string { return [a, b].sort().join('~') }

  async stats (): Promise<Map<string, LinkState>> {
    const v = await this.#command({ cmd: 'stats' })
    return new Map(Object.entries(v.links as Record<string, LinkState>))
  }

  async linkStats (a: string, b: string): Promise<LinkState | undefined> { return (await this.stats()).get(ChaosNet.link(a, b)) }

  /** Cuts the link of `a` and `b`: open connections reset, new ones refused. Returns how many were reset. */
  async cutLink (a: string, b: string): Promise<number> { return Number((await this.#command({ cmd: 'cut', a, b })).reset) }
  async healLink (a: string, b: string): Promise<void> { await this.#command({ cmd: 'heal', a, b }) }
  /** Delay and modelled loss on the link of `a` and `b` (0, 0 to clear). */
  async slowLink (a: string, b: string, delayMs: number, loss: number, rtoMs = 1000): Promise<void> { await this.#command({ cmd: 'set', a, b, delayMs, loss, rtoMs }) }

  /**
   * A partition by the network: blackhole routes between every host of
   * `minority` and every host of the rest, and between the minority and the
   * client (the machine's namespace stays with the majority).
   */
  async partition (minority: string[]): Promise<void> {
    const minor = this.hosts.filter(h => minority.includes(h.name))
    const major = this.hosts.filter(h => !minority.includes(h.name))
    for (const a of minor) {
      for (const b of major) {
        await this.#blackhole(a, b.ip)
        await this.#blackhole(b, a.ip)
      }
      await this.#blackhole(a, this.clientIp)
    }
  }

  async #blackhole (h: NetHost, ip: string): Promise<void> {
    await this.net.ip(h, 'route', 'replace', 'blackhole', `${ip}/32`)
    this.#blackholes.push([h, ip])
  }

  /** Undoes `partition`: node addresses routed via the proxy again, the client's on the bridge directly. */
  async heal (): Promise<void> {
    const routes = this.#blackholes
    this.#blackholes = []
    for (const [h, ip] of routes) {
      if (ip === this.clientIp) await this.net.ip(h, 'route', 'del', 'blackhole', `${ip}/32`)
      else await this.net.ip(h, 'route', 'replace', `${ip}/32`, 'via', this.proxyHost.ip)
    }
  }

  /** Stops the proxy (SIGTERM, then SIGKILL after 10 s). */
  async stopProxy (): Promise<{ forced: boolean }> {
    const proc = this.#proxy
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return { forced: false }
    const exited = new Promise<void>(resolve => { proc.once('exit', () => { resolve() }) })
    proc.stdin?.end()
    let timer: NodeJS.Timeout | undefined
    const ok = await Promise.race([exited.then(() => true), new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(false) }, 10_000) })])
    clearTimeout(timer)
    if (ok) return { forced: false }
    proc.kill('SIGKILL')
    await exited
    return { forced: true }
  }

  /**
   * Waits (up to `graceMs`) until nothing runs in the namespaces any more (a
   * stopped node's watchdog exits a moment after it), records what still
   * runs then, and removes the namespaces (killing that) and the root link.
   */
  async destroy (graceMs = 20_000): Promise<void> {
    const inside = async (): Promise<number[]> => (await Promise.all(this.net.namespaces().map(async ns => await this.net.pids({ ns } as NetHost)))).flat()
    const deadline = Date.now() + graceMs
    let left = await inside()
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 250))
      left = await inside()
    }
    this.leftovers = left.map(pid => { try { return `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim().slice(0, 160)}` } catch { return `${pid}` } })
    await this.net.destroy()
  }

  /** For a process 'exit' handler. */
  destroySync (): void { this.net.destroySync() }

  /** What of the network is still on the machine: namespaces with the run's prefix, the root link. */
  remains (): string[] {
    const out = namespacesWith(`${this.prefix}-`)
    const rootLink = this.net.rootLink
    if (rootLink !== null && rootLinkExists(rootLink)) out.push(`link ${rootLink}`)
    return out
  }
}
