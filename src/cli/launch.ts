import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { decodeJoinToken } from '../node/join-token.ts'
import { readSwarmKey } from '../node/swarm-key.ts'
import { UsageError } from '../util/errors.ts'
import { launchAll, parseTarget, type HostResult } from '../ops/launch.ts'
import { SERVICE_MODES, splitWords } from '../ops/remote.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'

const run = promisify(execFile)

/** The package root: the checkout (src/cli/..) or the installed package (dist/cli/..). */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The unit `launch` installs (shipped in the package: package.json `files`). */
const UNIT_TEMPLATE = join(PACKAGE_ROOT, 'scripts', 'systemd', 'meshwork-node.service')

/** Per host, how long the whole launch (probe, copy, install, start) may take. @default 10 min (npm installs on a slow VM) */
export const DEFAULT_HOST_TIMEOUT_MS = 10 * 60_000
/** How long a started node may take to write node.json (a joiner clones main first). @default 2 min */
export const DEFAULT_START_TIMEOUT_MS = 2 * 60_000

/**
 * `npm pack` of this meshwork into a new temp dir; returns the tarball. A
 * checkout builds dist/ first (the prepack script); an installed package
 * already has it.
 */
async function packSelf (dir: string): Promise<string> {
  const checkout = existsSync(join(PACKAGE_ROOT, 'src', 'cli', 'main.ts')) && existsSync(join(PACKAGE_ROOT, 'tsconfig.build.json'))
  const args = ['pack', '--json', '--pack-destination', dir, ...(checkout ? [] : ['--ignore-scripts'])]
  let stdout: string
  try {
    stdout = (await run('npm', args, { cwd: PACKAGE_ROOT, maxBuffer: 64 << 20 })).stdout
  } catch (err) {
    const e = err as { stderr?: string, message: string }
    throw new Error(`npm pack in ${PACKAGE_ROOT} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-3).join(' ')}. Pass --tarball FILE (made with \`npm pack\`).`)
  }
  const parsed = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{ filename: string }>
  const file = parsed[0]?.filename
  if (file === undefined) throw new Error(`npm pack printed no file name: ${stdout.slice(0, 200)}`)
  return join(dir, file)
}

/** One line for one host. */
export function hostLine (r: HostResult): string {
  if (!r.ok) return `${r.target.spec}: FAILED: ${r.reason}`
  const routable = r.addrs.filter(a => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(a))
  const addrs = (routable.length > 0 ? routable : r.addrs).join(' ')
  const how = r.mode === 'systemd' ? 'systemd (meshwork-node.service)' : `nohup (${r.modeReason}; log ${r.plan.log})`
  return `${r.target.spec}: ok, ${how}, peer ${r.peerId}, pid ${r.pid}, ${addrs}, health: ${r.health}, Node ${r.node}`
}

export const launchCommand = defineCommand({
  name: 'launch',
  summary: summaryOf('launch'),
  usage: 'meshwork launch user@host... (--join TOKEN | --join-file FILE | --swarm-key FILE) [options]',
  positionals: { min: 1, max: 1000, names: 'at least one user@host' },
  details: [
    'For each host, over ssh and scp (the system binaries, BatchMode: keys or an agent, never a password prompt): copies the',
    'meshwork tarball (default: `npm pack` of this meshwork), installs it with the host\'s Node.js if >= 22.18, else with',
    'npm\'s `node` package (the host needs npm, and git >= 2.38), writes the join token to a mode-0600 file, and starts the',
    'node: as root on a host running systemd it installs scripts/systemd/meshwork-node.service (user meshwork, data in',
    '/var/lib/meshwork, token in /etc/meshwork/join.token); elsewhere (no systemd, or not root) it runs the same',
    '`meshwork node` command under nohup (files under --prefix). It then prints one line per host: how the node runs, its',
    'peer id, addresses and health (peers connected, nodes alive, from its metrics). A host that fails says why in one',
    'line and the others go on; the exit code is 1 if any failed. Launching again upgrades and restarts the node (same',
    'data, same peer id).',
    '',
    'With --swarm-key (a new mesh) the first host starts the mesh and the others join it with the token it prints.',
    '{host} in --prefix, --data, --repo and --node-args is replaced by each host\'s name or address.',
    '',
    'Example:',
    '  meshwork launch root@10.0.0.11 root@10.0.0.12 --join-file join.token --node-args="--slots 2 --name {host}"'
  ].join('\n'),
  options: {
    join: opt.string({ arg: 'TOKEN', env: 'MESHWORK_JOIN', description: 'Join token of a running node: every host joins that mesh.' }),
    'join-file': opt.string({ arg: 'FILE', env: 'MESHWORK_JOIN_FILE', description: 'Read the join token from FILE.' }),
    'swarm-key': opt.string({ arg: 'FILE', env: 'MESHWORK_SWARM_KEY', description: 'Start a new mesh with this key (from `meshwork init`): the first host starts it, the others join.' }),
    'init-repo': opt.boolean({ description: 'With --swarm-key: the first host starts a new history in its empty --repo (else its --repo must hold the project).' }),
    'ssh-opt': opt.list({ arg: 'OPTION', description: 'An ssh -o option for ssh and scp, e.g. Port=2222 or StrictHostKeyChecking=accept-new.' }),
    'identity-file': opt.string({ arg: 'FILE', description: 'The ssh key to log in with (ssh -i).' }),
    tarball: opt.string({ arg: 'FILE', description: 'The meshwork package to install (from `npm pack`). Default: `npm pack` of this meshwork.' }),
    service: opt.choice(SERVICE_MODES, { arg: 'MODE', default: 'auto', description: 'auto (systemd where it runs and the login is root, else nohup), systemd or nohup.' }),
    prefix: opt.string({ arg: 'DIR', description: 'Where meshwork (and a Node from npm) is installed on the host. Default: /opt/meshwork as root, ~/.meshwork otherwise.' }),
    data: opt.string({ arg: 'DIR', description: 'The node\'s --data on the host. Default: /var/lib/meshwork/data under systemd, PREFIX/data under nohup.' }),
    repo: opt.string({ arg: 'DIR', description: 'The node\'s --repo on the host (missing or empty: cloned from the mesh). Default: /var/lib/meshwork/repo under systemd, PREFIX/repo under nohup.' }),
    'node-args': opt.string({ arg: 'ARGS', description: 'More `meshwork node` options, one string with shell quoting, given with = since it starts with a dash: --node-args="--slots 2 --agent sim"; a flag given here replaces the unit\'s own (--listen, --metrics, --grace).' }),
    'token-out': opt.string({ arg: 'FILE', description: 'With --swarm-key: write the new mesh\'s join token to FILE (mode 0600), for `--join-file` of later commands.' }),
    timeout: opt.duration({ arg: 'DURATION', default: DEFAULT_HOST_TIMEOUT_MS, description: 'Per host, bound on the whole launch.' }),
    'start-timeout': opt.duration({ arg: 'DURATION', default: DEFAULT_START_TIMEOUT_MS, min: 1000, description: 'How long a started node may take to write its node.json.' }),
    json: opt.boolean({ description: 'Print the results as one JSON array.' })
  },
  run: async (opts, positionals) => {
    const targets = positionals.map(parseTarget)
    const dup = targets.find((t, i) => targets.findIndex(u => u.spec === t.spec) !== i)
    if (dup !== undefined) throw new UsageError(`${dup.spec} is given twice.`)
    if (opts.join !== undefined && opts['join-file'] !== undefined) throw new UsageError('give --join TOKEN or --join-file FILE, not both.')
    let secret: { kind: 'join', text: string } | { kind: 'swarm-key', text: string }
    const joinFile = opts['join-file']
    const keyFile = opts['swarm-key']
    if (opts.join !== undefined || joinFile !== undefined) {
      const text = opts.join ?? (await readFile(joinFile as string, 'utf8').catch((err: NodeJS.ErrnoException) => { throw new UsageError(`cannot read --join-file ${joinFile}: ${err.code ?? err.message}.`) })).trim()
      decodeJoinToken(text)
      secret = { kind: 'join', text }
    } else if (keyFile !== undefined) {
      await readSwarmKey(keyFile)
      secret = { kind: 'swarm-key', text: await readFile(keyFile, 'utf8') }
    } else {
      throw new UsageError('no mesh to join: pass --join TOKEN or --join-file FILE (the "join" of a running node), or --swarm-key FILE (from `meshwork init`) to start a new mesh on the first host.')
    }
    if (opts['init-repo'] && secret.kind !== 'swarm-key') throw new UsageError('--init-repo starts a new history on the first node of a new mesh: it needs --swarm-key, not a join token.')
    if (opts['token-out'] !== undefined && secret.kind !== 'swarm-key') throw new UsageError('--token-out writes the token of a new mesh: it needs --swarm-key (with --join you have the token already).')
    let nodeArgs: string[]
    try {
      nodeArgs = splitWords(opts['node-args'] ?? '')
    } catch (err) {
      throw new UsageError(`--node-args: ${(err as Error).message}.`)
    }
    for (const f of ['--join', '--join-file', '--swarm-key', '--bootstrap']) {
      if (nodeArgs.some(a => a === f || a.startsWith(`${f}=`))) throw new UsageError(`--node-args must not carry ${f}: launch writes the token to a 0600 file on each host. Give it to launch itself.`)
    }
    const identity = opts['identity-file']
    if (identity !== undefined && !existsSync(identity)) throw new UsageError(`--identity-file ${identity} does not exist.`)
    const unitTemplate = await readFile(UNIT_TEMPLATE, 'utf8')
    const version = (JSON.parse(await readFile(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version

    let packDir: string | null = null
    let tarball = opts.tarball !== undefined ? resolve(opts.tarball) : undefined
    if (tarball !== undefined && !(await stat(tarball).then(s => s.isFile(), () => false))) throw new UsageError(`--tarball ${tarball} is not a file. Make one with \`npm pack\` in a meshwork checkout.`)
    const progress = (line: string): void => { process.stderr.write(line + '\n') }
    try {
      if (tarball === undefined) {
        progress(`packing meshwork ${version} (npm pack in ${PACKAGE_ROOT})`)
        packDir = await mkdtemp(join(tmpdir(), 'meshwork-launch-'))
        tarball = await packSelf(packDir)
      }
      const abort = new AbortController()
      const onSigint = (): void => { abort.abort() }
      process.once('SIGINT', onSigint)
      let results: HostResult[]
      try {
        results = await launchAll(targets, {
          ssh: { options: opts['ssh-opt'], ...(identity !== undefined ? { identityFile: identity } : {}) },
          tarball,
          version,
          nodeVersion: process.versions.node,
          unitTemplate,
          service: opts.service,
          ...(opts.prefix !== undefined ? { prefix: opts.prefix } : {}),
          ...(opts.data !== undefined ? { data: opts.data } : {}),
          ...(opts.repo !== undefined ? { repo: opts.repo } : {}),
          nodeArgs,
          secret,
          initRepo: opts['init-repo'],
          hostTimeoutMs: opts.timeout,
          startTimeoutS: Math.ceil(opts['start-timeout'] / 1000),
          signal: abort.signal,
          onStep: (t, step) => { progress(`${t.spec}: ${step}`) }
        })
      } finally {
        process.removeListener('SIGINT', onSigint)
      }
      const first = results[0]
      const tokenOut = opts['token-out']
      if (tokenOut !== undefined && first?.ok === true) await writeFile(tokenOut, first.join + '\n', { mode: 0o600 })
      if (opts.json) {
        process.stdout.write(JSON.stringify(results.map(r => r.ok
          ? { host: r.target.spec, ok: true, mode: r.mode, peerId: r.peerId, addrs: r.addrs, pid: r.pid, health: r.health, node: r.node, data: r.plan.data, repo: r.plan.repo, prefix: r.plan.prefix, log: r.plan.log }
          : { host: r.target.spec, ok: false, error: r.reason }), null, 2) + '\n')
      } else {
        for (const r of results) process.stdout.write(hostLine(r) + '\n')
        if (tokenOut !== undefined && first?.ok === true) process.stdout.write(`join token of the new mesh written to ${tokenOut}: meshwork status --join-file ${tokenOut}\n`)
      }
      return results.every(r => r.ok) ? 0 : 1
    } finally {
      if (packDir !== null) await rm(packDir, { recursive: true, force: true })
    }
  }
})
