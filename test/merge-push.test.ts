import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { join } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo, revParse } from './helpers/git.ts'
import { Leadership } from '../src/merge/leadership.ts'
import { MainPusher, type PushReport } from '../src/merge/main-push.ts'
import { pushError, pushMain, redactRemote } from '../src/git/push.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { str } from '../src/crdt/board.ts'
import { buildStatus } from '../src/api/status.ts'
import { renderStatus } from '../src/cli/render.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import { git } from '../src/git/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

let mesh: TestMesh | null = null
let leadership: Leadership | null = null

afterAll(async () => {
  await leadership?.stop()
  await mesh?.stop()
})

/** A finished task on the board whose branch `meshwork/<id>` (from main) writes `files`, held by `node`. */
async function doneTask (node: MeshNode, repo: string, id: string, files: Record<string, string>): Promise<void> {
  await git(['checkout', '-q', '-B', `meshwork/${id}`, 'main'], { cwd: repo })
  const head = await commitFiles(repo, files, id)
  await git(['checkout', '-q', 'main'], { cwd: repo })
  node.changeBoard('test:done', d => {
    addTasks([simpleTask(id)])(d)
    const rec = d.tasks[id] as Record<string, unknown>
    rec.state = str('done')
    rec.head = str(head)
    rec.holders = [str(node.peerId)]
    rec.doneAt = Date.now()
  })
}

describe('the push of main (unit)', () => {
  it('coalesces: one push at a time, and after a burst of advances only the newest head is pushed next', async () => {
    const calls: string[] = []
    let running = 0
    let maxRunning = 0
    const releases: Array<() => void> = []
    const reports: PushReport[] = []
    const pusher = new MainPusher({
      repo: '/nowhere',
      remote: 'https://user:secret@example.invalid/r.git',
      branch: 'main',
      logger: silentLogger,
      onResult: r => { reports.push(r) },
      push: async (_repo, _remote, head) => {
        calls.push(head)
        running++
        maxRunning = Math.max(maxRunning, running)
        await new Promise<void>(resolve => { releases.push(resolve) })
        running--
        return { ok: true, error: null }
      }
    })
    pusher.request('h1')
    await waitFor(() => releases.length === 1, { timeoutMs: 5000, message: 'first push did not start' })
    pusher.request('h2')
    pusher.request('h3')
    releases[0]!()
    await waitFor(() => releases.length === 2, { timeoutMs: 5000, message: 'second push did not start' })
    releases[1]!()
    await pusher.idle()
    expect(calls).toEqual(['h1', 'h3'])
    expect(maxRunning).toBe(1)
    expect(reports.map(r => [r.head, r.ok])).toEqual([['h1', true], ['h3', true]])
    // credentials in a URL never reach the board
    expect(reports[0]!.remote).toBe('https://***@example.invalid/r.git')
    pusher.stop()
  })

  it('pushes nothing once this node no longer leads', async () => {
    const calls: string[] = []
    let leads = true
    const pusher = new MainPusher({ repo: '/nowhere', remote: 'origin', branch: 'main', logger: silentLogger, onResult: () => {}, active: () => leads, push: async (_r, _m, head) => { calls.push(head); return { ok: true, error: null } } })
    pusher.request('h1')
    await pusher.idle()
    leads = false
    pusher.request('h2')
    await pusher.idle()
    expect(calls).toEqual(['h1'])
    pusher.stop()
  })

  it('reports an unreachable remote and git\'s rejection text', async () => {
    expect(redactRemote('/srv/git/app.git')).toBe('/srv/git/app.git')
    const out = await pushMain(process.cwd(), join(process.cwd(), 'no-such-remote.git'), 'HEAD', 'main')
    expect(out.ok).toBe(false)
    expect(out.error).toMatch(/does not appear to be a git repository/)
    expect(pushError('To /r.git\n!\tabc:refs/heads/main\t[rejected] (fetch first)\nDone\n', 'hint: Updates were rejected\nerror: failed to push some refs to \'/r.git\'\n', 1)).toMatch(/^refs\/heads\/main \[rejected\] \(fetch first\): the remote branch has commits that main does not contain/)
  })
})

describe('--push on the merge leader (real git)', { timeout: 120_000 }, () => {
  let root = ''
  let repo = ''
  let remote = ''
  let node: MeshNode

  beforeAll(async () => {
    mesh = await createMesh(1)
    node = mesh.nodes[0] as MeshNode
    root = mesh.dirs[0] as string
    repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'README.md': 'base\n' }, 'base')
    remote = join(root, 'remote.git')
    await git(['init', '-q', '--bare', remote], { cwd: root })
    leadership = new Leadership({ node, repo, worktreesDir: join(root, 'worktrees'), branch: 'main', logger: silentLogger, electionTimeoutMs: 300, push: remote })
    leadership.start()
    await waitFor(() => leadership!.isLeader(), { timeoutMs: 20_000, message: 'the only node did not become leader' })
  })

  const main = (): ReturnType<MeshNode['board']['snapshot']>['main'] => node.board.snapshot().main
  const merged = (ids: string[]): boolean => ids.every(id => node.board.task(id)?.state === 'merged')

  it('pushes main after merges; the remote follows the mesh main', async () => {
    await doneTask(node, repo, 'a', { 'a.txt': 'a\n' })
    await doneTask(node, repo, 'b', { 'b.txt': 'b\n' })
    await waitFor(() => merged(['a', 'b']), { timeoutMs: 30_000, message: () => `not merged: ${[...node.board.snapshot().tasks.values()].map(t => `${t.id}=${t.state} ${t.error ?? ''}`).join(', ')}` })
    const head = main().head as string
    await waitFor(() => main().push?.head === head, { timeoutMs: 30_000, message: () => `no push of ${head} reported: ${JSON.stringify(main().push)}` })
    expect(main().push).toMatchObject({ remote, head, ok: true, error: null, by: node.peerId })
    expect(await revParse(remote, 'refs/heads/main')).toBe(head)
    expect(buildStatus(node.board.snapshot(), null).main.push).toMatchObject({ head, ok: true })
  })

  it('a remote that moved to an unrelated commit: the push is rejected and reported, the remote is not overwritten; the next good push clears it', async () => {
    // someone else's history lands on the remote's main
    const other = await initRepo(join(root, 'other'))
    const foreign = await commitFiles(other, { 'x.txt': 'unrelated\n' }, 'unrelated')
    await git(['push', '-q', '--force', remote, 'main:refs/heads/main'], { cwd: other })
    await doneTask(node, repo, 'c', { 'c.txt': 'c\n' })
    await waitFor(() => merged(['c']), { timeoutMs: 30_000, message: 'c not merged' })
    const head = main().head as string
    await waitFor(() => main().push?.head === head, { timeoutMs: 30_000, message: () => `no push of ${head} reported: ${JSON.stringify(main().push)}` })
    const push = main().push!
    expect(push.ok).toBe(false)
    expect(push.error).toMatch(/rejected/)
    expect(await revParse(remote, 'refs/heads/main')).toBe(foreign)
    const report = buildStatus(node.board.snapshot(), null)
    expect(report.main.push).toMatchObject({ head, ok: false })
    expect(renderStatus(report, node.peerId)).toMatch(/PUSH REJECTED: .*\[rejected\]/)

    // the remote is put right (here: its main deleted); the next advance pushes and clears the error
    await git(['update-ref', '-d', 'refs/heads/main'], { cwd: remote })
    await doneTask(node, repo, 'd', { 'd.txt': 'd\n' })
    await waitFor(() => merged(['d']), { timeoutMs: 30_000, message: 'd not merged' })
    const next = main().head as string
    await waitFor(() => main().push?.head === next && main().push?.ok === true, { timeoutMs: 30_000, message: () => `no successful push of ${next}: ${JSON.stringify(main().push)}` })
    expect(main().push?.error).toBeNull()
    expect(await revParse(remote, 'refs/heads/main')).toBe(next)
  })
})
