import { asPeerId } from '../crdt/schema.ts'
import { writeFile, rename, readdir, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { multiaddr } from '@multiformats/multiaddr'
import { inspectRepo } from '../node/exec.ts'
import { join, resolve } from 'node:path'
import { MeshNode } from '../node/mesh-node.ts'
import { hasSavedBoard } from '../crdt/store.ts'
import { serveStatus } from '../api/status-service.ts'
import { serveFollow } from '../api/follow-service.ts'
import { DEFAULT_STOP_GRACE_MS } from '../scheduler/scheduler.ts'
import { DEFAULT_CHECKPOINT_EVERY_MS, DEFAULT_TASK_TIMEOUT_MS } from '../scheduler/run.ts'
import { credentialFingerprint } from '../agent/claude-args.ts'
import { FORGET_AFTER_MS } from '../scheduler/election.ts'
import { MAIN_LOST_MS } from '../merge/context.ts'
import { DEFAULT_VERIFY_TIMEOUT_MS } from '../git/merge.ts'
import { simAgent } from '../agent/sim.ts'
import { commandAgent } from '../agent/command.ts'
import { claudeAgent, findExecutable } from '../agent/claude.ts'
import type { Agent } from '../agent/types.ts'
import { Worker } from '../node/worker.ts'
import { NodeHealth, PAUSE_BASE_MS } from '../node/health.ts'
import { RunGroups } from '../node/run-groups.ts'
import { DEFAULT_LISTEN, DEFAULT_DEAD_AFTER_MS, DEFAULT_SUSPECT_AFTER_MS } from '../node/constants.ts'
import { createLogger, LOG_LEVELS, type Logger, type LogLevel } from '../util/logger.ts'
import { UsageError, toError } from '../util/errors.ts'
import { parseDuration } from '../util/wait.ts'
import { CONNECTION_OPTIONS, resolveConnection } from './connection.ts'
import { defineCommand, formatDuration, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { NodeMetrics, parseMetricsAddr, serveMetrics } from '../node/metrics.ts'
import { ApprovalService, DEFAULT_APPROVAL_TIMEOUT_MS } from '../node/approvals.ts'
import { defaultDataDir, resolveWorktreesDir } from './data-dir.ts'
import { watchForPeers, watchVersions, withPeerNames } from './node-watch.ts'
import { favourMemoryWhenIdle } from './v8-memory.ts'
import { spawnFromHelper } from '../git/spawner.ts'
import { loadAllowOption, printNodePeerId, reloadAllowOnHangup } from './node-access.ts'

export { defaultDataDir } from './data-dir.ts'
export { NO_PEER_WARN_MS, withPeerNames } from './node-watch.ts'

/** The node settings meshwork passes to agents (used by the execution layer). */
export const AGENT_KINDS = ['claude', 'command', 'sim'] as const


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

/** `--checkpoint-every`: a duration, or 0/none for no checkpoints (0). */
export function checkpointEveryOpt (v: string | undefined): number {
  return limitOpt('--checkpoint-every', v, DEFAULT_CHECKPOINT_EVERY_MS) ?? 0
}

/** A duration option that must be positive (`30s`, `5m`), or `fallback` when absent. */
function positiveDuration (flagName: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback
  const ms = parseDuration(v)
  if (ms === null || ms <= 0) throw new UsageError(`${flagName} must be a positive duration such as 30s or 5m, got "${v}".`)
  return ms
}

function limitOpt (flagName: string, v: string | undefined, fallback: number): number | null {
  if (v === undefined) return fallback
  if (v.trim().toLowerCase() === 'none') return null
  const ms = parseDuration(v)
  if (ms === null) throw new UsageError(`${flagName} must be a duration such as 90s, 20m or 2h (or 0/none for no limit), got "${v}".`)
  return ms === 0 ? null : ms
}

/** Whether `repo` would need a new history: missing, or an empty directory. */
async function repoIsNew (repo: string): Promise<boolean> {
  try {
    return (await readdir(repo)).length === 0
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true
    throw err
  }
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
  node.setSlots(0)
  await worker.scheduler?.stop(graceMs)
  const deadline = Date.now() + graceMs
  while (unmergedBranches(node).length > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 250))
  const left = unmergedBranches(node)
  if (left.length > 0) log.warn('node:drain-unmerged', { tasks: left, note: 'leaving before the leader merged these tasks; their branches are on this node only until it collects them' })
  await worker.stop(0)
  await node.stop()
  log.info('node:drained', { peer: node.peerId })
}

export const NODE_OPTIONS = {
  repo: opt.string({ arg: 'DIR', description: 'The node\'s git repository. Missing or empty with --join/--bootstrap: main is cloned from the mesh. A new history (the first node of a new project) needs --init-repo.' }),
  'init-repo': opt.boolean({ description: 'Start a new history in --repo when it is missing or empty and there is no peer to clone from (the first node of a new project). Without it such a --repo is refused, so a mistyped path never starts a second history.' }),
  data: opt.string({ arg: 'DIR', description: 'Node state: identity key, board, node.json, claude transcripts. Logs go to stderr, not here. Default: ~/.local/state/meshwork/<repo-id>.' }),
  worktrees: opt.string({ arg: 'DIR', description: 'Where task worktrees live; never inside --data (agents must not reach the node\'s keys, token or board). Default: beside the data dir, <data>-worktrees.' }),
  allow: opt.string({ arg: 'FILE', description: 'Peer ids admitted to this node, one a line (# comments): only they (nodes and clients) may connect and change the board. Reloaded on SIGHUP. Default: anyone with the swarm key.' }),
  'print-peer-id': opt.boolean({ description: 'Print the peer id of the node of --data (creating its identity if missing) and exit, e.g. for --allow lists.' }),
  branch: opt.string({ arg: 'NAME', default: 'main', description: 'The main branch.' }),
  listen: opt.list({ arg: 'MULTIADDR', default: [DEFAULT_LISTEN], description: 'Address to listen on.' }),
  name: opt.string({ arg: 'NAME', description: 'A human label shown in status and the TUI (default: host name).' }),
  slots: opt.int({ arg: 'N', default: 1, min: 0, description: 'Concurrent agent runs.' }),
  agent: opt.choice(AGENT_KINDS, { arg: 'KIND', default: 'claude', description: 'Agent to run tasks with: claude, command or sim.' }),
  'agent-cmd': opt.string({ arg: 'CMD', description: 'Shell command for --agent command (prompt on stdin).' }),
  'claude-bin': opt.string({ arg: 'PATH', env: 'MESHWORK_CLAUDE_BIN', description: 'The claude executable.' }),
  'claude-config': opt.string({ arg: 'DIR', description: 'A Claude config dir (e.g. ~/.claude) whose login, settings, agents, commands, skills and CLAUDE.md every run gets a copy of. Default: only the login of CLAUDE_CONFIG_DIR or ~/.claude.' }),
  'credentials-retry': opt.custom<number>({ arg: 'DURATION', default: formatDuration(PAUSE_BASE_MS), parse: v => positiveDuration('--credentials-retry', v, PAUSE_BASE_MS), description: 'When the API refuses the claude credentials, the node pauses this long, then tries one run (doubling on repeats, up to 15m).' }),
  'permission-mode': opt.string({ arg: 'MODE', default: 'acceptEdits', description: 'Claude permission mode.' }),
  'allowed-tools': opt.custom<string[] | undefined>({ arg: 'RULES', description: 'Claude allowed tools, comma separated, e.g. "Bash(git *),Bash(npm test)" (a comma inside a rule\'s parentheses is part of the rule).', parse: v => v === undefined ? undefined : splitRules(v) }),
  model: opt.string({ arg: 'NAME', description: 'Claude model.' }),
  'max-turns': opt.int({ arg: 'N', description: 'Claude max turns per run.' }),
  'max-budget-usd': opt.custom<number | undefined>({
    arg: 'X',
    description: 'Claude budget per run in USD; a run that reaches it ends its task failed at once (no retry). No default.',
    parse: v => {
      if (v === undefined) return undefined
      if (!(Number(v) > 0)) throw new UsageError(`--max-budget-usd must be a positive number, got "${v}".`)
      return Number(v)
    }
  }),
  approvals: opt.boolean({ description: 'Permission requests of claude runs (a tool use that --allowed-tools and --permission-mode do not allow) wait on the board for a human (`meshwork approve`, the TUI inbox) instead of being denied.' }),
  'approval-timeout': opt.duration({ arg: 'DURATION', default: DEFAULT_APPROVAL_TIMEOUT_MS, min: 1000, description: 'With --approvals: a request nobody answers is denied after this long (the run\'s own --task-timeout still counts).' }),
  'task-timeout': opt.custom<number | null>({ arg: 'DURATION', default: formatDuration(DEFAULT_TASK_TIMEOUT_MS), description: 'Wall-clock limit of a run (--setup and agent) for tasks whose plan gives no timeout, e.g. 90s, 20m, 2h; 0 or none: no limit.', parse: v => taskTimeoutOpt(v) }),
  verify: opt.string({ arg: 'CMD', description: 'Check run by the merge leader on each candidate merge before main advances.' }),
  'verify-timeout': opt.custom<number | null>({ arg: 'DURATION', default: formatDuration(DEFAULT_VERIFY_TIMEOUT_MS), description: 'A --verify still running then is killed with its process group and counts as failed (with its output so far); 0 or none: no limit. Cancel of the task, a leader change and node stop kill it too.', parse: v => verifyTimeoutOpt(v) }),
  setup: opt.string({ arg: 'CMD', description: 'Run in each new worktree before the agent starts; killed with what it started on cancel or timeout; a failing setup releases the task without using an attempt.' }),
  'no-leader': opt.boolean({ description: 'Never become merge leader.' }),
  push: opt.string({ arg: 'REMOTE', description: 'As leader, push main to REMOTE (a remote name, URL or path) after each advance; never forced: a remote that moved is reported (status), not overwritten.' }),
  'suspect-after': opt.duration({ arg: 'DURATION', default: DEFAULT_SUSPECT_AFTER_MS, description: 'A silent peer is suspect after this long.' }),
  'checkpoint-every': opt.custom<number>({ arg: 'DURATION', default: formatDuration(DEFAULT_CHECKPOINT_EVERY_MS), description: 'While an agent works, commit its worktree to a checkpoint branch this often (the leader keeps a copy); a run after one lost with its node goes on from the last checkpoint. 0 or none: never.', parse: v => checkpointEveryOpt(v) }),
  'forget-after': opt.duration({ arg: 'DURATION', default: FORGET_AFTER_MS, description: 'Main advances only while a majority of the mesh\'s registered nodes is reachable; a node unreachable this long stops counting (`meshwork forget NODE` does it at once).' }),
  'main-lost-after': opt.duration({ arg: 'DURATION', default: MAIN_LOST_MS, min: 1000, description: 'When the board\'s main is on no live node (its leader died right after publishing it), nodes start no run meanwhile, and after this long the leader puts main back to the last main it has; the tasks merged only into the lost main merge again.' }),
  'dead-after': opt.duration({ arg: 'DURATION', default: DEFAULT_DEAD_AFTER_MS, description: 'A silent peer is dead after this long.' }),
  grace: opt.duration({ arg: 'DURATION', default: DEFAULT_STOP_GRACE_MS, description: 'On SIGINT/SIGTERM, how long running agents may finish before their tasks are released.' }),
  metrics: opt.string({ arg: 'ADDR', description: 'Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (names prefixed meshwork_).' }),
  'log-level': opt.custom<LogLevel>({ arg: 'LEVEL', default: 'info', description: 'debug, info, warn, error or silent.', parse: v => logLevelOpt(v) }),
  ...CONNECTION_OPTIONS
}


/** How often DATA/node.json's join token is refreshed with the live peers' addresses (written only when it changed). @default 5 s */
const JOIN_REFRESH_MS = 5_000

export const nodeCommand = defineCommand({
  name: 'node',
  summary: summaryOf('node'),
  usage: 'meshwork node --repo DIR [--init-repo] [options]',
  details: [
    'On start the node prints its peer id, its dialable addresses and a join token, and writes them to DATA/node.json.',
    'Give the join token to other nodes (--join TOKEN) so they can find this one. A node whose bootstrap peers are',
    'unreachable keeps running and retrying: it may be the first. On SIGINT/SIGTERM it stops claiming work, lets',
    'running agents finish up to a grace period, releases what is left and announces that it left; a second',
    'SIGINT exits at once.'
  ].join('\n'),
  options: NODE_OPTIONS,
  run: async (opts) => {
    if (opts['print-peer-id']) return await printNodePeerId(opts.data, opts.repo)
    const repoOpt = opts.repo
    if (repoOpt === undefined) throw new UsageError('meshwork node needs --repo DIR: the git repository this node works in (a missing or empty DIR is cloned from the mesh; add --init-repo to start a new history there).')
    const agent = opts.agent
    if (agent === 'command' && opts['agent-cmd'] === undefined) throw new UsageError('--agent command needs --agent-cmd "CMD": the shell command that runs a task (prompt on stdin).')
    const slots = opts.slots
    const taskTimeoutMs = opts['task-timeout']
    const claudeBin = opts['claude-bin']
    const verifyTimeoutMs = opts['verify-timeout']
    if (agent === 'claude') {
      const bin = claudeBin ?? 'claude'
      if (await findExecutable(bin) === null) {
        throw new UsageError(claudeBin !== undefined
          ? `--agent claude: --claude-bin ${claudeBin} is not an executable file. Point --claude-bin (env MESHWORK_CLAUDE_BIN) at the claude CLI, or use --agent command|sim.`
          : '--agent claude (the default) needs the claude CLI, and there is no `claude` on PATH. Install Claude Code (npm install -g @anthropic-ai/claude-code), pass --claude-bin PATH (env MESHWORK_CLAUDE_BIN), or use --agent command|sim.')
      }
    }
    const claudeConfig = opts['claude-config']
    if (claudeConfig !== undefined && !(await stat(claudeConfig).then(s => s.isDirectory(), () => false))) {
      throw new UsageError(`--claude-config ${claudeConfig} is not a directory. Point it at a Claude config dir (for example ~/.claude), or leave it out.`)
    }
    if (opts.approvals && agent !== 'claude') throw new UsageError(`--approvals waits on permission requests of claude runs; --agent ${agent} makes none. Drop --approvals, or use --agent claude.`)
    const credentialsRetryMs = opts['credentials-retry']
    const suspectAfterMs = opts['suspect-after']
    const deadAfterMs = opts['dead-after']
    if (deadAfterMs < suspectAfterMs) throw new UsageError('--dead-after must be at least --suspect-after.')
    for (const a of opts.listen) checkListenAddr(a)
    const conn = await resolveConnection(opts, false)
    const branch = opts.branch
    const repo = resolve(repoOpt)
    const hasBootstrap = conn.bootstrap.length > 0
    if (hasBootstrap && opts['init-repo']) {
      throw new UsageError('--init-repo starts a new history, but this node joins a mesh (--join/--bootstrap) and clones main from it. Drop --init-repo, or drop --join/--bootstrap to start a new mesh.')
    }
    // a repository that would have to start a new history: only on request, so a typo in --repo does not fork the project
    if (!hasBootstrap && !opts['init-repo'] && await repoIsNew(repo)) {
      throw new UsageError(`--repo ${repo} ${existsSync(repo) ? 'is empty' : 'does not exist'} and there is no peer to clone it from (no --join or --bootstrap). Check the path; to start a new history there, add --init-repo; to clone the mesh's main, add --join TOKEN.`)
    }
    const metricsAddr = opts.metrics
    if (metricsAddr !== undefined) parseMetricsAddr(metricsAddr)
    const metrics = metricsAddr !== undefined ? new NodeMetrics() : null
    const baseLog = createLogger('meshwork', { level: opts['log-level'] })
    // metrics count the events the node logs, at every level
    const log = metrics !== null ? metrics.tap(baseLog) : baseLog
    // from here on every git process of this node is started by a small helper process (src/git/spawner.ts)
    spawnFromHelper({ onLost: why => { log.warn('git:helper-lost', { error: why, note: 'git processes are started by the node itself from now on (more CPU and event-loop stalls per git process on a busy node); restart the node to get the helper back' }) } })
    if (conn.insecure) log.warn('mesh:insecure', { note: 'running without a private swarm key: anyone who can reach this node can join the mesh' })

    await inspectRepo(repo, branch)
    const dataDir = resolve(opts.data ?? await defaultDataDir(repo))
    const worktreesDir = await resolveWorktreesDir(dataDir, opts.worktrees)
    const allow = await loadAllowOption(opts.allow, log)
    let node: MeshNode | null = null
    // peers by name beside their id, once the board knows the name
    const peerName = (id: string): string | undefined => node?.board.snapshot().nodes.get(asPeerId(id))?.name
    const nodeLog = withPeerNames(log, peerName)
    node = new MeshNode({
      role: 'node',
      swarmKey: conn.key,
      dataDir,
      listen: opts.listen,
      bootstrap: conn.bootstrap,
      name: opts.name ?? (await import('node:os')).hostname(),
      slots,
      eligible: !opts['no-leader'],
      suspectAfterMs,
      deadAfterMs,
      logger: nodeLog,
      ...(allow !== undefined ? { allow } : {})
    })
    // a node that restarts on its board favours memory at once; a joiner once it has taken the mesh's board
    const joining = !await hasSavedBoard(dataDir)
    await node.start()
    const stopFavouring = favourMemoryWhenIdle(node, joining, log)
    // clients ask for the status in one request (`meshwork status`), no board sync needed
    await serveStatus(node, { logger: nodeLog })
    // `submit --wait` follows its plan through a node, without a board replica of its own
    await serveFollow(node, { logger: nodeLog })
    metrics?.attach(node)
    const mesh = node
    const mismatch = watchVersions(mesh, conn.bootstrap, log)
    // no run outlives this node: leftovers of an earlier life are killed, a watchdog covers kill -9
    const runGroups = new RunGroups(dataDir, log)
    runGroups.start()
    const graceMs = opts.grace
    const nodeName = mesh.name
    const budget = opts['max-budget-usd']
    const allowed = opts['allowed-tools']
    const maxTurns = opts['max-turns']
    const model = opts.model
    const approvals = opts.approvals ? new ApprovalService({ node: mesh, timeoutMs: opts['approval-timeout'], logger: nodeLog }) : null
    const agentImpl: Agent = agent === 'sim'
      ? simAgent()
      : agent === 'command'
        ? commandAgent({ cmd: opts['agent-cmd'] as string, nodeName })
        : claudeAgent({
          dataDir,
          nodeName,
          permissionMode: opts['permission-mode'],
          ...(claudeConfig !== undefined ? { configSource: resolve(claudeConfig) } : {}),
          ...(claudeBin !== undefined ? { bin: claudeBin } : {}),
          ...(allowed !== undefined ? { allowedTools: allowed } : {}),
          ...(model !== undefined ? { model } : {}),
          ...(maxTurns !== undefined ? { maxTurns } : {}),
          ...(budget !== undefined ? { maxBudgetUsd: budget } : {}),
          ...(approvals !== null ? { approvals } : {})
        })
    const setup = opts.setup
    const verify = opts.verify
    const pushOpt = opts.push
    // a path is git's relative to --repo (where git push runs): make it the caller's
    const push = pushOpt !== undefined && /^(\.{1,2}\/|\/|\.{1,2}$)/.test(pushOpt) ? resolve(pushOpt) : pushOpt
    // nodes on the same claude credentials share a usage limit (a hash travels, never the secret)
    const credential = agent === 'claude' ? await credentialFingerprint(process.env, claudeConfig !== undefined ? resolve(claudeConfig) : undefined) : undefined
    const worker = new Worker({ node: mesh, agent: agentImpl, ...(credential !== undefined ? { credential } : {}), repo, dataDir, worktreesDir, branch, slots, hasBootstrap, logger: nodeLog, taskTimeoutMs, verifyTimeoutMs, forgetAfterMs: opts['forget-after'], mainLostMs: opts['main-lost-after'], checkpointEveryMs: opts['checkpoint-every'], health: new NodeHealth({ baseMs: credentialsRetryMs }), ...(setup !== undefined ? { setup } : {}), ...(verify !== undefined ? { verify } : {}), ...(push !== undefined ? { push } : {}) })
    try {
      await Promise.race([worker.start(), mismatch.failed])
    } catch (err) {
      await worker.stop(0)
      await mesh.stop()
      throw err
    }
    let metricsUrl: string | undefined
    if (metrics !== null && metricsAddr !== undefined) {
      try {
        metricsUrl = (await serveMetrics(metrics, metricsAddr, log)).url
      } catch (err) {
        await worker.stop(0)
        await mesh.stop()
        throw err
      }
    }
    const facts = { peerId: mesh.peerId, addrs: mesh.addrs(), join: mesh.joinToken(), pid: process.pid, ...(metricsUrl !== undefined ? { metrics: metricsUrl } : {}) }
    const writeFacts = async (): Promise<void> => {
      const tmp = join(dataDir, 'node.json.tmp')
      await writeFile(tmp, JSON.stringify(facts, null, 2) + '\n', { mode: 0o600 })
      await rename(tmp, join(dataDir, 'node.json'))
    }
    // printed before node.json appears: a script that waits for the file finds the lines printed too
    process.stdout.write([
      `meshwork node ${mesh.name} started in mesh ${mesh.meshId}`,
      `peerId ${facts.peerId}`,
      ...facts.addrs.map(a => `addr   ${a}`),
      `join   ${facts.join}`,
      `data   ${dataDir}`,
      `worktrees ${worktreesDir}`,
      ...(metricsUrl !== undefined ? [`metrics ${metricsUrl}`] : []),
      ''
    ].join('\n'))
    await writeFacts()
    // the token in node.json carries live peers' addresses too once they are known: it keeps working while any of them is up
    const refreshFacts = setInterval(() => {
      const token = mesh.joinToken()
      if (token === facts.join) return
      facts.join = token
      void writeFacts().catch(err => { log.warn('node:facts-write-failed', { error: toError(err).message }) })
    }, JOIN_REFRESH_MS)
    refreshFacts.unref()
    log.info('node:started', { peer: facts.peerId, name: mesh.name, slots, repo, data: dataDir, worktrees: worktreesDir, allow: allow?.size ?? null, bootstrap: conn.bootstrap.length, noLeader: opts['no-leader'], taskTimeoutMs })
    const lonely = hasBootstrap ? watchForPeers(mesh, log, conn.bootstrap) : null
    const stopReload = allow !== undefined && opts.allow !== undefined ? reloadAllowOnHangup(opts.allow, allow, mesh, log) : () => {}

    await new Promise<void>((resolveStop, rejectStop) => {
      let stopping = false
      const onSignal = (sig: string): void => {
        if (stopping) {
          log.warn('node:forced-exit', { signal: sig })
          process.exit(130)
        }
        stopping = true
        const running = worker.scheduler?.busy().length ?? 0
        log.info('node:stopping', {
          signal: sig,
          note: running > 0
            ? `no new work; waiting up to ${formatDuration(graceMs)} (--grace) for ${running} running agent run(s) to finish, then releasing their tasks and leaving the mesh; ${sig === 'SIGINT' ? 'press Ctrl-C again' : 'send the signal again'} to exit at once`
            : `no new work; leaving the mesh (nothing is running); ${sig === 'SIGINT' ? 'press Ctrl-C again' : 'send the signal again'} to exit at once`
        })
        if (lonely !== null) clearInterval(lonely)
        clearInterval(refreshFacts)
        void (async () => {
          await worker.stop(graceMs)
          runGroups.stop()
          await mesh.stop()
        })().then(resolveStop, resolveStop)
      }
      process.on('SIGINT', () => { onSignal('SIGINT') })
      process.on('SIGTERM', () => { onSignal('SIGTERM') })
      // `meshwork drain`: a request on this node's board record (made after this start) takes it out
      const onBoard = (): void => {
        const rec = mesh.board.snapshot().nodes.get(mesh.peerId)
        if (stopping || rec?.drainAt == null || rec.drainAt < mesh.startedAt) return
        stopping = true
        mesh.removeEventListener('board:update', onBoard)
        if (lonely !== null) clearInterval(lonely)
        void drainNode(mesh, worker, graceMs, log).then(resolveStop, resolveStop)
      }
      mesh.addEventListener('board:update', onBoard)
      onBoard()
      // a bootstrap peer of an incompatible version: this node cannot join; stop and exit 2
      mismatch.failed.catch((err: unknown) => {
        if (stopping) return
        stopping = true
        void (async () => { await worker.stop(0); await node.stop() })().finally(() => { rejectStop(err) })
      })
    })
    await approvals?.stop()
    stopReload()
    stopFavouring()
    log.info('node:stopped', { peer: facts.peerId })
    return 0
  }
})

/** Refuses a `--listen` address the node could not listen on (exit 2 with the fix), before anything starts. */
export function checkListenAddr (a: string): void {
  let why: string | null = null
  try {
    const names = multiaddr(a).getComponents().map(c => c.name)
    if (!names.includes('tcp')) why = 'no /tcp/<port>'
    else if (names.includes('p2p')) why = 'a listen address names no peer (/p2p/...)'
  } catch (err) {
    why = (err as Error).message
  }
  if (why !== null) throw new UsageError(`bad --listen address "${a}": ${why}. Use an address such as /ip4/0.0.0.0/tcp/4001 (every interface, port 4001) or /ip4/127.0.0.1/tcp/0 (loopback, any free port).`)
}

/**
 * `--allowed-tools` as rules (pure): split at the commas outside parentheses,
 * so `Bash(echo a,b),Read` is two rules, as Claude reads them.
 */
export function splitRules (v: string): string[] {
  const out: string[] = []
  let depth = 0
  let cur = ''
  for (const ch of v) {
    if (ch === '(') depth++
    else if (ch === ')') depth = Math.max(0, depth - 1)
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; continue }
    cur += ch
  }
  out.push(cur)
  return out.map(s => s.trim()).filter(s => s !== '')
}
