import { spawn, type ChildProcess } from 'node:child_process'

/**
 * git processes started by a small helper process, not by the node itself.
 *
 * Starting a process costs the process that starts it in proportion to its
 * size: libuv forks (the kernel copies the page tables of the whole process)
 * and then waits until the child has exec'd, which on a host short of CPU
 * means until the child is given a CPU. Measured on this project's 2-core
 * machine: 2.5 ms of CPU and 4 ms of blocked event loop per spawn from a
 * 50 MiB process, 8 ms and 14 ms from a 256 MiB one (a busy node is
 * 180-250 MiB). A node starts 18-20 git processes per task (bench:e2e), and a
 * CPU profile of the merge leader had put 11 s of its 39 s on the event loop
 * in `child_process.spawn`, during which no board change, heartbeat or
 * finished git process was handled.
 *
 * The helper is a bare Node process (about 45 MiB, no meshwork code) that
 * takes requests over an IPC channel, starts git and sends back its exit code
 * and output. The node's event loop only sends a message, and each fork copies
 * the helper's page tables instead of the node's. It starts at the first git
 * call once turned on (`spawnFromHelper`: `meshwork node` at its start, a
 * merge leader when it leads), and leaves after `HELPER_IDLE_MS` without a
 * request, so an idle node pays no memory for it. It ignores SIGINT and
 * SIGTERM (a Ctrl-C reaches the whole process group: the node's graceful stop
 * still needs git) and exits when its node does (the IPC channel closes).
 * If it cannot be started or dies, git is started by the node itself from
 * then on; the calls in flight when it died fail.
 */

/** A helper without a request for this long leaves; the next git call starts another. @default 15 s */
export const HELPER_IDLE_MS = 15_000

/** What the helper reports when a git process has ended (or could not start). */
interface Reply {
  id: number
  /** Exit code, null if killed. */
  code: number | null
  stdout: Uint8Array
  stderr: string
  /** stdout went past the limit: the process was killed. */
  over: boolean
  /** The process could not be started (its message), or null. */
  error: string | null
}

interface Request {
  id: number
  args: string[]
  cwd: string
  env: NodeJS.ProcessEnv
  input?: string | Uint8Array
  maxOutput: number
}

// plain JavaScript run with `node -e`: no file to find in the source tree or the build
const HELPER_SOURCE = `
const { spawn } = require('node:child_process')
const running = new Map()
process.on('SIGINT', () => {})
process.on('SIGTERM', () => {})
process.on('disconnect', () => { process.exit(0) })
process.on('message', m => {
  if (m.kill !== undefined) { const c = running.get(m.kill); if (c !== undefined) c.kill(m.signal); return }
  let child
  try {
    child = spawn('git', m.args, { cwd: m.cwd, env: m.env, stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (e) {
    process.send({ id: m.id, code: null, stdout: new Uint8Array(0), stderr: '', over: false, error: String(e && e.message) })
    return
  }
  running.set(m.id, child)
  const out = []
  let outBytes = 0
  let over = false
  let err = ''
  child.stdout.on('data', c => {
    outBytes += c.length
    if (outBytes > m.maxOutput) { over = true; child.kill('SIGKILL'); return }
    out.push(c)
  })
  child.stderr.on('data', c => { if (err.length < 65536) err += c.toString() })
  child.on('error', e => {
    // a process that never started emits no 'close'
    if (child.pid === undefined) { running.delete(m.id); process.send({ id: m.id, code: null, stdout: new Uint8Array(0), stderr: err, over, error: String(e && e.message) }) }
  })
  child.on('close', code => {
    running.delete(m.id)
    process.send({ id: m.id, code, stdout: Buffer.concat(out), stderr: err, over, error: null })
  })
  child.stdin.on('error', () => {})
  if (m.input !== undefined) child.stdin.end(m.input)
  else child.stdin.end()
})
`

/** Whether git is started by the helper (see `spawnFromHelper`). */
let wanted = false
let idleMs = HELPER_IDLE_MS

/**
 * From now on, git processes are started by the helper process (`meshwork
 * node` calls it at its start, the merge leader when it starts to lead).
 * `idleMs`: how long an idle helper stays (`HELPER_IDLE_MS`).
 */
export function spawnFromHelper (opts: { idleMs?: number } = {}): void {
  wanted = true
  if (opts.idleMs !== undefined) idleMs = opts.idleMs
}

let helper: ChildProcess | null = null
/** The helper could not be started, or died: git is started by this process from now on. */
let unavailable = false
let nextId = 1
const waiting = new Map<number, (r: Reply | Error) => void>()
let idleTimer: NodeJS.Timeout | null = null

function failAll (err: Error): void {
  const all = [...waiting.values()]
  waiting.clear()
  for (const settle of all) settle(err)
}

/** The helper keeps this process alive only while it runs something for it. */
function hold (on: boolean): void {
  const h = helper as (ChildProcess & { channel?: { ref: () => void, unref: () => void } | null }) | null
  if (h === null) return
  if (on) { h.ref(); h.channel?.ref() } else { h.unref(); h.channel?.unref() }
}

function armIdle (): void {
  if (idleTimer !== null) clearTimeout(idleTimer)
  idleTimer = setTimeout(() => {
    idleTimer = null
    const h = helper
    if (h === null || waiting.size > 0) return
    // leaving on purpose: not a death (the next call starts another)
    helper = null
    try { h.disconnect() } catch {}
  }, idleMs)
  idleTimer.unref()
}

function spawnerHelper (): ChildProcess | null {
  if (helper !== null || unavailable || !wanted) return helper
  try {
    const h = spawn(process.execPath, ['-e', HELPER_SOURCE], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], serialization: 'advanced' })
    h.on('message', (r: Reply) => {
      const settle = waiting.get(r.id)
      waiting.delete(r.id)
      if (waiting.size === 0 && helper === h) { hold(false); armIdle() }
      settle?.(r)
    })
    const gone = (err: Error): void => {
      if (helper !== h) return
      helper = null
      unavailable = true
      failAll(err)
    }
    h.on('error', gone)
    h.on('exit', (code, signal) => { gone(new Error(`the git helper process exited (${signal ?? code ?? 'unknown'})`)) })
    helper = h
    hold(false)
  } catch {
    unavailable = true
  }
  return helper
}

/** The outcome of a git process started by the helper, or null when git should be started here (no helper). */
export async function runInHelper (args: string[], opts: { cwd: string, env: NodeJS.ProcessEnv, input?: string | Uint8Array | undefined, maxOutput: number, signal?: AbortSignal | undefined }): Promise<{ code: number | null, stdout: Buffer, stderr: string, over: boolean } | null> {
  const h = spawnerHelper()
  if (h === null) return null
  const signal = opts.signal
  signal?.throwIfAborted()
  const id = nextId++
  const req: Request = { id, args, cwd: opts.cwd, env: opts.env, maxOutput: opts.maxOutput, ...(opts.input !== undefined ? { input: opts.input } : {}) }
  const reply = await new Promise<Reply | Error>((resolve, reject) => {
    const onAbort = (): void => {
      // as child_process does with a signal: the process is killed and the call fails at once
      waiting.delete(id)
      if (waiting.size === 0 && helper === h) { hold(false); armIdle() }
      try { h.send({ kill: id, signal: 'SIGTERM' }) } catch {}
      const e = new Error('The operation was aborted', { cause: signal?.reason })
      e.name = 'AbortError'
      reject(e)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    waiting.set(id, r => { signal?.removeEventListener('abort', onAbort); resolve(r) })
    if (waiting.size === 1) hold(true)
    if (idleTimer !== null) { clearTimeout(idleTimer); idleTimer = null }
    h.send(req, err => { if (err !== null && err !== undefined) { waiting.delete(id); resolve(err) } })
  })
  if (reply instanceof Error) throw reply
  if (reply.error !== null) throw new Error(`git could not be started: ${reply.error}`)
  const out = reply.stdout
  return { code: reply.code, stdout: Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength), stderr: reply.stderr, over: reply.over }
}

/** The helper's pid while it runs (tests), else null. */
export function helperPid (): number | null {
  return helper?.pid ?? null
}
