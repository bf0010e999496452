import type { Server } from 'node:http'
import { http } from '../util/http.ts'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Message } from '@libp2p/gossipsub'
import { buildStatus } from '../api/status.ts'
import { meshTotals } from '../api/totals.ts'
import { UsageError } from '../util/errors.ts'
import type { LogFields, Logger } from '../util/logger.ts'
import type { MeshNode } from './mesh-node.ts'

/** Every metric name starts with this. */
export const METRICS_PREFIX = 'meshwork_'

/**
 * Prometheus metrics of one node. Counters of what this node did (claims,
 * steals, runs, merges, verify runs) come from the events it logs, read
 * through `tap(logger)`, so the code that does the work needs no metrics
 * calls; gauges of the mesh (tasks by state, cost, merge queue, peers) are
 * read from the board and the membership view at each scrape.
 */
export class NodeMetrics {
  readonly registry = new Registry()
  #node: MeshNode | null = null
  #claims: Counter
  #steals: Counter
  #duplicates: Counter
  #settleTimeouts: Counter
  #runs: Counter<'outcome'>
  #merges: Counter
  #mergeLatency: Histogram
  #verify: Counter<'ok'>
  #conflicts: Counter
  #gossipIn = { messages: 0, bytes: 0 }

  constructor () {
    const registers = [this.registry]
    const p = METRICS_PREFIX
    collectDefaultMetrics({ register: this.registry, prefix: p })
    this.#claims = new Counter({ name: `${p}claims_total`, help: 'Tasks this node claimed (stolen ones included).', registers })
    this.#steals = new Counter({ name: `${p}steals_total`, help: 'Tasks this node took from a slow or missing preferred node.', registers })
    this.#duplicates = new Counter({ name: `${p}duplicate_runs_total`, help: 'Runs of this node whose result was ignored because another claim of the task won (a task run twice).', registers })
    this.#settleTimeouts = new Counter({ name: `${p}claim_settle_timeouts_total`, help: 'Claims started without every peer\'s acknowledgement.', registers })
    this.#runs = new Counter({ name: `${p}runs_total`, help: 'Agent runs of this node by outcome (success, failure, timeout, rate-limited, cancelled, infra, ...).', labelNames: ['outcome'], registers })
    this.#merges = new Counter({ name: `${p}merges_total`, help: 'Tasks this node merged into main as leader.', registers })
    this.#mergeLatency = new Histogram({ name: `${p}merge_latency_seconds`, help: 'From a task done to its merge into main, for merges made by this node.', buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600], registers })
    this.#verify = new Counter({ name: `${p}verify_runs_total`, help: 'Verify checks this node ran as leader, by result.', labelNames: ['ok'], registers })
    this.#conflicts = new Counter({ name: `${p}merge_conflicts_total`, help: 'Merge conflicts this node raised as leader.', registers })
    const node = (): MeshNode | null => this.#node
    const status = (): ReturnType<typeof buildStatus> | null => {
      const n = node()
      return n === null ? null : buildStatus(n.board.snapshot(), n.membersView())
    }
    new Gauge({
      name: `${p}tasks`, help: 'Tasks on the board by state.', labelNames: ['state'], registers,
      collect () {
        const s = status()
        if (s === null) return
        const t = meshTotals(s)
        for (const [state, v] of Object.entries(t.tasks)) this.set({ state }, v)
      }
    })
    new Gauge({
      name: `${p}peers`, help: 'Nodes of the mesh by state, as this node sees them (itself included).', labelNames: ['state'], registers,
      collect () {
        const s = status()
        if (s === null) return
        for (const [state, v] of Object.entries(meshTotals(s).nodes)) this.set({ state }, v)
      }
    })
    new Gauge({
      name: `${p}merge_queue_length`, help: 'Tasks waiting for the merge leader (done or merging).', registers,
      collect () { const s = status(); if (s !== null) this.set(meshTotals(s).mergeQueue) }
    })
    new Gauge({
      name: `${p}open_conflicts`, help: 'Conflicts waiting for a human decision.', registers,
      collect () { const s = status(); if (s !== null) this.set(meshTotals(s).openConflicts) }
    })
    new Gauge({
      name: `${p}agent_cost_usd`, help: 'Agent cost of every task on the board, in USD (mesh total).', registers,
      collect () { const s = status(); if (s !== null) this.set(meshTotals(s).costUsd) }
    })
    new Gauge({
      name: `${p}agent_tokens`, help: 'Agent tokens of every task on the board (mesh total), by kind.', labelNames: ['kind'], registers,
      collect () {
        const s = status()
        if (s === null) return
        for (const [kind, v] of Object.entries(meshTotals(s).tokens)) this.set({ kind }, v)
      }
    })
    new Gauge({
      name: `${p}is_leader`, help: '1 while this node is the merge leader.', registers,
      collect () { const n = node(); if (n !== null) this.set(n.board.snapshot().main.leader === n.peerId ? 1 : 0) }
    })
    new Gauge({
      name: `${p}leader_term`, help: 'The merge leader\'s term on the board.', registers,
      collect () { const n = node(); if (n !== null) this.set(n.board.snapshot().main.term) }
    })
    new Gauge({
      name: `${p}connected_peers`, help: 'Peers (nodes and clients) with an open connection to this node.', registers,
      collect () { const n = node(); if (n !== null) this.set(n.connectedPeers().length) }
    })
    const gossipIn = this.#gossipIn
    new Counter({
      name: `${p}gossip_messages_total`, help: 'Gossip messages, by direction (sent: published by this node; received: delivered to it).', labelNames: ['direction'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc({ direction: 'sent' }, n.stats.gossipSent.messages)
        this.inc({ direction: 'received' }, gossipIn.messages)
      }
    })
    new Counter({
      name: `${p}gossip_bytes_total`, help: 'Gossip payload bytes, by direction.', labelNames: ['direction'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc({ direction: 'sent' }, n.stats.gossipSent.bytes)
        this.inc({ direction: 'received' }, gossipIn.bytes)
      }
    })
    new Counter({
      name: `${p}gossip_copies_total`, help: 'Copies of gossip messages that reached this node, duplicates from several mesh peers included (received messages are the first copies that passed validation).', registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc(n.stats.gossipCopies.copies)
      }
    })
    new Counter({
      name: `${p}board_changes_total`, help: 'Board changes broadcast by this node and received over gossip.', labelNames: ['direction'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc({ direction: 'sent' }, n.stats.changesBroadcast)
        this.inc({ direction: 'received' }, n.stats.changesReceived)
      }
    })
    new Counter({
      name: `${p}sync_sessions_total`, help: 'Anti-entropy sync sessions, by result.', labelNames: ['result'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc({ result: 'ok' }, n.stats.syncSessions)
        this.inc({ result: 'failed' }, n.stats.syncFailures)
      }
    })
    new Counter({
      name: `${p}sync_bytes_total`, help: 'Anti-entropy sync bytes, by direction.', labelNames: ['direction'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        this.inc({ direction: 'in' }, n.stats.syncBytes.in)
        this.inc({ direction: 'out' }, n.stats.syncBytes.out)
      }
    })
    new Counter({
      name: `${p}gossip_rejected_total`, help: 'Gossip messages this node rejected, by reason.', labelNames: ['reason'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        for (const [reason, v] of Object.entries(n.stats.gossipRejected)) this.inc({ reason }, v)
      }
    })
    new Counter({
      name: `${p}streams_refused_total`, help: 'Inbound streams refused or dropped by a per-peer bound, by protocol:reason (sync:too-fast, sync:too-many-streams, sync:idle).', labelNames: ['reason'], registers,
      collect () {
        const n = node()
        if (n === null) return
        this.reset()
        for (const [reason, v] of Object.entries(n.stats.streamsRefused)) this.inc({ reason }, v)
      }
    })
  }

  /** Starts reading gauges from `node` (after it started) and counting the gossip it receives. */
  attach (node: MeshNode): void {
    this.#node = node
    node.host.services.pubsub.addEventListener('message', (evt: CustomEvent<Message>) => {
      this.#gossipIn.messages++
      this.#gossipIn.bytes += evt.detail.data.length
    })
  }

  /** A logger that passes every call on to `log` and counts the events metrics are made of. */
  tap (log: Logger): Logger {
    const wrap = (l: Logger): Logger => {
      const on = (fn: Logger['info']) => (event: string, fields?: LogFields) => {
        try { this.#onEvent(event, fields ?? {}) } catch {}
        fn(event, fields)
      }
      return { debug: on(l.debug), info: on(l.info), warn: on(l.warn), error: on(l.error), child: (ns: string) => wrap(l.child(ns)) }
    }
    return wrap(log)
  }

  #onEvent (event: string, f: LogFields): void {
    switch (event) {
      case 'task:claimed': this.#claims.inc(); break
      case 'task:stolen': this.#claims.inc(); this.#steals.inc(); break
      case 'task:result-ignored': this.#duplicates.inc(); break
      case 'task:settle-timeout': this.#settleTimeouts.inc(); break
      case 'task:done': this.#runs.inc({ outcome: 'success' }); break
      case 'task:failed':
      case 'task:retry': this.#runs.inc({ outcome: 'failure' }); break
      case 'task:infra-failed': this.#runs.inc({ outcome: 'infra' }); break
      // releases that end a run carry its attempt; the others (restart, supersede) are not runs
      case 'task:released': if (typeof f.attempt === 'number' && typeof f.reason === 'string') this.#runs.inc({ outcome: f.reason }); break
      case 'merge:verified': this.#verify.inc({ ok: f.ok === true ? 'true' : 'false' }); break
      case 'merge:verify-failed': if (f.conflict !== undefined) this.#verify.inc({ ok: 'false' }); break
      case 'merge:conflict': this.#conflicts.inc(); break
      case 'merge:done': this.#onMerged(Array.isArray(f.tasks) ? f.tasks.filter((t): t is string => typeof t === 'string') : []); break
    }
  }

  #onMerged (tasks: string[]): void {
    const now = Date.now()
    for (const id of tasks) {
      this.#merges.inc()
      const doneAt = this.#node?.board.task(id)?.doneAt
      if (typeof doneAt === 'number' && doneAt <= now) this.#mergeLatency.observe((now - doneAt) / 1000)
    }
  }

  /** The text a scrape returns. */
  async text (): Promise<string> {
    return await this.registry.metrics()
  }
}

/** Parses `--metrics ADDR`: `HOST:PORT` or `[IPV6]:PORT`. */
export function parseMetricsAddr (addr: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(addr.trim())
  const port = Number(m?.[3])
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new UsageError(`--metrics must be HOST:PORT such as 127.0.0.1:9464 (or [::1]:9464), got "${addr}".`)
  }
  return { host: m[1] ?? m[2] ?? '', port }
}

/** Serves `metrics` at http://ADDR/metrics; resolves once listening, with the bound address. */
export async function serveMetrics (metrics: NodeMetrics, addr: string, log: Logger): Promise<{ server: Server, url: string }> {
  const { host, port } = parseMetricsAddr(addr)
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('meshwork serves only GET /metrics\n')
      return
    }
    metrics.text().then(body => {
      res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body)
    }, err => {
      log.warn('metrics:failed', { error: (err as Error).message })
      res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n')
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', err => { reject(new Error(`cannot serve metrics on ${addr}: ${err.message}`)) })
    server.listen(port, host, () => { resolve() })
  })
  server.unref()
  const a = server.address()
  const bound = typeof a === 'object' && a !== null ? (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`) : addr
  return { server, url: `http://${bound}/metrics` }
}
