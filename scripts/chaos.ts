/**
 * `npm run chaos`: faults injected into a live mesh, then a check that nothing
 * was lost, nothing ran twice into main, main only moved forward and nothing
 * was left running. Real `meshwork node` processes on 127.0.0.1 (sim agent, 2
 * slots, short --suspect-after/--dead-after, a `--verify` and a short
 * `--verify-timeout`), a plan in waves (scripts/chaos/plan.ts), and one fault
 * after each wave, in an order and at points (how many tasks merged) chosen
 * by a seeded PRNG:
 *
 *   kill          kill -9 of a random node (one running work when there is one), restarted on its --data
 *   leader-kill   kill -9 of the merge leader, restarted
 *   leader-crash  the leader SIGKILLs itself after moving its main and before the board records the
 *                 merge (MESHWORK_FAULT=leader-crash-after-main-move, armed by a file); restarted, it
 *                 must keep the unpublished merge on meshwork/local/... and the tasks merge again
 *   disk-full     one node's --data is a small tmpfs, filled to the brim, then freed: it must pause
 *                 (health paused, disk full), claim nothing meanwhile, and resume
 *   partition     the mesh cut in two sides that both keep running: every node runs with an `--allow`
 *                 file; the cut rewrites each side's files to list only that side (the minority:
 *                 fewer than half the nodes, the leader among them or not) and sends SIGHUP, so each
 *                 node hangs up on the other side and its connection gater refuses it; the run's
 *                 own client (the observer, the CLI calls) is listed on the majority side only. Both
 *                 sides hold the other dead and work on (the minority must merge nothing); the heal
 *                 restores the files and sends SIGHUP again
 *   poison        a raw board writer (an in-process light client) writes a task with id `x.lock`
 *
 * and throughout: a task whose candidate makes `--verify` hang (it must end failed, timed out).
 *
 * After the run: every valid task merged exactly once (trailers on main's
 * first-parent history), main identical on every node's repo and equal to
 * the board's (also as each node reports it), each repo's main only moved
 * forward (reflog; a move back only with the old head kept on
 * meshwork/local/...), no task lost, the poison task quarantined and never run,
 * no process of the run left once the nodes stopped. Exit 0 only if all hold.
 *
 * --netns: the same run on a network of hosts on this machine (scripts/chaos/netns.ts):
 * each node in a network namespace of its own with its own address on a bridge the run
 * makes, the run's client in the machine's own namespace attached to that bridge, and
 * every node-to-node connection through a fault-injecting TCP proxy (scripts/chaos/proxy.ts:
 * this kernel has no netem). 5 nodes, 50 tasks (49 in waves and the hung verify) and the
 * faults of a network:
 *
 *   link-cut       the link between two nodes cut at the proxy (open connections reset, new
 *                  ones refused) for a while, then healed; both go on through the others
 *   slow-link      200 ms added to every chunk on one link (the leader's), 5 % of chunks held
 *                  a retransmission timeout (1 s) more: loss as TCP shows it
 *   net-partition  a two-way partition by the network for 30 s: blackhole routes between the
 *                  two sides' namespaces (no packet crosses either way), then the routes back
 *
 * besides kill -9 of nodes and of the leader. The same checks, and "no process left" also
 * covers the proxy and the namespaces (all removed). It needs root and `ip`; elsewhere it
 * prints "chaos: skipped: <why>" and exits 0. Figures in their own section of
 * docs/benchmarks.md. `--netns --short`: 3 nodes, one fault of each network kind and a
 * leader kill (test/chaos-netns.test.ts, slow tier).
 *
 * Flags: --quick (4 nodes, fewer tasks and kills; leaves docs alone), --short (3
 * nodes, two tasks a wave, only a leader kill and the partition: test/chaos-short.test.ts
 * runs it in the e2e suite), --netns (above), --faults LIST (these fault kinds, comma separated, in a
 * seeded order), --seed N, --nodes N, --keep (keep the temp dir), --no-docs, --json FILE, --help.
 * Root is needed for the tmpfs of the full disk: without it a run with that fault stops at
 * once and says so. Not in `npm test`: the quick variant takes 2-3 minutes on a shared 2-core host.
 *
 * Over 400 lines: one run is one sequence (set-up, faults in order, checks, report) over shared
 * state (the nodes, the board seen, the faults recorded); its parts that stand alone are in
 * scripts/chaos/.
 */
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { prng } from './bench/schedule-dag.ts'
import { installExitGuards, killAllChildren, register } from './bench/lib/children.ts'
import { machine, writeSection } from './bench/lib/docs.ts'
import { buildPlan, taskFile, verifyCommand, type ChaosPlan } from './chaos/plan.ts'
import { BIN, ChaosNode, type LogLine } from './chaos/nodes.ts'
import { Observer } from './chaos/observer.ts'
import { fill, free, mountTmpfs, unmountAll } from './chaos/disk.ts'
import { backupBranches, branchExists, checkReflog, processesWith, revParse, trailersOnMain, type ReflogCheck } from './chaos/checks.ts'
import { ChaosNet, NODE_PORT, netnsUnavailable, type LinkState } from './chaos/netns.ts'
import { readSwarmKey } from '../src/node/swarm-key.ts'
import { loadClientIdentity, loadOrCreateIdentity, peerIdOf } from '../src/node/identity.ts'
import type { BoardSnapshot, Task } from '../src/crdt/schema.ts'

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))
const SECTION_TITLE = '## Chaos (npm run chaos)'
const NETNS_SECTION_TITLE = '## Chaos on a network of namespaces (npm run chaos -- --netns)'
const POISON_ID = 'x.lock'
const SUSPECT_AFTER = '2s'
const DEAD_AFTER = '5s'
const VERIFY_TIMEOUT = '4s'

const FAULT_KINDS = ['kill', 'leader-kill', 'leader-crash', 'disk-full', 'partition', 'poison', 'link-cut', 'slow-link', 'net-partition'] as const
/** Faults that need the network of --netns. */
const NETNS_FAULTS: readonly string[] = ['link-cut', 'slow-link', 'net-partition']
/** The slow link (--netns): added to every chunk, the share of chunks held a retransmission timeout more, that timeout. */
const SLOW_DELAY_MS = 200
const SLOW_LOSS = 0.05
const SLOW_RTO_MS = 1000

const USAGE = `usage: npm run chaos -- [--quick | --short] [--netns] [--faults LIST] [--seed N] [--nodes N] [--keep] [--no-docs] [--json FILE]

Faults injected into a mesh of real meshwork nodes, then checks: every task merged exactly once,
main identical on every node and only moved forward, no task lost, no process left behind.

  --quick        4 nodes, fewer tasks; leaves docs/benchmarks.md alone
  --short        3 nodes, two tasks a wave, fewer faults (what the tests run)
  --netns        each node in a network namespace of its own on a bridge, every node-to-node
                 connection through a fault-injecting TCP proxy; faults: kill -9 (the leader
                 too), link cuts, a slow lossy link (200 ms, 5 %), a 30 s partition by the
                 network. Needs root and ip(8); elsewhere prints "skipped: ..." and exits 0
  --faults LIST  these fault kinds, comma separated (${FAULT_KINDS.join(', ')};
                 ${NETNS_FAULTS.join(', ')} only with --netns)
  --seed N       the PRNG seed (fault order, targets, plan); default 1
  --nodes N      3 to 8 nodes
  --keep         keep the temp dir (logs, repos)
  --no-docs      do not write docs/benchmarks.md (full runs write their section)
  --json FILE    the faults and checks as JSON
`
type FaultKind = typeof FAULT_KINDS[number]

interface FaultRecord {
  n: number
  kind: FaultKind
  target: string
  /** Seconds since the plan was submitted. */
  atS: number
  mergedBefore: number
  detail: string
  /** Seconds from injection to recovery (node back and seen alive, or the mesh resumed). */
  recoveredS: number
}

interface Check { name: string, ok: boolean, detail: string }

const log = (line: string): void => { process.stderr.write(`chaos: ${line}\n`) }

installExitGuards('chaos')

// ---------------------------------------------------------------------------

let root = ''
let keep = false
let chaosNet: ChaosNet | null = null
process.on('exit', () => {
  killAllChildren()
  chaosNet?.destroySync()
  unmountAll()
  if (root !== '' && !keep) { try { rmSync(root, { recursive: true, force: true }) } catch {} }
})

/** A task that will not change any more: merged, failed, cancelled, or waiting on a dependency that did not merge and never will. */
function settled (b: BoardSnapshot, id: string, seen = new Set<string>()): boolean {
  const t = taskOf(b, id)
  if (t === undefined) return false
  if (['merged', 'failed', 'cancelled'].includes(t.state)) return true
  if (t.state !== 'pending' || seen.has(id)) return false
  seen.add(id)
  return t.deps.some(d => { const dt = taskOf(b, d); return dt !== undefined && dt.state !== 'merged' && settled(b, d, seen) })
}

/** A task of the board by its id as plain text. */
const taskOf = (b: BoardSnapshot, id: string): Task | undefined => (b.tasks as ReadonlyMap<string, Task>).get(id)

function shuffle<T> (rand: () => number, xs: T[]): T[] {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [a[i], a[j]] = [a[j] as T, a[i] as T] }
  return a
}

async function cli (args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  register(proc)
  let out = ''
  let err = ''
  proc.stdout.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr.on('data', (b: Buffer) => { err = (err + b.toString()).slice(-20_000) })
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([
    new Promise<number | null>(resolve => { proc.once('close', c => { resolve(c) }) }),
    new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, timeoutMs) })
  ])
  clearTimeout(timer)
  if (code === 'timeout') { proc.kill('SIGKILL'); throw new Error(`meshwork ${args[0]}: no exit within ${timeoutMs} ms\n${err.slice(-2000)}`) }
  return { code, stdout: out, stderr: err }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      short: { type: 'boolean', default: false },
      faults: { type: 'string' },
      seed: { type: 'string', default: '1' },
      nodes: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'no-docs': { type: 'boolean', default: false },
      json: { type: 'string' },
      netns: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help === true) { process.stdout.write(USAGE); return }
  const short = values.short === true
  const quick = values.quick === true || short
  const netns = values.netns === true
  keep = values.keep === true
  const seed = Number(values.seed)
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${JSON.stringify(values.seed)}`)
  if (netns) {
    const why = await netnsUnavailable()
    if (why !== null) { process.stdout.write(`chaos: skipped: --netns needs network namespaces here: ${why}\n`); return }
  }
  const nodeCount = values.nodes === undefined ? (short ? 3 : quick ? 4 : 5) : Number(values.nodes)
  if (!Number.isInteger(nodeCount) || nodeCount < 3 || nodeCount > 8) throw new Error(`--nodes must be an integer from 3 to 8, got ${JSON.stringify(values.nodes)}`)
  if (Number(process.versions.node.split('.')[0]) < 22) throw new Error(`Node ${process.version} cannot run meshwork; use npm run chaos (the pinned Node)`)
  const rand = prng(seed)
  const started = Date.now()
  const mach = machine(tmpdir())

  root = mkdtempSync(join(tmpdir(), 'meshwork-chaos-'))
  const marker = `chaos-run-${randomBytes(6).toString('hex')}`
  log(`seed ${seed}, ${nodeCount} nodes, ${short ? 'short' : quick ? 'quick' : 'full'}${netns ? ' netns' : ''} run in ${root}; marker ${marker}`)

  // faults: one after each wave, in a seeded order
  const chosen: FaultKind[] = values.faults !== undefined
    ? values.faults.split(',').map(k => k.trim()).filter(k => k !== '').map(k => {
      if (!FAULT_KINDS.includes(k as FaultKind)) throw new Error(`--faults: unknown fault "${k}" (one of ${FAULT_KINDS.join(', ')})`)
      if (!netns && NETNS_FAULTS.includes(k)) throw new Error(`--faults: "${k}" needs --netns`)
      return k as FaultKind
    })
    : netns
      ? short
        ? ['leader-kill', 'link-cut', 'slow-link', 'net-partition']
        : quick
          ? ['kill', 'leader-kill', 'link-cut', 'slow-link', 'net-partition']
          : ['kill', 'kill', 'leader-kill', 'link-cut', 'link-cut', 'slow-link', 'net-partition']
    : short
      ? ['leader-kill', 'partition']
      : quick
        ? ['kill', 'leader-kill', 'leader-crash', 'disk-full', 'partition', 'poison']
        : ['kill', 'kill', 'kill', 'leader-kill', 'leader-crash', 'disk-full', 'partition', 'poison']
  if (chosen.length === 0) throw new Error('--faults: no fault named')
  const kinds: FaultKind[] = shuffle(rand, chosen)
  const gateDir = join(root, 'gates')
  mkdirSync(gateDir)
  // --netns (full): 49 tasks in the waves and the hung verify, 50; chained waves (see buildPlan)
  const plan: ChaosPlan = buildPlan(rand, { waves: kinds.length + 1, perWave: quick ? 2 : 3, ...(netns && !quick ? { total: 49 } : {}), chain: netns, gateDir })
  const validIds = plan.waves.flat()
  const BALLAST_ID = 'disk-ballast'
  const openGate = (k: number): void => { if (k < plan.gates.length) writeFileSync(plan.gates[k] as string, 'open\n') }

  const baseEnv: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) baseEnv[k] = v
  const armFile = join(root, 'arm-leader-crash')
  const nodeEnv: NodeJS.ProcessEnv = { ...baseEnv, CHAOS_RUN_ID: marker, MESHWORK_FAULT: 'leader-crash-after-main-move', MESHWORK_FAULT_ARM: armFile }
  const keyFile = join(root, 'swarm.key')
  const init = await cli(['init', '--out', keyFile], baseEnv, 60_000)
  if (init.code !== 0) throw new Error(`meshwork init failed: ${init.stderr}`)
  const repo0 = join(root, 'repo-n0')
  mkdirSync(repo0)
  const g = (args: string[]): void => { execFileSync('git', ['-C', repo0, ...args], { stdio: 'ignore' }) }
  g(['init', '-q', '-b', 'main'])
  g(['config', 'user.email', 'chaos@example.invalid'])
  g(['config', 'user.name', 'chaos'])
  writeFileSync(join(repo0, 'README.md'), '# chaos\n')
  g(['add', '.'])
  g(['commit', '-q', '-m', 'start'])

  // the disk-full node: its --data on a tmpfs (none without that fault)
  const diskPick = 1 + Math.floor(rand() * (nodeCount - 1))
  const diskIdx = kinds.includes('disk-full') ? diskPick : -1
  const diskMnt = join(root, `disk-n${diskIdx}`)
  if (diskIdx >= 0) {
    try {
      mountTmpfs(diskMnt, '24m')
    } catch (err) {
      throw new Error(`cannot mount a tmpfs for the full-disk fault (run as root): ${(err as Error).message.split('\n')[0]}`)
    }
  }
  const dataOf = (i: number): string => i === diskIdx ? join(diskMnt, 'data') : join(root, `data-n${i}`)

  // --netns: the namespaces, the routes through the proxy, the proxy (carrying the run's marker)
  if (netns) {
    chaosNet = await ChaosNet.create(`mwc${process.pid}`, nodeCount, { ...baseEnv, CHAOS_RUN_ID: marker }, seed)
    log(`network: ${chaosNet.hosts.map(h => `${h.name} ${h.ip}`).join(', ')}; proxy ${chaosNet.proxyHost.ip}; the client (this namespace) ${chaosNet.clientIp}`)
  }
  const cnet = (): ChaosNet => { if (chaosNet === null) throw new Error('a --netns fault without --netns'); return chaosNet }

  // who may connect: every node runs with an --allow file naming every node and the run's own client
  // (the observer and the CLI calls); the partition rewrites them (see allowOnly)
  const clientKeyFile = join(root, 'client.key')
  const clientKey = await loadClientIdentity(clientKeyFile)
  const clientId = peerIdOf(clientKey)
  const cliEnv: NodeJS.ProcessEnv = { ...baseEnv, MESHWORK_IDENTITY: clientKeyFile }
  const nodeIds: string[] = []
  for (let i = 0; i < nodeCount; i++) nodeIds.push(peerIdOf(await loadOrCreateIdentity(dataOf(i))))
  const allowFile = (i: number): string => join(root, `allow-n${i}.txt`)
  /** Node i admits the nodes `peers` (indexes) and, with `client`, the run's client. */
  const writeAllow = (i: number, peers: readonly number[], client: boolean): void => {
    writeFileSync(allowFile(i), [...peers.map(j => `${nodeIds[j] as string} # n${j}`), ...(client ? [`${clientId} # the chaos run's client`] : []), ''].join('\n'))
  }
  const everyone = nodeIds.map((_, j) => j)
  for (let i = 0; i < nodeCount; i++) writeAllow(i, everyone, true)

  const common = ['--agent', 'sim', '--slots', '2', '--suspect-after', SUSPECT_AFTER, '--dead-after', DEAD_AFTER, '--verify', verifyCommand(plan.hangId, marker), '--verify-timeout', VERIFY_TIMEOUT, '--log-level', 'info']
  const logDir = join(root, 'logs')
  mkdirSync(logDir)
  const mk = (i: number, conn: string[]): ChaosNode => new ChaosNode({
    name: `n${i}`,
    repo: join(root, `repo-n${i}`),
    data: dataOf(i),
    args: [...common, '--allow', allowFile(i), ...conn],
    env: nodeEnv,
    logDir,
    ...(chaosNet !== null ? { listen: `/ip4/${chaosNet.host(`n${i}`).ip}/tcp/${NODE_PORT}`, wrap: ['ip', 'netns', 'exec', chaosNet.host(`n${i}`).ns] } : {})
  })
  const nodes: ChaosNode[] = [mk(0, ['--swarm-key', keyFile])]
  await (nodes[0] as ChaosNode).start(120_000)
  for (let i = 1; i < nodeCount; i++) nodes.push(mk(i, ['--join', (nodes[0] as ChaosNode).join]))
  await Promise.all(nodes.slice(1).map(async n => { await n.start(120_000) }))
  const byPeer = (p: string | null): ChaosNode | undefined => nodes.find(n => n.peerId === p)
  const expectedDown = new Set<ChaosNode>()

  /** Bounded wait on a condition; fails at once when a node died that the run did not take down. */
  const until = async <T>(cond: () => Promise<T | null | false> | T | null | false, timeoutMs: number, what: () => string, intervalMs = 250): Promise<T> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const v = await cond()
      if (v !== null && v !== false) return v
      for (const n of nodes) {
        if (n.exit !== null && !expectedDown.has(n)) throw new Error(`node ${n.name} exited by itself (${n.exit.code ?? n.exit.signal}) while waiting for: ${what()}\n${n.tail()}`)
      }
      if (Date.now() >= deadline) throw new Error(`${what()} (waited ${Math.round(timeoutMs / 1000)} s)`)
      await new Promise(resolve => setTimeout(resolve, intervalMs))
    }
  }

  const key = await readSwarmKey(keyFile)
  const obs = await Observer.connect(key, nodes, clientKey, 60_000)
  let board: BoardSnapshot = await obs.board()
  const live = (): ChaosNode[] => nodes.filter(n => n.running)
  await until(async () => {
    board = await obs.board()
    const view = await obs.members()
    const alive = view?.members.filter(m => m.state === 'alive' && byPeer(m.peerId) !== undefined).length ?? 0
    return board.main.leader !== null && alive === nodeCount && nodes.every(n => revParse(n.spec.repo, 'refs/heads/main') !== null)
  }, 300_000, () => `the mesh did not come up (every node alive, a leader, main cloned everywhere); leader ${board.main.leader}`, 500)
  log(`mesh up: ${nodes.map(n => `${n.name}=${n.peerId.slice(-6)}`).join(' ')}, leader ${byPeer(board.main.leader)?.name}${diskIdx >= 0 ? `, disk-full node n${diskIdx}` : ''}`)

  // the plan, through the CLI as a user submits it
  const planFile = join(root, 'plan.json')
  writeFileSync(planFile, JSON.stringify({ tasks: plan.tasks }, null, 1))
  const t0 = Date.now()
  const sub = await cli(['submit', planFile, '--join', (nodes[0] as ChaosNode).join], cliEnv, 120_000)
  if (sub.code !== 0) throw new Error(`submit failed (${sub.code}): ${sub.stderr}`)
  const sinceT0 = (): number => (Date.now() - t0) / 1000
  log(`submitted ${plan.tasks.length} tasks (${validIds.length} in ${plan.waves.length} waves + ${plan.hangId}); faults in order: ${kinds.join(', ')}`)

  const mergedCount = async (): Promise<number> => {
    board = await obs.board()
    return validIds.filter(id => taskOf(board, id)?.state === 'merged').length
  }
  const states = (): string => [...board.tasks.values()].map(t => `${t.id}=${t.state}`).join(' ')
  const seenBy = (target: ChaosNode, event: string, since: number): boolean =>
    nodes.some(n => n !== target && n.running && n.events(event, since).some(l => l.peer === target.peerId))

  /** Waits until the others hold `target` dead, restarts it on its --data, waits until they see it alive. */
  const restartAfterDeath = async (target: ChaosNode, since: number): Promise<void> => {
    await until(() => seenBy(target, 'peer:dead', since), 90_000, () => `nobody held ${target.name} dead after its kill`)
    const at = Date.now()
    await target.start(180_000)
    expectedDown.delete(target)
    await until(() => seenBy(target, 'peer:alive', at), 120_000, () => `nobody saw ${target.name} alive again after its restart`)
  }

  const faults: FaultRecord[] = []
  const crash: { node: ChaosNode | null, localMain: string | null, boardMain: string | null } = { node: null, localMain: null, boardMain: null }
  const disk: { pausedAt: number | null, resumedAt: number | null, filledBytes: number, healthPaused: string | null, claimsWhilePaused: string[] } = { pausedAt: null, resumedAt: null, filledBytes: 0, healthPaused: null, claimsWhilePaused: [] }
  let cumulative = 0
  /** Valid tasks that ended failed or cancelled: the run stops injecting and goes to its checks. */
  const lost = (): string[] => validIds.filter(id => ['failed', 'cancelled'].includes(taskOf(board, id)?.state ?? ''))
  const lostSeen = new Set<string>()
  // (asserted, not annotated: partitionFault sets it from a closure, which TypeScript's narrowing does not see)
  let partition = null as { minority: string[], majority: string[], withLeader: boolean, majorityMerged: number, minorityDone: number, minorityMerges: string[], cutS: number } | null
  type PartitionRecord = NonNullable<typeof partition>
  const waveOf = new Map(plan.waves.flatMap((w, i) => w.map(id => [id, i] as const)))
  /**
   * A partition: the mesh cut in two sides that both keep running (the minority: fewer than half the nodes,
   * the leader among them or not, seeded); both sides must hold each other dead, then the wave's gate opens and
   * both work on (held at least `holdMs`, until the majority merged and the minority finished a run, bounded),
   * then the heal, and both sides must see each other alive again.
   */
  const partitionFault = async (k: number, rec: FaultRecord, how: { holdMs: number, cut: (minority: ChaosNode[], majority: ChaosNode[]) => Promise<void>, heal: () => Promise<void> }): Promise<PartitionRecord> => {
    const leader = byPeer(board.main.leader)
    const withLeader = leader !== undefined && rand() < 0.5
    const others = shuffle(rand, nodes.filter(n => n !== leader))
    const minority = [...(withLeader ? [leader] : []), ...others].slice(0, Math.floor((nodes.length - 1) / 2))
    const majority = nodes.filter(n => !minority.includes(n))
    rec.target = `${minority.map(n => n.name).join('+')} cut from ${majority.map(n => n.name).join('+')}`
    const runsThere = [...board.tasks.values()].filter(t => t.state === 'running' && minority.some(n => t.node === n.peerId))
    const inFlight = runsThere.length
    // runs of a later wave stay held by their closed gate: the minority cannot finish those while cut off
    const inFlightOpen = runsThere.filter(t => (waveOf.get(t.id) ?? 0) <= k).length
    // the run's client reads through the majority and is cut off from the minority with it
    await obs.moveOff(new Set(minority.map(n => n.peerId)), majority)
    const cutAt = Date.now()
    await how.cut(minority, majority)
    const pairs = minority.flatMap(a => majority.flatMap(b => [[a, b], [b, a]] as Array<[ChaosNode, ChaosNode]>))
    const holds = (event: string, since: number) => ([a, b]: [ChaosNode, ChaosNode]): boolean => a.events(event, since).some(l => l.peer === b.peerId)
    await until(() => pairs.every(holds('peer:dead', cutAt)), 90_000, () => `the sides did not hold each other dead: not yet ${pairs.filter(p => !holds('peer:dead', cutAt)(p)).map(([a, b]) => `${a.name}→${b.name}`).join(', ')}`)
    const deadAt = Date.now()
    const mergedAtCut = await mergedCount()
    openGate(k)
    // both sides work on: the majority merges (a new leader if the old one is cut off), the minority
    // finishes what it runs and merges nothing; bounded, and the run goes on either way
    const minorityDone = (): number => minority.reduce((s, n) => s + n.events('task:done', deadAt).length, 0)
    const worked = await until(async () => Date.now() - cutAt >= how.holdMs && (await mergedCount()) > mergedAtCut && (inFlightOpen === 0 || minorityDone() > 0), how.holdMs + 90_000, () => 'no work on both sides').then(() => true, () => false)
    const majorityMerged = (await mergedCount()) - mergedAtCut
    const healAt = Date.now()
    await how.heal()
    await until(() => pairs.every(holds('peer:alive', healAt)), 120_000, () => `the sides did not see each other alive after the heal: not yet ${pairs.filter(p => !holds('peer:alive', healAt)(p)).map(([a, b]) => `${a.name}→${b.name}`).join(', ')}`)
    const minorityMerges = minority.flatMap(n => n.events('merge:done', deadAt).filter(l => l.time < healAt).map(l => `${n.name} ${JSON.stringify(l.tasks)}`))
    const p: PartitionRecord = { minority: minority.map(n => n.name), majority: majority.map(n => n.name), withLeader, majorityMerged, minorityDone: minorityDone(), minorityMerges, cutS: (healAt - cutAt) / 1000 }
    partition = p
    rec.detail = `minority ${withLeader ? 'with' : 'without'} the leader, ${inFlight} run(s) in flight there${inFlightOpen < inFlight ? ` (${inFlight - inFlightOpen} held by a later wave's gate)` : ''}; each side held the other dead ${((deadAt - cutAt) / 1000).toFixed(1)} s after the cut; meanwhile the majority merged ${majorityMerged}, the minority finished ${p.minorityDone} run(s) and merged ${minorityMerges.length}${worked ? '' : ` (waited ${Math.round((how.holdMs + 90_000) / 1000)} s for work on both sides)`}; healed after ${p.cutS.toFixed(1)} s`
    return p
  }
  /** How long the network partition, a link cut and the slow link last (--netns). */
  const partitionHoldMs = short ? 12_000 : 30_000
  const linkCutMs = short ? 6_000 : 15_000
  const slowHoldMs = short ? 10_000 : 45_000
  for (let k = 1; k <= kinds.length; k++) {
    const kind = kinds[k - 1] as FaultKind
    const prevWave = plan.waves[k - 1] as string[]
    const threshold = cumulative + 1 + Math.floor(rand() * prevWave.length)
    cumulative += prevWave.length
    // a task that failed (or waits on one that did) counts as settled: the faults go on, the checks report the loss
    await until(async () => { await mergedCount(); return validIds.filter(id => settled(board, id)).length >= threshold }, 600_000, () => `fault ${k} (${kind}) waits for ${threshold} settled tasks; the board: ${states()}`, 500)
    for (const id of lost()) {
      if (lostSeen.has(id)) continue
      lostSeen.add(id)
      log(`task ${id} is lost: ${taskOf(board, id)?.state} ("${(taskOf(board, id)?.error ?? '').replace(/\s+/g, ' ').slice(0, 300)}")`)
    }
    const mergedBefore = await mergedCount()
    const at = Date.now()
    const rec: FaultRecord = { n: k, kind, target: '', atS: sinceT0(), mergedBefore, detail: '', recoveredS: 0 }
    const runningOn = (n: ChaosNode): number => [...board.tasks.values()].filter(t => t.state === 'running' && t.node === n.peerId).length
    log(`fault ${k}/${kinds.length}: ${kind} at ${rec.atS.toFixed(1)} s, ${mergedBefore} merged`)
    switch (kind) {
      case 'kill':
      case 'leader-kill': {
        let target: ChaosNode
        if (kind === 'leader-kill') {
          target = byPeer(board.main.leader) ?? (live()[0] as ChaosNode)
        } else {
          const busy = live().filter(n => runningOn(n) > 0)
          const pool = busy.length > 0 ? busy : live()
          target = pool[Math.floor(rand() * pool.length)] as ChaosNode
        }
        rec.target = target.name
        rec.detail = `${target.peerId === board.main.leader ? 'the leader' : 'not the leader'}, ${runningOn(target)} run(s) in flight`
        await obs.moveOff(target.peerId, live())
        expectedDown.add(target)
        const killedAt = Date.now()
        await target.kill()
        openGate(k)
        await restartAfterDeath(target, killedAt)
        break
      }
      case 'leader-crash': {
        writeFileSync(armFile, 'armed\n')
        openGate(k)
        const leaderBefore = byPeer(board.main.leader)
        const crashed = await until(() => nodes.find(n => n.exit?.signal === 'SIGKILL' && !expectedDown.has(n)) ?? null, 180_000, () => `no leader crashed at a main move after arming (leader ${leaderBefore?.name}); ${states()}`, 20)
        rmSync(armFile, { force: true })
        expectedDown.add(crashed)
        crash.node = crashed
        crash.localMain = revParse(crashed.spec.repo, 'refs/heads/main')
        crash.boardMain = (await obs.board()).main.head
        rec.target = crashed.name
        rec.detail = `its main ${crash.localMain?.slice(0, 10)}, the board's ${crash.boardMain?.slice(0, 10)}`
        await obs.moveOff(crashed.peerId, live())
        await restartAfterDeath(crashed, at)
        break
      }
      case 'disk-full': {
        const target = nodes[diskIdx] as ChaosNode
        rec.target = target.name
        await obs.moveOff(target.peerId, live())
        const filled = fill(diskMnt)
        disk.filledBytes = filled.bytes
        openGate(k)
        // a user submits a task with a long prompt meanwhile: a board change larger than any slack left in the
        // last page of the node's board log (small changes may still fit there, and the node would notice nothing)
        const via = live().find(n => n !== target) as ChaosNode
        const ballast = { tasks: [{ id: BALLAST_ID, prompt: `write ${taskFile(BALLAST_ID)}\n${randomBytes(24 * 1024).toString('base64')}`, priority: plan.waves.length + 1, sim: { duration: '100ms', write: { [taskFile(BALLAST_ID)]: `${BALLAST_ID}\n` } } }] }
        writeFileSync(join(root, 'ballast.json'), JSON.stringify(ballast))
        const bsub = await cli(['submit', join(root, 'ballast.json'), '--join', via.join], cliEnv, 120_000)
        if (bsub.code !== 0) throw new Error(`submitting ${BALLAST_ID} failed (${bsub.code}): ${bsub.stderr.slice(-1000)}`)
        validIds.push(BALLAST_ID)
        await until(() => target.events('node:paused', at).length > 0, 120_000, () => `${target.name} never paused with its disk full`)
        disk.pausedAt = (target.events('node:paused', at)[0] as LogLine).time
        disk.healthPaused = await until(async () => {
          const v = await obs.members()
          const h = v?.members.find(m => m.peerId === target.peerId)?.health
          return h?.state === 'paused' ? String(h.reason) : null
        }, 60_000, () => `${target.name}'s health never read paused in the mesh's view`)
        // held full while the mesh goes on: until another node has run the ballast task (ready work this node did not take), bounded
        const othersWorked = await until(() => nodes.some(n => n !== target && n.events('task:done', at).some(l => l.task === BALLAST_ID)), 90_000, () => `no other node ran ${BALLAST_ID} while the disk was full`).then(() => true, () => false)
        if (!othersWorked) log(`  (no other node ran ${BALLAST_ID} within 90 s; freeing the disk anyway)`)
        free(filled.file)
        await until(() => target.events('node:resumed', disk.pausedAt as number).length > 0, 120_000, () => `${target.name} never resumed after its disk was freed`)
        disk.resumedAt = (target.events('node:resumed', disk.pausedAt)[0] as LogLine).time
        disk.claimsWhilePaused = target.lines.filter(l => (l.event === 'task:claimed' || l.event === 'task:stolen' || l.event === 'task:started') && l.time > (disk.pausedAt as number) && l.time < (disk.resumedAt as number)).map(l => `${l.event} ${String(l.task)}`)
        await until(async () => {
          const v = await obs.members()
          return v?.members.find(m => m.peerId === target.peerId)?.health?.state === 'ok'
        }, 60_000, () => `${target.name}'s health never read ok again`)
        rec.detail = `filled ${(filled.bytes / 2 ** 20).toFixed(1)} MiB, then a task with a 32 KB prompt submitted through ${via.name}; paused ${((disk.pausedAt - at) / 1000).toFixed(1)} s after ("${disk.healthPaused}"), resumed ${((disk.resumedAt - disk.pausedAt) / 1000).toFixed(1)} s later`
        break
      }
      case 'partition': {
        // cut by --allow files: each side's list only that side (the run's client on the majority's), SIGHUP to every node
        const idx = (side: ChaosNode[]): number[] => side.map(n => nodes.indexOf(n))
        const reload = async (since: number, what: string): Promise<void> => {
          for (const n of nodes) n.sighup()
          await until(() => nodes.every(n => n.events('allow:reloaded', since).length > 0), 30_000, () => `not every node reloaded its --allow file${what}: ${nodes.filter(n => n.events('allow:reloaded', since).length === 0).map(n => n.name).join(', ')}`)
        }
        await partitionFault(k, rec, {
          holdMs: 0,
          cut: async (minority, majority) => {
            for (const n of minority) writeAllow(nodes.indexOf(n), idx(minority), false)
            for (const n of majority) writeAllow(nodes.indexOf(n), idx(majority), true)
            await reload(Date.now(), '')
          },
          heal: async () => {
            for (let i = 0; i < nodes.length; i++) writeAllow(i, everyone, true)
            await reload(Date.now(), ' at the heal')
          }
        })
        break
      }
      case 'net-partition': {
        // cut by the network: blackhole routes between the sides' namespaces (and the minority and the client)
        await partitionFault(k, rec, {
          holdMs: partitionHoldMs,
          cut: async (minority) => { await cnet().partition(minority.map(n => n.name)) },
          heal: async () => { await cnet().heal() }
        })
        break
      }
      case 'link-cut': {
        const [a, b] = shuffle(rand, live()) as [ChaosNode, ChaosNode]
        rec.target = `${a.name}~${b.name}`
        const before = await cnet().linkStats(a.name, b.name)
        const reset = await cnet().cutLink(a.name, b.name)
        openGate(k)
        // held a while (the fault's length); both go on through the other nodes meanwhile
        await new Promise(resolve => setTimeout(resolve, linkCutMs))
        const during = await cnet().linkStats(a.name, b.name)
        // taken before the heal: a redial may get through while the harness hears back
        const healAt = Date.now()
        await cnet().healLink(a.name, b.name)
        const deadSeen = [[a, b], [b, a]].filter(([x, y]) => (x as ChaosNode).events('peer:dead', at).some(l => l.peer === (y as ChaosNode).peerId)).map(([x, y]) => `${(x as ChaosNode).name} held ${(y as ChaosNode).name} dead`)
        // recovered: a connection between the two through the healed link
        // (not a failure of the run when they do not: two live nodes need no direct link; recorded, and the run goes on)
        const reconnected = await until(async () => ((await cnet().linkStats(a.name, b.name))?.lastConnectAt ?? 0) >= healAt || null, 90_000, () => `${a.name} and ${b.name} did not connect again after their link was healed`).then(() => true, (err: Error) => { log(`  ${err.message}; the link: ${JSON.stringify(during)}`); return false })
        rec.detail = `${a.peerId === board.main.leader || b.peerId === board.main.leader ? 'the leader\'s link; ' : ''}${reset} connection(s) reset, ${(during?.refused ?? 0) - (before?.refused ?? 0)} redial(s) refused in ${(linkCutMs / 1000).toFixed(0)} s${deadSeen.length > 0 ? ` (${deadSeen.join(', ')})` : ' (neither held the other dead: the others relayed)'}; ${reconnected ? `connected again ${((Date.now() - healAt) / 1000).toFixed(1)} s after the heal` : '**not connected again within 90 s of the heal**'}`
        break
      }
      case 'slow-link': {
        // the leader's link to one other node
        const leader = byPeer(board.main.leader)
        const a = leader !== undefined && leader.running ? leader : live()[0] as ChaosNode
        const others = live().filter(n => n !== a)
        const b = others[Math.floor(rand() * others.length)] as ChaosNode
        rec.target = `${a.name}~${b.name}`
        const before = await cnet().linkStats(a.name, b.name)
        await cnet().slowLink(a.name, b.name, SLOW_DELAY_MS, SLOW_LOSS, SLOW_RTO_MS)
        const mergedAtSlow = await mergedCount()
        openGate(k)
        // held at least slowHoldMs, and until the mesh merged something meanwhile (bounded)
        const worked = await until(async () => Date.now() - at >= slowHoldMs && (await mergedCount()) > mergedAtSlow, slowHoldMs + 120_000, () => 'no merge while the link was slow').then(() => true, () => false)
        const during = await cnet().linkStats(a.name, b.name)
        await cnet().slowLink(a.name, b.name, 0, 0)
        const d = (f: keyof LinkState): number => Number(during?.[f] ?? 0) - Number(before?.[f] ?? 0)
        rec.detail = `${a.peerId === board.main.leader ? 'the leader\'s link; ' : ''}${SLOW_DELAY_MS} ms a chunk, ${SLOW_LOSS * 100} % of chunks held ${SLOW_RTO_MS} ms more, for ${((Date.now() - at) / 1000).toFixed(1)} s: ${d('chunks')} chunks (${(d('bytes') / 1024).toFixed(0)} KiB) on ${d('connections') + (before?.open ?? 0)} connection(s), ${d('lost')} held as lost; ${(await mergedCount()) - mergedAtSlow} merged meanwhile${worked ? '' : ' (none within the bound)'}`
        break
      }
      case 'poison': {
        rec.target = `raw writer via ${byPeer(obs.peer)?.name ?? obs.peer.slice(-6)}`
        await obs.writePoison(POISON_ID, taskFile(POISON_ID))
        openGate(k)
        await until(() => live().every(n => n.events('board:invalid-entry', at).some(l => l.key === `tasks/${POISON_ID}`)), 90_000, () => `not every node quarantined tasks/${POISON_ID}: ${live().filter(n => !n.events('board:invalid-entry', at).some(l => l.key === `tasks/${POISON_ID}`)).map(n => n.name).join(', ')}`)
        rec.detail = `task id "${POISON_ID}" written straight into the board; quarantined by every live node`
        break
      }
    }
    rec.recoveredS = (Date.now() - at) / 1000
    faults.push(rec)
    log(`  ${rec.target}: ${rec.detail} (recovered in ${rec.recoveredS.toFixed(1)} s)`)
  }
  for (let k = 1; k < plan.gates.length; k++) openGate(k)

  // the end: every valid task merged, the hung one failed
  await until(async () => {
    await mergedCount()
    const hang = taskOf(board, plan.hangId)
    return validIds.every(id => settled(board, id)) && hang !== undefined && settled(board, plan.hangId)
  }, quick ? 300_000 : 600_000, () => `the plan did not finish: ${states()}`, 500)
  if (lost().length > 0) log(`tasks lost: ${lost().join(', ')}`)
  const planS = sinceT0()
  const finalMain = board.main.head as string
  log(`plan finished in ${planS.toFixed(1)} s, main ${finalMain.slice(0, 12)}`)
  await until(() => nodes.every(n => revParse(n.spec.repo, 'refs/heads/main') === finalMain), 180_000, () => `not every repo's main reached ${finalMain.slice(0, 12)}: ${nodes.map(n => `${n.name}=${revParse(n.spec.repo, 'refs/heads/main')?.slice(0, 12)}`).join(' ')}`)
  // main as each node reports it
  const reported = new Map<string, string | null>()
  await Promise.all(nodes.map(async n => {
    // through n alone (its join token carries other live nodes' addresses too, and a client reads through the first that answers)
    const r = await cli(['status', '--json', '--swarm-key', keyFile, ...n.addrs.flatMap(a => ['--bootstrap', a]), '--timeout', '60s'], cliEnv, 120_000)
    reported.set(n.name, r.code === 0 ? (JSON.parse(r.stdout) as { main: { head: string | null } }).main.head : `exit ${r.code}: ${r.stderr.slice(-300)}`)
  }))
  await obs.close()
  // the marker check sees the run's processes: every node (and its watchdog) before they stop
  const markedBefore = processesWith(marker)
  // the hung check's shell and its sleep were killed at the timeout, not only with their node
  const hungChecks = markedBefore.filter(p => p.cmd.includes('sleep 100000') || p.cmd.includes('hanging on'))
  const unmarked = nodes.filter(n => !markedBefore.some(p => p.pid === n.pid)).map(n => n.name)

  // stop every node gracefully, then look for anything of the run still alive
  const stops = await Promise.all(nodes.map(async n => ({ name: n.name, ...await n.stop(60_000) })))
  // --netns: the proxy's totals, then the proxy stopped and the namespaces removed (what still ran in them recorded first)
  let linkTotals: Map<string, LinkState> | null = null
  let proxyForced = false
  const proxyMarked = chaosNet === null || markedBefore.some(p => p.pid === chaosNet?.proxyPid)
  if (chaosNet !== null) {
    linkTotals = await chaosNet.stats().catch(() => null)
    proxyForced = (await chaosNet.stopProxy()).forced
    await chaosNet.destroy()
  }
  const leftoverDeadline = Date.now() + 20_000
  let leftovers = processesWith(marker)
  while (leftovers.length > 0 && Date.now() < leftoverDeadline) {
    await new Promise(resolve => setTimeout(resolve, 250))
    leftovers = processesWith(marker)
  }
  const wallS = (Date.now() - started) / 1000

  // ---- checks
  for (const n of nodes) n.poll()
  const checks: Check[] = []
  const add = (name: string, ok: boolean, detail: string): void => { checks.push({ name, ok, detail }) }
  const repo = (nodes[0] as ChaosNode).spec.repo
  const trailers = trailersOnMain(repo, finalMain)
  const notOnce = validIds.filter(id => (trailers.get(id)?.length ?? 0) !== 1).map(id => `${id}×${trailers.get(id)?.length ?? 0}`)
  const strangers = [...trailers.keys()].filter(id => !validIds.includes(id))
  add('every valid task merged exactly once', notOnce.length === 0 && strangers.length === 0, notOnce.length === 0 && strangers.length === 0 ? `${validIds.length} tasks, one merge commit each on main's first-parent history` : `not once: ${notOnce.join(', ')}; not in the plan: ${strangers.join(', ')}`)
  const mergeMismatch = validIds.filter(id => taskOf(board, id)?.mergeCommit !== trailers.get(id)?.[0])
  add('the board\'s merge commits are main\'s', mergeMismatch.length === 0, mergeMismatch.length === 0 ? 'each task\'s mergeCommit is its merge on main' : mergeMismatch.join(', '))
  const repoMains = nodes.map(n => [n.name, revParse(n.spec.repo, 'refs/heads/main')] as const)
  add('main identical on every node and equal to the board', repoMains.every(([, m]) => m === finalMain) && [...reported.values()].every(m => m === finalMain), `board ${finalMain.slice(0, 12)}; repos ${repoMains.map(([n, m]) => `${n}=${m?.slice(0, 12)}`).join(' ')}; status through each: ${nodes.map(n => [n.name, reported.get(n.name)] as const).map(([n, m]) => `${n}=${m?.slice(0, 12)}`).join(' ')}`)
  const reflogs = new Map<string, ReflogCheck>(nodes.map(n => [n.name, checkReflog(n.spec.repo, 'main')]))
  const badMoves = [...reflogs].filter(([, r]) => r.bad.length > 0 || r.missing)
  add('each node\'s main only moved forward (reflog)', badMoves.length === 0, badMoves.length === 0 ? [...reflogs].map(([n, r]) => `${n} ${r.forward} forward${r.keptAside > 0 ? ` + ${r.keptAside} back with the old head kept on meshwork/local/` : ''}`).join('; ') : badMoves.map(([n, r]) => `${n}: ${r.missing ? 'no reflog' : r.bad.join(', ')}`).join('; '))
  const hang = taskOf(board, plan.hangId)
  add('the hung verify ended its task failed, timed out', hang?.state === 'failed' && /--verify timed out after/.test(hang.error ?? '') && !trailers.has(plan.hangId) && hungChecks.length === 0, `${plan.hangId}: ${hang?.state}, "${(hang?.error ?? '').replace(/\s+/g, ' ').slice(0, 160)}"; hung checks still running at the end of the plan: ${hungChecks.length === 0 ? 'none' : hungChecks.map(p => `${p.pid} ${p.cmd}`).join(' | ')}`)
  const blocked = validIds.filter(id => taskOf(board, id)?.state === 'pending')
  add('no task lost', validIds.every(id => taskOf(board, id)?.state === 'merged'), `${validIds.filter(id => taskOf(board, id)?.state === 'merged').length}/${validIds.length} merged, ${plan.hangId} ${hang?.state}${lost().length > 0 ? `; lost: ${lost().map(id => `${id} ("${(taskOf(board, id)?.error ?? '').slice(0, 160)}")`).join('; ')}` : ''}${blocked.length > 0 ? `; never ran, waiting on a lost task: ${blocked.join(', ')}` : ''}`)
  const poisonRuns = nodes.flatMap(n => n.lines.filter(l => l.task === POISON_ID && /^task:/.test(l.event)).map(l => `${n.name} ${l.event}`))
  const poisonBranches = nodes.filter(n => branchExists(n.spec.repo, `meshwork/${POISON_ID}`)).map(n => n.name)
  const quarantinedBy = nodes.filter(n => n.lines.some(l => l.event === 'board:invalid-entry' && l.key === `tasks/${POISON_ID}`)).map(n => n.name)
  if (kinds.includes('poison')) add('the poison task quarantined, never run', taskOf(board, POISON_ID) === undefined && board.invalid.includes(`tasks/${POISON_ID}`) && poisonRuns.length === 0 && poisonBranches.length === 0 && !trailers.has(POISON_ID), `absent from the board's tasks, in its invalid list: ${board.invalid.includes(`tasks/${POISON_ID}`)}; quarantined (logged) by ${quarantinedBy.join(', ')}; runs ${poisonRuns.length}, branches ${poisonBranches.length}`)
  if (crash.node !== null) {
    const c = crash.node
    const keptAside = c.lines.filter(l => l.event === 'main:kept-aside')
    const backups = backupBranches(c.spec.repo)
    const held = [...backups.values()].includes(crash.localMain ?? '')
    add('the leader crashed after moving main: its unpublished merge kept aside, re-merged from the board', crash.localMain !== null && crash.localMain !== crash.boardMain && held && keptAside.some(l => l.local === crash.localMain), `${c.name}: main ${crash.localMain?.slice(0, 12)} vs board ${crash.boardMain?.slice(0, 12)}; kept on ${[...backups].filter(([, o]) => o === crash.localMain).map(([b]) => b).join(', ') || 'no backup branch'}; main:kept-aside logged ${keptAside.length}×`)
  } else if (kinds.includes('leader-crash')) {
    add('the leader crashed after moving main', false, 'the fault did not happen')
  }
  if (disk.pausedAt !== null) {
    add('the full-disk node paused, claimed nothing meanwhile, resumed', disk.resumedAt !== null && disk.claimsWhilePaused.length === 0 && disk.healthPaused !== null && /disk full/.test(disk.healthPaused), `health "${disk.healthPaused}"; paused ${(((disk.resumedAt ?? 0) - disk.pausedAt) / 1000).toFixed(1)} s; while paused: ${disk.claimsWhilePaused.join(', ') || 'no claims'}`)
  }
  if (partition !== null) {
    const p = partition
    add('the partition: both sides ran, the minority merged nothing while cut off', p.minorityMerges.length === 0, `${p.minority.join('+')} (${p.withLeader ? 'with' : 'without'} the leader) cut from ${p.majority.join('+')}: the majority merged ${p.majorityMerged}, the minority finished ${p.minorityDone} run(s) and merged ${p.minorityMerges.length === 0 ? 'nothing' : p.minorityMerges.join('; ')}; cut for ${p.cutS.toFixed(1)} s`)
  }
  const forcedStops = [...stops.filter(s => s.forced).map(s => s.name), ...(proxyForced ? ['the proxy'] : [])]
  if (!proxyMarked) unmarked.push('the proxy')
  const netRemains = chaosNet?.remains() ?? []
  const inNamespaces = chaosNet?.leftovers ?? []
  const netOk = netRemains.length === 0 && inNamespaces.length === 0
  add('no process left behind', leftovers.length === 0 && forcedStops.length === 0 && unmarked.length === 0 && netOk, (leftovers.length === 0 ? `${markedBefore.length} processes carried the run's marker before the stop (${unmarked.length === 0 ? `every node${chaosNet !== null ? ' and the proxy' : ''} among them` : `NOT ${unmarked.join(', ')}`}), none after${forcedStops.length > 0 ? `; but SIGKILLed after no exit on SIGTERM: ${forcedStops.join(', ')}` : ''}` : leftovers.map(p => `${p.pid} ${p.cmd}`).join(' | ')) +
    (chaosNet !== null ? `; namespaces: ${inNamespaces.length === 0 ? 'nothing running in them once the nodes and the proxy stopped' : `still running in them 20 s after: ${inNamespaces.join(' | ')}`}, ${netRemains.length === 0 ? 'all removed, and the link of this namespace to the bridge' : `NOT removed: ${netRemains.join(', ')}`}` : ''))

  // ---- figures
  const all = nodes.flatMap(n => n.lines)
  const runs = all.filter(l => l.event === 'task:started').length
  const runsPerTask = new Map<string, number>()
  for (const l of all) if (l.event === 'task:started') runsPerTask.set(String(l.task), (runsPerTask.get(String(l.task)) ?? 0) + 1)
  const mergedEvents = all.filter(l => l.event === 'merge:done').reduce((s, l) => s + (Array.isArray(l.tasks) ? l.tasks.length : 0), 0)
  const verifyRuns = all.filter(l => l.event === 'merge:verified').length
  const verifyTimeouts = all.filter(l => l.event === 'merge:verify-failed').length
  const keptAsideAll = nodes.map(n => `${n.name} ${n.lines.filter(l => l.event === 'main:kept-aside').length}`).join(', ')
  const leaders = new Set(all.filter(l => l.event === 'merge:done').map(l => l.term)).size
  const links = linkTotals === null ? 'unknown (the proxy did not answer)' : [...linkTotals].sort(([a], [b]) => a.localeCompare(b)).map(([k, l]) => `${k} ${l.connections} conn, ${(l.bytes / 2 ** 20).toFixed(1)} MiB`).join('; ')
  const text = report({ netns, links, quick, seed, nodeCount, plan, faults, checks, wallS, planS, runs, reruns: runs - runsPerTask.size, mergedEvents, verifyRuns, verifyTimeouts, keptAsideAll, terms: leaders, lives: nodes.map(n => `${n.name} ${n.lives}`).join(', '), mach, diskIdx })
  process.stdout.write(text + '\n')
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ seed, quick, netns, faults, checks, wallS, planS, runs, links: linkTotals === null ? null : Object.fromEntries(linkTotals) }, null, 1))
  const ok = checks.every(c => c.ok)
  if (!quick && values['no-docs'] !== true) {
    await writeSection(DOCS, netns ? NETNS_SECTION_TITLE : SECTION_TITLE, text)
    log(`wrote the section to ${DOCS}`)
  }
  if (keep) log(`kept ${root}`)
  if (!ok) throw new Error(`checks failed: ${checks.filter(c => !c.ok).map(c => c.name).join('; ')}`)
}

function report (r: { netns: boolean, links: string, quick: boolean, seed: number, nodeCount: number, plan: ChaosPlan, faults: FaultRecord[], checks: Check[], wallS: number, planS: number, runs: number, reruns: number, mergedEvents: number, verifyRuns: number, verifyTimeouts: number, keptAsideAll: string, terms: number, lives: string, mach: ReturnType<typeof machine>, diskIdx: number }): string {
  const m = r.mach
  const out: string[] = [r.netns ? NETNS_SECTION_TITLE : SECTION_TITLE, '']
  out.push(`Run ${new Date().toISOString()} on ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB RAM, Node ${m.node}, Linux ${m.kernel}, git ${m.git}, temp dirs on ${m.tmpFs}; load average at start ${m.loadAtStart.join(' ')} (a shared host). ${r.quick ? 'QUICK run; ' : ''}seed ${r.seed}; the whole run took ${r.wallS.toFixed(0)} s, the plan ${r.planS.toFixed(0)} s from submit to its last merge.`, '')
  if (r.netns) {
    out.push(`**How.** ${r.nodeCount} real \`meshwork node\` processes, each in a network namespace of its own with its own address on a bridge the run made (veth pairs; port ${NODE_PORT}; \`--agent sim --slots 2 --suspect-after ${SUSPECT_AFTER} --dead-after ${DEAD_AFTER} --verify … --verify-timeout ${VERIFY_TIMEOUT}\`, an \`--allow\` file naming every node and the run's client). Every node-to-node connection goes through a fault-injecting TCP proxy in a namespace of its own (each node's routes send its peers' addresses there; the proxy answers for every node address and connects on: scripts/chaos/netns.ts); the run's client (its observer and the CLI calls) is this machine's own namespace, attached to the bridge, and reaches the nodes directly. No traffic leaves the namespaces the run made. The plan: ${r.plan.waves.flat().length} tasks in ${r.plan.waves.length} waves (each task writes its own file; ${r.plan.tasks.filter(t => t.deps.length > 0).length} with dependencies on earlier waves), wave k held by a sim \`until\` file that opens when fault k is injected, plus \`${r.plan.hangId}\`, whose candidate makes \`--verify\` hang. One fault after each wave, order, targets and moment (how many tasks merged) from the seeded PRNG: kill -9 (a node running work, or the leader), restarted on its --data; a link cut at the proxy (the pair's open connections reset, new ones refused, then healed); a slow link (the leader's to one node: ${SLOW_DELAY_MS} ms added to every chunk, ${SLOW_LOSS * 100} % of chunks held ${SLOW_RTO_MS} ms more, which is how a lost segment shows through TCP: its retransmission; nothing is dropped); a two-way partition by the network (blackhole routes between the two sides' namespaces, strict reverse-path filtering, the client on the majority's side) for at least 30 s, then the routes back. Checks read the nodes' real repositories (trailers on main's first-parent history, each repo's reflog of main), the board, /proc (every process carries the run's marker in its environment) and \`ip netns\` (every namespace removed). Proxy totals per link: ${r.links}.`, '')
  } else {
    out.push(`**How.** ${r.nodeCount} real \`meshwork node\` processes on 127.0.0.1 (\`--agent sim --slots 2 --suspect-after ${SUSPECT_AFTER} --dead-after ${DEAD_AFTER} --verify … --verify-timeout ${VERIFY_TIMEOUT}\`, each with an \`--allow\` file naming every node and the run's client)${r.diskIdx >= 0 ? `, n${r.diskIdx}'s --data on a 24 MiB tmpfs` : ''}. The plan: ${r.plan.waves.flat().length} tasks in ${r.plan.waves.length} waves (each task writes its own file; ${r.plan.tasks.filter(t => t.deps.length > 0).length} with dependencies on earlier waves), wave k held by a sim \`until\` file that opens when fault k is injected, plus \`${r.plan.hangId}\`, whose candidate makes \`--verify\` hang. One fault after each wave, order and moment (how many tasks merged) from the seeded PRNG. The partition cuts the mesh in two sides that both keep running: each side's \`--allow\` files are rewritten to list only that side (the run's client on the majority side only) and every node gets SIGHUP, so it hangs up on the other side and its connection gater refuses it; the heal restores the files (SIGHUP again). Checks read the nodes' real repositories (trailers on main's first-parent history, each repo's reflog of main), the board, and /proc (every process carries the run's marker in its environment).`, '')
  }
  out.push('| # | fault | target | at (s after submit) | merged before | what happened | recovered in |')
  out.push('|---|---|---|---|---|---|---|')
  for (const f of r.faults) out.push(`| ${f.n} | ${f.kind} | ${f.target} | ${f.atS.toFixed(1)} | ${f.mergedBefore} | ${f.detail} | ${f.recoveredS.toFixed(1)} s |`)
  out.push('')
  out.push(`Counts: ${r.faults.length} faults injected (${[...new Set(r.faults.map(f => f.kind))].map(k => `${k} ×${r.faults.filter(f => f.kind === k).length}`).join(', ')}) plus the hung verify; ${r.runs} agent runs for ${r.plan.tasks.length} tasks (${r.reruns} re-runs of a task already run once); ${r.mergedEvents} task merges logged by leaders in ${r.terms} term(s); ${r.verifyRuns} verify runs, ${r.verifyTimeouts} verify failure(s) recorded; main kept aside: ${r.keptAsideAll}; node lives: ${r.lives}.`, '')
  const failed = r.checks.filter(c => !c.ok).map(c => c.name)
  out.push(failed.length === 0 ? '**Result: PASS** (exit 0): every check below holds.' : `**Result: FAIL** (exit 1): ${failed.join('; ')}.`, '')
  out.push('| check | result | detail |')
  out.push('|---|---|---|')
  for (const c of r.checks) out.push(`| ${c.name} | ${c.ok ? 'PASS' : '**FAIL**'} | ${c.detail.replace(/\|/g, '\\|')} |`)
  return out.join('\n')
}

main().then(() => { killAllChildren(); process.exit(0) }, (err: unknown) => {
  killAllChildren()
  process.stderr.write(`chaos: FAILED: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
