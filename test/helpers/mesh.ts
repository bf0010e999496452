import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MeshNode, type MeshNodeInit } from '../../src/node/mesh-node.ts'
import { generateSwarmKey, type SwarmKey } from '../../src/node/swarm-key.ts'
import { waitFor } from '../../src/util/wait.ts'
import { gitText } from '../../src/git/git.ts'

export const LOOPBACK = '/ip4/127.0.0.1/tcp/0'

/** A temp dir removed by `cleanup`. */
export async function tempDir (prefix = 'meshwork-test-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

export interface TestMesh {
  key: SwarmKey
  /** Cuts every link between the two groups (through the connection gater) and hangs up. */
  partition: (a: MeshNode[], b: MeshNode[]) => Promise<void>
  /** Lets all links form again. */
  heal: () => void
  nodes: MeshNode[]
  dirs: string[]
  /** Starts one more node bootstrapped through the first. */
  add: (init?: Partial<MeshNodeInit>) => Promise<MeshNode>
  stop: () => Promise<void>
}

/**
 * Starts `n` real nodes on loopback, each with its own data dir, all
 * bootstrapped through the first one (like `createMesh(5)` in js-libp2p's tests).
 */
export async function createMesh (n: number, init: Partial<MeshNodeInit> = {}): Promise<TestMesh> {
  const key = init.swarmKey ?? generateSwarmKey()
  const root = await tempDir()
  const blocked = new Set<string>()
  const cut = (x: string, y: string): boolean => blocked.has(`${x}|${y}`)
  const gaterFor = (self: () => string) => ({
    denyDialPeer: (peer: { toString: () => string }) => cut(self(), peer.toString()),
    denyInboundEncryptedConnection: (peer: { toString: () => string }) => cut(self(), peer.toString()),
    denyOutboundEncryptedConnection: (peer: { toString: () => string }) => cut(self(), peer.toString())
  })
  const mesh: TestMesh = {
    key,
    partition: async (a, b) => {
      for (const x of a) {
        for (const y of b) {
          blocked.add(`${x.peerId}|${y.peerId}`)
          blocked.add(`${y.peerId}|${x.peerId}`)
        }
      }
      await Promise.all(a.flatMap(x => b.map(async y => {
        await x.host.hangUp(y.host.peerId).catch(() => {})
        await y.host.hangUp(x.host.peerId).catch(() => {})
      })))
    },
    heal: () => { blocked.clear() },
    nodes: [],
    dirs: [root],
    add: async (extra = {}) => {
      const i = mesh.nodes.length
      const first = mesh.nodes[0]
      let selfId = ''
      const node: MeshNode = new MeshNode({
        connectionGater: gaterFor(() => selfId),
        role: 'node',
        swarmKey: key,
        dataDir: join(root, `n${i}`),
        listen: [LOOPBACK],
        bootstrap: first !== undefined ? [first.addrs()[0] as string] : [],
        name: `n${i}`,
        heartbeatMs: 500,
        suspectAfterMs: 1500,
        deadAfterMs: 4000,
        ...init,
        ...extra
      })
      await node.start()
      selfId = node.peerId
      mesh.nodes.push(node)
      return node
    },
    stop: async () => {
      await Promise.all(mesh.nodes.map(async n => { await n.stop() }))
      await rm(root, { recursive: true, force: true })
    }
  }
  for (let i = 0; i < n; i++) await mesh.add()
  return mesh
}

/** Waits until every node's board has the same heads (and optionally satisfies `check`). */
export async function waitConverged (nodes: MeshNode[], timeoutMs = 20_000, check: (n: MeshNode) => boolean = () => true): Promise<void> {
  await waitFor(() => {
    const h = nodes[0]?.board.heads().join()
    return nodes.every(n => n.board.heads().join() === h && check(n))
  }, {
    timeoutMs,
    message: () => `boards did not converge: ${nodes.map(n => `${n.name}:${n.board.heads().map(h => h.slice(0, 6)).join('+')}`).join(' ')}`
  })
}

/** Waits until every node sees every other as alive. */
export async function waitAllAlive (nodes: MeshNode[], timeoutMs = 20_000): Promise<void> {
  await waitFor(() => nodes.every(n => nodes.every(o => o === n || n.membership.get(o.peerId)?.state === 'alive')), {
    timeoutMs,
    message: () => `not all alive: ${nodes.map(n => `${n.name} sees ${n.membership.alive().length}`).join(', ')}`
  })
}

/**
 * Waits until every board names one main, every node's repository (`repoOf`)
 * has its `main` there, and each of `ids` is merged on every board with its
 * merge commit on that main's first-parent history; returns that main. The
 * check after a partition heals.
 */
export async function waitOneCompleteMain (nodes: MeshNode[], repoOf: (n: MeshNode) => string, ids: readonly string[], timeoutMs: number): Promise<string> {
  let lastProblem = ''
  let head = ''
  await waitFor(async () => {
    const heads = new Set(nodes.map(n => n.board.snapshot().main.head))
    if (heads.size !== 1) { lastProblem = `boards disagree on main: ${[...heads].join(' ')}`; return false }
    head = [...heads][0] as string
    for (const n of nodes) {
      const states = ids.map(id => `${id}=${n.board.task(id)?.state}`).join(',')
      if (!ids.every(id => n.board.task(id)?.state === 'merged')) { lastProblem = `${n.name}: ${states}`; return false }
      if (await gitText(['rev-parse', 'main'], { cwd: repoOf(n) }) !== head) { lastProblem = `${n.name}'s repo is not on main ${head}`; return false }
      const firstParent = new Set((await gitText(['rev-list', '--first-parent', head], { cwd: repoOf(n) })).split('\n'))
      const missing = ids.filter(id => !firstParent.has(n.board.task(id)?.mergeCommit as string))
      if (missing.length > 0) { lastProblem = `${n.name}: merges of ${missing.join(', ')} not on main ${head} (${states})`; return false }
    }
    return true
  }, { timeoutMs, intervalMs: 250, message: () => `no single complete main after the heal: ${lastProblem}` })
  return head
}

/** The task ids of the `Meshwork-Task` trailers on `main`'s first-parent history in `repo`, sorted. */
export async function mainTrailers (repo: string): Promise<string[]> {
  return (await gitText(['log', '--first-parent', '--format=%(trailers:key=Meshwork-Task,valueonly)', 'main'], { cwd: repo })).split('\n').map(l => l.trim()).filter(l => l !== '').sort()
}
