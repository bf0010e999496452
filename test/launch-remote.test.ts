/**
 * The pure parts of `meshwork launch`: host targets, the probe's answer, the
 * per-host plan (systemd or nohup, and why), the node's arguments made from
 * the unit template, the unit itself (checked with `systemd-analyze verify`)
 * and the install script (checked with `sh -n`), and the CLI's usage errors.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseTarget, sshArgs } from '../src/ops/ssh.ts'
import { flagValue, hostProblem, nodeArgs, parseProbe, planHost, shq, splitWords, templateExecStart, unitFor, type HostFacts } from '../src/ops/remote.ts'
import { installScript } from '../src/ops/install-script.ts'
import { readInstallOutput } from '../src/ops/launch.ts'
import { BIN, runCli, describeResult, makeTempDir, removeDir } from './helpers/cli.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')
const UNIT = join(ROOT, 'scripts', 'systemd', 'meshwork-node.service')

const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(removeDir)) })

const facts = (over: Partial<HostFacts> = {}): HostFacts => ({ uid: 0, home: '/root', systemd: true, git: 'git version 2.39.5', node: 'v20.20.2', npm: true, stage: '/tmp/meshwork-launch.x', ...over })

describe('launch targets and ssh arguments', () => {
  it('parses user@host and refuses what ssh would read as an option', () => {
    expect(parseTarget('root@10.0.0.11')).toEqual({ spec: 'root@10.0.0.11', user: 'root', host: '10.0.0.11' })
    expect(parseTarget('vm1')).toEqual({ spec: 'vm1', user: null, host: 'vm1' })
    for (const bad of ['-oProxyCommand=x', 'root@', 'a b', 'root@host;rm']) expect(() => parseTarget(bad), bad).toThrow(/is not a host/)
  })

  it('keeps BatchMode first and lets the user override the connect timeout (ssh keeps the first value)', () => {
    const args = sshArgs({ options: ['ConnectTimeout=3', 'Port=2222'], identityFile: '/k' })
    expect(args.slice(0, 2)).toEqual(['-o', 'BatchMode=yes'])
    expect(args.indexOf('ConnectTimeout=3')).toBeLessThan(args.findIndex(a => a.startsWith('ConnectTimeout=1')))
    expect(args.slice(-2)).toEqual(['-i', '/k'])
  })
})

describe('launch plan', () => {
  it('reads the probe and names what a host lacks in one line', () => {
    const f = parseProbe('uid 1000\nhome /home/u\nsystemd no\ngit none\nnode v20.20.2\nnpm yes\nstage /tmp/meshwork-launch.a\n')
    expect(f).toEqual({ uid: 1000, home: '/home/u', systemd: false, git: null, node: 'v20.20.2', npm: true, stage: '/tmp/meshwork-launch.a' })
    expect(parseProbe('uid 0\n')).toBeNull()
    expect(hostProblem(facts({ git: null }))).toMatch(/git is not installed/)
    expect(hostProblem(facts({ git: 'git version 2.30.2' }))).toMatch(/too old/)
    expect(hostProblem(facts({ node: null, npm: false }))).toMatch(/no Node.js >= 22.18 and no npm/)
    expect(hostProblem(facts({ node: 'v22.18.0', npm: true }))).toBeNull()
    expect(hostProblem(facts())).toBeNull()
  })

  it('uses systemd as root where it runs, nohup elsewhere, and says why', () => {
    expect(planHost(facts(), { service: 'auto' })).toMatchObject({ mode: 'systemd', prefix: '/opt/meshwork', data: '/var/lib/meshwork/data', conf: '/etc/meshwork' })
    expect(planHost(facts({ systemd: false }), { service: 'auto' })).toMatchObject({ mode: 'nohup', modeReason: 'no systemd on the host', data: '/opt/meshwork/data', log: '/opt/meshwork/node.log' })
    expect(planHost(facts({ uid: 1000, home: '/home/u' }), { service: 'auto' })).toMatchObject({ mode: 'nohup', modeReason: 'not root, so no system unit', prefix: '/home/u/.meshwork' })
    expect(planHost(facts({ systemd: false }), { service: 'systemd' })).toMatch(/no systemd runs on the host/)
    expect(planHost(facts({ uid: 1000 }), { service: 'systemd' })).toMatch(/needs root/)
    expect(planHost(facts(), { service: 'nohup', prefix: '/srv/mw', data: '/srv/d' })).toMatchObject({ mode: 'nohup', prefix: '/srv/mw', data: '/srv/d', repo: '/srv/mw/repo' })
  })

  it('builds the node arguments from the unit template, the user\'s flags replacing its own', async () => {
    const exec = templateExecStart(await readFile(UNIT, 'utf8'))
    expect(exec.slice(0, 2)).toEqual(['/usr/local/bin/meshwork', 'node'])
    const args = nodeArgs(exec, { repo: '/r', data: '/d' }, splitWords('--agent sim --listen /ip4/0.0.0.0/tcp/5001 --verify "npm test"'))
    expect(args).toEqual(['--repo', '/r', '--data', '/d', '--metrics', '127.0.0.1:9464', '--grace', '60s', '--agent', 'sim', '--listen', '/ip4/0.0.0.0/tcp/5001', '--verify', 'npm test'])
    expect(flagValue(args, '--metrics')).toBe('127.0.0.1:9464')
    expect(splitWords(`a 'b c' "d \\"e\\"" f\\ g`)).toEqual(['a', 'b c', 'd "e"', 'f g'])
    expect(() => splitWords('"open')).toThrow(/unclosed/)
    expect(shq("it's")).toBe(`'it'\\''s'`)
  })
})

describe('the unit and the install script launch makes', () => {
  it('makes a unit that passes systemd-analyze verify, with the token file or (first node) the key', async (ctx) => {
    const template = await readFile(UNIT, 'utf8')
    const plan = planHost(facts(), { service: 'auto' })
    if (typeof plan === 'string') throw new Error(plan)
    const args = nodeArgs(templateExecStart(template), plan, ['--name', 'vm 1', '--verify', 'echo $HOME 100%'])
    const joining = unitFor(template, plan, args, false)
    expect(joining).toMatch(/^ExecStart=\/opt\/meshwork\/bin\/meshwork node --repo \/var\/lib\/meshwork\/repo --data \/var\/lib\/meshwork\/data .* --name "vm 1" --verify "echo \$\$HOME 100%%"$/m)
    expect(joining).toMatch(/^Environment=MESHWORK_JOIN_FILE=\/etc\/meshwork\/join.token$/m)
    expect(joining).toMatch(/^KillMode=control-group$/m)
    const first = unitFor(template, plan, args, true)
    expect(first).toMatch(/^Environment=MESHWORK_JOIN_FILE=\nEnvironment=MESHWORK_SWARM_KEY=\/etc\/meshwork\/swarm.key$/m)
    const has = await run('sh', ['-c', 'command -v systemd-analyze']).then(() => true, () => false)
    if (!has) { ctx.skip(true, 'systemd-analyze is not installed (apt-get install systemd)'); return }
    const dir = await makeTempDir('meshwork-launch-unit-')
    dirs.push(dir)
    for (const [name, text] of [['meshwork-node.service', joining], ['meshwork-first.service', first]] as const) {
      const file = join(dir, name)
      await writeFile(file, text.replaceAll('/opt/meshwork/bin/meshwork', BIN))
      const r = await run('systemd-analyze', ['verify', file])
      expect((r.stdout + r.stderr).trim(), name).toBe('')
    }
  })

  it('makes install scripts that sh accepts, with the secret in a 0600 heredoc and never on a command line', async () => {
    const template = await readFile(UNIT, 'utf8')
    const dir = await makeTempDir('meshwork-launch-script-')
    dirs.push(dir)
    for (const systemd of [true, false]) {
      const plan = planHost(facts({ systemd }), { service: 'auto' })
      if (typeof plan === 'string') throw new Error(plan)
      const args = nodeArgs(templateExecStart(template), plan, ['--name', "it's"])
      const script = installScript({ plan, stage: '/tmp/s', nodeVersion: '24.21.0', version: '0.1.0', args, secret: { kind: 'join', text: 'mw1:SECRET' }, unit: unitFor(template, plan, args, false), metrics: '127.0.0.1:9464', startTimeoutS: 60 })
      const file = join(dir, `${plan.mode}.sh`)
      await writeFile(file, script)
      await run('sh', ['-n', file])
      const secretLines = script.split('\n').filter(l => l.includes('mw1:SECRET'))
      expect(secretLines).toEqual(['mw1:SECRET'])
      expect(script).toMatch(/umask 077; cat > '[^']*join\.token\.tmp' <<'MESHWORK_SECRET_EOF'/)
      expect(script).toContain(systemd ? 'systemctl restart meshwork-node.service' : "nohup '/opt/meshwork/bin/meshwork' node")
    }
  })

  it('reads the install script\'s answer: the node, or why it failed', () => {
    expect(readInstallOutput('MESHWORK_STEP x\nMESHWORK_FAIL git is missing\n')).toEqual({ reason: 'git is missing' })
    expect(readInstallOutput('MESHWORK_STEP x\n')).toEqual({ reason: 'the install script ended without a result' })
    const ok = readInstallOutput('MESHWORK_NODE v24.21.0 npm\'s node package\nMESHWORK_HEALTH 1 peers connected, 2 nodes alive\nMESHWORK_RESULT {"peerId":"12D3KooWx","addrs":["/ip4/10.0.0.11/tcp/4001/p2p/12D3KooWx"],"join":"mw1:x","pid":42}\n')
    expect(ok).toEqual({ node: 'v24.21.0 npm\'s node package', health: '1 peers connected, 2 nodes alive', info: { peerId: '12D3KooWx', addrs: ['/ip4/10.0.0.11/tcp/4001/p2p/12D3KooWx'], join: 'mw1:x', pid: 42 } })
  })
})

describe('meshwork launch usage', () => {
  it('explains itself and refuses bad input with exit 2 before touching any host', async () => {
    const help = await runCli(['launch', '--help'], { timeoutMs: 30_000 })
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: meshwork launch user@host/)
    expect(help.stdout).toMatch(/--ssh-opt OPTION/)
    expect(help.stdout).toMatch(/nohup/)
    const cases: Array<{ args: string[], stderr: RegExp }> = [
      { args: ['launch'], stderr: /needs at least one user@host/ },
      { args: ['launch', 'root@vm1'], stderr: /no mesh to join/ },
      { args: ['launch', 'root@vm1', 'root@vm1', '--join', 'mw1:x'], stderr: /given twice/ },
      { args: ['launch', '-x@vm1', '--join', 'mw1:x'], stderr: /Unknown option|is not a host/ },
      { args: ['launch', 'root@vm1', '--join', 'not-a-token'], stderr: /invalid join token/ },
      { args: ['launch', 'root@vm1', '--join', 'mw1:x', '--init-repo'], stderr: /invalid join token|needs --swarm-key/ },
      { args: ['launch', 'root@vm1', '--swarm-key', '/nonexistent/swarm.key'], stderr: /swarm key/i },
      { args: ['launch', 'root@vm1', '--service', 'sytemd', '--join', 'mw1:x'], stderr: /did you mean systemd/ }
    ]
    for (const c of cases) {
      const r = await runCli(c.args, { timeoutMs: 30_000 })
      expect(r.code, describeResult(c.args, r)).toBe(2)
      expect(r.stderr, describeResult(c.args, r)).toMatch(c.stderr)
    }
  })
})
