import { createHash } from 'node:crypto'
import { realpath, writeFile, rename } from 'node:fs/promises'
import { inspectRepo } from '../node/exec.ts'
import { homedir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { MeshNode } from '../node/mesh-node.ts'
import { DEFAULT_STOP_GRACE_MS, DEFAULT_TASK_TIMEOUT_MS } from '../scheduler/scheduler.ts'
import { DEFAULT_VERIFY_TIMEOUT_MS } from '../git/merge.ts'
import { simAgent } from '../agent/sim.ts'
import { commandAgent } from '../agent/command.ts'
import { claudeAgent, findExecutable } from '../agent/claude.ts'
import type { Agent } from '../agent/types.ts'
import { Worker } from '../node/worker.ts'
import { RunGroups } from '../node/run-groups.ts'
import { DEFAULT_LISTEN, DEFAULT_DEAD_AFTER_MS, DEFAULT_SUSPECT_AFTER_MS } from '../node/constants.ts'
import { createLogger, LOG_LEVELS, type LogLevel } from '../util/logger.ts'
import { UsageError } from '../util/errors.ts'
import { parseDuration } from '../util/wait.ts'
import { CONNECTION_OPTIONS, durationOpt, resolveConnection } from './connection.ts'
import { flag, int, list, str, type Command } from './command.ts'

/** The node settings meshwork passes to agents (used by the execution layer). */
export const AGENT_KINDS = ['claude', 'command', 'sim'] as const

/** Default data dir: one per repository under the user's state directory, never inside the working tree. */
export async function defaultDataDir (repo: string): Promise<string> {
  const abs = await realpath(repo).catch(() => resolve(repo))
  const id = `${basename(abs) || 'repo'}-${createHash('sha256').update(abs).digest('hex').slice(0, 8)}`
  const state = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state')
  return join(state, 'meshwork', id)
}

export function logLevelOpt (v: string | undefined): LogLevel {
  if (v === undefined) return 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${v}".`)
  return v as LogLevel
}

/** `--task-timeout`: a duration, or `0`/`none` for no limit (null). */
export function taskTimeoutOpt (v: string | undefined): number | null {
  return limitOpt('--task-timeout', v, DEFAULT_TASK_TIMEOUT_MS)
}

/** `--verify-timeout`: a duration, or `0`/`none` for no limit (null). */
export function verifyTimeoutOpt (v: string | undefined): number | null {
  return limitOpt('--verify-timeout', v, DEFAULT_VERIFY_TIMEOUT_MS)
}

function limitOpt (flagName: string, v: string | undefined, fallback: number): number | null {
  if (v === undefined) return fallback
  if (v.trim().toLowerCase() === 'none') return null
  const ms = parseDuration(v)
  if (ms === null) throw new UsageError(`${flagName} must be a duration such as 90s, 20m or 2h (or 0/none for no limit), got "${v}".`)
  return ms === 0 ? null : ms
}

function formatTimeout (ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : `${ms / 1000}s`
}

export const nodeCommand: Command = {
  name: 'node',
  summary: 'Run a worker node until SIGINT/SIGTERM.',
  usage: 'meshwork node --repo DIR [options]',
  details: [
    'On start the node prints its peer id, its dialable addresses and a join token, and writes them to DATA/node.json.',
    'Give the join token to other nodes (--join TOKEN) so they can find this one. A node whose bootstrap peers are',
    'unreachable keeps running and retrying: it may be the first. On SIGINT/SIGTERM it stops claiming work, lets',
    'running agents finish up to a grace period, releases what is left and announces that it left.'
  ].join('\n'),
  options: {
    repo: { type: 'string', arg: 'DIR', description: 'The node\'s git repository (missing or empty: cloned from the mesh).' },
    data: { type: 'string', arg: 'DIR', description: 'Node state: identity key, board, worktrees, logs. Default: ~/.local/state/meshwork/<repo-id>.' },
    branch: { type: 'string', arg: 'NAME', default: 'main', description: 'The main branch.' },
    listen: { type: 'string', arg: 'MULTIADDR', multiple: true, default: DEFAULT_LISTEN, description: 'Address to listen on.' },
    name: { type: 'string', arg: 'NAME', description: 'A human label shown in status and the TUI (default: host name).' },
    slots: { type: 'string', arg: 'N', default: '1', description: 'Concurrent agent runs.' },
    agent: { type: 'string', arg: 'KIND', default: 'claude', description: 'Agent to run tasks with: claude, command or sim.' },
    'agent-cmd': { type: 'string', arg: 'CMD', description: 'Shell command for --agent command (prompt on stdin).' },
    'claude-bin': { type: 'string', arg: 'PATH', env: 'MESHWORK_CLAUDE_BIN', description: 'The claude executable.' },
    'permission-mode': { type: 'string', arg: 'MODE', default: 'acceptEdits', description: 'Claude permission mode.' },
    'allowed-tools': { type: 'string', arg: 'RULES', description: 'Claude allowed tools, comma separated, e.g. "Bash(git *),Bash(npm test)".' },
    model: { type: 'string', arg: 'NAME', description: 'Claude model.' },
    'max-turns': { type: 'string', arg: 'N', description: 'Claude max turns per run.' },
    'max-budget-usd': { type: 'string', arg: 'X', description: 'Claude budget per run in USD; a run that reaches it ends its task failed at once (no retry). No default.' },
    'task-timeout': { type: 'string', arg: 'DURATION', default: formatTimeout(DEFAULT_TASK_TIMEOUT_MS), description: 'Wall-clock limit of a run (--setup and agent) for tasks whose plan gives no timeout, e.g. 90s, 20m, 2h; 0 or none: no limit.' },
    verify: { type: 'string', arg: 'CMD', description: 'Check run by the merge leader on each candidate merge before main advances.' },
    'verify-timeout': { type: 'string', arg: 'DURATION', default: formatTimeout(DEFAULT_VERIFY_TIMEOUT_MS), description: 'A --verify still running then is killed with its process group and counts as failed (with its output so far); 0 or none: no limit. Cancel of the task, a leader change and node stop kill it too.' },
    setup: { type: 'string', arg: 'CMD', description: 'Run in each new worktree before the agent starts; killed with what it started on cancel or timeout; a failing setup releases the task without using an attempt.' },
    'no-leader': { type: 'boolean', description: 'Never become merge leader.' },
    push: { type: 'string', arg: 'REMOTE', description: 'As leader, push main to REMOTE (a remote name, URL or path) after each advance; never forced: a remote that moved is reported (status), not overwritten.' },
    'suspect-after': { type: 'string', arg: 'DURATION', default: `${DEFAULT_SUSPECT_AFTER_MS / 1000}s`, description: 'A silent peer is suspect after this long.' },
    'dead-after': { type: 'string', arg: 'DURATION', default: `${DEFAULT_DEAD_AFTER_MS / 1000}s`, description: 'A silent peer is dead after this long.' },
    grace: { type: 'string', arg: 'DURATION', default: '30s', description: 'On SIGINT/SIGTERM, how long running agents may finish before their tasks are released.' },
    'log-level': { type: 'string', arg: 'LEVEL', default: 'info', description: 'debug, info, warn, error or silent.' },
    ...CONNECTION_OPTIONS
  },
  run: async (opts) => {
    const repoOpt = str(opts, 'repo')
    if (repoOpt === undefined) throw new UsageError('meshwork node needs --repo DIR: the git repository this node works in (a missing or empty DIR is cloned from the mesh).')
    const agent = str(opts, 'agent') ?? 'claude'
    if (!(AGENT_KINDS as readonly string[]).includes(agent)) throw new UsageError(`--agent must be one of ${AGENT_KINDS.join(', ')}, got "${agent}".`)
    if (agent === 'command' && str(opts, 'agent-cmd') === undefined) throw new UsageError('--agent command needs --agent-cmd "CMD": the shell command that runs a task (prompt on stdin).')
    for (const n of ['max-turns']) if (str(opts, n) !== undefined) int(opts, n, 1)
    const budget = str(opts, 'max-budget-usd')
    if (budget !== undefined && !(Number(budget) > 0)) throw new UsageError(`--max-budget-usd must be a positive number, got "${budget}".`)
    const slots = int(opts, 'slots', 1, 0)
    const taskTimeoutMs = taskTimeoutOpt(str(opts, 'task-timeout'))
    const verifyTimeoutMs = verifyTimeoutOpt(str(opts, 'verify-timeout'))
    const claudeBin = str(opts, 'claude-bin')
    if (agent === 'claude') {
      const bin = claudeBin ?? 'claude'
      if (await findExecutable(bin) === null) {
        throw new UsageError(claudeBin !== undefined
          ? `--agent claude: --claude-bin ${claudeBin} is not an executable file. Point --claude-bin (env MESHWORK_CLAUDE_BIN) at the claude CLI, or use --agent command|sim.`
          : '--agent claude (the default) needs the claude CLI, and there is no `claude` on PATH. Install Claude Code (npm install -g @anthropic-ai/claude-code), pass --claude-bin PATH (env MESHWORK_CLAUDE_BIN), or use --agent command|sim.')
      }
    }
    const suspectAfterMs = durationOpt(opts, 'suspect-after', DEFAULT_SUSPECT_AFTER_MS)
    const deadAfterMs = durationOpt(opts, 'dead-after', DEFAULT_DEAD_AFTER_MS)
    if (deadAfterMs < suspectAfterMs) throw new UsageError('--dead-after must be at least --suspect-after.')
    const conn = await resolveConnection(opts, false)
    const level = logLevelOpt(str(opts, 'log-level'))
    const log = createLogger('meshwork', { level })
    if (conn.insecure) log.warn('mesh:insecure', { note: 'running without a private swarm key: anyone who can reach this node can join the mesh' })

    const repo = resolve(repoOpt)
    await inspectRepo(repo, str(opts, 'branch') ?? 'main')
    const dataDir = resolve(str(opts, 'data') ?? await defaultDataDir(repo))
    const listen = list(opts, 'listen')
    const node = new MeshNode({
      role: 'node',
      swarmKey: conn.key,
      dataDir,
      listen: listen.length > 0 ? listen : [DEFAULT_LISTEN],
      bootstrap: conn.bootstrap,
      name: str(opts, 'name') ?? (await import('node:os')).hostname(),
      slots,
      eligible: !flag(opts, 'no-leader'),
      suspectAfterMs,
      deadAfterMs,
      logger: log
    })
    await node.start()
    // no run outlives this node: leftovers of an earlier life are killed, a watchdog covers kill -9
    const runGroups = new RunGroups(dataDir, log)
    runGroups.start()
    const graceMs = durationOpt(opts, 'grace', DEFAULT_STOP_GRACE_MS)
    const nodeName = node.name
    const allowed = str(opts, 'allowed-tools')
    const maxTurns = str(opts, 'max-turns')
    const model = str(opts, 'model')
    const agentImpl: Agent = agent === 'sim'
      ? simAgent()
      : agent === 'command'
        ? commandAgent({ cmd: str(opts, 'agent-cmd') as string, nodeName })
        : claudeAgent({
          dataDir,
          nodeName,
          permissionMode: str(opts, 'permission-mode') ?? 'acceptEdits',
          ...(claudeBin !== undefined ? { bin: claudeBin } : {}),
          ...(allowed !== undefined ? { allowedTools: allowed.split(',').map(s => s.trim()).filter(s => s !== '') } : {}),
          ...(model !== undefined ? { model } : {}),
          ...(maxTurns !== undefined ? { maxTurns: Number(maxTurns) } : {}),
          ...(budget !== undefined ? { maxBudgetUsd: Number(budget) } : {})
        })
    const setup = str(opts, 'setup')
    const verify = str(opts, 'verify')
    const pushOpt = str(opts, 'push')
    // a path is git's relative to --repo (where git push runs): make it the caller's
    const push = pushOpt !== undefined && /^(\.{1,2}\/|\/|\.{1,2}$)/.test(pushOpt) ? resolve(pushOpt) : pushOpt
    const worker = new Worker({ node, agent: agentImpl, repo, dataDir, branch: str(opts, 'branch') ?? 'main', slots, hasBootstrap: conn.bootstrap.length > 0, logger: log, taskTimeoutMs, verifyTimeoutMs, ...(setup !== undefined ? { setup } : {}), ...(verify !== undefined ? { verify } : {}), ...(push !== undefined ? { push } : {}) })
    try {
      await worker.start()
    } catch (err) {
      await node.stop()
      throw err
    }
    const facts = { peerId: node.peerId, addrs: node.addrs(), join: node.joinToken(), pid: process.pid }
    const tmp = join(dataDir, 'node.json.tmp')
    await writeFile(tmp, JSON.stringify(facts, null, 2) + '\n', { mode: 0o600 })
    await rename(tmp, join(dataDir, 'node.json'))
    process.stdout.write([
      `meshwork node ${node.name} started in mesh ${node.meshId}`,
      `peerId ${facts.peerId}`,
      ...facts.addrs.map(a => `addr   ${a}`),
      `join   ${facts.join}`,
      `data   ${dataDir}`,
      ''
    ].join('\n'))
    log.info('node:started', { peer: facts.peerId, name: node.name, slots, repo, data: dataDir, bootstrap: conn.bootstrap.length, noLeader: flag(opts, 'no-leader'), taskTimeoutMs })

    await new Promise<void>(resolveStop => {
      let stopping = false
      const onSignal = (sig: string): void => {
        if (stopping) {
          log.warn('node:forced-exit', { signal: sig })
          process.exit(130)
        }
        stopping = true
        log.info('node:stopping', { signal: sig })
        void (async () => {
          await worker.stop(graceMs)
          runGroups.stop()
          await node.stop()
        })().then(resolveStop, resolveStop)
      }
      process.on('SIGINT', () => { onSignal('SIGINT') })
      process.on('SIGTERM', () => { onSignal('SIGTERM') })
    })
    log.info('node:stopped', { peer: facts.peerId })
    return 0
  }
}
