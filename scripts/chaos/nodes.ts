/**
 * The chaos run's `meshwork node` processes: started (on 127.0.0.1, or in a
 * network namespace of their own), SIGKILLed, sent SIGHUP
 * (their --allow files were rewritten), stopped, restarted on the same --data (a new port each life on 127.0.0.1), their JSON
 * logs read incrementally (one file per life). Every child is in the bench
 * child registry, so nothing outlives the run.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, readSync, fstatSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { register } from '../bench/lib/children.ts'

export const BIN = fileURLToPath(new URL('../../bin/meshwork.js', import.meta.url))

export interface LogLine { time: number, level: string, event: string, [k: string]: unknown }
export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface NodeSpec {
  name: string
  repo: string
  data: string
  /** Connection and node options after --repo/--data/--listen/--name. */
  args: string[]
  /** The --listen address. @default /ip4/127.0.0.1/tcp/0 (a new port each life) */
  listen?: string
  /** A command the node is started under, e.g. `ip netns exec NS` (it must exec the node: the pid is the node's). */
  wrap?: string[]
  env: NodeJS.ProcessEnv
  logDir: string
}

export class ChaosNode {
  readonly spec: NodeSpec
  proc: ChildProcess | null = null
  exited: Promise<Exit> = Promise.resolve({ code: null, signal: null })
  exit: Exit | null = null
  lives = 0
  peerId = ''
  addrs: string[] = []
  join = ''
  readonly lines: LogLine[] = []
  #logFiles: Array<{ file: string, offset: number, rest: string }> = []

  constructor (spec: NodeSpec) {
    this.spec = spec
  }

  get name (): string { return this.spec.name }
  get pid (): number { return this.proc?.pid ?? -1 }
  get running (): boolean { return this.proc !== null && this.exit === null }

  /** Starts a new life; resolves once DATA/node.json names this process (bounded). */
  async start (timeoutMs: number): Promise<void> {
    this.lives++
    const file = join(this.spec.logDir, `log-${this.name}-${this.lives}.jsonl`)
    const fd = openSync(file, 'w')
    const args = [BIN, 'node', '--repo', this.spec.repo, '--data', this.spec.data, '--listen', this.spec.listen ?? '/ip4/127.0.0.1/tcp/0', '--name', this.name, ...this.spec.args]
    const wrap = this.spec.wrap ?? []
    const proc = wrap.length > 0
      ? spawn(wrap[0] as string, [...wrap.slice(1), process.execPath, ...args], { env: this.spec.env, stdio: ['ignore', 'ignore', fd] })
      : spawn(process.execPath, args, { env: this.spec.env, stdio: ['ignore', 'ignore', fd] })
    closeSync(fd)
    register(proc)
    this.proc = proc
    this.exit = null
    this.#logFiles.push({ file, offset: 0, rest: '' })
    this.exited = new Promise<Exit>(resolve => {
      proc.once('exit', (code, signal) => { this.exit = { code, signal }; resolve(this.exit) })
      proc.once('error', () => { this.exit = { code: null, signal: null }; resolve(this.exit) })
    })
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const exit = this.#exitNow()
      if (exit !== null) throw new Error(`node ${this.name} exited (${exit.code ?? exit.signal}) before writing node.json:\n${this.tail()}`)
      try {
        const v = JSON.parse(readFileSync(join(this.spec.data, 'node.json'), 'utf8')) as { pid: number, peerId: string, addrs: string[], join: string }
        if (v.pid === proc.pid) { this.peerId = v.peerId; this.addrs = v.addrs; this.join = v.join; return }
      } catch {}
      if (Date.now() > deadline) throw new Error(`node ${this.name} wrote no node.json within ${timeoutMs} ms:\n${this.tail()}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  /** The exit status, read through a method so a wait loop sees it change. */
  #exitNow (): Exit | null { return this.exit }

  /** SIGKILL; resolves once the process is gone. */
  async kill (): Promise<Exit> {
    if (this.exit !== null) return this.exit
    this.proc?.kill('SIGKILL')
    return await this.exited
  }

  /** SIGHUP: the node reloads its --allow file. */
  sighup (): void { if (this.running) this.proc?.kill('SIGHUP') }

  /** SIGTERM (graceful stop); SIGKILL and an error after `timeoutMs`. */
  async stop (timeoutMs: number): Promise<Exit & { forced: boolean }> {
    if (this.exit !== null) return { ...this.exit, forced: false }
    this.proc?.kill('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const r = await Promise.race([this.exited, new Promise<null>(resolve => { timer = setTimeout(() => { resolve(null) }, timeoutMs) })])
    clearTimeout(timer)
    if (r !== null) return { ...r, forced: false }
    return { ...await this.kill(), forced: true }
  }

  /** Reads what the log files gained since the last call. */
  poll (): void {
    for (const f of this.#logFiles) {
      if (!existsSync(f.file)) continue
      const fd = openSync(f.file, 'r')
      try {
        const size = fstatSync(fd).size
        if (size <= f.offset) continue
        const buf = Buffer.alloc(size - f.offset)
        readSync(fd, buf, 0, buf.length, f.offset)
        f.offset = size
        const text = f.rest + buf.toString('utf8')
        const parts = text.split('\n')
        f.rest = parts.pop() ?? ''
        for (const raw of parts) {
          if (!raw.startsWith('{')) continue
          try {
            const v = JSON.parse(raw) as LogLine
            if (typeof v.time === 'number' && typeof v.event === 'string') this.lines.push(v)
          } catch {}
        }
      } finally {
        closeSync(fd)
      }
    }
  }

  events (event: string, since = 0): LogLine[] {
    this.poll()
    return this.lines.filter(l => l.event === event && l.time >= since)
  }

  /** The end of the current life's log, for failure messages. */
  tail (n = 3000): string {
    const f = this.#logFiles.at(-1)
    if (f === undefined) return '(no log)'
    try { return readFileSync(f.file, 'utf8').slice(-n) } catch { return '(no log)' }
  }
}
