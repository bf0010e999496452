/**
 * Versions: which protocol sets can work together, and a real `meshwork node`
 * whose bootstrap peer is a meshwork of another wire version (a real libp2p
 * host on loopback speaking /meshwork/sync/2 and /meshwork/git/3 and calling
 * itself meshwork/9.0.0) says so in one line and exits 2.
 */
import { asPeerId } from '../src/crdt/schema.ts'
import { describe, it, expect, afterAll } from 'vitest'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHost, type Host } from '../src/node/host.ts'
import { readSwarmKey } from '../src/node/swarm-key.ts'
import { incompatibility, WIRE_PROTOCOLS, MESHWORK_VERSION, agentVersion } from '../src/node/version.ts'
import { encodePresence, decodePresence } from '../src/protocol/presence.ts'
import { runCli, makeTempDir, removeDir, describeResult, LOOPBACK_LISTEN } from './helpers/cli.ts'

const dirs: string[] = []
const hosts: Host[] = []
afterAll(async () => {
  await Promise.all(hosts.map(async h => { await h.stop() }))
  await Promise.all(dirs.map(removeDir))
})

describe('protocol versions', () => {
  it('a peer is incompatible when it speaks one of our protocols only in other versions', () => {
    expect(incompatibility(WIRE_PROTOCOLS)).toBeNull()
    expect(incompatibility([...WIRE_PROTOCOLS, '/meshwork/sync/2', '/ipfs/id/1.0.0'])).toBeNull()
    // not a meshwork peer, or one that does not serve git (a light client): nothing to judge
    expect(incompatibility(['/ipfs/id/1.0.0'])).toBeNull()
    expect(incompatibility(WIRE_PROTOCOLS.filter(p => !p.startsWith('/meshwork/git/')))).toBeNull()
    const git = WIRE_PROTOCOLS.find(p => p.startsWith('/meshwork/git/')) as string
    const other = WIRE_PROTOCOLS.filter(p => p !== git).concat('/meshwork/git/999')
    expect(incompatibility(other)).toBe(`/meshwork/git/999 (this node: ${git})`)
  })

  it('a node serving two versions of a protocol works with peers of either; a peer of neither is incompatible', () => {
    // a release that moved git to /3 and still serves /2, against the previous release and a later one
    const both = ['/meshwork/sync/1', '/meshwork/git/2', '/meshwork/git/3']
    expect(incompatibility(['/meshwork/sync/1', '/meshwork/git/2'], both)).toBeNull()
    expect(incompatibility(['/meshwork/sync/1', '/meshwork/git/3', '/meshwork/git/4'], both)).toBeNull()
    expect(incompatibility(['/meshwork/sync/1', '/meshwork/git/4'], both)).toBe('/meshwork/git/4 (this node: /meshwork/git/2,3)')
    // and the previous release, which speaks /2 only, judges the new one compatible
    expect(incompatibility(both, ['/meshwork/sync/1', '/meshwork/git/2'])).toBeNull()
  })

  it('heartbeats carry the version and stay readable by a version that does not know the field', () => {
    const p = { v: 1 as const, peerId: asPeerId('p'), name: 'n', slots: 1, running: [], heads: [], addrs: [], lagMs: 0, load: 0, rssBytes: 0, backoffUntil: null, startedAt: 0, seq: 0, leaving: false }
    expect(decodePresence(encodePresence({ ...p, version: MESHWORK_VERSION }))?.version).toBe(MESHWORK_VERSION)
    expect(decodePresence(encodePresence(p))?.version).toBeUndefined()
    expect(agentVersion()).toMatch(/^meshwork\/\d+\.\d+\.\d+/)
  })

  it('a node whose bootstrap peer runs an incompatible meshwork says so in one line and exits 2', async () => {
    const dir = await makeTempDir('meshwork-version-')
    dirs.push(dir)
    const keyFile = join(dir, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const future = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: await readSwarmKey(keyFile), listen: [LOOPBACK_LISTEN], bootstrap: [], version: '9.0.0' })
    hosts.push(future)
    await future.start()
    for (const p of ['/meshwork/sync/2', '/meshwork/members/2', '/meshwork/git/3']) await future.handle(p, stream => { stream.abort(new Error('not in this test')) })
    const addr = future.getMultiaddrs().find(a => a.toString().includes('/127.0.0.1/'))?.toString()
    expect(addr).toBeDefined()

    const args = ['node', '--repo', join(dir, 'repo'), '--data', join(dir, 'data'), '--listen', LOOPBACK_LISTEN, '--agent', 'sim', '--swarm-key', keyFile, '--bootstrap', addr as string]
    const r = await runCli(args, { timeoutMs: 120_000 })
    expect(r.code, describeResult(args, r)).toBe(2)
    // logs are JSON lines (stderr is not a TTY): the message is the one other line
    const lines = r.stderr.split('\n').filter(l => l !== '' && !l.startsWith('{'))
    expect(lines, describeResult(args, r)).toHaveLength(1)
    expect(lines[0]).toMatch(new RegExp(`^meshwork node: this node runs meshwork/${MESHWORK_VERSION.replaceAll('.', '\\.')} and the mesh node \\S+ runs meshwork/9\\.0\\.0, which speaks .*/meshwork/sync/2 .*cannot work together\\. Install the mesh's meshwork version`))
  })
})
