/**
 * The system `ssh` and `scp` as a library: every call is an argument array
 * (never a string for a local shell), non-interactive (`BatchMode=yes`: a host
 * that would ask for a password or a host-key confirmation fails instead of
 * waiting), bounded by a timeout and an `AbortSignal`.
 */
import { spawn } from 'node:child_process'
import { UsageError } from '../util/errors.ts'

/** One host to launch on, as the user wrote it (`user@host` or `host`). */
export interface SshTarget {
  /** What ssh is given: `user@host` or `host`. */
  spec: string
  user: string | null
  /** The host part, for `{host}` placeholders and scp paths. */
  host: string
}

/** How long ssh may take to connect. @default 15 s */
export const SSH_CONNECT_TIMEOUT_S = 15

const TARGET = /^(?:([A-Za-z0-9._][A-Za-z0-9._-]*)@)?([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])$/

/** Parses `user@host`; anything ssh could read as an option or several words is a usage error. */
export function parseTarget (spec: string): SshTarget {
  const m = TARGET.exec(spec)
  if (m === null) throw new UsageError(`"${spec}" is not a host: give user@host or host (a name or an address; a port goes in --ssh-opt Port=2222).`)
  return { spec, user: m[1] ?? null, host: (m[2] as string).replace(/^\[|\]$/g, '') }
}

/** Settings of every ssh and scp call. */
export interface SshSettings {
  /** `-o` options, e.g. `Port=2222`, `StrictHostKeyChecking=accept-new`. */
  options: string[]
  identityFile?: string
}

/** The common arguments of ssh and scp for `settings`. */
export function sshArgs (settings: SshSettings): string[] {
  // ssh keeps the first value it gets for an option: BatchMode is not negotiable, the user's options beat our defaults
  const args = ['-o', 'BatchMode=yes']
  for (const o of settings.options) args.push('-o', o)
  args.push('-o', `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`)
  if (settings.identityFile !== undefined) args.push('-i', settings.identityFile)
  return args
}

/** What one ssh or scp process did. */
export interface SshResult {
  code: number | null
  stdout: string
  stderr: string
}

interface RunOptions {
  input?: string
  timeoutMs: number
  signal?: AbortSignal
  /** Called with each complete line of stdout as it arrives. */
  onLine?: (line: string) => void
}

/** Runs one process to completion; a timeout or an abort kills it (the result then has code null). */
async function runProcess (cmd: string, args: string[], opts: RunOptions): Promise<SshResult> {
  return await new Promise(resolve => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let partial = ''
    let why = ''
    const kill = (reason: string): void => { why = reason; child.kill('SIGKILL') }
    const timer = setTimeout(() => { kill(`timed out after ${Math.round(opts.timeoutMs / 1000)} s`) }, opts.timeoutMs)
    const onAbort = (): void => { kill('aborted') }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    child.stdout.on('data', (c: Buffer) => {
      const text = c.toString()
      stdout += text
      if (opts.onLine === undefined) return
      partial += text
      let nl: number
      while ((nl = partial.indexOf('\n')) >= 0) {
        opts.onLine(partial.slice(0, nl))
        partial = partial.slice(nl + 1)
      }
    })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.stdin.on('error', () => {})
    child.stdin.end(opts.input ?? '')
    const done = (code: number | null, extra = ''): void => {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      resolve({ code: why !== '' ? null : code, stdout, stderr: stderr + extra + (why !== '' ? `\n${cmd} ${why}` : '') })
    }
    child.once('error', err => { done(null, `\ncannot run ${cmd}: ${err.message}`) })
    child.once('close', code => { done(code) })
  })
}

/** Runs `script` with `sh -s` on the target (the script comes on stdin, so nothing of it is on a command line). */
export async function sshScript (target: SshTarget, script: string, settings: SshSettings, opts: Omit<RunOptions, 'input'>): Promise<SshResult> {
  return await runProcess('ssh', [...sshArgs(settings), '--', target.spec, 'sh -s'], { ...opts, input: script })
}

/** Copies a local file to `remotePath` on the target with scp. */
export async function scpTo (target: SshTarget, local: string, remotePath: string, settings: SshSettings, opts: Omit<RunOptions, 'input' | 'onLine'>): Promise<SshResult> {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host
  const dest = `${target.user !== null ? `${target.user}@` : ''}${host}:${remotePath}`
  return await runProcess('scp', [...sshArgs(settings), '-q', '--', local, dest], opts)
}

/** The last non-empty line of an ssh or scp error output, for one-line reports. */
export function lastLine (text: string): string {
  const lines = text.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('Warning: Permanently added'))
  return lines[lines.length - 1] ?? ''
}
