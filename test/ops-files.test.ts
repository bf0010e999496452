/**
 * The operations files: the systemd unit passes `systemd-analyze verify`, the
 * cloud-init user-data passes cloud-init's schema check (or parses as YAML
 * where cloud-init is not installed) and carries the same unit, and
 * `--join-file` reads a token from a file with clear usage errors.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { BIN, runCli, describeResult, makeTempDir, removeDir } from './helpers/cli.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')
const UNIT = join(ROOT, 'scripts', 'systemd', 'meshwork-node.service')
const USER_DATA = join(ROOT, 'scripts', 'cloud-init', 'meshwork-node.yaml')

const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(removeDir)) })

async function has (cmd: string): Promise<boolean> {
  return await run('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false)
}

/** The `Key=Value` lines of a unit's sections (comments dropped, continuations joined). */
function directives (text: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const line of text.replace(/\\\n\s*/g, '').split('\n').map(l => l.trim())) {
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue
    const i = line.indexOf('=')
    const k = line.slice(0, i)
    out.set(k, [...(out.get(k) ?? []), line.slice(i + 1).replace(/\s+/g, ' ')])
  }
  return out
}

/** `systemd-analyze verify` on a copy of `unitText` whose ExecStart points at this checkout's CLI. */
async function verifyUnit (unitText: string, name: string): Promise<{ code: number, output: string }> {
  const dir = await makeTempDir('meshwork-unit-')
  dirs.push(dir)
  const file = join(dir, name)
  await writeFile(file, unitText.replaceAll('/usr/local/bin/meshwork', BIN))
  try {
    const r = await run('systemd-analyze', ['verify', file])
    return { code: 0, output: (r.stdout + r.stderr).trim() }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, output: (e.stdout + e.stderr).trim() }
  }
}

describe('systemd unit', () => {
  it('has the settings operations rely on', async () => {
    const d = directives(await readFile(UNIT, 'utf8'))
    expect(d.get('Restart')).toEqual(['on-failure'])
    expect(d.get('KillMode')).toEqual(['control-group'])
    expect(d.get('EnvironmentFile')).toEqual(['/etc/meshwork/meshwork.env'])
    expect(d.get('Environment')).toContain('MESHWORK_JOIN_FILE=/etc/meshwork/join.token')
    const exec = d.get('ExecStart')?.[0] ?? ''
    expect(exec).toMatch(/ --data \/var\/lib\/meshwork\/data /)
    // no secrets on the command line
    expect(exec).not.toMatch(/--join |mw1:|--swarm-key|ANTHROPIC/)
    // the stop timeout outlasts the node's grace period
    const grace = Number(/--grace (\d+)s/.exec(exec)?.[1])
    expect(Number(/^(\d+)s$/.exec(d.get('TimeoutStopSec')?.[0] ?? '')?.[1])).toBeGreaterThan(grace)
  })

  it('passes systemd-analyze verify, which rejects a broken unit', async (ctx) => {
    if (!await has('systemd-analyze')) ctx.skip(true, 'systemd-analyze is not installed (apt-get install systemd)')
    const good = await verifyUnit(await readFile(UNIT, 'utf8'), 'meshwork-node.service')
    expect(good, good.output).toEqual({ code: 0, output: '' })
    // the check can fail: systemd-analyze reports (on stderr, exit 0) settings it cannot parse
    const bad = await verifyUnit((await readFile(UNIT, 'utf8')).replace('KillMode=control-group', 'KillMode=agents-too'), 'meshwork-bad.service')
    expect(bad.output).toMatch(/kill mode/i)
  })
})

describe('cloud-init user-data', () => {
  it('is valid cloud-config that writes the 0600 credentials, the token file and the same unit, then starts it', async () => {
    const text = await readFile(USER_DATA, 'utf8')
    expect(text.startsWith('#cloud-config\n')).toBe(true)
    const doc = parse(text) as { write_files: Array<{ path: string, permissions: string, content: string }>, runcmd: string[][], packages: string[] }
    const file = (p: string): { path: string, permissions: string, content: string } => {
      const f = doc.write_files.find(w => w.path === p)
      if (f === undefined) throw new Error(`user-data writes no ${p}`)
      return f
    }
    expect(file('/etc/meshwork/meshwork.env').permissions).toBe('0600')
    expect(file('/etc/meshwork/join.token').permissions).toBe('0600')
    expect(doc.packages).toContain('git')
    // the unit it installs is the one in scripts/systemd, comments aside
    expect(directives(file('/etc/systemd/system/meshwork-node.service').content)).toEqual(directives(await readFile(UNIT, 'utf8')))
    expect(doc.runcmd).toContainEqual(['systemctl', 'enable', '--now', 'meshwork-node.service'])
    expect(file('/usr/local/sbin/meshwork-install').content).toMatch(/sha256sum -c/)
  })

  it('passes cloud-init schema, which rejects a broken file', async (ctx) => {
    if (!await has('cloud-init')) ctx.skip(true, 'cloud-init is not installed (apt-get install cloud-init); the YAML test above still reads the file')
    const ok = await run('cloud-init', ['schema', '-c', USER_DATA])
    expect(ok.stdout).toMatch(/Valid cloud-config/)
    const dir = await makeTempDir('meshwork-ci-')
    dirs.push(dir)
    const bad = join(dir, 'bad.yaml')
    await writeFile(bad, (await readFile(USER_DATA, 'utf8')).replace(/^packages:\n(  - .*\n)+/m, 'packages: git\n'))
    await expect(run('cloud-init', ['schema', '-c', bad])).rejects.toThrow(/packages/)
  })
})

describe('--join-file', () => {
  it('reads the token from a file; a missing, empty or doubled token is a usage error', async () => {
    const dir = await makeTempDir('meshwork-joinfile-')
    dirs.push(dir)
    const missing = join(dir, 'nope.token')
    const empty = join(dir, 'empty.token')
    const bad = join(dir, 'bad.token')
    await writeFile(empty, '\n')
    await writeFile(bad, 'not-a-token\n')
    const cases: Array<{ args: string[], env?: Record<string, string>, stderr: RegExp }> = [
      { args: ['status', '--join-file', missing], stderr: /cannot read --join-file .*nope\.token: ENOENT/ },
      { args: ['status', '--join-file', empty], stderr: /--join-file .*empty\.token is empty/ },
      { args: ['status', '--join-file', bad], stderr: /invalid join token/ },
      { args: ['status', '--join-file', bad, '--join', 'mw1:x'], stderr: /not both/ },
      { args: ['status'], env: { MESHWORK_JOIN_FILE: missing }, stderr: /cannot read --join-file/ }
    ]
    for (const c of cases) {
      const r = await runCli(c.args, { timeoutMs: 30_000, ...(c.env !== undefined ? { env: c.env } : {}) })
      expect(r.code, describeResult(c.args, r)).toBe(2)
      expect(r.stderr, describeResult(c.args, r)).toMatch(c.stderr)
    }
  })
})
