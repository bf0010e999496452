/**
 * Parent-side helpers of the board benchmark: worker processes (one MeshNode
 * each, or a group of nodes per process; see ./board-worker.ts), CPU burners,
 * /proc readers and bounded polling.
 *
 * Every child process is registered here and killed (SIGKILL) when the
 * benchmark ends, fails or is interrupted.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Command, ProcessConfig, WorkerConfig, WorkerEvent } from './board-protocol.ts'
import { childPids, pollUntil, register } from './lib/children.ts'

/** A command without its request id (the worker handle assigns it). */
export type CommandBody = Command extends infer C ? C extends unknown ? Omit<C, 'reqId'> : never : never

const COMPILE_CACHE = join(tmpdir(), 'meshwork-bench-compile-cache')
const WORKER_PATH = fileURLToPath(new URL('./board-worker.ts', import.meta.url))

export { childPids, installExitGuards, killAllChildren, pollUntil } from './lib/children.ts'

/** A measurement window (or a pacing interval): NOT for waiting on a condition. */
export async function delay (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

// ---------------------------------------------------------------------------
// workers

export interface PeerEvent { peerId: string, from: string | null, to: string, at: number }
export interface UpdateEvent { taskIds: string[], states: Array<string | null>, at: number }

/**
 * A worker child process hosting one node or a group of nodes (each its own
 * libp2p node on its own TCP port); routes IPC events to the node's `Worker`.
 */
export class NodeProcess {
  readonly child: ChildProcess
  readonly spawnAt: number
  readonly nodes: Worker[] = []
  exited = false
  #stderr = ''

  constructor (configs: WorkerConfig[], execArgv: string[] = []) {
    if (configs.length === 0) throw new Error('a node process needs at least one node')
    this.spawnAt = Date.now()
    const pc: ProcessConfig = configs.length === 1 ? configs[0] as WorkerConfig : { group: configs }
    this.child = fork(WORKER_PATH, [JSON.stringify(pc)], {
      execPath: process.execPath,
      execArgv,
      // a warm V8 compile cache cuts each process's start-up CPU by about a quarter (50 of them share 2 cores)
      env: { ...process.env, NODE_COMPILE_CACHE: COMPILE_CACHE },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json'
    })
    register(this.child)
    const keep = (d: Buffer): void => { this.#stderr = (this.#stderr + d.toString()).slice(-4000) }
    this.child.stdout?.on('data', keep)
    this.child.stderr?.on('data', keep)
    this.child.on('message', (m: WorkerEvent) => { this.nodes[m.node ?? 0]?.onEvent(m) })
    this.child.once('exit', (code, signal) => {
      this.exited = true
      for (const n of this.nodes) n.onExit(code, signal)
    })
    configs.forEach((c, i) => { this.nodes.push(new Worker(c, { proc: this, index: i })) })
  }

  get stderrTail (): string {
    return this.#stderr
  }
}

/** One MeshNode, in a child process of its own or sharing one with other nodes (`NodeProcess`). */
export class Worker {
  readonly name: string
  readonly config: WorkerConfig
  readonly proc: NodeProcess
  /** This node's index in its process. */
  readonly index: number
  bootAt: number | null = null
  startingAt: number | null = null
  readyAt: number | null = null
  hasAllAt: number | null = null
  peerId: string | null = null
  addrs: string[] = []
  failure: string | null = null
  /** Last known membership state of each peer, from this worker's transitions. */
  readonly peerStates = new Map<string, string>()
  readonly peerEvents: PeerEvent[] = []
  onUpdate: ((w: Worker, u: UpdateEvent) => void) | null = null
  #reqId = 0
  #pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }>()
  #readyWaiters: Array<() => void> = []

  /** A node in a process of its own (`execArgv` for that process), or node `index` of a `NodeProcess`. */
  constructor (config: WorkerConfig, where: string[] | { proc: NodeProcess, index: number } = []) {
    this.name = config.name
    this.config = config
    if (Array.isArray(where)) {
      const proc = new NodeProcess([config], where)
      this.proc = proc
      this.index = 0
      // NodeProcess made its own Worker for index 0: route its events here instead
      proc.nodes[0] = this
    } else {
      this.proc = where.proc
      this.index = where.index
    }
  }

  /** Starts one process hosting `configs.length` nodes; returns their workers in order. */
  static group (configs: WorkerConfig[], execArgv: string[] = []): Worker[] {
    return new NodeProcess(configs, execArgv).nodes
  }

  get child (): ChildProcess {
    return this.proc.child
  }

  get spawnAt (): number {
    return this.proc.spawnAt
  }

  get exited (): boolean {
    return this.proc.exited
  }

  /** Nodes sharing this node's process (1 when it has its own). */
  get processNodes (): number {
    return this.proc.nodes.length
  }

  /** @internal called by the process when it exits */
  onExit (code: number | null, signal: NodeJS.Signals | null): void {
    if (this.readyAt === null && this.failure === null) this.failure = `exited before ready (code ${String(code)}, signal ${String(signal)}): ${this.proc.stderrTail.trim().slice(-1500)}`
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer)
      p.reject(new Error(`${this.name} exited (code ${String(code)}, signal ${String(signal)})`))
    }
    this.#pending.clear()
    this.#wakeReady()
  }

  get pid (): number {
    return this.child.pid ?? -1
  }

  get stderrTail (): string {
    return this.proc.stderrTail
  }

  #wakeReady (): void {
    for (const w of this.#readyWaiters) w()
    this.#readyWaiters = []
  }

  /** @internal called by the process for this node's events */
  onEvent (m: WorkerEvent): void {
    switch (m.ev) {
      case 'boot': this.bootAt = m.at; break
      case 'starting': this.startingAt = m.at; break
      case 'ready':
        this.readyAt = m.at
        this.peerId = m.peerId
        this.addrs = m.addrs
        this.#wakeReady()
        break
      case 'failed':
        this.failure = m.error
        this.#wakeReady()
        break
      case 'peer':
        this.peerStates.set(m.peerId, m.to)
        this.peerEvents.push({ peerId: m.peerId, from: m.from, to: m.to, at: m.at })
        break
      case 'update':
        this.onUpdate?.(this, { taskIds: m.taskIds, states: m.states, at: m.at })
        break
      case 'hasAll':
        this.hasAllAt = m.at
        break
      case 'reply': {
        const p = this.#pending.get(m.reqId)
        if (p === undefined) return
        this.#pending.delete(m.reqId)
        clearTimeout(p.timer)
        if (m.ok) p.resolve(m.data)
        else p.reject(new Error(`${this.name}: ${m.error}`))
        break
      }
    }
  }

  /** Resolves once the node has started (or failed, or the bound passed); true when ready. */
  async waitReady (timeoutMs: number): Promise<boolean> {
    if (this.readyAt !== null) return true
    if (this.failure !== null || this.exited) return false
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, timeoutMs)
      this.#readyWaiters.push(() => { clearTimeout(timer); resolve() })
    })
    return this.readyAt !== null
  }

  /** Sends a command and resolves with the reply's data (rejects on error, exit or timeout). */
  async request<T> (cmd: CommandBody, timeoutMs = 30_000): Promise<T> {
    if (this.exited || !this.child.connected) throw new Error(`${this.name} is not running`)
    const reqId = ++this.#reqId
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(reqId)
        reject(new Error(`${this.name}: ${cmd.cmd} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(reqId, { resolve: resolve as (v: unknown) => void, reject, timer })
      this.child.send({ ...cmd, reqId, ...(this.index > 0 ? { node: this.index } : {}) } as Command)
    })
  }

  /** Number of the given peers this worker currently sees alive. */
  aliveAmong (peerIds: Iterable<string>): number {
    let n = 0
    for (const p of peerIds) if (p !== this.peerId && this.peerStates.get(p) === 'alive') n++
    return n
  }

  /** SIGKILL of this node's process (every node in it); resolves when the process is gone (bounded). */
  async kill (timeoutMs = 5000): Promise<void> {
    if (this.exited) return
    const gone = new Promise<void>(resolve => { this.child.once('exit', () => { resolve() }) })
    this.child.kill('SIGKILL')
    await Promise.race([gone, delay(timeoutMs)])
  }

  /**
   * Ends this node's process at the end of a phase: SIGTERM, on which the
   * worker exits at once (and writes its profile when it runs with
   * `--cpu-prof`, which a large one takes seconds to do), then SIGKILL past
   * `graceMs`.
   */
  async stop (graceMs = 30_000): Promise<void> {
    if (this.exited) return
    const gone = new Promise<void>(resolve => { this.child.once('exit', () => { resolve() }) })
    this.child.kill('SIGTERM')
    await Promise.race([gone, delay(graceMs)])
    await this.kill()
  }
}

export interface MeshOptions {
  size: number
  swarmKeyHex: string
  root: string
  prefix: string
  heartbeatMs: number
  suspectAfterMs?: number
  deadAfterMs?: number
  reportUpdates: boolean
  traceRpc?: boolean
  diagNoPingAbort?: boolean
  /** Stop starting more workers after this long (the rest count as not started). */
  spawnBoundMs?: number
  /** Processes started at once after the first (bounded to keep a 2-core host responsive). */
  concurrency: number
  /**
   * Nodes per process after the first node (which always has a process of its
   * own, as the bootstrap node): 1 = a process per node. @default 1
   */
  perProcess?: number
  readyTimeoutMs: number
}

export interface Mesh {
  workers: Worker[]
  /** Node processes started (equal to the nodes when each has its own). */
  processes: number
  /** ms from the first spawn until every node had started (or the start bound passed). */
  spawnMs: number
  /** Workers that failed to start, with why. */
  failed: Array<{ name: string, error: string }>
}

/** Starts `size` workers, the first alone, the rest bootstrapped through it. */
export async function startMesh (o: MeshOptions): Promise<Mesh> {
  const t0 = Date.now()
  const cfg = (i: number, bootstrap: string[]): WorkerConfig => ({
    swarmKeyHex: o.swarmKeyHex,
    dataDir: `${o.root}/${o.prefix}-n${i}`,
    name: `${o.prefix}-n${i}`,
    bootstrap,
    heartbeatMs: o.heartbeatMs,
    ...(o.suspectAfterMs !== undefined ? { suspectAfterMs: o.suspectAfterMs } : {}),
    ...(o.deadAfterMs !== undefined ? { deadAfterMs: o.deadAfterMs } : {}),
    reportUpdates: o.reportUpdates,
    ...(o.traceRpc === true ? { traceRpc: true } : {}),
    ...(o.diagNoPingAbort === true ? { diagNoPingAbort: true } : {})
  })
  const first = new Worker(cfg(0, []))
  const workers: Worker[] = [first]
  const failed: Mesh['failed'] = []
  let processes = 1
  if (!await first.waitReady(o.readyTimeoutMs) || first.addrs[0] === undefined) {
    failed.push({ name: first.name, error: first.failure ?? 'no ready within bound' })
    return { workers, processes, spawnMs: Date.now() - t0, failed }
  }
  const boot = [first.addrs[0]]
  const per = Math.max(1, o.perProcess ?? 1)
  let next = 1
  const deadline = t0 + (o.spawnBoundMs ?? Infinity)
  const lane = async (): Promise<void> => {
    while (next < o.size) {
      if (Date.now() >= deadline) {
        failed.push({ name: `${o.prefix}-n${next}`, error: `not started: the start-up bound of ${(o.spawnBoundMs ?? 0) / 1000} s had passed` })
        next++
        continue
      }
      const configs: WorkerConfig[] = []
      while (configs.length < per && next < o.size) configs.push(cfg(next++, boot))
      const group = Worker.group(configs)
      processes++
      workers.push(...group)
      await Promise.all(group.map(async w => {
        if (!await w.waitReady(o.readyTimeoutMs)) failed.push({ name: w.name, error: w.failure ?? `no ready within ${o.readyTimeoutMs} ms` })
      }))
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, lane))
  return { workers, processes, spawnMs: Date.now() - t0, failed }
}

/** Ends every worker process of a mesh (`stop`: profiles are written) and waits for them to be gone. */
export async function killMesh (workers: Worker[]): Promise<void> {
  await Promise.all([...new Set(workers.map(w => w.proc))].map(async p => { await p.nodes[0]?.stop() }))
}

/** Waits (bounded) until every ready worker sees every other ready worker alive. */
export async function waitAllAlive (workers: Worker[], timeoutMs: number): Promise<{ ok: boolean, ms: number, minAlive: number, expected: number }> {
  const t0 = Date.now()
  const live = workers.filter(w => w.peerId !== null && !w.exited)
  const ids = live.map(w => w.peerId as string)
  const ok = await pollUntil(() => live.every(w => w.aliveAmong(ids) === ids.length - 1), timeoutMs, 100)
  return { ok, ms: Date.now() - t0, minAlive: Math.min(...live.map(w => w.aliveAmong(ids))), expected: ids.length - 1 }
}

// ---------------------------------------------------------------------------
// CPU burners

/** Starts `n` child processes that spin forever (killed with everything else). */
export function startBurners (n: number): ChildProcess[] {
  const out: ChildProcess[] = []
  for (let i = 0; i < n; i++) {
    const c = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' })
    register(c)
    out.push(c)
  }
  return out
}

export async function stopBurners (burners: ChildProcess[]): Promise<void> {
  await Promise.all(burners.map(async c => {
    if (c.exitCode !== null || c.signalCode !== null) return
    const gone = new Promise<void>(resolve => { c.once('exit', () => { resolve() }) })
    c.kill('SIGKILL')
    await Promise.race([gone, delay(5000)])
  }))
}

// ---------------------------------------------------------------------------
// /proc readers

/** Resident set size of a process in bytes (VmRSS), or null if it is gone. */
export function readRss (pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** utime + stime of a process in clock ticks, or null if it is gone. */
export function readCpuTicks (pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // fields after the command name (which may contain spaces and parentheses)
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // rest[0] is field 3 (state); utime is field 14, stime field 15
    return Number(rest[11]) + Number(rest[12])
  } catch {
    return null
  }
}

/** Received bytes of the loopback interface (this network namespace). */
export function readLoRxBytes (): number {
  const text = readFileSync('/proc/net/dev', 'utf8')
  const line = text.split('\n').find(l => l.trim().startsWith('lo:'))
  if (line === undefined) throw new Error('no lo interface in /proc/net/dev')
  return Number(line.split(':')[1]?.trim().split(/\s+/)[0])
}

/** Whole-host CPU time from /proc/stat: [busy, total] jiffies. */
export function readHostCpu (): [number, number] {
  const first = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const v = first.trim().split(/\s+/).slice(1).map(Number)
  const total = v.reduce((a, b) => a + b, 0)
  const idle = (v[3] ?? 0) + (v[4] ?? 0)
  return [total - idle, total]
}

/**
 * TCP payload bytes received so far on each established socket owned by one of
 * `pids` (tcp_info bytes_received, via `ss`), keyed by socket. Unlike the `lo`
 * counters this sees only the given processes' traffic; sockets closed between
 * two readings lose their counts. Null when `ss` is unavailable.
 */
export function readTcpRx (pids: ReadonlySet<number>): Map<string, number> | null {
  let text: string
  try {
    text = execFileSync('ss', ['-tinpH', 'state', 'established'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  } catch {
    return null
  }
  const out = new Map<string, number>()
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ''
    const pm = /users:\(\("[^"]*",pid=(\d+)/.exec(line)
    if (pm === null || !pids.has(Number(pm[1]))) continue
    const info = lines[i + 1] ?? ''
    const b = /bytes_received:(\d+)/.exec(info)
    const cols = line.trim().split(/\s+/)
    out.set(`${pm[1]} ${cols[2] ?? ''} ${cols[3] ?? ''}`, b === null ? 0 : Number(b[1]))
  }
  return out
}

/** Bytes received between two `readTcpRx` readings (sockets opened in between count from zero). */
export function tcpRxDelta (a: Map<string, number> | null, b: Map<string, number> | null): number | null {
  if (a === null || b === null) return null
  let sum = 0
  for (const [k, v] of b) sum += v - (a.get(k) ?? 0)
  return sum
}

/** Ticks of all processes in `pids` that are still there. */
function ticksOf (pids: Iterable<number>): Map<number, number> {
  const out = new Map<number, number>()
  for (const p of pids) {
    const t = readCpuTicks(p)
    if (t !== null) out.set(p, t)
  }
  return out
}

export interface CpuShare {
  /** Whole host busy, % of all cores. */
  hostPct: number | null
  /** The benchmark's own children (nodes, burners), % of all cores. */
  benchPct: number | null
  /** Everything else on the host (other users' work, the kernel, this parent), % of all cores. */
  otherPct: number | null
}

/** Splits host CPU use over a window into the benchmark's children and everything else. */
export class CpuMeter {
  #host: [number, number]
  #ticks: Map<number, number>
  #pids: () => Iterable<number>

  constructor (pids: () => Iterable<number>) {
    this.#pids = pids
    this.#host = readHostCpu()
    this.#ticks = ticksOf(pids())
  }

  read (): CpuShare {
    const host = readHostCpu()
    const ticks = ticksOf(this.#pids())
    const total = host[1] - this.#host[1]
    if (total <= 0) return { hostPct: null, benchPct: null, otherPct: null }
    let mine = 0
    for (const [pid, t] of ticks) mine += t - (this.#ticks.get(pid) ?? t)
    // /proc/stat and /proc/<pid>/stat count in the same USER_HZ ticks
    const hostPct = 100 * (host[0] - this.#host[0]) / total
    const benchPct = 100 * mine / total
    return { hostPct, benchPct, otherPct: Math.max(0, hostPct - benchPct) }
  }
}


/**
 * Waits (bounded) until the host is quiet: other processes use under
 * `maxOtherPct` of all cores over consecutive 2 s samples. Returns the last
 * sample, so the phase can report what it ran against.
 */
export async function waitQuiet (maxOtherPct: number, boundMs: number, log: (line: string) => void): Promise<{ quiet: boolean, waitedMs: number, otherPct: number | null }> {
  const t0 = Date.now()
  let told = false
  let streak = 0
  for (;;) {
    const m = new CpuMeter(childPids)
    await delay(2000) // one sampling window
    const s = m.read()
    streak = s.otherPct !== null && s.otherPct < maxOtherPct ? streak + 1 : 0
    if (streak >= 2) return { quiet: true, waitedMs: Date.now() - t0, otherPct: s.otherPct }
    if (Date.now() - t0 >= boundMs) {
      log(`  the host did not get quiet within ${boundMs / 1000} s (other load ${s.otherPct?.toFixed(0)} % of all cores); going ahead and recording it`)
      return { quiet: false, waitedMs: Date.now() - t0, otherPct: s.otherPct }
    }
    if (!told && streak === 0) {
      log(`  host busy with other work (${s.otherPct?.toFixed(0)} % of all cores); waiting up to ${boundMs / 1000} s for it to drop below ${maxOtherPct} %`)
      told = true
    }
  }
}
