/**
 * Launching meshwork nodes on hosts over ssh: per host, a probe (what is
 * there), the tarball by scp, then the install-and-start script. A host's
 * failure is a value with a one-line reason; the other hosts go on. Hosts are
 * launched a few at a time; the first node of a new mesh (`swarm-key`) starts
 * alone, and the others join it with the token it prints.
 */
import { lastLine, parseTarget, scpTo, sshScript, type SshSettings, type SshTarget } from './ssh.ts'
import { flagValue, hostProblem, nodeArgs, parseProbe, planHost, PROBE_SCRIPT, templateExecStart, unitFor, type HostPlan, type ServiceMode } from './remote.ts'
import { installScript } from './install-script.ts'

export { parseTarget }

/** Hosts launched at once. @default 4 */
export const LAUNCH_CONCURRENCY = 4

/** What the launcher needs for every host. */
export interface LaunchInit {
  ssh: SshSettings
  /** Local path of the meshwork tarball. */
  tarball: string
  /** The version inside it. */
  version: string
  /** Node.js version to install from npm where the host has none >= 22.18. */
  nodeVersion: string
  /** The systemd unit template (scripts/systemd/meshwork-node.service). */
  unitTemplate: string
  service: ServiceMode
  /** `{host}` is replaced by each host's name or address. */
  prefix?: string
  data?: string
  repo?: string
  /** Extra `meshwork node` arguments (`{host}` replaced). */
  nodeArgs: string[]
  /** `join`: every host joins with this token. `swarm-key`: the first host starts a new mesh with this key file text. */
  secret: { kind: 'join', text: string } | { kind: 'swarm-key', text: string }
  /** With `swarm-key`: the first host starts a new history in its empty --repo. */
  initRepo: boolean
  /** Per host, bound on the whole launch. */
  hostTimeoutMs: number
  /** Bound on the node writing node.json once started. */
  startTimeoutS: number
  signal?: AbortSignal
  /** Progress lines (`installing meshwork ...`) as they come. */
  onStep?: (target: SshTarget, step: string) => void
}

/** What happened on one host. */
export type HostResult =
  | { target: SshTarget, ok: true, mode: 'systemd' | 'nohup', modeReason: string, peerId: string, addrs: string[], join: string, pid: number, node: string, health: string, plan: HostPlan }
  | { target: SshTarget, ok: false, reason: string }

/** `{host}` in `text` replaced by the target's host part. */
export function forHost (text: string, target: SshTarget): string {
  return text.replaceAll('{host}', target.host)
}

const fail = (target: SshTarget, reason: string): HostResult => ({ target, ok: false, reason })

/** Reads the install script's output: the result, or why it failed. */
export function readInstallOutput (stdout: string): { node: string, health: string, info: { peerId: string, addrs: string[], join: string, pid: number } } | { reason: string } {
  let node = ''
  let health = ''
  let result: string | null = null
  for (const line of stdout.split('\n')) {
    if (line.startsWith('MESHWORK_FAIL ')) return { reason: line.slice('MESHWORK_FAIL '.length) }
    if (line.startsWith('MESHWORK_NODE ')) node = line.slice('MESHWORK_NODE '.length)
    if (line.startsWith('MESHWORK_HEALTH ')) health = line.slice('MESHWORK_HEALTH '.length)
    if (line.startsWith('MESHWORK_RESULT ')) result = line.slice('MESHWORK_RESULT '.length)
  }
  if (result === null) return { reason: 'the install script ended without a result' }
  try {
    const info = JSON.parse(result) as { peerId?: unknown, addrs?: unknown, join?: unknown, pid?: unknown }
    if (typeof info.peerId !== 'string' || !Array.isArray(info.addrs) || typeof info.join !== 'string' || typeof info.pid !== 'number') return { reason: `node.json lacks peerId, addrs, join or pid: ${result}` }
    return { node, health, info: { peerId: info.peerId, addrs: info.addrs.map(String), join: info.join, pid: info.pid } }
  } catch (err) {
    return { reason: `node.json is not JSON (${(err as Error).message}): ${result}` }
  }
}

/** Launches one host; never throws for a problem of that host. */
export async function launchHost (target: SshTarget, init: LaunchInit, secret: LaunchInit['secret'], initRepo: boolean): Promise<HostResult> {
  const deadline = Date.now() + init.hostTimeoutMs
  const left = (): number => Math.max(1000, deadline - Date.now())
  const base = { ...(init.signal !== undefined ? { signal: init.signal } : {}) }
  const probe = await sshScript(target, PROBE_SCRIPT, init.ssh, { ...base, timeoutMs: left() })
  if (probe.code !== 0) return fail(target, `ssh failed: ${lastLine(probe.stderr) || `exit ${probe.code ?? 'killed'}`}`)
  const facts = parseProbe(probe.stdout)
  if (facts === null) return fail(target, `the host's shell did not answer the probe: ${lastLine(probe.stdout + '\n' + probe.stderr)}`)
  const cleanup = async (): Promise<void> => { await sshScript(target, `rm -rf -- '${facts.stage.replace(/'/g, '')}'\n`, init.ssh, { timeoutMs: 30_000 }) }
  const problem = hostProblem(facts)
  if (problem !== null) { await cleanup(); return fail(target, problem) }
  const plan = planHost(facts, {
    service: init.service,
    ...(init.prefix !== undefined ? { prefix: forHost(init.prefix, target) } : {}),
    ...(init.data !== undefined ? { data: forHost(init.data, target) } : {}),
    ...(init.repo !== undefined ? { repo: forHost(init.repo, target) } : {})
  })
  if (typeof plan === 'string') { await cleanup(); return fail(target, plan) }
  const args = nodeArgs(templateExecStart(init.unitTemplate), plan, [...init.nodeArgs.map(a => forHost(a, target)), ...(initRepo ? ['--init-repo'] : [])])
  init.onStep?.(target, `copying ${init.tarball}`)
  const copy = await scpTo(target, init.tarball, `${facts.stage}/meshwork.tgz`, init.ssh, { ...base, timeoutMs: left() })
  if (copy.code !== 0) { await cleanup(); return fail(target, `scp of the tarball failed: ${lastLine(copy.stderr) || `exit ${copy.code ?? 'killed'}`}`) }
  const script = installScript({
    plan,
    stage: facts.stage,
    nodeVersion: init.nodeVersion,
    version: init.version,
    args,
    secret,
    unit: unitFor(init.unitTemplate, plan, args, secret.kind === 'swarm-key'),
    metrics: flagValue(args, '--metrics'),
    startTimeoutS: init.startTimeoutS
  })
  const run = await sshScript(target, script, init.ssh, {
    ...base,
    timeoutMs: left(),
    onLine: line => { if (line.startsWith('MESHWORK_STEP ')) init.onStep?.(target, line.slice('MESHWORK_STEP '.length)) }
  })
  const out = readInstallOutput(run.stdout)
  if ('reason' in out) {
    const why = run.code === 0 || run.stdout.includes('MESHWORK_FAIL') ? out.reason : `${out.reason}; ssh: ${lastLine(run.stderr) || `exit ${run.code ?? 'killed'}`}`
    return fail(target, why)
  }
  return { target, ok: true, mode: plan.mode, modeReason: plan.modeReason, peerId: out.info.peerId, addrs: out.info.addrs, join: out.info.join, pid: out.info.pid, node: out.node, health: out.health, plan }
}

/** Runs `fn` over `items`, at most `limit` at a time, keeping their order in the results. */
async function mapLimit<T, R> (items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/**
 * Launches every target, in their order in the result. With a swarm key, the
 * first target starts the mesh (alone), then the rest join with its token; if
 * it fails, the rest are reported as not launched.
 */
export async function launchAll (targets: readonly SshTarget[], init: LaunchInit): Promise<HostResult[]> {
  const [first, ...rest] = targets
  if (first === undefined) return []
  if (init.secret.kind === 'join') {
    const secret = init.secret
    return await mapLimit(targets, LAUNCH_CONCURRENCY, async t => await launchHost(t, init, secret, false))
  }
  const r0 = await launchHost(first, init, init.secret, init.initRepo)
  if (!r0.ok) return [r0, ...rest.map(t => fail(t, `not launched: ${first.spec}, which starts the mesh, failed`))]
  const join = { kind: 'join' as const, text: r0.join }
  return [r0, ...await mapLimit(rest, LAUNCH_CONCURRENCY, async t => await launchHost(t, init, join, false))]
}
