/**
 * `meshwork node --metrics ADDR`: two real nodes (the second joining through
 * `--join-file`) run two sim tasks; both nodes' /metrics are scraped over HTTP
 * on loopback and agree with the board and with `meshwork status`.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { runCli, startNode, statusJson, killAllChildren, makeTempDir, removeDir, describeResult, type CliNode } from './helpers/cli.ts'

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

/** The samples of a Prometheus text exposition: `name{labels}` -> value. */
function parseMetrics (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

async function scrape (node: CliNode): Promise<{ text: string, m: Map<string, number> }> {
  const url = (node.info as unknown as { metrics?: string }).metrics
  if (url === undefined) throw new Error(`node ${node.name} wrote no metrics URL to node.json`)
  const res = await fetch(url)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
  const text = await res.text()
  return { text, m: parseMetrics(text) }
}

const get = (m: Map<string, number>, key: string): number => m.get(key) ?? 0

describe('meshwork node --metrics', () => {
  it('a bad address is a usage error', async () => {
    const dir = await makeTempDir('meshwork-metrics-')
    dirs.push(dir)
    const args = ['node', '--repo', join(dir, 'repo'), '--init-repo', '--agent', 'sim', '--insecure-no-swarm-key', '--metrics', 'localhost']
    const r = await runCli(args, { timeoutMs: 30_000 })
    expect(r.code, describeResult(args, r)).toBe(2)
    expect(r.stderr).toMatch(/--metrics must be HOST:PORT such as 127\.0\.0\.1:9464/)
  })

  it('serves Prometheus metrics that follow the board, and status shows the same totals', async () => {
    const dir = await makeTempDir('meshwork-metrics-')
    dirs.push(dir)
    const keyFile = join(dir, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const common = ['--agent', 'sim', '--metrics', '127.0.0.1:0']
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: common, startTimeoutMs: 90_000 })
    const tokenFile = join(dir, 'join.token')
    await writeFile(tokenFile, a.info.join + '\n', { mode: 0o600 })
    const b = await startNode({ dir, name: 'b', extraArgs: [...common, '--join-file', tokenFile], startTimeoutMs: 90_000 })
    expect(b.stdout()).toMatch(/^metrics http:\/\/127\.0\.0\.1:\d+\/metrics$/m)

    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: one\n    prompt: one\n    sim: { write: { "one.txt": "1\\n" } }\n  - id: two\n    prompt: two\n    sim: { write: { "two.txt": "2\\n" } }\n')
    const conn = ['--join-file', tokenFile]
    const sub = await runCli(['submit', plan, '--wait', ...conn], { timeoutMs: 180_000 })
    expect(sub.code, describeResult(['submit'], sub) + a.describe() + b.describe()).toBe(0)
    const status = await statusJson(conn, 90_000)
    expect(status.nodes.map(n => n.state)).toEqual(['alive', 'alive'])
    const leader = status.main.leader
    expect([a.info.peerId, b.info.peerId]).toContain(leader)

    // gauges are read at scrape time; counters follow the logged events (bounded wait for the last merge's log)
    const both = await waitFor(async () => {
      const [ma, mb] = [await scrape(a), await scrape(b)]
      return get(ma.m, 'meshwork_merges_total') + get(mb.m, 'meshwork_merges_total') === 2 ? [ma, mb] : null
    }, { timeoutMs: 20_000, intervalMs: 200, message: () => 'the nodes\' meshwork_merges_total did not reach 2' })
    for (const { m, text } of both) {
      expect(get(m, 'meshwork_tasks{state="merged"}'), text).toBe(2)
      expect(get(m, 'meshwork_tasks{state="running"}')).toBe(0)
      expect(get(m, 'meshwork_merge_queue_length')).toBe(0)
      expect(get(m, 'meshwork_peers{state="alive"}')).toBe(2)
      expect(get(m, 'meshwork_peers{state="dead"}')).toBe(0)
      expect(get(m, 'meshwork_gossip_messages_total{direction="sent"}')).toBeGreaterThan(0)
      expect(get(m, 'meshwork_gossip_messages_total{direction="received"}')).toBeGreaterThan(0)
      // every message received came as at least one copy
      expect(get(m, 'meshwork_gossip_copies_total')).toBeGreaterThanOrEqual(get(m, 'meshwork_gossip_messages_total{direction="received"}'))
      expect(get(m, 'meshwork_gossip_bytes_total{direction="received"}')).toBeGreaterThan(0)
      expect(get(m, 'meshwork_board_changes_total{direction="sent"}')).toBeGreaterThan(0)
      expect(get(m, 'meshwork_process_resident_memory_bytes')).toBeGreaterThan(1e6)
      expect(m.has('meshwork_nodejs_eventloop_lag_seconds'), 'event-loop lag').toBe(true)
      expect(m.has('meshwork_agent_cost_usd')).toBe(true)
      expect(m.has('meshwork_agent_tokens{kind="input"}')).toBe(true)
      // every sample is meshwork's
      for (const key of m.keys()) expect(key.startsWith('meshwork_'), key).toBe(true)
    }
    const sum = (key: string): number => both.reduce((s, x) => s + get(x.m, key), 0)
    expect(sum('meshwork_claims_total')).toBe(2)
    expect(sum('meshwork_runs_total{outcome="success"}')).toBe(2)
    expect(sum('meshwork_duplicate_runs_total')).toBe(0)
    const lead = leader === a.info.peerId ? both[0]! : both[1]!
    expect(get(lead.m, 'meshwork_is_leader')).toBe(1)
    expect(get(lead.m, 'meshwork_merges_total')).toBe(2)
    expect(get(lead.m, 'meshwork_merge_latency_seconds_count')).toBe(2)

    // every metric the sample Grafana dashboard plots is one a node serves
    const dashboard = await readFile(join(fileURLToPath(new URL('..', import.meta.url)), 'scripts', 'grafana', 'meshwork-dashboard.json'), 'utf8')
    const plotted = new Set([...dashboard.matchAll(/meshwork_[a-z0-9_]+/g)].map(x => x[0].replace(/_bucket$/, '')))
    expect(plotted.size).toBeGreaterThan(10)
    for (const name of plotted) expect(lead.text, `dashboard metric ${name}`).toMatch(new RegExp(`^# TYPE ${name} `, 'm'))

    // a path other than /metrics is not found
    const url = (a.info as unknown as { metrics: string }).metrics
    expect((await fetch(url.replace(/\/metrics$/, '/other'))).status).toBe(404)

    const human = await runCli(['status', ...conn], { timeoutMs: 90_000 })
    expect(human.code, describeResult(['status'], human)).toBe(0)
    expect(human.stdout).toMatch(/^totals: tasks 2 merged; merge queue 0; open conflicts 0$/m)
    expect(human.stdout).toMatch(/^ +nodes 2 alive; cost \$0\.00; tokens in 0 out 0 cache read 0 cache write 0$/m)
  }, 300_000)
})
