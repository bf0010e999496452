/**
 * Clients that fail fast (the real CLI as child processes, loopback only): an
 * address where nothing listens and a node of another mesh (another swarm key)
 * make `status` exit 1 at once, naming each address and its error, however long
 * its --timeout; with several addresses the client reads through the one that
 * answers.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { BIN, runCli, startNode, killAllChildren, makeTempDir, removeDir, describeResult, type CliNode } from './helpers/cli.ts'
import { NOBODY, closedPort } from './helpers/net.ts'

/**
 * The clients below wait up to TIMEOUT for an answer; "at once" is asserted as a
 * generous bound far below it (a CLI start on a loaded 2-core machine takes
 * seconds by itself). The aim, < 3 s, is measured by bench:e2e.
 */
const TIMEOUT = '5m'
const FAST_MS = 60_000
const REFUSED = 'connection refused'
const HANDSHAKE = 'handshake failed: wrong swarm key or not a meshwork node'

describe('meshwork client commands fail fast', () => {
  let dir = ''
  let keyA = ''
  let keyB = ''
  let nodeB: CliNode
  let deadAddr = ''

  beforeAll(async () => {
    dir = await makeTempDir()
    keyA = join(dir, 'a.key')
    keyB = join(dir, 'b.key')
    for (const k of [keyA, keyB]) {
      const r = await runCli(['init', '--out', k], { timeoutMs: 30_000 })
      expect(r.code, describeResult(['init', '--out', k], r)).toBe(0)
    }
    // a node of mesh B; the clients below hold mesh A's key
    nodeB = await startNode({ dir, name: 'b', keyFile: keyB, extraArgs: ['--agent', 'sim'] })
    deadAddr = `/ip4/127.0.0.1/tcp/${await closedPort()}/p2p/${NOBODY}`
  }, 60_000)

  afterAll(async () => {
    await killAllChildren()
    await removeDir(dir)
  })

  it('an address where nothing listens: exit 1 at once, "connection refused", whatever the --timeout', async () => {
    const args = ['status', '--swarm-key', keyA, '--bootstrap', deadAddr, '--timeout', TIMEOUT]
    const r = await runCli(args, { timeoutMs: 100_000 })
    expect(r.code, describeResult(args, r)).toBe(1)
    expect(r.stderr, describeResult(args, r)).toContain(`${deadAddr}: ${REFUSED}`)
    expect(r.stdout).toBe('')
    expect(r.ms, describeResult(args, r)).toBeLessThan(FAST_MS)
  })

  it('a node of another mesh (another swarm key): exit 1 at once, "handshake failed", naming the address', async () => {
    const addr = nodeB.info.addrs[0]!
    const args = ['status', '--json', '--swarm-key', keyA, '--bootstrap', addr, '--timeout', TIMEOUT]
    const r = await runCli(args, { timeoutMs: 100_000 })
    expect(r.code, describeResult(args, r)).toBe(1)
    expect(r.stderr, describeResult(args, r)).toContain(`${addr}: ${HANDSHAKE}`)
    expect(r.stdout).toBe('')
    expect(r.ms, describeResult(args, r)).toBeLessThan(FAST_MS)
  })

  it('both at once: the message names each address with its own error', async () => {
    const addr = nodeB.info.addrs[0]!
    const args = ['status', '--swarm-key', keyA, '--bootstrap', deadAddr, '--bootstrap', addr, '--timeout', TIMEOUT]
    const r = await runCli(args, { timeoutMs: 100_000 })
    expect(r.code, describeResult(args, r)).toBe(1)
    expect(r.stderr, describeResult(args, r)).toContain(`${deadAddr}: ${REFUSED}`)
    expect(r.stderr, describeResult(args, r)).toContain(`${addr}: ${HANDSHAKE}`)
    expect(r.ms, describeResult(args, r)).toBeLessThan(FAST_MS)
  })

  it('a dead address before a live one: the client reads through the node that answers', async () => {
    const addr = nodeB.info.addrs[0]!
    const args = ['status', '--json', '--swarm-key', keyB, '--bootstrap', deadAddr, '--bootstrap', addr, '--timeout', TIMEOUT]
    const r = await runCli(args, { timeoutMs: 100_000 })
    expect(r.code, describeResult(args, r)).toBe(0)
    const s = JSON.parse(r.stdout) as { nodes: Array<{ peerId: string }> }
    expect(s.nodes.map(n => n.peerId)).toEqual([nodeB.info.peerId])
  })

  it('status --watch whose reader closes its stdout (`| head -1`) exits 0 at its next refresh, without a stack trace', async () => {
    const proc = spawn(process.execPath, [BIN, 'status', '--watch', '--json', '--interval', '250ms', '--swarm-key', keyB, '--bootstrap', nodeB.info.addrs[0]!], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    proc.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const closed = new Promise<number | null>(resolve => proc.once('close', c => { resolve(c) }))
    // the first report, then the reader goes away
    await new Promise<void>((resolve, reject) => {
      proc.stdout.once('data', () => { resolve() })
      proc.once('close', () => { reject(new Error(`status --watch exited before its first report\n${stderr}`)) })
    })
    proc.stdout.destroy()
    expect({ code: await closed, stderr }).toEqual({ code: 0, stderr: '' })
  })
})
