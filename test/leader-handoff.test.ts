/**
 * Branch hand-off at done (src/merge/handoff.ts), through real `meshwork node`
 * processes: the node that finished a task gives its branch to the merge
 * leader before it marks the task done, so a kill -9 of that node right after
 * done costs no run.
 *
 * Node a is the only node that may lead and runs nothing (`--slots 0`); b and
 * c run the tasks. The node that ran the task is killed -9 the moment the
 * leader logs that the done reached it (`task:done-seen`). Without the hand-off the leader
 * could only have collected the branch from the dead node (it starts that
 * fetch in the same pass that logs the done, and a fetch takes several git
 * processes on both sides): the task would be run again by the other node.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, makeTempDir, killAllChildren, removeDir, describeResult, watchStatusJson, type CliNode, type StatusWatch } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { gitText } from '../src/git/git.ts'

interface TaskJson { id: string, state: string, node: string | null, attempts: number, error: string | null }
interface StatusJson { main: { head: string | null, leader: string | null }, tasks: TaskJson[], nodes: Array<{ peerId: string, slots: number }> }

let dir = ''
const nodes: CliNode[] = []
let watch: StatusWatch | null = null

afterAll(async () => {
  await watch?.close()
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
})

/** Every node's log lines about one task, for failure messages. */
function history (id: string): string {
  return nodes.flatMap(n => n.stderr().split('\n').filter(l => l.includes(`"task":"${id}"`)).map(l => `${n.name}: ${l}`)).join('\n')
}

describe('branch hand-off at done', { timeout: 240_000 }, () => {
  it('kill -9 of the node right after done: the task merges without a re-run', async () => {
    dir = await makeTempDir('meshwork-handoff-')
    const keyFile = join(dir, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const common = ['--agent', 'sim', '--suspect-after', '2s', '--dead-after', '6s', '--log-level', 'info']
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: [...common, '--slots', '0'], startTimeoutMs: 120_000 })
    nodes.push(a)
    nodes.push(...await Promise.all(['b', 'c'].map(async name => await startNode({ dir, name, join: a.info.join, extraArgs: [...common, '--slots', '1', '--no-leader'], startTimeoutMs: 120_000 }))))
    const conn = ['--join', a.info.join]
    watch = await watchStatusJson(conn)
    const status = async (): Promise<StatusJson> => await watch!.fresh() as StatusJson
    // a leads; b and c have their repositories and run their schedulers
    await waitFor(async () => {
      const s = await status()
      return s.main.leader === a.info.peerId && s.nodes.filter(n => n.slots === 1).length === 2
    }, { timeoutMs: 120_000, intervalMs: 100, message: () => `a never led a mesh where b and c advertise their slots\n${nodes.map(n => n.describe()).join('\n')}` })

    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: h1\n    prompt: do h1\n    sim: { duration: 200ms, write: { "h1.txt": "h1\\n" } }\n')
    const sub = await runCli(['submit', plan, ...conn], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)

    // the moment the done reaches the leader, the runner dies
    await waitFor(() => /"event":"task:done-seen","task":"h1"/.test(a.stderr()),
      { timeoutMs: 120_000, intervalMs: 10, message: () => `the leader never saw h1 done\n${history('h1')}` })
    const runner = await waitFor(() => nodes.slice(1).find(n => /"event":"task:done","task":"h1"/.test(n.stderr())),
      { timeoutMs: 10_000, intervalMs: 5, message: () => `the leader saw h1 done, but neither b nor c logged it\n${history('h1')}` })
    const other = nodes.find(n => n !== runner && n !== a) as CliNode
    runner.proc.kill('SIGKILL')
    await runner.exited

    // merged, from the branch the leader took at done: one run, none on the other node
    let last: TaskJson | undefined
    await waitFor(async () => {
      last = (await status()).tasks.find(x => x.id === 'h1')
      return last?.state === 'merged'
    }, { timeoutMs: 120_000, intervalMs: 100, message: () => `h1 never merged after its runner died: ${JSON.stringify(last)}\n${history('h1')}` })
    expect(last!.attempts, history('h1')).toBe(1)
    expect(other.stderr(), history('h1')).not.toMatch(/"event":"task:started","task":"h1"/)
    // how: the runner handed the branch to a before its done, and a took it
    expect(runner.stderr()).toMatch(/"event":"branch:handed-off","task":"h1"/)
    expect(a.stderr()).toMatch(/"event":"branch:received","task":"h1"/)
    expect(a.stderr()).not.toMatch(/"event":"branch:collected","task":"h1"/)
    const head = (await status()).main.head as string
    expect(await gitText(['show', `${head}:h1.txt`], { cwd: join(dir, 'repo-a') })).toBe('h1')
  })
})
