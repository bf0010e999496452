/**
 * A restarted node finds its mesh by itself, and a join token outlives the
 * node that printed it (real `meshwork node` processes on loopback): the first
 * node of a mesh, started without --bootstrap, is killed and started again on
 * a new port, and dials the peers it remembered in DATA/peers.json; the
 * others see it alive again. The token in a node's node.json carries live
 * peers' addresses, so a client holding it still connects after that node died.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../src/util/wait.ts'
import { decodeJoinToken } from '../src/node/join-token.ts'
import { startNode, killAllChildren, removeDir, statusJson, nodeStates, readNodeInfo, newMeshDir, type StatusJson } from './helpers/cli.ts'

const dirs: string[] = []
afterAll(async () => {
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

const aliveCount = (s: StatusJson): number => s.nodes.filter(n => n.state === 'alive').length

describe('finding the mesh again', () => {
  it('the first node, restarted on a new port without --bootstrap, rejoins its peers; a token taken from a node works after that node died', async () => {
    const { dir, keyFile } = await newMeshDir('meshwork-rejoin-', dirs)
    const fast = ['--agent', 'sim', '--suspect-after', '2s', '--dead-after', '4s']
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: fast })
    const b = await startNode({ dir, name: 'b', join: a.info.join, extraArgs: fast })
    const c = await startNode({ dir, name: 'c', join: a.info.join, extraArgs: fast })
    let last: StatusJson | null = null
    const statusVia = async (token: string): Promise<StatusJson | null> => {
      try { last = await statusJson(['--join', token, '--timeout', '20s'], 40_000); return last } catch { return null }
    }
    await waitFor(async () => { const s = await statusVia(b.info.join); return s !== null && aliveCount(s) === 3 }, { timeoutMs: 60_000, intervalMs: 500, message: () => `three nodes never alive: ${nodeStates(last)}` })
    // a remembers b and c on disk
    await waitFor(async () => {
      try {
        const known = JSON.parse(await readFile(join(a.dataDir, 'peers.json'), 'utf8')) as { peers: Array<{ peerId: string }> }
        const ids = known.peers.map(p => p.peerId)
        return ids.includes(b.info.peerId) && ids.includes(c.info.peerId)
      } catch { return false }
    }, { timeoutMs: 40_000, intervalMs: 500, message: 'a/peers.json never named b and c' })
    // b's node.json token gains its live peers' addresses (rewritten every few seconds: c's may come in
    // after a's, and the token must carry c's, through which it reaches the mesh once a and b are gone)
    const bToken = await waitFor(async () => {
      const info = await readNodeInfo(b.dataDir)
      if (info === null) return null
      const addrs = decodeJoinToken(info.join).bootstrap
      return [a, b, c].every(n => addrs.some(x => x.endsWith(n.info.peerId))) ? info.join : null
    }, { timeoutMs: 40_000, intervalMs: 500, message: 'b/node.json never carried a\'s and c\'s addresses' })

    // the first node dies and comes back on a new port, with no --bootstrap: it finds b and c from peers.json
    a.proc.kill('SIGKILL')
    await a.exited
    const a2 = await startNode({ dir, name: 'a', keyFile, extraArgs: fast })
    expect(a2.info.peerId).toBe(a.info.peerId)
    expect(a2.info.addrs).not.toEqual(a.info.addrs)
    await waitFor(async () => { const s = await statusVia(a2.info.join); return s !== null && aliveCount(s) === 3 }, { timeoutMs: 60_000, intervalMs: 500, message: () => `the restarted first node did not find its peers: ${nodeStates(last)}\n${a2.describe()}` })
    await waitFor(async () => { const s = await statusVia(c.info.join); return s !== null && s.nodes.some(n => n.peerId === a.info.peerId && n.state === 'alive') }, { timeoutMs: 60_000, intervalMs: 500, message: () => `c does not see a alive again: ${nodeStates(last)}` })

    // b dies: the token taken from b still reaches the mesh through the other addresses it carries
    b.proc.kill('SIGKILL')
    await b.exited
    const s = await statusJson(['--join', bToken, '--timeout', '20s'], 40_000)
    expect(s.nodes.some(n => n.peerId === c.info.peerId && n.state === 'alive')).toBe(true)
  })
})
