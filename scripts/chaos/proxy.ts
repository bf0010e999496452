/**
 * The fault-injecting TCP proxy of `npm run chaos -- --netns` (this kernel
 * has no netem). It runs in a namespace of its own on the harness's bridge;
 * the hosts route each other's addresses to it (scripts/chaos/netns.ts), and
 * it answers for every host address (a `local` route per address: "AnyIP"),
 * so a connection that node A opens to node B's own address lands here, with
 * B's address as the socket's local address and A's as its remote one: that
 * pair is the link. It connects on to B's real listener from its own address
 * and copies bytes both ways, with per-link faults:
 *
 *   delay  every chunk (one read from the socket) is held `delayMs` before it
 *          is written on; order is kept.
 *   loss   TCP never loses bytes silently, so a lost segment shows as its
 *          retransmission: with probability `loss` a chunk is held `rtoMs`
 *          longer (and everything behind it on that connection, as TCP's
 *          in-order delivery would). Nothing is dropped or reset.
 *   cut    new connections on the link are accepted and reset at once (the
 *          dialer sees a reset), and every open one is reset.
 *
 * Usage (inside the proxy's namespace):
 *   node scripts/chaos/proxy.ts --port 4001 --source IP --hosts NAME=IP,... [--seed N]
 * Commands come as JSON lines on stdin, each answered by a JSON line on stdout
 * with the same `id`: {"id":1,"cmd":"set","a":"n0","b":"n1","delayMs":200,"loss":0.05,"rtoMs":1000},
 * {"cmd":"cut","a","b"}, {"cmd":"heal","a","b"}, {"cmd":"stats"}, {"cmd":"exit"}.
 * The first line it writes is {"event":"listening"}. It exits when stdin closes.
 */
import { createServer, connect, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { prng } from '../bench/schedule-dag.ts'

export interface LinkStats {
  /** Connections accepted on the link (both directions). */
  connections: number
  /** Connections refused (reset at once) while the link was cut. */
  refused: number
  /** Open connections reset by a cut. */
  reset: number
  /** Connections open now. */
  open: number
  bytes: number
  chunks: number
  /** Chunks held `delayMs`. */
  delayed: number
  /** Chunks held a retransmission timeout more (modelled loss). */
  lost: number
  /** When the last connection was accepted and passed on (ms since the epoch), 0 if none. */
  lastConnectAt: number
}

export interface LinkFaults { delayMs: number, loss: number, rtoMs: number, cut: boolean }

export type ProxyCommand =
  | { id?: number, cmd: 'set', a: string, b: string, delayMs?: number, loss?: number, rtoMs?: number }
  | { id?: number, cmd: 'cut' | 'heal', a: string, b: string }
  | { id?: number, cmd: 'stats' }
  | { id?: number, cmd: 'exit' }

/** The link of two host names, the same either way round (the keys of `stats`). */
const linkKey = (a: string, b: string): string => [a, b].sort().join('~')

/** The most bytes held in one direction of a connection before reading from it pauses. */
const MAX_HELD_BYTES = 4 << 20

interface Link { faults: LinkFaults, stats: LinkStats, sockets: Set<Socket> }

function main (): void {
  const { values } = parseArgs({ options: { port: { type: 'string' }, source: { type: 'string' }, hosts: { type: 'string' }, seed: { type: 'string', default: '1' } } })
  const port = Number(values.port)
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`--port: a TCP port, got ${JSON.stringify(values.port)}`)
  const source = values.source
  if (source === undefined || !/^\d+\.\d+\.\d+\.\d+$/.test(source)) throw new Error(`--source: this namespace's own IPv4 address, got ${JSON.stringify(source)}`)
  const byIp = new Map<string, string>()
  for (const part of (values.hosts ?? '').split(',').filter(p => p !== '')) {
    const m = /^([\w.-]+)=(\d+\.\d+\.\d+\.\d+)$/.exec(part)
    if (m === null) throw new Error(`--hosts: NAME=IP,... expected, got "${part}"`)
    byIp.set(m[2] as string, m[1] as string)
  }
  if (byIp.size < 2) throw new Error('--hosts: at least two hosts')
  const rand = prng(Number(values.seed))
  const links = new Map<string, Link>()
  const linkOf = (a: string, b: string): Link => {
    const k = linkKey(a, b)
    let l = links.get(k)
    if (l === undefined) {
      l = { faults: { delayMs: 0, loss: 0, rtoMs: 1000, cut: false }, stats: { connections: 0, refused: 0, reset: 0, open: 0, bytes: 0, chunks: 0, delayed: 0, lost: 0, lastConnectAt: 0 }, sockets: new Set() }
      links.set(k, l)
    }
    return l
  }
  const out = (v: unknown): void => { process.stdout.write(JSON.stringify(v) + '\n') }
  const strip = (ip: string | undefined): string => (ip ?? '').replace(/^::ffff:/, '')

  /** Copies `from` to `to` through the link's faults, in order. */
  const pipe = (from: Socket, to: Socket, link: Link): void => {
    let releaseAt = 0
    let held = 0
    let ended = false
    const flushEnd = (): void => { if (ended && held === 0 && !to.destroyed) to.end() }
    from.on('data', (chunk: Buffer) => {
      const f = link.faults
      link.stats.bytes += chunk.length
      link.stats.chunks++
      if (f.delayMs === 0 && f.loss === 0 && held === 0) {
        if (!to.write(chunk)) { from.pause(); to.once('drain', () => { from.resume() }) }
        return
      }
      let at = Date.now() + f.delayMs
      if (f.delayMs > 0) link.stats.delayed++
      if (f.loss > 0 && rand() < f.loss) { at += f.rtoMs; link.stats.lost++ }
      releaseAt = Math.max(at, releaseAt)
      held += chunk.length
      if (held > MAX_HELD_BYTES) from.pause()
      setTimeout(() => {
        held -= chunk.length
        if (!to.destroyed) to.write(chunk)
        if (held <= MAX_HELD_BYTES && from.isPaused() && !from.destroyed) from.resume()
        flushEnd()
      }, Math.max(0, releaseAt - Date.now()))
    })
    from.on('end', () => { ended = true; flushEnd() })
  }

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (inbound) => {
    const srcName = byIp.get(strip(inbound.remoteAddress))
    const dstIp = strip(inbound.localAddress)
    const dstName = byIp.get(dstIp)
    if (srcName === undefined || dstName === undefined || srcName === dstName) {
      out({ event: 'stranger', from: inbound.remoteAddress, to: inbound.localAddress })
      inbound.resetAndDestroy()
      return
    }
    const link = linkOf(srcName, dstName)
    if (link.faults.cut) { link.stats.refused++; inbound.resetAndDestroy(); return }
    link.stats.connections++
    const outbound = connect({ host: dstIp, port, localAddress: source, allowHalfOpen: true })
    link.sockets.add(inbound)
    link.sockets.add(outbound)
    link.stats.open++
    let connected = false
    let done = false
    // bookkeeping once both sockets are closed
    const finish = (): void => {
      if (done || !inbound.destroyed || !outbound.destroyed) return
      done = true
      link.stats.open--
      link.sockets.delete(inbound)
      link.sockets.delete(outbound)
    }
    // the target does not answer (its node is down): the dialer sees a reset, as from a closed port
    outbound.on('error', () => { if (connected) inbound.destroy(); else inbound.resetAndDestroy(); outbound.destroy() })
    inbound.on('error', () => { inbound.destroy(); outbound.destroy() })
    // a side fully closed: the other goes too unless it is only finishing what is held for it (ended)
    inbound.on('close', () => { if (!outbound.writableEnded) outbound.destroy(); finish() })
    outbound.on('close', () => { if (!inbound.writableEnded) inbound.destroy(); finish() })
    outbound.once('connect', () => {
      connected = true
      link.stats.lastConnectAt = Date.now()
      pipe(inbound, outbound, link)
      pipe(outbound, inbound, link)
      inbound.resume()
    })
  })
  server.on('error', (err) => { out({ event: 'error', error: err.message }); process.exit(1) })
  server.listen({ host: '0.0.0.0', port }, () => { out({ event: 'listening', port }) })

  const check = (name: string): string => {
    if (![...byIp.values()].includes(name)) throw new Error(`no host ${name}`)
    return name
  }
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    let c: ProxyCommand
    try { c = JSON.parse(line) as ProxyCommand } catch { out({ ok: false, error: `not JSON: ${line.slice(0, 100)}` }); return }
    try {
      switch (c.cmd) {
        case 'set': {
          const l = linkOf(check(c.a), check(c.b))
          if (c.delayMs !== undefined) l.faults.delayMs = Math.max(0, c.delayMs)
          if (c.loss !== undefined) l.faults.loss = Math.min(1, Math.max(0, c.loss))
          if (c.rtoMs !== undefined) l.faults.rtoMs = Math.max(0, c.rtoMs)
          out({ id: c.id, ok: true, faults: l.faults })
          break
        }
        case 'cut': {
          const l = linkOf(check(c.a), check(c.b))
          l.faults.cut = true
          const n = l.sockets.size / 2
          for (const s of [...l.sockets]) { try { s.resetAndDestroy() } catch { s.destroy() } }
          l.stats.reset += n
          out({ id: c.id, ok: true, reset: n })
          break
        }
        case 'heal': {
          linkOf(check(c.a), check(c.b)).faults.cut = false
          out({ id: c.id, ok: true })
          break
        }
        case 'stats':
          out({ id: c.id, ok: true, links: Object.fromEntries([...links].map(([k, l]) => [k, { ...l.stats, ...l.faults }])) })
          break
        case 'exit':
          out({ id: c.id, ok: true })
          process.exit(0)
          break
        default:
          out({ id: (c as { id?: number }).id, ok: false, error: `unknown command ${JSON.stringify((c as { cmd?: unknown }).cmd)}` })
      }
    } catch (err) {
      out({ id: c.id, ok: false, error: (err as Error).message })
    }
  })
  rl.on('close', () => { process.exit(0) })
}

main()
