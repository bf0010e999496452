import { spawn, type ChildProcess } from 'node:child_process'
import { Readable, Writable } from 'node:stream'

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
 * and output (`runInHelper`), or streams its stdin and stdout (`streamInHelper`,
 * for pack transfers). The node's event loop only sends a message, and each fork copies
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
  op: 'run'
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
function start (m) {
  try {
    return spawn('git', m.args, { cwd: m.cwd, env: m.env, stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (e) {
    process.send({ id: m.id, code: null, stdout: new Uint8Array(0), stderr: String(e && e.message), over: false, error: String(e && e.message) })
    return null
  }
}
// a process killed by a signal is over even while a process it started (a hook, an alias) still holds its pipes
function closeOnSignal (child) {
  child.on('exit', (code, signal) => { if (signal !== null) { child.stdout.destroy(); child.stderr.destroy() } })
}
function run (m) {
  const child = start(m)
  if (child === null) return
  running.set(m.id, child)
  closeOnSignal(child)
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
}
// a process whose stdin and stdout the node streams: stdout in 'out' messages (paused and resumed by the
// node as it reads), stdin from 'in' messages (each acknowledged once written), then one 'exit' message
function stream (m) {
  const child = start(m)
  if (child === null) return
  running.set(m.id, child)
  closeOnSignal(child)
  let err = ''
  let done = false
  const exit = code => { if (!done) { done = true; running.delete(m.id); process.send({ id: m.id, exit: true, code, stderr: err }) } }
  child.stdout.on('data', c => { process.send({ id: m.id, out: c }) })
  child.stdout.on('error', () => {})
  child.stderr.on('data', c => { if (err.length < 65536) err += c.toString() })
  child.stdin.on('error', () => {})
  child.on('error', e => { err += String(e && e.message) + '\\n'; if (child.pid === undefined) exit(null) })
  child.on('close', code => { exit(code) })
}
process.on('message', m => {
  const c = m.id === undefined ? undefined : running.get(m.id)
  switch (m.op) {
    case 'run': run(m); break
    case 'stream': stream(m); break
    case 'in':
      if (c === undefined) process.send({ id: m.id, wrote: true })
      else c.stdin.write(m.chunk, () => { process.send({ id: m.id, wrote: true }) })
      break
    case 'end': if (c !== undefined) c.stdin.end(); break
    case 'pause': if (c !== undefined) c.stdout.pause(); break
    case 'resume': if (c !== undefined) c.stdout.resume(); break
    case 'kill': if (c !== undefined) c.kill(m.signal); break
  }
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
export function spawnFromHelper (opts: { idleMs?: number, onLost?: (why: string) => void } = {}): void {
  wanted = true
  if (opts.idleMs !== undefined) idleMs = opts.idleMs
  if (opts.onLost !== undefined) onLost = opts.onLost
}

/** Told once, when the helper could not be started or died (git is started by this process from then on). */
let onLost: ((why: string) => void) | null = null

function lost (why: string): void {
  const tell = onLost
  onLost = null
  try { tell?.(why) } catch {}
}

let helper: ChildProcess | null = null
/** The helper could not be started, or died: git is started by this process from now on. */
let unavailable = false
let nextId = 1
/** What to do with the helper's messages about each git process it runs for this one (a death: an `Error`). */
const handlers = new Map<number, (m: HelperMessage | Error) => void>()
let idleTimer: NodeJS.Timeout | null = null

/** A message of the helper: a run's reply, or a stream's output, write acknowledgement or exit. */
type HelperMessage = Reply | { id: number, out: Uint8Array } | { id: number, wrote: true } | { id: number, exit: true, code: number | null, stderr: string }

function failAll (err: Error): void {
  const all = [...handlers.values()]
  handlers.clear()
  for (const handle of all) handle(err)
}

/** The helper keeps this process alive only while it runs something for it. */
function hold (on: boolean): void {
  const h = helper as (ChildProcess & { channel?: { ref: () => void, unref: () => void } | null }) | null
  if (h === null) return
  if (on) { h.ref(); h.channel?.ref() } else { h.unref(); h.channel?.unref() }
}

/** Starts following git process `id` of the helper. */
function follow (id: number, handle: (m: HelperMessage | Error) => void): void {
  handlers.set(id, handle)
  if (handlers.size === 1) hold(true)
  if (idleTimer !== null) { clearTimeout(idleTimer); idleTimer = null }
}

/** Stops following git process `id`; with nothing left to follow, the helper's idle time starts. */
function unfollow (h: ChildProcess, id: number): void {
  handlers.delete(id)
  if (handlers.size === 0 && helper === h) { hold(false); armIdle() }
}

function armIdle (): void {
  if (idleTimer !== null) clearTimeout(idleTimer)
  idleTimer = setTimeout(() => {
    idleTimer = null
    const h = helper
    if (h === null || handlers.size > 0) return
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
    h.on('message', (m: HelperMessage) => { handlers.get(m.id)?.(m) })
    const gone = (err: Error): void => {
      if (helper !== h) return
      helper = null
      unavailable = true
      lost(err.message)
      failAll(err)
    }
    h.on('error', gone)
    h.on('exit', (code, signal) => { gone(new Error(`the git helper process exited (${signal ?? code ?? 'unknown'}) while this git command ran; git is started by the node itself from now on, so running the step again works`)) })
    helper = h
    hold(false)
  } catch (err) {
    unavailable = true
    lost(`the git helper process could not be started (${err instanceof Error ? err.message : String(err)}); git is started by the node itself from now on`)
  }
  return helper
}

function abortError (signal: AbortSignal | undefined): Error {
  const e = new Error('The operation was aborted', { cause: signal?.reason })
  e.name = 'AbortError'
  return e
}

const asBuffer = (b: Uint8Array): Buffer => Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)

/** The outcome of a git process started by the helper, or null when git should be started here (no helper). */
export async function runInHelper (args: string[], opts: { cwd: string, env: NodeJS.ProcessEnv, input?: string | Uint8Array | undefined, maxOutput: number, signal?: AbortSignal | undefined }): Promise<{ code: number | null, stdout: Buffer, stderr: string, over: boolean } | null> {
  const h = spawnerHelper()
  if (h === null) return null
  const signal = opts.signal
  signal?.throwIfAborted()
  const id = nextId++
  const req: Request = { op: 'run', id, args, cwd: opts.cwd, env: opts.env, maxOutput: opts.maxOutput, ...(opts.input !== undefined ? { input: opts.input } : {}) }
  const reply = await new Promise<Reply | Error>((resolve, reject) => {
    const onAbort = (): void => {
      // as child_process does with a signal: the process is killed and the call fails at once
      unfollow(h, id)
      try { h.send({ op: 'kill', id, signal: 'SIGTERM' }) } catch {}
      reject(abortError(signal))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    follow(id, m => {
      unfollow(h, id)
      signal?.removeEventListener('abort', onAbort)
      resolve(m instanceof Error ? m : m as Reply)
    })
    h.send(req, err => { if (err !== null && err !== undefined) { unfollow(h, id); resolve(err) } })
  })
  if (reply instanceof Error) throw reply
  if (reply.error !== null) throw new Error(`git could not be started: ${reply.error}`)
  return { code: reply.code, stdout: asBuffer(reply.stdout), stderr: reply.stderr, over: reply.over }
}

/** A git process whose stdin and stdout the caller streams, started by the helper. */
export interface StreamedGit {
  stdin: Writable
  stdout: Readable
  /** Its exit code (null if killed or never started) and the start of its stderr; never rejects. */
  exited: Promise<{ code: number | null, stderr: string }>
  kill: () => void
}

/**
 * Starts git through the helper with its stdin and stdout streamed to this
 * process (`spawnGit`): stdout is paused in the helper while this side does
 * not read, and each write to stdin completes once the helper wrote it to
 * git, so neither side buffers more than a stream's high-water mark. Null
 * when git should be started here (no helper).
 */
export function streamInHelper (args: string[], opts: { cwd: string, env: NodeJS.ProcessEnv, signal?: AbortSignal | undefined }): StreamedGit | null {
  const h = spawnerHelper()
  if (h === null) return null
  const id = nextId++
  const send = (m: Record<string, unknown>): void => { try { h.send({ id, ...m }) } catch {} }
  let paused = false
  let settle: (r: { code: number | null, stderr: string }) => void = () => {}
  const exited = new Promise<{ code: number | null, stderr: string }>(resolve => { settle = resolve })
  let ended = false
  const writes: Array<(err?: Error | null) => void> = []
  const stdout = new Readable({
    read: () => {
      if (paused) { paused = false; send({ op: 'resume' }) }
    }
  })
  const stdin = new Writable({
    write: (chunk: Buffer, _enc, cb) => {
      if (ended) { cb(); return }
      writes.push(cb)
      send({ op: 'in', chunk })
    },
    final: cb => { send({ op: 'end' }); cb() }
  })
  stdin.on('error', () => {})
  stdout.on('error', () => {})
  const finish = (r: { code: number | null, stderr: string }): void => {
    if (ended) return
    ended = true
    unfollow(h, id)
    opts.signal?.removeEventListener('abort', onAbort)
    for (const cb of writes.splice(0)) cb()
    stdout.push(null)
    settle(r)
  }
  const onAbort = (): void => { send({ op: 'kill', signal: 'SIGKILL' }) }
  follow(id, m => {
    if (m instanceof Error) { finish({ code: null, stderr: m.message }); return }
    if ('out' in m) {
      if (!stdout.push(asBuffer(m.out)) && !paused) { paused = true; send({ op: 'pause' }) }
    } else if ('wrote' in m) {
      writes.shift()?.()
    } else if ('exit' in m) {
      finish({ code: m.code, stderr: m.stderr })
    } else if ('error' in m && m.error !== null) {
      finish({ code: null, stderr: m.error })
    }
  })
  if (opts.signal?.aborted === true) onAbort()
  else opts.signal?.addEventListener('abort', onAbort, { once: true })
  h.send({ op: 'stream', id, args, cwd: opts.cwd, env: opts.env }, err => { if (err !== null && err !== undefined) finish({ code: null, stderr: err.message }) })
  return { stdin, stdout, exited, kill: () => { if (!ended) send({ op: 'kill', signal: 'SIGKILL' }) } }
}

/** The helper's pid while it runs (tests), else null. */
export function helperPid (): number | null {
  return helper?.pid ?? null
}
