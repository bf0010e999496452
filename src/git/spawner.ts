import { Worker } from 'node:worker_threads'

/**
 * git processes started from a worker thread, not from the node's event loop.
 *
 * Starting a process blocks the thread that starts it: libuv forks (the
 * kernel copies the page tables of a ~200 MiB node process) and then waits
 * until the child has exec'd, which on a host short of CPU means until the
 * child is given a CPU. A CPU profile of the merge leader in `bench:e2e
 * --quick` (4 nodes on 2 cores) put 11 s of its 39 s on the event loop in
 * `child_process.spawn` (~55 ms per git process), during which no board
 * change, heartbeat or finished git process was handled: every await of the
 * merge round paid for every other spawn. From this thread the event loop
 * only posts a message and gets the output back.
 *
 * Only where it pays: the thread costs a node 10-15 MiB of RSS for good (a V8
 * isolate; measured in bench:e2e), so it is turned on by the merge leader,
 * whose event loop the whole mesh waits on (`spawnFromThread`); other nodes
 * start git from the event loop. One thread for the process, started at the
 * first git call after that, kept alive only while a git process it started
 * runs. If the thread cannot be started or dies, git is started from the
 * event loop as before.
 */

/** What the thread reports when a git process has ended (or could not start). */
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

// plain JavaScript for `new Worker(…, { eval: true })`: no file to find in the source tree or the build
const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { spawn } = require('node:child_process')
const running = new Map()
parentPort.on('message', m => {
  if (m.kill !== undefined) { const c = running.get(m.kill); if (c !== undefined) c.kill(m.signal); return }
  let child
  try {
    child = spawn('git', m.args, { cwd: m.cwd, env: m.env, stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (e) {
    parentPort.postMessage({ id: m.id, code: null, stdout: new Uint8Array(0), stderr: '', over: false, error: String(e && e.message) })
    return
  }
  running.set(m.id, child)
  const out = []
  let outBytes = 0
  let over = false
  let err = ''
  let failed = null
  child.stdout.on('data', c => {
    outBytes += c.length
    if (outBytes > m.maxOutput) { over = true; child.kill('SIGKILL'); return }
    out.push(c)
  })
  child.stderr.on('data', c => { if (err.length < 65536) err += c.toString() })
  child.on('error', e => {
    failed = String(e && e.message)
    // a process that never started emits no 'close'
    if (child.pid === undefined) { running.delete(m.id); parentPort.postMessage({ id: m.id, code: null, stdout: new Uint8Array(0), stderr: err, over, error: failed }) }
  })
  child.on('close', code => {
    running.delete(m.id)
    const buf = Buffer.concat(out)
    const stdout = new Uint8Array(buf.buffer, buf.byteOffset, buf.length).slice()
    parentPort.postMessage({ id: m.id, code, stdout, stderr: err, over, error: null }, [stdout.buffer])
  })
  child.stdin.on('error', () => {})
  if (m.input !== undefined) child.stdin.end(m.input)
  else child.stdin.end()
})
`

/** Whether git is started from the thread (see `spawnFromThread`). */
let wanted = false

/**
 * From now on, git processes are started from the spawner thread (the merge
 * leader calls it when it starts to lead). Once on, it stays on for the life of
 * the process: the thread's memory would not be given back anyway.
 */
export function spawnFromThread (): void {
  wanted = true
}

let thread: Worker | null = null
/** The thread could not be started, or died: git is started from the event loop from now on. */
let unavailable = false
let nextId = 1
const waiting = new Map<number, (r: Reply | Error) => void>()

function failAll (err: Error): void {
  const all = [...waiting.values()]
  waiting.clear()
  for (const settle of all) settle(err)
}

function spawnerThread (): Worker | null {
  if (thread !== null || unavailable || !wanted) return thread
  try {
    const w = new Worker(THREAD_SOURCE, { eval: true, name: 'meshwork-git' })
    w.unref()
    w.on('message', (r: Reply) => {
      const settle = waiting.get(r.id)
      waiting.delete(r.id)
      if (waiting.size === 0) w.unref()
      settle?.(r)
    })
    const gone = (err: Error): void => {
      if (thread === w) thread = null
      unavailable = true
      failAll(err)
    }
    w.on('error', gone)
    w.on('exit', code => { gone(new Error(`the git spawner thread exited (${code})`)) })
    thread = w
  } catch {
    unavailable = true
  }
  return thread
}

/** The outcome of a git process started from the thread, or null when git should be started here (no thread). */
export async function runInThread (args: string[], opts: { cwd: string, env: NodeJS.ProcessEnv, input?: string | Uint8Array | undefined, maxOutput: number, signal?: AbortSignal | undefined }): Promise<{ code: number | null, stdout: Buffer, stderr: string, over: boolean } | null> {
  const w = spawnerThread()
  if (w === null) return null
  const signal = opts.signal
  signal?.throwIfAborted()
  const id = nextId++
  const req: Request = { id, args, cwd: opts.cwd, env: opts.env, maxOutput: opts.maxOutput, ...(opts.input !== undefined ? { input: opts.input } : {}) }
  const reply = await new Promise<Reply | Error>((resolve, reject) => {
    const onAbort = (): void => {
      // as child_process does with a signal: the process is killed and the call fails at once
      w.postMessage({ kill: id, signal: 'SIGTERM' })
      const e = new Error('The operation was aborted', { cause: signal?.reason })
      e.name = 'AbortError'
      reject(e)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    waiting.set(id, r => { signal?.removeEventListener('abort', onAbort); resolve(r) })
    if (waiting.size === 1) w.ref()
    w.postMessage(req)
  })
  if (reply instanceof Error) throw reply
  if (reply.error !== null) throw new Error(`git could not be started: ${reply.error}`)
  return { code: reply.code, stdout: Buffer.from(reply.stdout.buffer, reply.stdout.byteOffset, reply.stdout.byteLength), stderr: reply.stderr, over: reply.over }
}
