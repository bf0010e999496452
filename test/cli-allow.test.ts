/**
 * `meshwork node --allow FILE` with real processes: a client whose peer id
 * (`--identity`, `meshwork whoami`) is on the list works; one that is not
 * fails fast with a message naming its id and the fix; SIGHUP reloads the
 * list, and the second client is let in without a restart. A reload that no
 * longer lists a connected node hangs up on it and keeps it out (both sides
 * hold each other dead), and listing it again lets it back in: what the chaos
 * run's partition is made of.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { appendFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, describeResult, killAllChildren, makeTempDir, removeDir, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { loadOrCreateIdentity, peerIdOf } from '../src/node/identity.ts'

let dir = ''
let node: CliNode | null = null
const others: CliNode[] = []

beforeAll(async () => { dir = await makeTempDir('meshwork-cli-allow-') })
afterAll(async () => {
  await node?.stop().catch(() => {})
  await Promise.all(others.map(async n => { await n.stop().catch(() => {}) }))
  await killAllChildren()
  await removeDir(dir)
})

async function whoami (key: string): Promise<string> {
  const r = await runCli(['whoami', '--identity', key], { timeoutMs: 30_000 })
  expect(r.code, describeResult(['whoami'], r)).toBe(0)
  return r.stdout.trim()
}

describe('meshwork node --allow', { timeout: 180_000 }, () => {
  it('admits the clients it lists, refuses the others at once, and reloads the list on SIGHUP', async () => {
    const keyFile = join(dir, 'swarm.key')
    expect((await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })).code).toBe(0)
    const listedKey = join(dir, 'listed.key')
    const strangerKey = join(dir, 'stranger.key')
    const listed = await whoami(listedKey)
    const stranger = await whoami(strangerKey)
    const allow = join(dir, 'allow.txt')
    await writeFile(allow, `# clients\n${listed}  # the listed one\n`)
    node = await startNode({ dir, name: 'a', keyFile, extraArgs: ['--agent', 'sim', '--allow', allow] })
    const conn = ['--join', node.info.join]

    const ok = await runCli(['status', '--json', '--identity', listedKey, ...conn], { timeoutMs: 60_000 })
    expect(ok.code, describeResult(['status', '--identity', 'listed'], ok)).toBe(0)
    expect(JSON.parse(ok.stdout).nodes.map((n: { peerId: string }) => n.peerId)).toContain(node.info.peerId)

    const no = await runCli(['status', '--identity', strangerKey, '--timeout', '120s', ...conn], { timeoutMs: 150_000 })
    expect(no.code, describeResult(['status', '--identity', 'stranger'], no)).toBe(1)
    expect(no.stderr).toContain('does not admit this client')
    expect(no.stderr).toContain(stranger)
    expect(no.stderr).toContain('--allow')
    // the connection is cut after the handshake: fails as fast as a wrong key does, not at --timeout (the SPEC's
    // 3 s is a benchmark's figure; here, well before a timeout no host is slow enough to reach by itself)
    expect(no.ms, describeResult(['status', '--identity', 'stranger'], no)).toBeLessThan(60_000)
    await waitFor(() => node!.stderr().includes('peer:not-allowed'), { timeoutMs: 10_000, message: () => `the node did not log the refusal\n${node!.describe()}` })

    // let the stranger in: edit the file, SIGHUP, and it works without a restart
    await appendFile(allow, `${stranger}\n`)
    node.proc.kill('SIGHUP')
    await waitFor(() => node!.stderr().includes('allow:reloaded'), { timeoutMs: 10_000, message: () => `the node did not reload the list\n${node!.describe()}` })
    const now = await runCli(['status', '--identity', strangerKey, ...conn], { timeoutMs: 60_000 })
    expect(now.code, describeResult(['status', '--identity', 'stranger'], now)).toBe(0)
    expect(node.running()).toBe(true)
  })
})

describe('meshwork node --allow, reloaded without a connected node', { timeout: 180_000 }, () => {
  it('hangs up on the node it no longer lists and keeps it out (both hold the other dead); listing it again lets it back', async () => {
    const sub = join(dir, 'drop')
    await mkdir(sub)
    const keyFile = join(sub, 'swarm.key')
    expect((await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })).code).toBe(0)
    // the nodes' identities made before they start (what `meshwork node --print-peer-id` does)
    const [idA, idB] = await Promise.all(['data-a', 'data-b'].map(async d => peerIdOf(await loadOrCreateIdentity(join(sub, d))))) as [string, string]
    const allowA = join(sub, 'allow-a.txt')
    const allowB = join(sub, 'allow-b.txt')
    const both = `${idA} # a\n${idB} # b\n`
    await writeFile(allowA, both)
    await writeFile(allowB, both)
    const common = ['--agent', 'sim', '--suspect-after', '1s', '--dead-after', '3s']
    const a = await startNode({ dir: sub, name: 'a', keyFile, extraArgs: [...common, '--allow', allowA] })
    others.push(a)
    const b = await startNode({ dir: sub, name: 'b', join: a.info.join, extraArgs: [...common, '--allow', allowB] })
    others.push(b)
    // what each node's failure detector says, from its JSON log
    const logged = (n: CliNode, event: string, since: number, peer?: string): Array<Record<string, unknown>> => n.stderr().split('\n').flatMap(l => {
      try { const v = JSON.parse(l) as Record<string, unknown>; return v.event === event && Number(v.time) >= since && (peer === undefined || v.peer === peer) ? [v] : [] } catch { return [] }
    })
    const until = async (n: CliNode, event: string, since: number, peer: string, what: string): Promise<void> => {
      await waitFor(() => logged(n, event, since, peer).length > 0, { timeoutMs: 60_000, intervalMs: 200, message: () => `${what}\n${a.describe()}\n${b.describe()}` })
    }
    await until(a, 'peer:alive', 0, idB, 'a never saw b alive')
    await until(b, 'peer:alive', 0, idA, 'b never saw a alive')

    // a stops trusting b: the open connection is closed at the reload, and the redials are refused
    await writeFile(allowA, `${idA} # a\n`)
    const cut = Date.now()
    a.proc.kill('SIGHUP')
    await waitFor(() => logged(a, 'allow:reloaded', cut).length > 0, { timeoutMs: 10_000, message: () => `a did not reload its list\n${a.describe()}` })
    expect(logged(a, 'allow:reloaded', cut)[0]?.disconnected, a.describe()).toBe(1)
    await until(a, 'peer:dead', cut, idB, 'a did not hold b dead after dropping it from its list')
    await until(b, 'peer:dead', cut, idA, 'b did not hold a dead (a must refuse its redials)')
    await until(a, 'peer:not-allowed', cut, idB, 'a did not refuse a connection of b')
    expect(logged(a, 'peer:alive', cut, idB), a.describe()).toEqual([])
    expect(a.running() && b.running()).toBe(true)

    // trusted again: they find each other without a restart
    await writeFile(allowA, both)
    const heal = Date.now()
    a.proc.kill('SIGHUP')
    await until(a, 'peer:alive', heal, idB, 'a did not see b alive again once b was listed again')
    await until(b, 'peer:alive', heal, idA, 'b did not see a alive again')
  })
})
