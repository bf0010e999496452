import { createHash } from 'node:crypto'
import { realpath, writeFile, rename } from 'node:fs/promises'
import { inspectRepo } from '../node/exec.ts'
import { homedir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { MeshNode } from '../node/mesh-node.ts'
import { DEFAULT_STOP_GRACE_MS, DEFAULT_TASK_TIMEOUT_MS } from '../scheduler/scheduler.ts'
import { simAgent } from '../agent/sim.ts'
import { commandAgent } from '../agent/command.ts'
import { claudeAgent, findExecutable } from '../agent/claude.ts'
import type { Agent } from '../agent/types.ts'
import { Worker } from '../node/worker.ts'
import { DEFAULT_LISTEN, DEFAULT_DEAD_AFTER_MS, DEFAULT_SUSPECT_AFTER_MS } from '../node/constants.ts'
import { createLogger, LOG_LEVELS, type LogLevel, type Logger } from '../util/logger.ts'
import { UsageError } from '../util/errors.ts'
import { parseDuration } from '../util/wait.ts'
import { CONNECTION_OPTIONS, durationOpt, resolveConnection } from './connection.ts'
import { flag, int, list, str, type Command } from './command.ts'
import { NodeMetrics, parseMetricsAddr, serveMetrics } from '../node/metrics.ts'
import { incompatibility, agentVersion as agentVersion_ } from '../node/version.ts'
import { MEMBERS_PROTOCOL } from '../node/constants.ts'

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
  if (v === undefined) return DEFAULT_TASK_TIMEOUT_MS
  if (v.trim().toLowerCase() === 'none') return null
  const ms = parseDuration(v)
  if (ms === null) throw new UsageError(`--task-timeout must be a duration such as 90s, 20m or 2h (or 0/none for no limit), got "${v}".`)
  return ms === 0 ? null : ms
}

function formatTimeout (ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : `${ms / 1000}s`
}

/**
 * Watches the peers this node identifies. A bootstrap peer that speaks meshwork
 * only in protocol versions this node does not (an older or newer meshwork that
 * cannot work with this one), while no compatible node is connected, means this
 * node cannot join: `failed` rejects with a usage error in one line. Other
 * incompatible peers are logged once each.
 */
function watchVersions (node: MeshNode, bootstrap: string[], log: Logger): { failed: Promise<never> } {
  const bootIds = new Set(bootstrap.map(a => /\/p2p\/([^/]+)$/.exec(a)?.[1]).filter((x): x is string => x !== undefined))
  const compatible = new Set<string>()
  const warned = new Set<string>()
  let fail: (err: Error) => void = () => {}
  const failed = new Promise<never>((_resolve, reject) => { fail = reject })
  failed.catch(() => {})
  node.host.addEventListener('peer:identify', evt => {
    const { peerId, protocols, agentVersion } = evt.detail
    const id = peerId.toString()
    if (!protocols.some(p => p.startsWith('/meshwork/'))) return
    const why = incompatibility(protocols)
    if (why === null) { if (protocols.includes(MEMBERS_PROTOCOL)) compatible.add(id); return }
    const theirs = agentVersion ?? 'an unknown meshwork version'
    if (bootIds.has(id) && compatible.size === 0) {
      fail(new UsageError(`this node runs ${agentVersion_()} and the mesh node ${id} runs ${theirs}, which speaks ${why}: they cannot work together. Install the mesh's meshwork version on this machine (or upgrade the mesh one node at a time) and start again.`))
    } else if (!warned.has(id)) {
      warned.add(id)
      log.warn('peer:incompatible', { peer: id, version: theirs, protocols: why })
    }
  })
  return { failed }
}

/** Tasks this node finished whose branches the leader has not merged yet (it may be the only holder). */
function unmergedBranches (node: MeshNode): string[] {
  return [...node.board.snapshot().tasks.values()].filter(t => t.node === node.peerId && (t.state === 'done' || t.state === 'merging')).map(t => t.id)
}

/**
 * Drains this node: advertises no slots and claims nothing more, lets running
 * agents finish for up to `graceMs` and hands the rest back, waits (up to
 * `graceMs` again) until the leader has merged what it finished, so no branch
 * is held only here, then leaves the mesh.
 */
async function drainNode (node: MeshNode, worker: Worker, graceMs: number, log: Logger): Promise<void> {
  log.info('node:draining', { graceMs, running: worker.scheduler?.busy() ?? [] })
  node.slots = 0
  await worker.scheduler?.stop(graceMs)
  const deadline = Date.now() + graceMs
  while (unmergedBranches(node).length > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 250))
  const left = unmergedBranches(node)
  if (left.length > 0) log.warn('node:drain-unmerged', { tasks: left, note: 'leaving before the leader merged these tasks; their branches are on this node only until it collects them' })
  await worker.stop(0)
  await node.stop()
  log.info('node:drained', { peer: node.peerId })
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
    setup: { type: 'string', arg: 'CMD', description: 'Run in each new worktree before the agent starts; killed with what it started on cancel or timeout; a failing setup releases the task without using an attempt.' },
    'no-leader': { type: 'boolean', description: 'Never become merge leader.' },
    push: { type: 'string', arg: 'REMOTE', description: 'As leader, push main to REMOTE (a remote name, URL or path) after each advance; never forced: a remote that moved is reported (status), not overwritten.' },
    'suspect-after': { type: 'string', arg: 'DURATION', default: `${DEFAULT_SUSPECT_AFTER_MS / 1000}s`, description: 'A silent peer is suspect after this long.' },
    'dead-after': { type: 'string', arg: 'DURATION', default: `${DEFAULT_DEAD_AFTER_MS / 1000}s`, description: 'A silent peer is dead after this long.' },
    grace: { type: 'string', arg: 'DURATION', default: '30s', description: 'On SIGINT/SIGTERM, how long running agents may finish before their tasks are released.' },
    metrics: { type: 'string', arg: 'ADDR', description: 'Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (names prefixed meshwork_).' },
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
    const metricsAddr = str(opts, 'metrics')
    if (metricsAddr !== undefined) parseMetricsAddr(metricsAddr)
    const metrics = metricsAddr !== undefined ? new NodeMetrics() : null
    const baseLog = createLogger('meshwork', { level })
    // metrics count the events the node logs, at every level
    const log = metrics !== null ? metrics.tap(baseLog) : baseLog
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
    metrics?.attach(node)
    const mismatch = watchVersions(node, conn.bootstrap, log)
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
    const worker = new Worker({ node, agent: agentImpl, repo, dataDir, branch: str(opts, 'branch') ?? 'main', slots, hasBootstrap: conn.bootstrap.length > 0, logger: log, taskTimeoutMs, ...(setup !== undefined ? { setup } : {}), ...(verify !== undefined ? { verify } : {}), ...(push !== undefined ? { push } : {}) })
    try {
      await Promise.race([worker.start(), mismatch.failed])
    } catch (err) {
      await worker.stop(0)
      await node.stop()
      throw err
    }
    let metricsUrl: string | undefined
    if (metrics !== null && metricsAddr !== undefined) {
      try {
        metricsUrl = (await serveMetrics(metrics, metricsAddr, log)).url
      } catch (err) {
        await worker.stop(0)
        await node.stop()
        throw err
      }
    }
    const facts = { peerId: node.peerId, addrs: node.addrs(), join: node.joinToken(), pid: process.pid, ...(metricsUrl !== undefined ? { metrics: metricsUrl } : {}) }
    const tmp = join(dataDir, 'node.json.tmp')
    await writeFile(tmp, JSON.stringify(facts, null, 2) + '\n', { mode: 0o600 })
    await rename(tmp, join(dataDir, 'node.json'))
    process.stdout.write([
      `meshwork node ${node.name} started in mesh ${node.meshId}`,
      `peerId ${facts.peerId}`,
      ...facts.addrs.map(a => `addr   ${a}`),
      `join   ${facts.join}`,
      `data   ${dataDir}`,
      ...(metricsUrl !== undefined ? [`metrics ${metricsUrl}`] : []),
      ''
    ].join('\n'))
    log.info('node:started', { peer: facts.peerId, name: node.name, slots, repo, data: dataDir, bootstrap: conn.bootstrap.length, noLeader: flag(opts, 'no-leader'), taskTimeoutMs })

    await new Promise<void>((resolveStop, rejectStop) => {
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
          await node.stop()
        })().then(resolveStop, resolveStop)
      }
      process.on('SIGINT', () => { onSignal('SIGINT') })
      process.on('SIGTERM', () => { onSignal('SIGTERM') })
      // `meshwork drain`: a request on this node's board record (made after this start) takes it out
      const onBoard = (): void => {
        const rec = node.board.snapshot().nodes.get(node.peerId as never)
        if (stopping || rec?.drainAt == null || rec.drainAt < node.startedAt) return
        stopping = true
        node.removeEventListener('board:update', onBoard)
        void drainNode(node, worker, graceMs, log).then(resolveStop, resolveStop)
      }
      node.addEventListener('board:update', onBoard)
      onBoard()
      // a bootstrap peer of an incompatible version: this node cannot join; stop and exit 2
      mismatch.failed.catch((err: unknown) => {
        if (stopping) return
        stopping = true
        void (async () => { await worker.stop(0); await node.stop() })().finally(() => { rejectStop(err) })
      })
    })
    log.info('node:stopped', { peer: facts.peerId })
    return 0
  }
}
