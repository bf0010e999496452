/**
 * Drives the real `meshwork` CLI as child processes: bounded one-shot commands
 * (`runCli`) and long-running nodes (`startNode`). Every child is tracked so a
 * test file can kill whatever is left in `afterAll`/`afterEach`, even after a
 * failure. Every wait is a bounded condition poll.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../../src/util/wait.ts'

/** The CLI entry point. */
export const BIN = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'meshwork.js')

/** Loopback listen address with an OS-chosen port: tests never touch a real interface. */
export const LOOPBACK_LISTEN = '/ip4/127.0.0.1/tcp/0'

/** How much of a child's output is kept (the tail), for failure messages. */
const MAX_CAPTURE = 256 * 1024

{
  const major = Number(process.versions.node.split('.')[0])
  if (major < 22) {
    throw new Error(`the CLI tests need Node >= 22 (this worker runs ${process.version} at ${process.execPath}); run vitest through npx in the repo so the pinned Node is used`)
  }
}

/** The user config dir of every child (its default client key is there): under this run's temp dir. */
export const TEST_CONFIG_HOME = join(tmpdir(), 'meshwork-test-config')

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const p of live) { try { p.kill('SIGKILL') } catch {} }
})

/**
 * The environment children get: ours minus any MESHWORK_* connection settings, plus `extra`.
 * Clients keep their key (`--identity` default) under XDG_CONFIG_HOME: one in this run's temp
 * dir, never the user's own ~/.config.
 */
function childEnv (extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MESHWORK_')) env[k] = v
  env.XDG_CONFIG_HOME = TEST_CONFIG_HOME
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  return env
}

/** Accumulates a stream's text, keeping at most the last `MAX_CAPTURE` characters. */
class Capture {
  text = ''
  push (chunk: Buffer | string): void {
    this.text += chunk.toString()
    if (this.text.length > MAX_CAPTURE) this.text = this.text.slice(-MAX_CAPTURE)
  }
}

/** The last `n` characters of `text`, labelled, for failure messages. */
export function tail (label: string, text: string, n = 2000): string {
  const t = text.length > n ? '…' + text.slice(-n) : text
  return `--- ${label} ---\n${t.trimEnd() === '' ? '(empty)' : t.trimEnd()}`
}

export interface Spawned {
  proc: ChildProcess
  stdout: Capture
  stderr: Capture
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export function spawnCli (args: string[], env?: Record<string, string | undefined>, cwd?: string, bin = BIN): Spawned {
  const proc = spawn(process.execPath, [bin, ...args], {
    env: childEnv(env),
    cwd: cwd ?? process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  live.add(proc)
  const stdout = new Capture()
  const stderr = new Capture()
  proc.stdout?.on('data', (c: Buffer) => { stdout.push(c) })
  proc.stderr?.on('data', (c: Buffer) => { stderr.push(c) })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolveExit => {
    proc.once('error', err => {
      stderr.push(`\n[spawn error] ${err.message}\n`)
      live.delete(proc)
      resolveExit({ code: null, signal: null })
    })
    // 'close' (not 'exit'): both pipes are drained, so the captured output is complete
    proc.once('close', (code, signal) => {
      live.delete(proc)
      resolveExit({ code, signal })
    })
  })
  return { proc, stdout, stderr, exited }
}

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Wall time of the run in ms. */
  ms: number
}

export interface RunCliOptions {
  env?: Record<string, string | undefined>
  cwd?: string
  /** Hard bound: the child is killed and `runCli` rejects once it passes. */
  timeoutMs: number
  /** The meshwork executable to run (another checkout's `bin/meshwork.js`). @default this checkout's `BIN` */
  bin?: string
}

/**
 * Runs `meshwork ...args` to completion and returns its exit code and output.
 * Rejects (after SIGKILLing the child) if it has not exited within `timeoutMs`.
 */
export async function runCli (args: string[], opts: RunCliOptions): Promise<CliResult> {
  const started = Date.now()
  const s = spawnCli(args, opts.env, opts.cwd, opts.bin)
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<'timeout'>(resolveT => { timer = setTimeout(() => { resolveT('timeout') }, opts.timeoutMs) })
  try {
    const r = await Promise.race([s.exited, timedOut])
    if (r === 'timeout') {
      s.proc.kill('SIGKILL')
      await s.exited
      throw new Error(`\`meshwork ${args.join(' ')}\` did not exit within ${opts.timeoutMs} ms (killed)\n${tail('stdout', s.stdout.text)}\n${tail('stderr', s.stderr.text)}`)
    }
    return { code: r.code, signal: r.signal, stdout: s.stdout.text, stderr: s.stderr.text, ms: Date.now() - started }
  } finally {
    clearTimeout(timer)
  }
}

/** A readable one-line description of a CLI result, for assertion messages. */
export function describeResult (args: string[], r: CliResult): string {
  return `\`meshwork ${args.join(' ')}\` exited ${r.code ?? r.signal} after ${r.ms} ms\n${tail('stdout', r.stdout)}\n${tail('stderr', r.stderr)}`
}

/** What a node writes to `DATA/node.json` once started (SPEC). */
export interface NodeInfo {
  peerId: string
  addrs: string[]
  join: string
  pid: number
}

export interface StartNodeOptions {
  /** Parent dir for the node's repo (`<dir>/repo-<name>`) and, unless `dataDir` is given, its data (`<dir>/data-<name>`). */
  dir: string
  name: string
  dataDir?: string
  /** The node's --repo. @default `<dir>/repo-<name>` (created empty: the node clones a history, or starts one with --init-repo, which a node that joins nobody gets) */
  repoDir?: string
  keyFile?: string
  join?: string
  bootstrap?: string[]
  extraArgs?: string[]
  env?: Record<string, string | undefined>
  /** Bound for node.json to appear. @default 30 s */
  startTimeoutMs?: number
  /** The node's --listen. @default `LOOPBACK_LISTEN` (a port the OS picks) */
  listen?: string
  /** The meshwork executable to run (another checkout's `bin/meshwork.js`). @default this checkout's `BIN` */
  bin?: string
}

export interface CliNode {
  name: string
  proc: ChildProcess
  pid: number
  dataDir: string
  /** Parsed DATA/node.json of this process. */
  info: NodeInfo
  args: string[]
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit status once the process has exited (and its output is drained). */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  running: () => boolean
  /**
   * Sends `signal` and waits (bounded) for the process to exit; SIGKILLs and
   * rejects if it does not. Resolves with the exit status.
   */
  stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Failure-message context: the tail of stderr. */
  describe: () => string
}

/** Reads and parses a node.json; null while it is missing or half-written. */
export async function readNodeInfo (dataDir: string): Promise<NodeInfo | null> {
  try {
    const v = JSON.parse(await readFile(join(dataDir, 'node.json'), 'utf8')) as NodeInfo
    return typeof v.peerId === 'string' && Array.isArray(v.addrs) && typeof v.join === 'string' && typeof v.pid === 'number' ? v : null
  } catch {
    return null
  }
}

/** The args `startNode` passes for `opts` (exported so a test can replay a start by hand). */
export function nodeArgs (opts: StartNodeOptions): string[] {
  const dataDir = opts.dataDir ?? join(opts.dir, `data-${opts.name}`)
  const args = ['node', '--repo', opts.repoDir ?? join(opts.dir, `repo-${opts.name}`), '--data', dataDir, '--listen', opts.listen ?? LOOPBACK_LISTEN, '--name', opts.name]
  if (opts.keyFile !== undefined) args.push('--swarm-key', opts.keyFile)
  if (opts.join !== undefined) args.push('--join', opts.join)
  for (const b of opts.bootstrap ?? []) args.push('--bootstrap', b)
  const extra = opts.extraArgs ?? []
  // the first node of a mesh (nobody to clone from) starts a new history only when asked to
  const joins = opts.join !== undefined || (opts.bootstrap ?? []).length > 0 || extra.includes('--join') || extra.includes('--join-file') || extra.includes('--bootstrap')
  if (!joins && !extra.includes('--init-repo')) args.push('--init-repo')
  args.push(...extra)
  return args
}

/**
 * Starts `meshwork node` on loopback and waits until it has written a
 * DATA/node.json carrying this process's pid (a restart on an old data dir
 * overwrites the previous one). Rejects early if the process exits first.
 */
export async function startNode (opts: StartNodeOptions): Promise<CliNode> {
  const dataDir = opts.dataDir ?? join(opts.dir, `data-${opts.name}`)
  const args = nodeArgs({ ...opts, dataDir })
  const s = spawnCli(args, opts.env, undefined, opts.bin)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | null = null
  void s.exited.then(e => { exit = e })
  const pid = s.proc.pid ?? -1
  const describe = (): string => `node ${opts.name} (pid ${pid}, data ${dataDir})\n${tail(`stderr of ${opts.name}`, s.stderr.text)}`
  let info: NodeInfo
  try {
    info = await waitFor(async () => {
      if (exit !== null) {
        throw new Error(`node ${opts.name} exited (${exit.code ?? exit.signal}) before writing node.json\n${describe()}\n${tail('stdout', s.stdout.text)}`)
      }
      const i = await readNodeInfo(dataDir)
      // the node prints its lines before it writes node.json; the pipe may still hold them here
      return i !== null && i.pid === pid && s.stdout.text.includes(`peerId ${i.peerId}`) ? i : null
    }, { timeoutMs: opts.startTimeoutMs ?? 30_000, intervalMs: 100, message: () => `node ${opts.name} did not write ${join(dataDir, 'node.json')}\n${describe()}` })
  } catch (err) {
    if (exit === null) { s.proc.kill('SIGKILL'); await s.exited }
    throw err
  }
  const node: CliNode = {
    name: opts.name,
    proc: s.proc,
    pid,
    dataDir,
    info,
    args,
    stdout: () => s.stdout.text,
    stderr: () => s.stderr.text,
    exited: s.exited,
    running: () => exit === null,
    describe,
    stop: async (signal = 'SIGTERM', timeoutMs = 15_000) => {
      if (exit !== null) return exit
      s.proc.kill(signal)
      let timer: NodeJS.Timeout | undefined
      const r = await Promise.race([s.exited, new Promise<null>(resolveT => { timer = setTimeout(() => { resolveT(null) }, timeoutMs) })])
      clearTimeout(timer)
      if (r === null) {
        s.proc.kill('SIGKILL')
        await s.exited
        throw new Error(`node ${opts.name} did not exit within ${timeoutMs} ms of ${signal} (killed)\n${describe()}`)
      }
      return r
    }
  }
  return node
}

/** SIGKILLs every child still running and waits (bounded) for them to be gone. */
export async function killAllChildren (timeoutMs = 10_000): Promise<void> {
  const procs = [...live]
  for (const p of procs) { try { p.kill('SIGKILL') } catch {} }
  await waitFor(() => procs.every(p => p.exitCode !== null || p.signalCode !== null), {
    timeoutMs,
    message: () => `child processes still running after SIGKILL: ${procs.filter(p => p.exitCode === null && p.signalCode === null).map(p => p.pid).join(', ')}`
  })
}

/** A fresh temp dir under the OS temp dir. */
export async function makeTempDir (prefix = 'meshwork-cli-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

/** Removes a temp dir (and everything in it). */
export async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/** `status --json` output, as much of it as these tests read (SPEC). */
export interface StatusJson {
  meshId: string
  main: { head: string | null, leader: string | null, term: number }
  nodes: Array<{ peerId: string, name: string, state: string, slots: number, running: string[], lastSeenMs: number | null }>
  tasks: unknown[]
  conflicts: unknown[]
}

/**
 * Runs `meshwork status --json` with `connArgs` and parses the result; rejects
 * with the CLI's output when it fails or prints something that is not JSON.
 */
export async function statusJson (connArgs: string[], timeoutMs = 40_000): Promise<StatusJson> {
  const args = ['status', '--json', ...connArgs]
  const r = await runCli(args, { timeoutMs })
  if (r.code !== 0) throw new Error(describeResult(args, r))
  try {
    return JSON.parse(r.stdout) as StatusJson
  } catch (err) {
    throw new Error(`status --json printed something that is not JSON (${(err as Error).message})\n${describeResult(args, r)}`)
  }
}

/** `peerId=state` pairs of a status, for failure messages. */
export function nodeStates (s: StatusJson | null): string {
  if (s === null) return '(no status yet)'
  return s.nodes.map(n => `${n.name}:${n.peerId.slice(-6)}=${n.state}`).join(' ') || '(no nodes)'
}

/** A mesh of `meshwork node` processes: the first made with a new key, the rest joining with its token. */
export interface CliMesh {
  dir: string
  keyFile: string
  nodes: CliNode[]
  /** `--join <token>` of the first node, for client commands. */
  conn: string[]
}

/**
 * Runs `init` in a new temp dir and starts `names` as nodes on loopback with
 * `extraArgs` (the first with the key file, the others in parallel with its
 * join token). Repos are `<dir>/repo-<name>`; `prepare` may create them first.
 */
export async function startCliMesh (prefix: string, extraArgs: string[], opts: { names?: string[], env?: Record<string, string | undefined>, prepare?: (dir: string) => Promise<void> } = {}): Promise<CliMesh> {
  const dir = await makeTempDir(prefix)
  const keyFile = join(dir, 'swarm.key')
  const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
  if (init.code !== 0) throw new Error(describeResult(['init'], init))
  await opts.prepare?.(dir)
  const [first, ...rest] = opts.names ?? ['a', 'b', 'c']
  const env = opts.env
  const nodes = [await startNode({ dir, name: first as string, keyFile, extraArgs, ...(env !== undefined ? { env } : {}) })]
  const join0 = nodes[0]!.info.join
  nodes.push(...await Promise.all(rest.map(async name => await startNode({ dir, name, join: join0, extraArgs, ...(env !== undefined ? { env } : {}) }))))
  return { dir, keyFile, nodes, conn: ['--join', join0] }
}

/**
 * One long-running `meshwork status --watch --json` client: each refresh is a
 * whole status report (the same object `status --json` prints). Tests that
 * poll the board read it from here instead of starting a `status` process per
 * poll (each costs a second of CPU loading libp2p, which a busy 2-core host
 * pays for in every other process's timing).
 */
export interface StatusWatch {
  /** The newest report, or null before the first. */
  latest: () => unknown
  /**
   * A report produced after this call (so it reflects every board change the
   * client's node had when the call was made, like a one-shot `status`).
   * Rejects once `timeoutMs` passes, or at once if the watch has exited.
   */
  fresh: (timeoutMs?: number) => Promise<unknown>
  close: () => Promise<void>
}

/** Starts `status --watch --json --interval 250ms` with `connArgs`; resolves once its first report arrived. */
export async function watchStatusJson (connArgs: string[], timeoutMs = 60_000): Promise<StatusWatch> {
  const args = ['status', '--watch', '--json', '--interval', '250ms', ...connArgs]
  const s = spawnCli(args)
  let exited = false
  void s.exited.then(() => { exited = true })
  let seq = 0
  let latest: unknown = null
  let buf = ''
  s.proc.stdout?.on('data', (c: Buffer) => {
    buf += c.toString()
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (line.trim() === '') continue
      latest = JSON.parse(line)
      seq++
    }
  })
  const describe = (): string => `${tail('stderr of status --watch', s.stderr.text)}`
  const fresh = async (ms = 60_000): Promise<unknown> => {
    // the report in the making when the call came may have read the board before it: wait for the one after
    const after = seq + 1
    await waitFor(() => {
      if (exited) throw new Error(`\`meshwork ${args.join(' ')}\` exited\n${describe()}`)
      return seq > after
    }, { timeoutMs: ms, intervalMs: 20, message: () => `status --watch gave no new report within ${ms} ms\n${describe()}` })
    return latest
  }
  try {
    await fresh(timeoutMs)
  } catch (err) {
    s.proc.kill('SIGKILL')
    await s.exited
    throw err
  }
  return {
    latest: () => latest,
    fresh,
    close: async () => {
      if (!exited) s.proc.kill('SIGTERM')
      await s.exited
    }
  }
}

/** A temp dir (pushed on `dirs` for removal) holding a new mesh's swarm key made with `meshwork init`. */
export async function newMeshDir (prefix: string, dirs: string[]): Promise<{ dir: string, keyFile: string }> {
  const dir = await makeTempDir(prefix)
  dirs.push(dir)
  const keyFile = join(dir, 'swarm.key')
  const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
  if (init.code !== 0) throw new Error(describeResult(['init'], init))
  return { dir, keyFile }
}

/**
 * Waits (bounded) until the watch's newest report satisfies `cond` and
 * returns it; the failure names `what`, the nodes, tasks and main of the last
 * report and `context()` (node stderr tails, say).
 */
export async function untilStatus (watch: StatusWatch, cond: (s: StatusJson) => boolean, what: string, opts: { timeoutMs?: number, context?: () => string } = {}): Promise<StatusJson> {
  return await waitFor(() => {
    const s = watch.latest() as StatusJson | null
    return s !== null && cond(s) ? s : null
  }, {
    timeoutMs: opts.timeoutMs ?? 90_000,
    intervalMs: 100,
    message: () => {
      const s = watch.latest() as StatusJson | null
      return `${what}; nodes: ${nodeStates(s)}; tasks: ${JSON.stringify(s?.tasks)}; main: ${JSON.stringify(s?.main)}\n${opts.context?.() ?? ''}`
    }
  })
}
