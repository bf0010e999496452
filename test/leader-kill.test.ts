import { describe, it, expect, afterAll } from 'vitest'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { runCli, startCliMesh, killAllChildren, removeDir, describeResult, statusJson, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { gitText } from '../src/git/git.ts'
import { defaultWorktreesDir } from '../src/git/worktree.ts'

interface Task { id: string, state: string, mergeCommit: string | null, error: string | null }
interface Status { main: { head: string | null, leader: string | null, term: number }, tasks: Task[] }

let dir = ''

let marks = ''

afterAll(async () => {
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
  if (marks !== '') await removeDir(marks)
})

const TASKS = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6']

describe('the merge leader killed mid-merge', { timeout: 300_000 }, () => {
  it('kill -9 during --verify: main is never half-advanced, a new leader finishes, every task is merged exactly once', async () => {
    // the verify leaves a mark when it starts and takes long enough to be killed during it
    marks = join(tmpdir(), `meshwork-verify-marks-${process.pid}-${Date.now()}`)
    await mkdir(marks)
    // (its working dir, in the running leader's worktrees dir, names the node it runs on)
    const verify = `pwd > "${marks}/$(date +%s%N)-$$"; sleep 4`
    const mesh = await startCliMesh('meshwork-leader-kill-', ['--agent', 'sim', '--slots', '2', '--suspect-after', '1s', '--dead-after', '3s', '--verify', verify])
    dir = mesh.dir
    let conn = mesh.conn
    let last: Status | null = null
    const status = async (): Promise<Status> => { last = await statusJson(conn, 90_000) as unknown as Status; return last }
    await waitFor(async () => (await status()).main.leader, { timeoutMs: 60_000, intervalMs: 500, message: 'no leader elected' })
    const termBefore = last!.main.term

    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n' + TASKS.map(id => `  - id: ${id}\n    prompt: ${id}\n    sim: { duration: 300ms, write: { "${id}.txt": "${id}\\n" } }\n`).join(''))
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)

    // the first verify run starts on the leader: kill it while the check runs
    await waitFor(async () => (await readdir(marks)).length > 0, { timeoutMs: 120_000, intervalMs: 50, message: () => `no verify started\n${mesh.nodes.map(n => n.describe()).join('\n')}` })
    // the node the check runs on leads now (two nodes electing themselves at once keep one of them, which need
    // not be the leader the first status named): that one is killed
    const ranIn = await waitFor(async () => { const [f] = await readdir(marks); return f === undefined ? null : (await readFile(join(marks, f), 'utf8')).trim() || null }, { timeoutMs: 10_000, intervalMs: 50, message: 'the verify mark names no directory' })
    const victim = mesh.nodes.find(n => ranIn.startsWith(defaultWorktreesDir(n.dataDir) + sep)) as CliNode
    expect(victim, `the verify ran in ${ranIn}, under none of the nodes' worktrees`).toBeDefined()
    const leader = victim.info.peerId
    const survivors = mesh.nodes.filter(n => n !== victim)
    // clients reach the mesh through a node that survives
    conn = ['--join', survivors[0]!.info.join]
    victim.proc.kill('SIGKILL')
    await victim.exited
    const victimRepo = join(dir, `repo-${victim.name}`)
    const victimMain = await gitText(['rev-parse', 'main'], { cwd: victimRepo })

    // a survivor takes over in a higher term and merges everything
    await waitFor(async () => {
      const s = await status()
      return s.main.leader !== null && s.main.leader !== leader && s.main.term > termBefore && TASKS.every(id => s.tasks.find(t => t.id === id)?.state === 'merged')
    }, { timeoutMs: 180_000, intervalMs: 1000, message: () => `not finished after the leader's death: leader ${last?.main.leader} term ${last?.main.term}; ${JSON.stringify(last?.tasks.map(t => [t.id, t.state, t.error]))}\n${survivors.map(n => n.describe()).join('\n')}` })
    const s = last as unknown as Status
    // the interrupted check was run again by the new leader: more verify runs started than the one the victim died in
    expect((await readdir(marks)).length).toBeGreaterThan(1)
    const head = s.main.head as string

    for (const n of survivors) {
      const repo = join(dir, `repo-${n.name}`)
      await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === head, { timeoutMs: 30_000, message: `node ${n.name} did not follow main` })
      // exactly one merge commit per task on main's first-parent history, each with its trailer
      const trailers = (await gitText(['log', '--first-parent', '--format=%(trailers:key=Meshwork-Task,valueonly)', 'main'], { cwd: repo })).split('\n').map(l => l.trim()).filter(l => l !== '')
      expect(trailers.sort()).toEqual([...TASKS].sort())
      // each task's recorded merge commit is on that history
      const firstParent = new Set((await gitText(['rev-list', '--first-parent', 'main'], { cwd: repo })).split('\n'))
      for (const id of TASKS) expect(firstParent.has(s.tasks.find(t => t.id === id)!.mergeCommit as string), `merge commit of ${id}`).toBe(true)
      expect(await gitText(['status', '--porcelain'], { cwd: repo })).toBe('')
      // no half-advanced main: the dead leader's own main, as it was when it died, is on the mesh main's first-parent history
      expect(firstParent.has(victimMain), `the dead leader's main ${victimMain} is not on ${n.name}'s first-parent history of main`).toBe(true)
    }
  })
})
