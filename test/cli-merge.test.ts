import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, startCliMesh, killAllChildren, removeDir, describeResult, watchStatusJson, type CliNode, type StatusWatch } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'

interface Status {
  main: { head: string | null, leader: string | null, term: number, push: { remote: string, head: string, ok: boolean, error: string | null } | null }
  tasks: Array<{ id: string, state: string, mergeCommit: string | null, mergedAt: number | null, doneAt: number | null, error: string | null }>
  conflicts: Array<{ id: string, taskId: string, files: string[], hunks: Array<{ file: string, line: number, before: string, ours: string, theirs: string, after: string }>, state: string, decision: { action: string, by: string, at: number } | null }>
}

let dir = ''
const nodes: CliNode[] = []
let conn: string[] = []
let last: Status | null = null
/** The leader pushes main here (`--push`): a bare repository. */
let remote = ''

/** One status client for the whole file (`status --watch --json`), through node a. */
let watch: StatusWatch | null = null

async function status (): Promise<Status> {
  last = (await watch!.fresh()) as Status
  return last
}

/** Waits until both racing tasks run (each from the same main), then lets them finish by creating `release`. */
async function releaseWhenBothRun (ids: [string, string], release: string): Promise<void> {
  await waitFor(async () => { const s = await status(); return ids.every(id => s.tasks.find(t => t.id === id)?.state === 'running') },
    { timeoutMs: 90_000, intervalMs: 100, message: () => `${ids.join(' and ')} never ran at once: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state]))}` })
  await writeFile(release, '')
}

beforeAll(async () => {
  const remoteDir = await mkdtemp(join(tmpdir(), 'meshwork-merge-remote-'))
  remote = join(remoteDir, 'remote.git')
  await git(['init', '-q', '--bare', remote], { cwd: remoteDir })
  const mesh = await startCliMesh('meshwork-merge-', ['--agent', 'sim', '--slots', '2', '--suspect-after', '1s', '--dead-after', '3s', '--verify', 'test ! -e forbidden.txt', '--push', remote])
  dir = mesh.dir
  nodes.push(...mesh.nodes)
  conn = mesh.conn
  watch = await watchStatusJson(conn)
})

afterAll(async () => {
  await watch?.close()
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
  if (remote !== '') await removeDir(join(remote, '..'))
})

describe('merging through the CLI', { timeout: 300_000 }, () => {
  it('merges a DAG in dependency order, stops a failing verify, raises a conflict, carries out a decision; every node ends on the same main', async () => {
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, `tasks:
  - id: schema
    prompt: schema
    sim: { duration: 500ms, write: { "db/schema.sql": "create table users;\\n" } }
  - id: api
    prompt: api
    deps: [schema]
    sim: { duration: 500ms, write: { "api/users.js": "export {}\\n" } }
  - id: ui
    prompt: ui
    deps: [schema]
    sim: { duration: 500ms, write: { "ui/users.js": "export {}\\n" } }
  - id: docs
    prompt: docs
    deps: [api, ui]
    sim: { duration: 300ms, write: { "docs/users.md": "users\\n" } }
  - id: bad
    prompt: breaks the build
    sim: { duration: 300ms, write: { "forbidden.txt": "no\\n" } }
  - id: left
    prompt: left
    sim: { duration: 300ms, write: { "conf.txt": "left\\n" } }
  - id: right
    prompt: right
    deps: [left]
    sim: { duration: 300ms, write: { "conf.txt": "right\\n" } }
`)
    // "right" depends on "left" only so that the conflict is certain: it starts from a main that has left's file
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    await waitFor(async () => {
      const s = await status()
      const st = (id: string): string | undefined => s.tasks.find(t => t.id === id)?.state
      return ['schema', 'api', 'ui', 'docs', 'left', 'right'].every(id => st(id) === 'merged') && st('bad') === 'failed'
    }, { timeoutMs: 120_000, intervalMs: 100, message: () => `plan did not settle: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state, t.error]))}\n${nodes.map(n => n.describe()).join('\n')}` })
    const s = last!
    const t = (id: string) => s.tasks.find(x => x.id === id)!
    // dependency order: a dependent's work started only after its dependencies merged
    expect(t('api').doneAt!).toBeGreaterThan(t('schema').mergedAt!)
    expect(t('docs').doneAt!).toBeGreaterThan(Math.max(t('api').mergedAt!, t('ui').mergedAt!))
    expect(t('bad').error).toMatch(/--verify failed/)
    // one merge commit per task on main's first-parent history, each with its trailer
    const repoA = join(dir, 'repo-a')
    await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repoA })) === s.main.head, { timeoutMs: 30_000, message: 'node a did not follow main' })
    const log = (await gitText(['log', '--first-parent', '--format=%(trailers:key=Meshwork-Task,valueonly)', 'main'], { cwd: repoA })).split('\n').filter(l => l.trim() !== '')
    expect(log.map(l => l.trim()).sort()).toEqual(['api', 'docs', 'left', 'right', 'schema', 'ui'])
    expect(await gitText(['show', 'main:forbidden.txt'], { cwd: repoA }).catch(() => 'absent')).toBe('absent')
    // every node ends on the same main, with a clean checkout
    for (const n of ['a', 'b', 'c']) {
      const repo = join(dir, `repo-${n}`)
      await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === last!.main.head, { timeoutMs: 30_000, message: `node ${n} is not on the mesh main` })
      expect(await gitText(['status', '--porcelain'], { cwd: repo })).toBe('')
      expect(await gitText(['show', 'main:docs/users.md'], { cwd: repo })).toBe('users')
    }
    // --push: the leader pushed main to the bare remote, and says so in status --json
    await waitFor(async () => (await status()).main.push?.head === s.main.head, { timeoutMs: 30_000, intervalMs: 100, message: () => `no push of ${s.main.head} reported: ${JSON.stringify(last?.main)}` })
    expect(last!.main.push).toMatchObject({ remote, ok: true, error: null })
    expect(await gitText(['rev-parse', 'refs/heads/main'], { cwd: remote })).toBe(s.main.head)
  })

  it('a conflict waits for a human; "theirs" merges the task\'s side and records who decided', async () => {
    const plan = join(dir, 'plan2.yaml')
    // two tasks racing to write the same file from the same main: the second to merge conflicts (both are
    // held until both run, so the second starts from the same main even if it is only stolen)
    const release = join(dir, 'release-2')
    await writeFile(plan, `tasks:
  - id: red
    prompt: red
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "color.txt": "red\\n" } }
  - id: blue
    prompt: blue
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "color.txt": "blue\\n" } }
`)
    expect((await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })).code).toBe(0)
    await releaseWhenBothRun(['red', 'blue'], release)
    const conflict = await waitFor(async () => (await status()).conflicts.find(c => c.state === 'open'), { timeoutMs: 90_000, intervalMs: 100, message: () => `no conflict: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state]))}` })
    expect(conflict.files).toEqual(['color.txt'])
    const loser = conflict.taskId
    const winner = loser === 'red' ? 'blue' : 'red'
    // the record shows both sides of the hunk: main's (the task merged first) and the task's
    expect(conflict.hunks).toEqual([{ file: 'color.txt', line: 1, before: '', ours: `${winner}\n`, theirs: `${loser}\n`, after: '' }])
    expect(last!.tasks.find(x => x.id === loser)!.state).toBe('conflict')
    const bad = await runCli(['resolve', conflict.id, '--action', 'maybe', ...conn], { timeoutMs: 90_000 })
    expect(bad.code).toBe(2)
    const r = await runCli(['resolve', conflict.id, '--action', 'theirs', '--note', 'the later color wins', ...conn], { timeoutMs: 90_000 })
    expect(r.code, describeResult(['resolve'], r)).toBe(0)
    await waitFor(async () => (await status()).tasks.find(x => x.id === loser)?.state === 'merged', { timeoutMs: 60_000, intervalMs: 100, message: () => `decision not carried out: ${JSON.stringify(last?.conflicts)}` })
    const c = last!.conflicts.find(x => x.id === conflict.id)!
    expect(c.state).toBe('resolved')
    expect(c.decision?.action).toBe('theirs')
    // by: this client's peer id (its --identity), the one `meshwork whoami` prints
    const me = await runCli(['whoami'], { timeoutMs: 30_000 })
    expect(me.code, describeResult(['whoami'], me)).toBe(0)
    expect(me.stdout.trim()).toMatch(/^12D3KooW\w+$/)
    expect(c.decision?.by).toBe(me.stdout.trim())
    expect(r.stdout).toContain(`recorded by ${me.stdout.trim()}`)
    const repo = join(dir, 'repo-b')
    await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === last!.main.head, { timeoutMs: 30_000, message: 'node b is not on the mesh main' })
    expect(await gitText(['show', 'main:color.txt'], { cwd: repo })).toBe(`${loser}`)
  })

  it('"agent": the leader\'s agent (sim: the task\'s files win) resolves the conflicted merge', async () => {
    const help = await runCli(['resolve', '--help'], { timeoutMs: 30_000 })
    expect(help.stdout).toMatch(/agent +the merge leader starts the merge in a worktree/)
    const plan = join(dir, 'plan3.yaml')
    const release = join(dir, 'release-3')
    await writeFile(plan, `tasks:
  - id: tea
    prompt: tea
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "drink.txt": "tea\\n" } }
  - id: coffee
    prompt: coffee
    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "drink.txt": "coffee\\n" } }
`)
    expect((await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })).code).toBe(0)
    await releaseWhenBothRun(['tea', 'coffee'], release)
    const conflict = await waitFor(async () => (await status()).conflicts.find(c => c.state === 'open' && (c.taskId === 'tea' || c.taskId === 'coffee')), { timeoutMs: 90_000, intervalMs: 100, message: () => `no conflict: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state]))}` })
    const r = await runCli(['resolve', conflict.id, '--action', 'agent', ...conn], { timeoutMs: 90_000 })
    expect(r.code, describeResult(['resolve'], r)).toBe(0)
    await waitFor(async () => (await status()).tasks.find(x => x.id === conflict.taskId)?.state === 'merged', { timeoutMs: 60_000, intervalMs: 100, message: () => `decision not carried out: ${JSON.stringify(last?.conflicts.find(c => c.id === conflict.id))}` })
    expect(last!.conflicts.find(x => x.id === conflict.id)?.state).toBe('resolved')
    const head = last!.main.head as string
    const repo = join(dir, 'repo-c')
    await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === head, { timeoutMs: 30_000, message: 'node c is not on the mesh main' })
    expect(await gitText(['show', 'main:drink.txt'], { cwd: repo })).toBe(conflict.taskId)
    expect(await gitText(['log', '-1', '--format=%s', 'main'], { cwd: repo })).toMatch(/conflicts resolved by an agent/)
  })
})
