/**
 * What `meshwork launch` does on a host, as pure functions over data: the probe
 * script and the reading of its answer, where things go (the plan), the
 * systemd unit made from scripts/systemd/meshwork-node.service, and the
 * install-and-start script. The ssh calls live in launch.ts.
 */

/** How the node is kept running on a host. `auto`: systemd where it runs and we are root, else nohup. */
export const SERVICE_MODES = ['auto', 'systemd', 'nohup'] as const
export type ServiceMode = typeof SERVICE_MODES[number]

/** What the probe found on a host. */
export interface HostFacts {
  uid: number
  home: string
  systemd: boolean
  /** `git version 2.39.5`, or null when there is no git. */
  git: string | null
  /** `v20.20.2`, or null when there is no node. */
  node: string | null
  npm: boolean
  /** A fresh remote directory for the tarball, removed by the install script. */
  stage: string
}

/** Lines `key value` the probe prints (then a staging directory is made). */
export const PROBE_SCRIPT = [
  'set -u',
  'printf "uid %s\\n" "$(id -u)"',
  'printf "home %s\\n" "$HOME"',
  'if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo "systemd yes"; else echo "systemd no"; fi',
  'if command -v git >/dev/null 2>&1; then printf "git %s\\n" "$(git --version)"; else echo "git none"; fi',
  'if command -v node >/dev/null 2>&1; then printf "node %s\\n" "$(node --version 2>/dev/null)"; else echo "node none"; fi',
  'if command -v npm >/dev/null 2>&1; then echo "npm yes"; else echo "npm no"; fi',
  'd=$(umask 077; mktemp -d "${TMPDIR:-/tmp}/meshwork-launch.XXXXXX") && printf "stage %s\\n" "$d"',
  ''
].join('\n')

/** Reads the probe's answer; null when a line is missing (the shell there is not a POSIX sh, or it failed). */
export function parseProbe (stdout: string): HostFacts | null {
  const kv = new Map<string, string>()
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(' ')
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim())
  }
  const get = (k: string): string | undefined => kv.get(k)
  const uid = Number(get('uid'))
  const stage = get('stage')
  const home = get('home')
  if (!Number.isInteger(uid) || stage === undefined || home === undefined || get('git') === undefined || get('node') === undefined) return null
  return {
    uid,
    home,
    systemd: get('systemd') === 'yes',
    git: get('git') === 'none' ? null : get('git') ?? null,
    node: get('node') === 'none' || get('node') === '' ? null : get('node') ?? null,
    npm: get('npm') === 'yes',
    stage
  }
}

/** The oldest git meshwork works with (worktrees, `merge-tree --write-tree`). */
export const MIN_GIT: readonly [number, number] = [2, 38]
/** The oldest Node.js meshwork runs on (libp2p 3, type stripping). */
export const MIN_NODE: readonly [number, number] = [22, 18]

function atLeast (version: string, min: readonly [number, number]): boolean {
  const m = /(\d+)\.(\d+)/.exec(version)
  if (m === null) return false
  const [a, b] = [Number(m[1]), Number(m[2])]
  return a > min[0] || (a === min[0] && b >= min[1])
}

/** Why the host cannot take a node (one line), or null. */
export function hostProblem (f: HostFacts): string | null {
  if (f.git === null) return `git is not installed (meshwork needs git >= ${MIN_GIT.join('.')}: apt-get install -y git)`
  if (!atLeast(f.git, MIN_GIT)) return `${f.git} is too old (meshwork needs git >= ${MIN_GIT.join('.')})`
  const nodeOk = f.node !== null && atLeast(f.node, MIN_NODE)
  if (!nodeOk && !f.npm) return `no Node.js >= ${MIN_NODE.join('.')}${f.node !== null ? ` (it has ${f.node})` : ''} and no npm to install one with (apt-get install -y npm, or install Node.js >= 22)`
  if (nodeOk && !f.npm) return 'Node.js is there but npm is not (meshwork installs with npm)'
  return null
}

/** Where everything goes on one host, and how the node runs there. */
export interface HostPlan {
  mode: 'systemd' | 'nohup'
  /** Why this mode, for the report (`no systemd on the host`, ...). */
  modeReason: string
  prefix: string
  data: string
  repo: string
  /** Join token, swarm key and environment file live here (mode 0700). */
  conf: string
  /** The `meshwork` wrapper (runs the installed meshwork on the chosen Node). */
  bin: string
  /** nohup: the node's log; systemd: the journal. */
  log: string
  pidFile: string
}

/** What the user chose for every host (`{host}` already replaced). */
export interface PlanChoices {
  service: ServiceMode
  prefix?: string
  data?: string
  repo?: string
}

/** The plan for a host with `facts`; an impossible choice (systemd without root or without systemd) is an error line. */
export function planHost (facts: HostFacts, c: PlanChoices): HostPlan | string {
  const root = facts.uid === 0
  let mode: 'systemd' | 'nohup'
  let modeReason: string
  if (c.service === 'systemd') {
    if (!facts.systemd) return 'no systemd runs on the host (use --service nohup)'
    if (!root) return 'installing a systemd unit needs root: launch as root@host (or use --service nohup)'
    mode = 'systemd'; modeReason = 'asked for'
  } else if (c.service === 'nohup') {
    mode = 'nohup'; modeReason = 'asked for'
  } else if (facts.systemd && root) {
    mode = 'systemd'; modeReason = 'systemd runs there'
  } else {
    mode = 'nohup'; modeReason = facts.systemd ? 'not root, so no system unit' : 'no systemd on the host'
  }
  const prefix = c.prefix ?? (root ? '/opt/meshwork' : `${facts.home}/.meshwork`)
  if (mode === 'systemd') {
    return { mode, modeReason, prefix, data: c.data ?? '/var/lib/meshwork/data', repo: c.repo ?? '/var/lib/meshwork/repo', conf: '/etc/meshwork', bin: `${prefix}/bin/meshwork`, log: 'journalctl -u meshwork-node', pidFile: '' }
  }
  return { mode, modeReason, prefix, data: c.data ?? `${prefix}/data`, repo: c.repo ?? `${prefix}/repo`, conf: `${prefix}/etc`, bin: `${prefix}/bin/meshwork`, log: `${prefix}/node.log`, pidFile: `${prefix}/node.pid` }
}

/** `'text'` for sh, whatever it holds. */
export function shq (s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

/** Splits `--agent sim --verify "npm test"` into words (single and double quotes, backslash escapes). */
export function splitWords (text: string): string[] {
  const out: string[] = []
  let cur: string | null = null
  let quote: '"' | "'" | null = null
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string
    if (quote !== null) {
      if (ch === quote) quote = null
      else if (ch === '\\' && quote === '"' && i + 1 < text.length) cur = (cur ?? '') + text[++i]
      else cur = (cur ?? '') + ch
    } else if (ch === '"' || ch === "'") {
      quote = ch; cur ??= ''
    } else if (ch === '\\' && i + 1 < text.length) {
      cur = (cur ?? '') + text[++i]
    } else if (/\s/.test(ch)) {
      if (cur !== null) { out.push(cur); cur = null }
    } else {
      cur = (cur ?? '') + ch
    }
  }
  if (quote !== null) throw new Error(`unclosed ${quote} in "${text}"`)
  if (cur !== null) out.push(cur)
  return out
}

/** The ExecStart of the unit template as words, continuation lines joined. */
export function templateExecStart (unit: string): string[] {
  const m = /^ExecStart=((?:.*\\\n)*.*)$/m.exec(unit)
  if (m === null) throw new Error('the unit template has no ExecStart line')
  return splitWords((m[1] as string).replace(/\\\n/g, ' '))
}

/**
 * The `meshwork node ...` arguments of a host (`execStart`: the template's
 * ExecStart words, binary and `node` first): the template's, with its
 * --repo and --data set to the plan's, any flag the user gives in `extra`
 * replacing the template's own, then `extra`.
 */
export function nodeArgs (execStart: string[], plan: Pick<HostPlan, 'repo' | 'data'>, extra: string[]): string[] {
  if (execStart[1] !== 'node') throw new Error(`the unit template's ExecStart does not run \`meshwork node\`: ${execStart.join(' ')}`)
  const base = execStart.slice(2)
  const given = new Set(extra.filter(a => a.startsWith('--')).map(a => a.split('=')[0]))
  const out: string[] = []
  for (let i = 0; i < base.length; i++) {
    const a = base[i] as string
    const takesValue = i + 1 < base.length && !(base[i + 1] as string).startsWith('--')
    const value = takesValue ? base[i + 1] as string : undefined
    if (takesValue) i++
    if (a === '--repo') { out.push(a, plan.repo); continue }
    if (a === '--data') { out.push(a, plan.data); continue }
    if (given.has(a)) continue
    out.push(a, ...(value !== undefined ? [value] : []))
  }
  return [...out, ...extra.filter(a => a !== '--repo' && a !== '--data')]
}

/** The value of `--flag` in args (the last one), or null. */
export function flagValue (args: string[], flag: string): string | null {
  let v: string | null = null
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    if (a === flag && i + 1 < args.length) v = args[i + 1] as string
    else if (a.startsWith(`${flag}=`)) v = a.slice(flag.length + 1)
  }
  return v
}

/** One word for a systemd command line: quoted when needed, `%` and `$` escaped. */
function systemdWord (w: string): string {
  const e = w.replace(/%/g, '%%').replace(/\$/g, '$$$$')
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(e) ? e : `"${e.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
}

/**
 * The unit for a host: the template with its ExecStart running `plan.bin node
 * args`, and, for the first node of a new mesh, the swarm key file instead of
 * a join token.
 */
export function unitFor (template: string, plan: HostPlan, args: string[], firstWithKey: boolean): string {
  // replacements by function: a replacement string would read the `$$` of an escaped `$` as one `$`
  const exec = `ExecStart=${[plan.bin, 'node', ...args].map(systemdWord).join(' ')}`
  const env = firstWithKey
    ? `Environment=MESHWORK_JOIN_FILE=\nEnvironment=MESHWORK_SWARM_KEY=${plan.conf}/swarm.key`
    : `Environment=MESHWORK_JOIN_FILE=${plan.conf}/join.token`
  return template.replace(/^ExecStart=(?:.*\\\n)*.*$/m, () => exec).replace(/^Environment=MESHWORK_JOIN_FILE=.*$/m, () => env)
}
