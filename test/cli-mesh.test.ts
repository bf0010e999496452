/**
 * The real CLI, as child processes: `init`, usage errors, a 5-node mesh seen
 * through `status --json`, kill -9 and restart, a wrong swarm key, graceful stop
 * and a damaged board file. Everything listens on loopback only; every wait is a
 * bounded condition poll.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { readFile, rename, rm, stat, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { KNOWN_PEERS_FILE } from '../src/node/known-peers.ts'
import {
  runCli, startNode, statusJson, killAllChildren, makeTempDir, removeDir, describeResult, nodeStates, nodeArgs, readNodeInfo,
  type CliNode, type StatusJson, type CliResult
} from './helpers/cli.ts'

/** Fast failure detection for the mesh (SPEC defaults are 3 s / 10 s). */
const DEAD_AFTER_MS = 4000
// membership and board tests: the sim agent (the default, claude, is refused at start when no `claude` is installed)
const TIMING = ['--agent', 'sim', '--suspect-after', '1s', '--dead-after', `${DEAD_AFTER_MS / 1000}s`]
const MEMBER_STATES = ['alive', 'suspect', 'dead', 'left']

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

async function tempRoot (): Promise<string> {
  const d = await makeTempDir()
  dirs.push(d)
  return d
}

/**
 * Polls `status --json` through `connArgs` until `ok(status)` holds; a status
 * that fails (no node answered yet) is retried. Rejects after `timeoutMs` with
 * `what`, the last status seen and the last error.
 */
async function pollStatus (connArgs: string[], ok: (s: StatusJson) => boolean, what: string, timeoutMs: number, context: () => string = () => ''): Promise<StatusJson> {
  let last: StatusJson | null = null
  let lastErr = ''
  return await waitFor(async () => {
    try {
      last = await statusJson(connArgs)
      lastErr = ''
      return ok(last) ? last : null
    } catch (err) {
      lastErr = (err as Error).message
      return null
    }
  }, {
    timeoutMs,
    intervalMs: 200,
    message: () => `${what}; last status: ${nodeStates(last)}${lastErr !== '' ? `\nlast status error: ${lastErr}` : ''}${context() !== '' ? '\n' + context() : ''}`
  })
}

const ids = (s: StatusJson): string[] => s.nodes.map(n => n.peerId).sort()
const stateOf = (s: StatusJson, peerId: string): string | undefined => s.nodes.find(n => n.peerId === peerId)?.state

describe('meshwork CLI: init and usage errors', () => {
  afterEach(async () => { await killAllChildren() })

  it('init writes a 0600 pnet key and prints the mesh id; usage errors exit 2 with a message', async () => {
    const root = await tempRoot()
    const keyFile = join(root, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    expect(init.stdout).toMatch(/mesh [0-9a-f]{16}\b/)
    const mode = (await stat(keyFile)).mode & 0o777
    expect(mode.toString(8)).toBe('600')
    const keyText = await readFile(keyFile, 'utf8')
    expect(keyText).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n?$/)

    const missingKey = join(root, 'nonexistent', 'swarm.key')
    const cases: Array<{ args: string[], code: number, stdout?: RegExp, stderr?: RegExp }> = [
      // a second init to the same path refuses to overwrite the key
      { args: ['init', '--out', keyFile], code: 2, stderr: /already exists/ },
      { args: ['--help'], code: 0, stdout: /Usage: meshwork <command>/ },
      { args: ['status', '--help'], code: 0, stdout: /--swarm-key FILE/ },
      { args: ['status', '--no-such-flag'], code: 2, stderr: /--no-such-flag/ },
      // no key from flags or env (the helper strips MESHWORK_* from the environment)
      { args: ['status'], code: 2, stderr: /no swarm key.*--swarm-key/ },
      { args: ['status', '--swarm-key', missingKey], code: 2, stderr: new RegExp(`cannot read the swarm key file ${missingKey.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`) }
    ]
    const results = await Promise.all(cases.map(async c => await runCli(c.args, { timeoutMs: 30_000 })))
    cases.forEach((c, i) => {
      const r = results[i] as CliResult
      const msg = describeResult(c.args, r)
      expect(r.code, msg).toBe(c.code)
      if (c.stdout !== undefined) expect(r.stdout, msg).toMatch(c.stdout)
      if (c.stderr !== undefined) expect(r.stderr, msg).toMatch(c.stderr)
      // a usage error is one message naming the problem, not a stack trace
      if (c.code === 2) expect(r.stderr, msg).not.toMatch(/\n\s+at /)
    })
    expect(results[0]!.stderr).toContain(keyFile)
    // the refused init left the key alone
    expect(await readFile(keyFile, 'utf8')).toBe(keyText)
  })
})

describe('meshwork CLI: a 5-node mesh of processes', () => {
  let root = ''
  let keyFile = ''
  let meshId = ''
  const nodes: CliNode[] = []
  /** The original peer ids, in start order (they must survive restarts). */
  let peers: string[] = []
  const viaFirst = (): string[] => ['--join', nodes[0]!.info.join]
  const meshContext = (): string => nodes.map(n => (n.running() ? '' : `[node ${n.name} is not running (exit ${n.proc.exitCode ?? n.proc.signalCode})]\n`) + n.describe()).join('\n')

  beforeAll(async () => {
    root = await tempRoot()
    keyFile = join(root, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    meshId = /mesh ([0-9a-f]{16})/.exec(init.stdout)?.[1] ?? ''
    nodes.push(await startNode({ dir: root, name: 'n0', keyFile, extraArgs: TIMING }))
    const join0 = nodes[0]!.info.join
    nodes.push(...await Promise.all([1, 2, 3, 4].map(async i => await startNode({ dir: root, name: `n${i}`, join: join0, extraArgs: TIMING }))))
    peers = nodes.map(n => n.info.peerId)
  })

  it('status --json through a light client lists exactly the 5 nodes, all alive, in the SPEC shape', async () => {
    expect(new Set(peers).size).toBe(5)
    for (const n of nodes) {
      expect(n.info.addrs.length).toBeGreaterThan(0)
      for (const a of n.info.addrs) expect(a).toMatch(new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${n.info.peerId}$`))
      expect(n.info.join).toMatch(/^mw1:/)
      expect(n.stdout()).toContain(`peerId ${n.info.peerId}`)
    }
    const want = [...peers].sort()
    const s = await pollStatus(viaFirst(), st => JSON.stringify(ids(st)) === JSON.stringify(want) && st.nodes.every(n => n.state === 'alive'),
      'status never listed exactly the 5 nodes, all alive', 30_000, meshContext)

    // SPEC shape of `status --json`
    expect(s.meshId).toBe(meshId)
    expect(Object.keys(s)).toEqual(expect.arrayContaining(['meshId', 'main', 'nodes', 'tasks', 'conflicts']))
    // (fields may be added, so match rather than equal)
    expect(s.main).toMatchObject({ term: expect.any(Number) })
    expect(s.main.head === null || /^[0-9a-f]{40,64}$/.test(s.main.head), `main.head ${s.main.head}`).toBe(true)
    expect(s.main.leader === null || peers.includes(s.main.leader), `main.leader ${s.main.leader}`).toBe(true)
    expect(s.tasks).toEqual([])
    expect(s.conflicts).toEqual([])
    for (const n of s.nodes) {
      expect(n).toMatchObject({ peerId: expect.any(String), name: expect.any(String), state: 'alive', slots: expect.any(Number), running: [], lastSeenMs: expect.any(Number) })
      expect(Number.isInteger(n.slots) && n.slots >= 0, `slots ${n.slots}`).toBe(true)
      expect(MEMBER_STATES).toContain(n.state)
      expect(n.name).toBe(nodes[peers.indexOf(n.peerId)]!.name)
    }
  })

  it('kill -9: the node goes dead; restarted on its data dir it keeps its peer id, its board, and is alive again', async () => {
    const victim = nodes[3]!
    const victimId = victim.info.peerId
    // what the victim keeps is its own board: it must hold every node's registration before it dies
    // (the node registry reaches each node by gossip; n0 listing all five alive says nothing of n3's board)
    const viaVictim = ['--swarm-key', keyFile, '--bootstrap', victim.info.addrs[0]!]
    let registry: string[] = []
    await waitFor(async () => {
      const r = await runCli(['export', ...viaVictim], { timeoutMs: 40_000 })
      if (r.code !== 0) throw new Error(describeResult(['export', ...viaVictim], r))
      registry = (JSON.parse(r.stdout) as { nodes: Array<{ peerId: string }> }).nodes.map(n => n.peerId).sort()
      return JSON.stringify(registry) === JSON.stringify([...peers].sort())
    }, { timeoutMs: 30_000, intervalMs: 200, message: () => `the victim's board never held all 5 registrations (it has ${registry.join(', ')})\n${meshContext()}` })
    const killedAt = Date.now()
    const exit = await victim.stop('SIGKILL')
    expect(exit.signal).toBe('SIGKILL')
    // bound: --dead-after 4 s, widened by the failure detector on a lagging host (at most 4x, usually ~1x), plus status round trips
    const dead = await pollStatus(viaFirst(), st => stateOf(st, victimId) === 'dead',
      `the killed node ${victimId} did not turn dead within 20 s of kill -9`, 20_000, meshContext)
    // not instantly: dead needs seconds of silence (the node was alive just before)
    expect(Date.now() - killedAt).toBeGreaterThan(1000)
    for (const p of peers) if (p !== victimId) expect(stateOf(dead, p), `${p} in ${nodeStates(dead)}`).toBe('alive')

    // restarted alone, its board comes from disk only: no bootstrap, and without the peers it knew
    // (DATA/peers.json: with it the node dials them by itself, see cli-rejoin.test.ts)
    // (a scratch --repo: with no peers to clone from, a node starts a new history in an empty repo)
    await rm(join(victim.dataDir, KNOWN_PEERS_FILE), { force: true })
    const alone = await startNode({ dir: root, name: 'n3', dataDir: victim.dataDir, repoDir: join(root, 'repo-n3-alone'), keyFile, extraArgs: TIMING })
    expect(alone.info.peerId).toBe(victimId)
    const fromDisk = await statusJson(['--swarm-key', keyFile, '--bootstrap', alone.info.addrs[0]!])
    expect(ids(fromDisk), 'the node registry on the restarted node\'s disk board').toEqual([...peers].sort())
    expect(stateOf(fromDisk, victimId)).toBe('alive')
    // it really is alone: it has heard none of the others
    for (const p of peers) if (p !== victimId) expect(stateOf(fromDisk, p), nodeStates(fromDisk)).not.toBe('alive')
    expect((await alone.stop('SIGTERM')).code, alone.describe()).toBe(0)

    // restarted into the mesh: same peer id, alive again for the others
    const back = await startNode({ dir: root, name: 'n3', dataDir: victim.dataDir, join: nodes[0]!.info.join, extraArgs: TIMING })
    nodes[3] = back
    expect(back.info.peerId).toBe(victimId)
    expect((await readNodeInfo(victim.dataDir))?.pid).toBe(back.pid)
    await pollStatus(viaFirst(), st => ids(st).length === 5 && st.nodes.every(n => n.state === 'alive'),
      `the restarted node ${victimId} did not turn alive again`, 20_000, meshContext)

    // a client that knows only the restarted node sees the whole mesh through it
    const viaBack = ['--swarm-key', keyFile, '--bootstrap', back.info.addrs[0]!]
    await pollStatus(viaBack, st => JSON.stringify(ids(st)) === JSON.stringify([...peers].sort()) && st.nodes.every(n => n.state === 'alive'),
      'status through the restarted node did not list all 5 nodes alive', 20_000, meshContext)
  })

  it('a node with another swarm key cannot connect: clients fail at once naming the address, the mesh never lists it', async () => {
    const wrongKey = join(root, 'wrong.key')
    const init = await runCli(['init', '--out', wrongKey], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const meshAddr = nodes[0]!.info.addrs[0]!
    const intruder = await startNode({ dir: root, name: 'intruder', keyFile: wrongKey, bootstrap: [meshAddr], extraArgs: [...TIMING, '--log-level', 'debug'] })
    const intruderId = intruder.info.peerId
    try {
      // a client with the wrong key and the mesh's address: exit 1 without waiting for its timeout,
      // naming the address and the failed handshake
      const args = ['status', '--json', '--swarm-key', wrongKey, '--bootstrap', meshAddr, '--timeout', '5m']
      const r = await runCli(args, { timeoutMs: 100_000 })
      expect(r.code, describeResult(args, r)).toBe(1)
      expect(r.stderr, describeResult(args, r)).toContain(`${meshAddr}: handshake failed: wrong swarm key or not a meshwork node`)
      expect(r.ms, describeResult(args, r)).toBeLessThan(60_000)
      expect(r.stdout).toBe('')

      // the intruder keeps dialing the mesh (and failing); meanwhile the mesh never lists it
      const dialFailures = (): number => intruder.stderr().split('\n').filter(l => l.includes('"dial:failed"') && l.includes(nodes[0]!.info.peerId)).length
      let polls = 0
      let lastErr = ''
      await waitFor(async () => {
        let s: StatusJson
        try {
          s = await statusJson(viaFirst())
        } catch (err) {
          lastErr = (err as Error).message
          return null
        }
        polls++
        if (s.nodes.some(n => n.peerId === intruderId)) throw new Error(`the mesh lists the wrong-key node ${intruderId}: ${nodeStates(s)}`)
        expect(ids(s)).toEqual([...peers].sort())
        return dialFailures() >= 2 && polls >= 2
      }, { timeoutMs: 40_000, intervalMs: 200, message: () => `the wrong-key node did not fail to dial the mesh twice (${dialFailures()} failures, ${polls} status polls)\n${intruder.describe()}${lastErr !== '' ? `\nlast status error: ${lastErr}` : ''}` })

      // and through its own key, the intruder is alone
      const alone = await statusJson(['--swarm-key', wrongKey, '--bootstrap', intruder.info.addrs[0]!])
      expect(ids(alone)).toEqual([intruderId])
    } finally {
      await intruder.stop('SIGKILL')
    }
  })

  it('SIGTERM: the node exits 0 and shows as left, not dead, even past --dead-after', async () => {
    const leaver = nodes[4]!
    const leaverId = leaver.info.peerId
    const exit = await leaver.stop('SIGTERM', 15_000)
    expect(exit, leaver.describe()).toEqual({ code: 0, signal: null })
    const stoppedAt = Date.now()
    await pollStatus(viaFirst(), st => stateOf(st, leaverId) === 'left', `the stopped node ${leaverId} did not show as left`, 15_000, meshContext)
    // it stays left (a graceful stop is not a failure) once the failure detector would have called it dead
    let lastErr = ''
    await waitFor(async () => {
      let s: StatusJson
      try {
        s = await statusJson(viaFirst())
      } catch (err) {
        lastErr = (err as Error).message
        return null
      }
      const st = stateOf(s, leaverId)
      if (st !== 'left') throw new Error(`the gracefully stopped node ${leaverId} is "${st}", not left: ${nodeStates(s)}`)
      return Date.now() - stoppedAt > DEAD_AFTER_MS + 1500
    }, { timeoutMs: 30_000, intervalMs: 200, message: () => `status did not answer while watching the stopped node: ${lastErr}\n${meshContext()}` })
  })

  it('a damaged board file: the node refuses to start, says how to recover, and deletes nothing', async () => {
    const victim = nodes[4]!
    if (victim.running()) await victim.stop('SIGTERM')
    const boardFile = join(victim.dataDir, 'board.am')
    const logFile = join(victim.dataDir, 'board.log')
    const identityFile = join(victim.dataDir, 'identity.key')
    const nodeJson = join(victim.dataDir, 'node.json')
    const files = [boardFile, logFile, identityFile, nodeJson]
    const size = (await stat(boardFile)).size
    expect(size).toBeGreaterThan(0)
    await truncate(boardFile, Math.floor(size / 2))
    const before = await Promise.all(files.map(async f => await readFile(f)))

    const args = nodeArgs({ dir: root, name: victim.name, dataDir: victim.dataDir, join: nodes[0]!.info.join, extraArgs: TIMING })
    // it exits on its own, quickly (it does not wait for peers or retry), with a runtime-failure code
    const r = await runCli(args, { timeoutMs: 30_000 })
    const msg = describeResult(args, r)
    expect(r.signal, msg).toBeNull()
    expect(r.code, msg).not.toBe(0)
    expect(r.ms, msg).toBeLessThan(15_000)
    expect(r.stderr, msg).toContain(boardFile)
    expect(r.stderr, msg).toMatch(/\bmv .*board\.am/)

    // nothing deleted or rewritten: the damaged board, its log, the identity, and no new node.json
    const after = await Promise.all(files.map(async f => await readFile(f)))
    after.forEach((buf, i) => { expect(Buffer.compare(buf, before[i]!), `${files[i]} changed by the failed start`).toBe(0) })

    // the advice works: with the damaged files moved aside the node starts, keeps its peer id and rejoins
    await rename(boardFile, boardFile + '.damaged')
    await rename(logFile, logFile + '.damaged')
    const recovered = await startNode({ dir: root, name: victim.name, dataDir: victim.dataDir, join: nodes[0]!.info.join, extraArgs: TIMING })
    nodes[4] = recovered
    expect(recovered.info.peerId).toBe(victim.info.peerId)
    await pollStatus(viaFirst(), st => JSON.stringify(ids(st)) === JSON.stringify([...peers].sort()) && st.nodes.every(n => n.state === 'alive'),
      'the node recovered from a damaged board did not rejoin alive', 20_000, meshContext)
    expect((await readFile(boardFile + '.damaged')).equals(before[0]!)).toBe(true)
  })
})
