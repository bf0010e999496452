/**
 * `submit --wait` through real `meshwork node` processes when the node it
 * follows its plan through is killed (-9) mid-plan: it says so on stderr,
 * follows through the other bootstrap node, prints every task merged and
 * exits 0. Runs are held on a file until the kill is done, so the plan cannot
 * settle first however fast or slow the host.
 */
import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startCliMesh, killAllChildren, removeDir, spawnCli, tail, type CliMesh, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

let mesh: CliMesh | null = null

beforeAll(async () => {
  mesh = await startCliMesh('meshwork-follow-', ['--agent', 'sim', '--slots', '2', '--suspect-after', '2s', '--dead-after', '6s', '--log-level', 'debug'])
})

afterAll(async () => {
  await killAllChildren()
  if (mesh !== null) await removeDir(mesh.dir)
})

describe('submit --wait when its node dies', () => {
  it('follows through the other bootstrap node and exits 0 once every task merged', async () => {
    const { dir, keyFile, nodes } = mesh!
    const [, b, c] = nodes as [CliNode, CliNode, CliNode]
    const ids = ['f1', 'f2', 'f3', 'f4']
    const release = join(dir, 'release')
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n' + ids.map(id => `  - id: ${id}\n    prompt: do ${id}\n    sim: { duration: 0s, until: ${JSON.stringify(release)} }\n`).join(''))
    // every node has its repository and advertises its slots before the plan goes in
    await waitFor(() => nodes.every(n => /"event":"repo:(cloned|ready|initialized)"|"event":"node:started"/.test(n.stderr())), { timeoutMs: 60_000, message: 'the nodes never started' })
    const client = spawnCli(['submit', plan, '--wait', '--json', '--swarm-key', keyFile, '--bootstrap', b.info.addrs[0]!, '--bootstrap', c.info.addrs[0]!, '--timeout', '60s'])
    const context = (): string => `${tail('client stdout', client.stdout.text)}\n${tail('client stderr', client.stderr.text)}\n${nodes.map(n => tail(`${n.name} stderr`, n.stderr().split('\n').filter(l => /follow:|task:|leader:/.test(l)).join('\n'), 1500)).join('\n')}`
    // a node logs each follow request and its end (debug): both are asked at once, the one that answers
    // last is let go at once, and the other is followed (a stream begun and not ended)
    const following = (n: CliNode): number => (n.stderr().match(/"event":"follow:start"/g) ?? []).length - (n.stderr().match(/"event":"follow:end"/g) ?? []).length
    let followed: CliNode | undefined
    await waitFor(() => {
      const now = [b, c].filter(n => following(n) > 0)
      followed = now.length === 1 ? now[0] : undefined
      return followed !== undefined && /"state":"running"/.test(client.stdout.text)
    }, { timeoutMs: 60_000, message: () => `the plan was not followed through one of b and c with a task running\n${context()}` })
    followed!.proc.kill('SIGKILL')
    await followed!.exited
    await waitFor(() => client.stderr.text.includes(`lost ${followed!.info.peerId}`), { timeoutMs: 60_000, message: () => `the client never said it lost ${followed!.name}\n${context()}` })
    const other = followed === b ? c : b
    await waitFor(() => following(other) > 0, { timeoutMs: 60_000, message: () => `the client never followed through ${other.name}\n${context()}` })
    await writeFile(release, '')
    const done = await Promise.race([client.exited, new Promise<null>(resolve => { setTimeout(() => { resolve(null) }, 180_000).unref() })])
    expect(done, `submit --wait did not exit within 180 s\n${context()}`).not.toBeNull()
    expect(done!.code, context()).toBe(0)
    const lines = client.stdout.text.trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
    expect(lines.at(-1)).toEqual({ summary: { merged: 4, failed: 0, cancelled: 0, conflict: 0, blocked: 0 } })
    for (const id of ids) expect(lines, id).toContainEqual(expect.objectContaining({ id, state: 'merged' }))
    expect(client.stderr.text).toMatch(new RegExp(`lost ${followed!.info.peerId} \\(.+\\); asking the bootstrap nodes again`))
  })
})
