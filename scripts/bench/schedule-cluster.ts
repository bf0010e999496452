/**
 * Parent side of the scheduling benchmark: worker processes (one MeshNode +
 * Scheduler each, see ./schedule-worker.ts), request/reply over IPC, bounded
 * polling and the child registry that kills every worker when the benchmark
 * ends, fails or is interrupted.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { ScheduleCommand, ScheduleWorkerConfig, ScheduleWorkerEvent } from './schedule-protocol.ts'
import { pollUntil, register } from './lib/children.ts'

const WORKER_PATH = fileURLToPath(new URL('./schedule-worker.ts', import.meta.url))

type CommandBody = ScheduleCommand extends infer C ? C extends unknown ? Omit<C, 'reqId'> : never : never

export { installExitGuards, killAllChildren, pollUntil } from './lib/children.ts'

// ---------------------------------------------------------------------------

/** One worker process and its IPC request/reply channel. */
export class Worker {
  readonly name: string
  readonly child: ChildProcess
  peerId = ''
  addrs: string[] = []
  readyAt: number | null = null
  failed: string | null = null
  exited = false
  #reqId = 0
  #pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()

  constructor (config: ScheduleWorkerConfig, onEvent: (w: Worker, e: ScheduleWorkerEvent) => void) {
    this.name = config.name
    this.child = fork(WORKER_PATH, [JSON.stringify(config)], {
      execPath: process.execPath,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc']
    })
    register(this.child)
    let stderr = ''
    this.child.stderr?.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-4000) })
    this.child.on('message', (e: ScheduleWorkerEvent) => {
      if (e.ev === 'ready') {
        this.peerId = e.peerId
        this.addrs = e.addrs
        this.readyAt = e.at
      } else if (e.ev === 'failed') {
        this.failed = e.error
      } else if (e.ev === 'reply') {
        const p = this.#pending.get(e.reqId)
        this.#pending.delete(e.reqId)
        if (p !== undefined) {
          if (e.ok) p.resolve(e.data)
          else p.reject(new Error(`${this.name}: ${e.error}`))
        }
      }
      onEvent(this, e)
    })
    this.child.once('exit', (code, signal) => {
      this.exited = true
      const err = new Error(`${this.name} exited (${signal ?? code})${stderr === '' ? '' : ': ' + stderr.trim().split('\n').slice(-3).join(' | ')}`)
      for (const p of this.#pending.values()) p.reject(err)
      this.#pending.clear()
    })
  }

  /** Sends a command and waits (bounded) for its reply. */
  async request<T> (body: CommandBody, timeoutMs = 15_000): Promise<T> {
    if (this.exited) throw new Error(`${this.name} has exited`)
    const reqId = ++this.#reqId
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(reqId)
        reject(new Error(`${this.name}: no reply to ${body.cmd} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(reqId, {
        resolve: v => { clearTimeout(timer); resolve(v as T) },
        reject: e => { clearTimeout(timer); reject(e) }
      })
      this.child.send({ ...body, reqId } as ScheduleCommand)
    })
  }

  kill (): void {
    if (!this.exited) {
      try { this.child.kill('SIGKILL') } catch {}
    }
  }

  /** Graceful stop (bounded), then SIGKILL whatever is left. */
  async stop (timeoutMs = 10_000): Promise<void> {
    if (this.exited) return
    await this.request({ cmd: 'stop' }, timeoutMs).catch(() => {})
    await pollUntil(() => this.exited, 3000)
    this.kill()
    await pollUntil(() => this.exited, 3000)
  }
}
