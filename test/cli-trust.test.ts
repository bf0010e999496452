/**
 * The one-shot commands and refusals around who may do what: `meshwork
 * token`, `meshwork node --print-peer-id`, `meshwork init --allowlist`, and
 * the usage errors of `--worktrees` inside the data dir, a bad `--allow`
 * file and a bad `--listen` address. No mesh runs here (see cli-allow.test.ts for that).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { runCli, describeResult, makeTempDir, removeDir } from './helpers/cli.ts'
import { peerIdOf } from '../src/node/identity.ts'
import { parseAllowlist } from '../src/node/allowlist.ts'

let dir = ''
beforeAll(async () => { dir = await makeTempDir('meshwork-cli-trust-') })
afterAll(async () => { await removeDir(dir) })

describe('meshwork token', () => {
  it('prints the join token from DATA/node.json; without one it says which data dir it read (exit 2)', async () => {
    const data = join(dir, 'token-data')
    await mkdir(data)
    const missing = await runCli(['token', '--data', data], { timeoutMs: 30_000 })
    expect(missing.code, describeResult(['token'], missing)).toBe(2)
    expect(missing.stderr).toContain(join(data, 'node.json'))
    await writeFile(join(data, 'node.json'), JSON.stringify({ peerId: '12D3KooWx', addrs: [], join: 'mw1:TOKEN-abc', pid: 1 }))
    const r = await runCli(['token', '--data', data], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['token'], r)).toBe(0)
    expect(r.stdout).toBe('mw1:TOKEN-abc\n')
    const j = await runCli(['token', '--json', '--data', data], { timeoutMs: 30_000 })
    expect(JSON.parse(j.stdout)).toEqual({ join: 'mw1:TOKEN-abc', data })
  })
})

describe('meshwork node --print-peer-id', () => {
  it('prints the peer id of the data dir\'s identity, creating it first when missing', async () => {
    const data = join(dir, 'pid-data')
    const r = await runCli(['node', '--print-peer-id', '--data', data], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['node', '--print-peer-id'], r)).toBe(0)
    const id = r.stdout.trim()
    expect(id).toMatch(/^12D3KooW\w+$/)
    expect(peerIdOf(privateKeyFromProtobuf(await readFile(join(data, 'identity.key'))))).toBe(id)
    expect((await stat(join(data, 'identity.key'))).mode & 0o777).toBe(0o600)
    const again = await runCli(['node', '--print-peer-id', '--data', data], { timeoutMs: 30_000 })
    expect(again.stdout.trim()).toBe(id)
    const none = await runCli(['node', '--print-peer-id'], { timeoutMs: 30_000 })
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('--data DIR')
  })
})

describe('meshwork init --allowlist', () => {
  it('writes a starter allowlist with this client\'s id (never overwriting) that --allow accepts', async () => {
    const file = join(dir, 'allow.txt')
    const key = join(dir, 'client.key')
    const extra = '12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE'
    const r = await runCli(['init', '--allowlist', file, '--add', extra, '--identity', key], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['init', '--allowlist'], r)).toBe(0)
    const me = (await runCli(['whoami', '--identity', key], { timeoutMs: 30_000 })).stdout.trim()
    const text = await readFile(file, 'utf8')
    expect(text).toContain('meshwork node --print-peer-id')
    expect(parseAllowlist(text)).toEqual([me, extra])
    const twice = await runCli(['init', '--allowlist', file, '--identity', key], { timeoutMs: 30_000 })
    expect(twice.code).toBe(2)
    expect(twice.stderr).toContain('already exists')
    expect(await readFile(file, 'utf8')).toBe(text)
  })
})

describe('meshwork node refuses what would expose its secrets or admit nobody sensible', () => {
  it('--worktrees inside (or holding) the data dir is a usage error (exit 2), before anything starts', async () => {
    const key = join(dir, 'swarm.key')
    expect((await runCli(['init', '--out', key], { timeoutMs: 30_000 })).code).toBe(0)
    const data = join(dir, 'wt-data')
    const base = ['node', '--repo', join(dir, 'wt-repo'), '--init-repo', '--data', data, '--swarm-key', key, '--agent', 'sim', '--listen', '/ip4/127.0.0.1/tcp/0']
    for (const wt of [join(data, 'worktrees'), data, dir]) {
      const r = await runCli([...base, '--worktrees', wt], { timeoutMs: 30_000 })
      expect(r.code, describeResult([...base, '--worktrees', wt], r)).toBe(2)
      expect(r.stderr).toContain('--worktrees')
    }
  })

  it('an --allow file that is missing or names something that is not a peer id is a usage error listing each bad line', async () => {
    const key = join(dir, 'swarm2.key')
    expect((await runCli(['init', '--out', key], { timeoutMs: 30_000 })).code).toBe(0)
    const base = ['node', '--repo', join(dir, 'allow-repo'), '--init-repo', '--data', join(dir, 'allow-data'), '--swarm-key', key, '--agent', 'sim', '--listen', '/ip4/127.0.0.1/tcp/0']
    const missing = await runCli([...base, '--allow', join(dir, 'nope.txt')], { timeoutMs: 30_000 })
    expect(missing.code, describeResult(base, missing)).toBe(2)
    expect(missing.stderr).toContain('nope.txt')
    const bad = join(dir, 'bad-allow.txt')
    await writeFile(bad, '# ok\n12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE # a node\nalice\n\nbob carol\n')
    const r = await runCli([...base, '--allow', bad], { timeoutMs: 30_000 })
    expect(r.code, describeResult(base, r)).toBe(2)
    expect(r.stderr).toContain('line 3: "alice" is not a peer id')
    expect(r.stderr).toContain('line 5: "bob carol" is not a peer id')
  })

  it('a --listen address the node could not listen on is a usage error naming it and a good one, before anything is created', async () => {
    const key = join(dir, 'swarm3.key')
    expect((await runCli(['init', '--out', key], { timeoutMs: 30_000 })).code).toBe(0)
    const repo = join(dir, 'listen-repo')
    const base = ['node', '--repo', repo, '--init-repo', '--data', join(dir, 'listen-data'), '--swarm-key', key, '--agent', 'sim']
    for (const [addr, why] of [['garbage', 'must start with "/"'], ['/ip4/127.0.0.1', 'no /tcp/<port>'], ['/ip4/127.0.0.1/tcp/0/p2p/12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE', 'names no peer']] as const) {
      const r = await runCli([...base, '--listen', addr], { timeoutMs: 30_000 })
      expect(r.code, describeResult([...base, '--listen', addr], r)).toBe(2)
      expect(r.stderr).toContain(`bad --listen address "${addr}"`)
      expect(r.stderr).toContain(why)
      expect(r.stderr).toContain('/ip4/0.0.0.0/tcp/4001')
    }
    await expect(stat(repo)).rejects.toThrow()
  })
})
