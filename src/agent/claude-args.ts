import { chmod, copyFile, cp, mkdir, readFile, readdir, stat } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { homedir } from 'node:os'
import { join, relative, resolve, sep } from 'node:path'
import type { Task } from '../crdt/schema.ts'
import { agentEnv, meshworkEnv } from './process.ts'
import type { ApprovalGate } from './approvals.ts'

/*
 * How one `claude` run is started: its argument list, its environment and its
 * own config dir.
 *
 * CLI spellings, as found in Claude Code's public CLI reference
 * (docs.anthropic.com/en/docs/claude-code/cli-reference, mirrored at
 * docs.arantic.com/claude-code/flags) and public wrappers (nucel-agent-claude-code
 * on docs.rs, which spawns `claude --permission-mode M --max-budget-usd X -p
 * --output-format stream-json --verbose --max-turns N`):
 *   -p / --print                 print mode; the prompt is read from stdin when no
 *                                positional prompt is given
 *   --output-format stream-json  NDJSON events; needs --verbose in print mode
 *                                (exits 1 without it)
 *   --verbose
 *   --permission-mode MODE       default | acceptEdits | plan | bypassPermissions | dontAsk
 *   --allowedTools RULE...       variadic; documented as separate arguments,
 *                                e.g. "Bash(git log:*)" "Read" (commas work too)
 *   --disallowedTools RULE...    same form; a path rule `Read(//abs/path/**)`
 *                                names an absolute path (two slashes)
 *   --model NAME
 *   --max-turns N                print mode; hidden from --help
 *   --max-budget-usd X           print mode; a per-run spending cap. Checked between
 *                                turns, so a run can overshoot; the run then ends
 *                                with `subtype: "error_max_budget_usd"` and
 *                                `is_error: false` (agentmastered.com recipe
 *                                "set-budget-cap"; jonnyquan/claude-agent-sdk-go
 *                                example 16).
 *
 * Environment: the run gets MESHWORK_TASK_ID, MESHWORK_TASK_TITLE, MESHWORK_NODE
 * (plus MESHWORK_PEER_ID, MESHWORK_ATTEMPT) and its own CLAUDE_CONFIG_DIR under
 * `dataDir/claude/<task-id>-<attempt>`, so parallel runs never share (and
 * corrupt) one config dir. Credentials: ANTHROPIC_API_KEY and
 * CLAUDE_CODE_OAUTH_TOKEN pass through; a login made with `claude login` lives in
 * `.credentials.json` of the user's config dir (CLAUDE_CONFIG_DIR, else
 * ~/.claude), which is copied into each run's dir, read-only. With
 * `configSource` (`--claude-config DIR`) the user's settings, agents, commands,
 * skills and CLAUDE.md are copied too. The mesh's secrets (join token, swarm key)
 * are removed. CLAUDECODE and CLAUDE_CODE_ENTRYPOINT are removed: Claude Code
 * refuses to start when it sees CLAUDECODE ("cannot be launched inside another
 * Claude Code session", e.g. chenhg5/cc-connect#1), which a node started from a
 * Claude Code shell would otherwise pass on.
 *
 * bypassPermissions: Claude Code refuses it (like --dangerously-skip-permissions)
 * when running as root unless IS_SANDBOX=1; with that mode we set IS_SANDBOX=1
 * only when this process runs as root, i.e. the operator chose both root and
 * bypassPermissions for the node.
 */

export interface ClaudeAgentInit {
  /** The claude executable (default `claude`). */
  bin?: string
  /** `--permission-mode` (default `acceptEdits`). */
  permissionMode?: string
  /** `--allowedTools` rules, e.g. `Bash(git *)`. */
  allowedTools?: string[]
  model?: string
  maxTurns?: number
  /** Per-run cap, passed as `--max-budget-usd`. */
  maxBudgetUsd?: number
  /** Node data dir: per-run CLAUDE_CONFIG_DIR under `claude/`, transcripts under `transcripts/`. */
  dataDir: string
  /**
   * A Claude config dir whose settings, agents, commands, skills, CLAUDE.md and
   * login are copied into every run's own config dir (`--claude-config DIR`).
   * Without it only the login (`.credentials.json`) of the user's config dir is.
   */
  configSource?: string
  /** The node's human label, given to the agent as MESHWORK_NODE. */
  nodeName: string
  /** Extra environment for every run. */
  env?: Record<string, string>
  /** Grace between SIGTERM and SIGKILL of the run's process group (default 2000 ms). */
  killGraceMs?: number
  /** How long claude may linger after its `result` event before its group is killed (default 15000 ms). */
  resultExitGraceMs?: number
  /**
   * `--approvals`: permission requests of a run wait on the board for a human
   * (through this gate) instead of being denied. Absent: they are denied.
   */
  approvals?: ApprovalGate
}

/**
 * The `--max-budget-usd` of one run: the node's own per-run cap, or what is
 * left of the mesh's or the plan's budget (`AgentRunInit.maxBudgetUsd`) when
 * that is less; `from` says which, since a run stopped at its own cap fails
 * for good while one stopped at the budget waits until the budget is raised.
 * Undefined when neither applies.
 */
export function runBudget (nodeCap: number | undefined, left: number | undefined): { usd: number, from: 'node' | 'budget' } | undefined {
  if (left !== undefined && (nodeCap === undefined || left < nodeCap)) return { usd: left, from: 'budget' }
  return nodeCap === undefined ? undefined : { usd: nodeCap, from: 'node' }
}

/** Tools meshwork does not let the agent use: meshwork owns the worktrees. */
export const CLAUDE_DISALLOWED_TOOLS = ['EnterWorktree', 'ExitWorktree'] as const

/** The argument list for one run (the prompt goes on stdin). `deny` adds permission rules denied to the run. */
export function claudeArgs (init: ClaudeAgentInit, deny: string[] = []): string[] {
  const args = ['-p', '--output-format', 'stream-json', '--verbose', '--permission-mode', init.permissionMode ?? 'acceptEdits']
  const allowed = (init.allowedTools ?? []).map(r => r.trim()).filter(r => r.length > 0)
  if (allowed.length > 0) args.push('--allowedTools', ...allowed)
  args.push('--disallowedTools', [...CLAUDE_DISALLOWED_TOOLS, ...deny].join(','))
  if (init.model !== undefined && init.model.length > 0) args.push('--model', init.model)
  if (init.maxTurns !== undefined) args.push('--max-turns', String(init.maxTurns))
  if (init.maxBudgetUsd !== undefined) args.push('--max-budget-usd', String(init.maxBudgetUsd))
  return args
}

/** Entries of a node's data dir an agent must never read, whether or not they exist yet. */
const DATA_SECRETS = ['node.json', 'identity.key', 'board.am', 'transcripts', 'claude', 'logs']

/**
 * Permission rules that keep the agent's file tools out of the node's data dir
 * (identity key, join token, board, other runs' transcripts and credentials):
 * the whole dir, or, when the run's worktree lies inside it, every entry but the
 * one holding the worktrees.
 */
export async function dataDirDenyRules (dataDir: string, cwd: string | undefined): Promise<string[]> {
  const data = resolve(dataDir)
  const rel = cwd === undefined ? '..' : relative(data, resolve(cwd))
  const inside = rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep)
  let targets: string[]
  if (!inside) {
    targets = [data]
  } else {
    const keep = rel.split(sep)[0]!
    const present = await readdir(data).catch(() => [] as string[])
    targets = [...new Set([...DATA_SECRETS, ...present])].filter(e => e !== keep).sort().map(e => join(data, e))
  }
  // `//` starts an absolute path in a permission rule; a rule names a file, `/**` whatever is below a dir
  return targets.flatMap(t => [`Read(/${t})`, `Read(/${t}/**)`, `Edit(/${t})`, `Edit(/${t}/**)`])
}

/** The environment of one run. */
export function claudeEnv (init: ClaudeAgentInit, task: Task, peerId: string, attempt: number, runEnv: Record<string, string> | undefined, configDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...agentEnv(), ...init.env, ...meshworkEnv(task, init.nodeName, peerId, attempt), ...runEnv, CLAUDE_CONFIG_DIR: configDir }
  delete env.CLAUDECODE
  delete env.CLAUDE_CODE_ENTRYPOINT
  if ((init.permissionMode ?? 'acceptEdits') === 'bypassPermissions' && process.getuid?.() === 0) env.IS_SANDBOX = '1'
  return env
}

/** The config dir holding the user's `claude login` (CLAUDE_CONFIG_DIR, else ~/.claude). */
export function userClaudeConfigDir (env: NodeJS.ProcessEnv = process.env): string {
  const d = env.CLAUDE_CONFIG_DIR
  return d !== undefined && d !== '' ? d : join(homedir(), '.claude')
}

/** What `--claude-config DIR` carries into every run (besides the login). */
const CONFIG_ENTRIES = ['settings.json', 'CLAUDE.md', 'agents', 'commands', 'skills', 'output-styles']

/**
 * Fills a run's fresh config dir: the login's credentials (read-only copy) from
 * `source` (or the user's config dir), and with an explicit source its
 * settings, agents, commands, skills and CLAUDE.md. Each run gets its own copies:
 * a run cannot change another's (or the user's) files.
 */
export async function prepareConfigDir (configDir: string, source: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<{ login: boolean }> {
  await mkdir(configDir, { recursive: true, mode: 0o700 })
  const from = source ?? userClaudeConfigDir(env)
  let login = false
  const creds = join(from, '.credentials.json')
  if (await isFile(creds)) {
    const to = join(configDir, '.credentials.json')
    await copyFile(creds, to)
    await chmod(to, 0o400)
    login = true
  }
  if (source !== undefined) {
    for (const e of CONFIG_ENTRIES) {
      const p = join(source, e)
      if (await exists(p)) await cp(p, join(configDir, e), { recursive: true, dereference: true })
    }
  }
  return { login }
}

async function isFile (p: string): Promise<boolean> {
  try { return (await stat(p)).isFile() } catch { return false }
}

async function exists (p: string): Promise<boolean> {
  try { await stat(p); return true } catch { return false }
}

/**
 * A fingerprint of the credentials claude runs on this node use: the API key,
 * the OAuth token, else the login's `.credentials.json` (of `configSource`,
 * CLAUDE_CONFIG_DIR or ~/.claude). A truncated SHA-256, never the secret:
 * nodes that announce the same one share a usage limit. Undefined when none is found.
 */
export async function credentialFingerprint (env: NodeJS.ProcessEnv, configSource?: string): Promise<string | undefined> {
  const secret = env.ANTHROPIC_API_KEY ?? env.CLAUDE_CODE_OAUTH_TOKEN ?? env.ANTHROPIC_AUTH_TOKEN ??
    await readFile(join(configSource ?? userClaudeConfigDir(env), '.credentials.json'), 'utf8').catch(() => undefined)
  if (secret === undefined || secret.trim() === '') return undefined
  return 'sha256:' + createHash('sha256').update(`meshwork-credential\n${secret.trim()}`).digest('hex').slice(0, 16)
}
