/**
 * Clients have an identity of their own (`--identity`, env MESHWORK_IDENTITY):
 * a key made on first use, used as the client's libp2p identity, printed by
 * `meshwork whoami`, and recorded as `by` on the decisions it makes. Two runs
 * of one identity write as different Automerge actors of that peer, so their
 * changes never collide.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createMesh, tempDir, waitConverged, type TestMesh } from './helpers/mesh.ts'
import { runCli, describeResult, removeDir } from './helpers/cli.ts'
import { connectClient, type Client } from '../src/api/client.ts'
import { cancelTask, resolveConflict, submitTasks } from '../src/api/tasks.ts'
import { defaultClientIdentityFile, loadClientIdentity, peerIdOf } from '../src/node/identity.ts'
import { actorBelongsTo, actorForPeer, sessionActorForPeer, str } from '../src/crdt/board.ts'
import { addTasks, newTaskRecord, simpleTask } from '../src/crdt/ops.ts'
import type { BoardSnapshot, Conflict } from '../src/crdt/schema.ts'
import { waitFor } from '../src/util/wait.ts'

let mesh: TestMesh | null = null
const dirs: string[] = []
const clients: Client[] = []

afterEach(async () => {
  await Promise.all(clients.splice(0).map(async c => { await c.close() }))
  await mesh?.stop()
  mesh = null
  await Promise.all(dirs.splice(0).map(removeDir))
})

async function dir (): Promise<string> {
  const d = await tempDir('meshwork-identity-')
  dirs.push(d)
  return d
}

describe('client identity', () => {
  it('is made on first use under the user config dir (0600 in a 0700 dir) and kept', async () => {
    const home = await dir()
    const file = defaultClientIdentityFile({ XDG_CONFIG_HOME: home })
    expect(file).toBe(join(home, 'meshwork', 'client.key'))
    expect(defaultClientIdentityFile({ HOME: '/home/x' }).endsWith(join('.config', 'meshwork', 'client.key'))).toBe(true)
    const a = peerIdOf(await loadClientIdentity(file))
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(join(home, 'meshwork'))).mode & 0o777).toBe(0o700)
    expect(peerIdOf(await loadClientIdentity(file))).toBe(a)
  })

  it('`meshwork whoami` prints the peer id of --identity or MESHWORK_IDENTITY, creating it once', async () => {
    const d = await dir()
    const key = join(d, 'me.key')
    const first = await runCli(['whoami', '--identity', key], { timeoutMs: 30_000 })
    expect(first.code, describeResult(['whoami'], first)).toBe(0)
    const id = first.stdout.trim()
    expect(id).toMatch(/^12D3KooW\w+$/)
    expect((await stat(key)).mode & 0o777).toBe(0o600)
    const again = await runCli(['whoami', '--json'], { timeoutMs: 30_000, env: { MESHWORK_IDENTITY: key } })
    expect(again.code, describeResult(['whoami'], again)).toBe(0)
    expect(JSON.parse(again.stdout)).toEqual({ peerId: id, identity: key })
    // the default file (XDG_CONFIG_HOME of the test run) is another identity
    const other = await runCli(['whoami'], { timeoutMs: 30_000, env: { XDG_CONFIG_HOME: d } })
    expect(other.stdout.trim()).not.toBe(id)
    expect((await stat(join(d, 'meshwork', 'client.key'))).mode & 0o777).toBe(0o600)
    const bad = await runCli(['whoami', '--identity', join(key, 'not-a-dir', 'k')], { timeoutMs: 30_000 })
    expect(bad.code, describeResult(['whoami'], bad)).toBe(2)
    expect(bad.stderr).toContain('--identity')
  })

  it('a session actor belongs to its peer, differs per run, and no other peer can claim it', () => {
    const a = sessionActorForPeer('12D3KooWA')
    const b = sessionActorForPeer('12D3KooWA')
    expect(a).not.toBe(b)
    expect(a.startsWith(actorForPeer('12D3KooWA'))).toBe(true)
    expect(actorBelongsTo(a, '12D3KooWA')).toBe(true)
    expect(actorBelongsTo(actorForPeer('12D3KooWA'), '12D3KooWA')).toBe(true)
    expect(actorBelongsTo(a, '12D3KooWB')).toBe(false)
    expect(actorBelongsTo(actorForPeer('12D3KooWA') + 'ab', '12D3KooWA')).toBe(false)
  })

  it('a client connects with its key: the mesh sees its peer id, and a decision records it as `by`', async () => {
    mesh = await createMesh(1)
    const node = mesh.nodes[0]!
    const key = await loadClientIdentity(join(await dir(), 'client.key'))
    const client = await connectClient({ key: mesh.key, bootstrap: [node.addrs()[0] as string], timeoutMs: 20_000, privateKey: key })
    clients.push(client)
    expect(client.node.peerId).toBe(peerIdOf(key))
    await waitFor(() => node.connectedPeers().some(p => p.toString() === peerIdOf(key)), { timeoutMs: 10_000, message: 'the node does not see the client under its key\'s peer id' })
    node.changeBoard('test:conflict', d => {
      // a conflict is the leader's to open: the node leads (a node elects only itself)
      d.main.leader = str(node.peerId)
      d.main.term = d.main.term + 1
      const t = newTaskRecord(simpleTask('t'), Date.now())
      t.state = str('conflict')
      d.tasks.t = t
      d.conflicts['t-1'] = { id: str('t-1'), taskId: str('t'), files: [str('a.txt')], hunks: [], state: str('open'), decision: null, error: null }
    })
    const conflict = (n: { board: { snapshot: () => BoardSnapshot } }): Conflict | undefined => [...n.board.snapshot().conflicts.values()].find(c => c.id === 't-1')
    await waitFor(() => conflict(client.node) !== undefined, { timeoutMs: 10_000, message: 'the conflict did not reach the client' })
    await resolveConflict(client, 't-1', 'theirs', 'mine')
    await waitFor(() => conflict(node)?.decision?.by === peerIdOf(key), {
      timeoutMs: 10_000,
      message: () => `decision.by on the node: ${JSON.stringify(conflict(node)?.decision)}`
    })
  })

  it('two runs of one identity at once both land their changes (no duplicate sequence numbers)', async () => {
    mesh = await createMesh(2)
    const key = await loadClientIdentity(join(await dir(), 'client.key'))
    const [n0, n1] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0]]
    // each run reaches another node and writes before it hears the other's change
    const a = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000, privateKey: key })
    const b = await connectClient({ key: mesh.key, bootstrap: [n1.addrs()[0] as string], timeoutMs: 20_000, privateKey: key })
    clients.push(a, b)
    await Promise.all([submitTasks(a, [simpleTask('from-a')]), submitTasks(b, [simpleTask('from-b')])])
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('from-a') !== undefined && n.board.task('from-b') !== undefined)
    // and later changes of both runs still apply everywhere
    await cancelTask(a, 'from-b')
    await cancelTask(b, 'from-a')
    await waitConverged(mesh.nodes, 20_000, n => n.board.task('from-a')?.state === 'cancelled' && n.board.task('from-b')?.state === 'cancelled')
  })

  it('a run that follows the board (status --watch, tui) keeps hearing it while another run of its identity comes and goes', async () => {
    mesh = await createMesh(1)
    const n0 = mesh.nodes[0]!
    const key = await loadClientIdentity(join(await dir(), 'client.key'))
    const watcher = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000, privateKey: key })
    clients.push(watcher)
    // gossipsub keeps one stream per peer id: the second run takes the node's over
    const other = await connectClient({ key: mesh.key, bootstrap: [n0.addrs()[0] as string], timeoutMs: 20_000, privateKey: key })
    await submitTasks(other, [simpleTask('while-both')])
    await other.close()
    n0.changeBoard('plan', addTasks([simpleTask('after-other')]))
    await waitFor(() => watcher.node.board.task('while-both') !== undefined && watcher.node.board.task('after-other') !== undefined, {
      timeoutMs: 10_000,
      message: () => `the watching run stopped hearing the board: ${[...watcher.node.board.snapshot().tasks.keys()].join(', ') || 'no tasks'}`
    })
  })
})
