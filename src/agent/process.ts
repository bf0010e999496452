import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { StringDecoder } from 'node:string_decoder'
import type { Task } from '../crdt/schema.ts'

/**
 * Child-process helpers shared by the agents that run an external program
 * (`claude`, `command`): each run is started in its own process group so that
 * everything it starts (tools, test runners, dev servers) can be killed with it.
 */

export interface GroupRunInit {
  file: string
  args: string[]
  cwd?: string
  env: NodeJS.ProcessEnv
  /** Written to the child's stdin, which is then closed. */
  stdin: string
  /** Aborting kills the whole process group: SIGTERM, then SIGKILL after `killGraceMs`. */
  signal: AbortSignal
  /** Grace between SIGTERM and SIGKILL (default 2000 ms). */
  killGraceMs?: number
  /** Called with every complete stdout line as it arrives (without the newline). */
  onStdoutLine?: (line: string) => void
  /** Called with every raw stdout chunk as it arrives (for transcripts). */
  onStdoutChunk?: (chunk: Buffer) => void
  /** Called with every complete stderr line as it arrives. */
  onStderrLine?: (line: string) => void
  /** How many of the last stderr/stdout lines to keep for error messages (default 20). */
  tailLines?: number
}

export interface GroupRunHandle {
  /** Resolves once the child exited and its process group is gone (or SIGKILLed). */
  done: Promise<GroupRunResult>
  /** The child's pid (also its process-group id), undefined if it could not start. */
  pid: number | undefined
  /** Kills the group (SIGTERM, then SIGKILL after the grace) for a reason of the caller's own. */
  kill: (reason: string) => void
}

export interface GroupRunResult {
  pid: number | undefined
  /** Exit code, null if killed by a signal or never started. */
  code: number | null
  /** The signal that ended the child, if any. */
  exitSignal: NodeJS.Signals | null
  /** Set if the child could not be started at all (ENOENT, EACCES, bad cwd). */
  spawnError: Error | null
  /** True if the run was ended through `init.signal`. */
  aborted: boolean
  /** Set if the run was ended through `handle.kill(reason)`. */
  killedFor: string | null
  stderrTail: string[]
  stdoutTail: string[]
}

/** Process groups still running, killed with SIGKILL if this process exits first. */
const liveGroups = new Set<number>()

/** Told of every process group a run starts and of its end (a node records them in its data dir). */
export interface GroupObserver {
  started: (pgid: number) => void
  ended: (pgid: number) => void
  /** Variables every run's environment gets (a mark its processes carry, whatever group they move to). */
  env?: Readonly<Record<string, string>>
}
let observer: GroupObserver | null = null

/** Installs the observer of process groups (one per process; null removes it). */
export function observeGroups (o: GroupObserver | null): void {
  observer = o
}
let exitHookInstalled = false
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const pgid of liveGroups) killGroup(pgid, 'SIGKILL')
  })
}

/** Sends `sig` to every process of group `pgid`; false if the group no longer exists. */
export function killGroup (pgid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, sig)
    return true
  } catch {
    return false
  }
}

/** True while some process (zombies included) is still in group `pgid`. */
export function groupExists (pgid: number): boolean {
  return killGroup(pgid, 0)
}

/**
 * Starts `file args` with no shell, in a new process group (`detached`), feeds
 * it `stdin`, streams its output line by line, and settles once it has exited.
 * Whatever it left running in its group when it exits (or is aborted) is killed
 * too: a run owns every process it started. Never rejects.
 */
export function runInGroup (init: GroupRunInit): GroupRunHandle {
  installExitHook()
  const grace = init.killGraceMs ?? 2000
  const tailMax = init.tailLines ?? 20
  const stderrTail: string[] = []
  const stdoutTail: string[] = []
  const pushTail = (tail: string[], line: string): void => {
    tail.push(line.length > 2000 ? line.slice(0, 2000) + '…' : line)
    if (tail.length > tailMax) tail.shift()
  }

  let killedFor: string | null = null
  let aborted = false
  let killTimer: NodeJS.Timeout | null = null
  let exited = false

  let child: ReturnType<typeof spawn>
  try {
    child = spawn(init.file, init.args, {
      cwd: init.cwd,
      env: observer?.env !== undefined ? { ...init.env, ...observer.env } : init.env,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true
    })
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    return {
      pid: undefined,
      kill: () => {},
      done: Promise.resolve({ pid: undefined, code: null, exitSignal: null, spawnError: e, aborted: false, killedFor: null, stderrTail, stdoutTail })
    }
  }
  const pid = child.pid
  if (pid !== undefined) {
    liveGroups.add(pid)
    try { observer?.started(pid) } catch {}
  }

  const terminate = (): void => {
    if (pid === undefined || killTimer !== null) return
    killGroup(pid, 'SIGTERM')
    killTimer = setTimeout(() => { killGroup(pid, 'SIGKILL') }, grace)
    killTimer.unref()
  }
  const onAbort = (): void => {
    if (exited) return
    aborted = true
    terminate()
  }

  const done = new Promise<GroupRunResult>(resolve => {
    let spawnError: Error | null = null
    let code: number | null = null
    let exitSignal: NodeJS.Signals | null = null

    const stdoutDone = pipeLines(child.stdout!, line => {
      pushTail(stdoutTail, line)
      init.onStdoutLine?.(line)
    }, init.onStdoutChunk)
    const stderrDone = pipeLines(child.stderr!, line => {
      pushTail(stderrTail, line)
      init.onStderrLine?.(line)
    })

    child.stdin!.on('error', () => { /* EPIPE: the child did not read its stdin; its exit tells the rest */ })
    child.stdin!.end(init.stdin)

    let settled = false
    const finish = async (): Promise<void> => {
      if (settled) return
      settled = true
      init.signal.removeEventListener('abort', onAbort)
      if (pid !== undefined) {
        // Leftovers in the group (background tools, grandchildren): TERM, then KILL.
        if (groupExists(pid)) {
          terminate()
          const deadline = Date.now() + grace + 1000
          while (groupExists(pid) && !onlyZombies(pid) && Date.now() < deadline) await delay(25)
          if (groupExists(pid)) killGroup(pid, 'SIGKILL')
        }
        if (killTimer !== null) clearTimeout(killTimer)
        liveGroups.delete(pid)
        try { observer?.ended(pid) } catch {}
      }
      // A process that left the group (setsid) may still hold the pipes open: bound the wait.
      const streams = Promise.all([stdoutDone, stderrDone])
      const timeout = delay(1000).then(() => 'timeout' as const)
      if (await Promise.race([streams, timeout]) === 'timeout') {
        child.stdout?.destroy()
        child.stderr?.destroy()
        await streams
      }
      resolve({ pid, code, exitSignal, spawnError, aborted, killedFor, stderrTail, stdoutTail })
    }

    child.on('error', err => {
      // A spawn failure (ENOENT, EACCES, missing cwd) leaves no pid and no 'exit';
      // other errors (a failed kill) are followed by 'exit' as usual.
      if (pid === undefined && !exited) {
        // Node reports a missing cwd as ENOENT of the executable: say which it was.
        spawnError = init.cwd !== undefined && !existsSync(init.cwd) ? new Error(`working directory ${init.cwd} does not exist (${err.message})`) : err
        exited = true
        void finish()
      }
    })
    child.once('exit', (c, s) => {
      exited = true
      code = c
      exitSignal = s
      void finish()
    })
  })

  if (init.signal.aborted) onAbort()
  else init.signal.addEventListener('abort', onAbort, { once: true })

  return {
    pid,
    done,
    kill: (reason: string) => {
      if (exited || killedFor !== null) return
      killedFor = reason
      terminate()
    }
  }
}

/** Splits a stream into lines as data arrives (only the current partial line is buffered). */
function pipeLines (stream: NodeJS.ReadableStream, onLine: (line: string) => void, onChunk?: (chunk: Buffer) => void): Promise<void> {
  return new Promise(resolve => {
    const decoder = new StringDecoder('utf8')
    let partial = ''
    const emit = (text: string): void => {
      partial += text
      let nl = partial.indexOf('\n')
      while (nl !== -1) {
        let line = partial.slice(0, nl)
        if (line.endsWith('\r')) line = line.slice(0, -1)
        partial = partial.slice(nl + 1)
        safe(() => { onLine(line) })
        nl = partial.indexOf('\n')
      }
    }
    stream.on('data', (chunk: Buffer) => {
      if (onChunk !== undefined) safe(() => { onChunk(chunk) })
      emit(decoder.write(chunk))
    })
    let ended = false
    const end = (): void => {
      if (ended) return
      ended = true
      emit(decoder.end())
      if (partial.length > 0) {
        const last = partial
        partial = ''
        safe(() => { onLine(last) })
      }
      resolve()
    }
    stream.on('end', end)
    stream.on('close', end)
    stream.on('error', end)
  })
}

/** Callbacks (progress listeners) must not break the pipe reader. */
function safe (fn: () => void): void {
  try { fn() } catch { /* a throwing listener is its own problem */ }
}

/**
 * True if every process left in group `pgid` is a zombie (dead, waiting for a
 * reaper that may never come in a container whose init does not reap). Reads
 * /proc where available; elsewhere assumes live processes remain.
 */
function onlyZombies (pgid: number): boolean {
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      let stat: string
      try { stat = readFileSync(`/proc/${entry}/stat`, 'utf8') } catch { continue }
      // pid (comm) state ppid pgrp ...: comm may contain spaces and parens, split after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(rest[2]) === pgid && rest[0] !== 'Z' && rest[0] !== 'X') return false
    }
    return true
  } catch {
    return false
  }
}

function delay (ms: number): Promise<void> {
  return new Promise(resolve => { setTimeout(resolve, ms) })
}

/**
 * Environment variables that hold the mesh's secrets (the join token, the swarm
 * key): never passed to agents, `--setup` or `--verify`, which run code the node
 * does not control.
 */
export const SECRET_ENV = ['MESHWORK_JOIN', 'MESHWORK_SWARM_KEY'] as const

/**
 * The base environment of anything a node runs for a task (agents, `--setup`,
 * `--verify`): this process's environment minus the mesh's secrets and minus
 * every other MESHWORK_* setting of the node itself (a task's own MESHWORK_*
 * variables are added by the caller).
 */
export function agentEnv (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('MESHWORK_') || (SECRET_ENV as readonly string[]).includes(k)) continue
    out[k] = v
  }
  return out
}

/** The environment every agent kind gets (`MESHWORK_TASK_ID`, `MESHWORK_TASK_TITLE`, `MESHWORK_NODE`). */
export function meshworkEnv (task: Task, nodeName: string, peerId: string, attempt: number): Record<string, string> {
  return {
    MESHWORK_TASK_ID: task.id,
    MESHWORK_TASK_TITLE: task.title,
    MESHWORK_NODE: nodeName.length > 0 ? nodeName : peerId,
    MESHWORK_PEER_ID: peerId,
    MESHWORK_ATTEMPT: String(attempt)
  }
}

/** The text an agent reads on stdin: the task prompt, then meshwork's context. */
export function promptText (task: Task, context: string | undefined): string {
  return context !== undefined && context.length > 0 ? `${task.prompt}\n\n${context}` : task.prompt
}

/** The abort reason as text (`AbortSignal.reason` is usually an Error). */
export function abortReason (signal: AbortSignal): string {
  const r: unknown = signal.reason
  if (r instanceof Error) return r.message
  if (typeof r === 'string') return r
  return 'aborted'
}

/** Ends an error text with the last lines of a stream, if any. */
export function withTail (message: string, label: string, tail: string[], max = 10): string {
  const lines = tail.filter(l => l.trim().length > 0).slice(-max)
  return lines.length === 0 ? message : `${message}; last ${label} lines:\n${lines.join('\n')}`
}
