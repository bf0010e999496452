/**
 * Branch hand-off at done (src/merge/handoff.ts), through real `meshwork node`
 * processes: the node that finished a task gives its branch to the merge
 * leader before it marks the task done, so a kill -9 of that node right after
 * done costs no run; while no leader is alive, it gives it to another node
 * (a keeper), so its death before a leader comes back costs no run either.
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
import { runCli, startNode, makeTempDir, killAllChildren, removeDir, describeResult, statusJson, watchStatusJson, type CliNode, type StatusWatch } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'
import { gitText } from '../src/git/git.ts'

interface TaskJson { id: string, state: string, node: string | null, attempts: number, error: string | null }
interface StatusJson { main: { head: string | null, leader: string | null }, tasks: TaskJson[], nodes: Array<{ peerId: string, slots: number, state: string }> }

const nodes: CliNode[] = []
let watch: StatusWatch | null = null
const dirs: string[] = []

afterAll(async () => {
  await watch?.close()
  await killAllChildren()
  for (const d of dirs) await removeDir(d)
})

/** The node options every case uses: the sim agent, short failure detection, info logs. */
const COMMON = ['--agent', 'sim', '--suspect-after', '2s', '--dead-after', '6s', '--log-level', 'info']

/** A temp dir (removed after the file) with a new swarm key in it. */
async function meshDir (prefix: string): Promise<{ root: string, keyFile: string }> {
  const root = await makeTempDir(prefix)
  dirs.push(root)
  const keyFile = join(root, 'swarm.key')
  const init = await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })
  expect(init.code, describeResult(['init'], init)).toBe(0)
  return { root, keyFile }
}

/** What `nodes` logged about one task, one line each, for failure messages. */
function taskLog (nodes: readonly CliNode[], id: string): string {
  return nodes.flatMap(n => n.stderr().split('\n').filter(l => l.includes(`"task":"${id}"`)).map(l => `${n.name}: ${l}`)).join('\n')
}

/**
 * Waits (through `status`) for task `id` to merge after its only other holder
 * died, and checks it ran once: `leader` collected its branch from `keeper`
 * and never started it.
 */
async function mergedFromKeeper (status: () => Promise<StatusJson>, id: string, leader: CliNode, keeper: CliNode, log: (id: string) => string): Promise<void> {
  let t: TaskJson | undefined
  await waitFor(async () => { t = (await status()).tasks.find(x => x.id === id); return t?.state === 'merged' },
    { timeoutMs: 120_000, intervalMs: 100, message: () => `${id} never merged after its holder died: ${JSON.stringify(t)}\n${log(id)}` })
  expect(t!.attempts, log(id)).toBe(1)
  expect(leader.stderr(), log(id)).toMatch(new RegExp(`"event":"branch:collected","task":"${id}","from":"${keeper.info.peerId}"`))
  expect(leader.stderr(), log(id)).not.toMatch(new RegExp(`"event":"task:started","task":"${id}"`))
}

/** The first case's nodes' log lines about one task, for failure messages. */
function history (id: string): string {
  return taskLog(nodes, id)
}

describe('branch hand-off at done', { timeout: 240_000 }, () => {
  it('kill -9 of the node right after done: the task merges without a re-run', async () => {
    const { root: dir, keyFile } = await meshDir('meshwork-handoff-')
    const a = await startNode({ dir, name: 'a', keyFile, extraArgs: [...COMMON, '--slots', '0'], startTimeoutMs: 120_000 })
    nodes.push(a)
    nodes.push(...await Promise.all(['b', 'c'].map(async name => await startNode({ dir, name, join: a.info.join, extraArgs: [...COMMON, '--slots', '1', '--no-leader'], startTimeoutMs: 120_000 }))))
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

  it('no leader alive at done: the branch goes to a keeper, and the runner\'s death before a leader is back costs no run', async () => {
    const { root, keyFile } = await meshDir('meshwork-keeper-')
    // a may lead and runs nothing; b runs every task; c only keeps what it is given
    const a = await startNode({ dir: root, name: 'a', keyFile, extraArgs: [...COMMON, '--slots', '0'], startTimeoutMs: 120_000 })
    const [b, c] = await Promise.all(['b', 'c'].map(async name => await startNode({ dir: root, name, join: a.info.join, extraArgs: [...COMMON, '--slots', name === 'b' ? '1' : '0', '--no-leader'], startTimeoutMs: 120_000 }))) as [CliNode, CliNode]
    const all = [a, b, c]
    const log = (id: string): string => taskLog(all, id)
    const keeperWatch = await watchStatusJson(['--join', c.info.join])
    try {
      const status = async (): Promise<StatusJson> => await keeperWatch.fresh() as StatusJson
      await waitFor(async () => {
        const s = await status()
        return s.main.leader === a.info.peerId && s.nodes.some(n => n.peerId === b.info.peerId && n.slots === 1)
      }, { timeoutMs: 120_000, intervalMs: 100, message: () => `a never led a mesh where b runs\n${all.map(n => n.describe()).join('\n')}` })

      // k1 runs on b, held there until the leader is dead
      const release = join(root, 'release')
      const plan = join(root, 'plan.yaml')
      await writeFile(plan, `tasks:\n  - id: k1\n    prompt: do k1\n    sim: { duration: 0s, until: ${JSON.stringify(release)}, write: { "k1.txt": "k1\\n" } }\n`)
      const sub = await runCli(['submit', plan, '--join', c.info.join], { timeoutMs: 90_000 })
      expect(sub.code, describeResult(['submit'], sub)).toBe(0)
      let k1: TaskJson | undefined
      await waitFor(async () => { k1 = (await status()).tasks.find(t => t.id === 'k1'); return k1?.state === 'running' },
        { timeoutMs: 120_000, intervalMs: 100, message: () => `k1 never ran: ${JSON.stringify(k1)}\n${log('k1')}` })

      // the leader dies; once b and c see it dead, k1 finishes
      a.proc.kill('SIGKILL')
      await a.exited
      for (const via of [b, c]) {
        await waitFor(async () => (await statusJson(['--join', via.info.join])).nodes.some(n => n.peerId === a.info.peerId && n.state === 'dead'),
          { timeoutMs: 60_000, intervalMs: 500, message: () => `${via.name} never saw the leader a dead` })
      }
      await writeFile(release, '')
      await waitFor(async () => { k1 = (await status()).tasks.find(t => t.id === 'k1'); return k1?.state === 'done' },
        { timeoutMs: 120_000, intervalMs: 100, message: () => `k1 never reached done: ${JSON.stringify(k1)}\n${log('k1')}` })
      expect(b.stderr(), log('k1')).toMatch(new RegExp(`"event":"branch:handed-off","task":"k1",.*"to":"${c.info.peerId}",.*"as":"keeper"`))
      expect(c.stderr(), log('k1')).toMatch(/"event":"branch:received","task":"k1"/)

      // the runner dies before any leader merged k1; a comes back (now with a slot, so a lost branch would be run again there)
      b.proc.kill('SIGKILL')
      await b.exited
      const a2 = await startNode({ dir: root, name: 'a', keyFile, extraArgs: [...COMMON, '--slots', '1'], startTimeoutMs: 120_000 })
      all.push(a2)
      await mergedFromKeeper(status, 'k1', a2, c, log)
      const head = (await status()).main.head as string
      expect(await gitText(['show', `${head}:k1.txt`], { cwd: join(root, 'repo-a') })).toBe('k1')
    } finally {
      await keeperWatch.close()
    }
  })

  it('a run of the leader\'s own that waits for its merge is backed up to a keeper: the leader\'s death costs no run', async () => {
    const { root, keyFile } = await meshDir('meshwork-backup-')
    // a leads and runs; its merges wait in --verify until the test ends (the file never appears before then)
    const never = join(root, 'verify-go')
    const a = await startNode({ dir: root, name: 'a', keyFile, extraArgs: [...COMMON, '--slots', '1', '--verify', `while [ ! -f ${JSON.stringify(never)} ]; do sleep 0.2; done`], startTimeoutMs: 120_000 })
    // b only keeps what it is given
    const b = await startNode({ dir: root, name: 'b', join: a.info.join, extraArgs: [...COMMON, '--slots', '0', '--no-leader'], startTimeoutMs: 120_000 })
    const all = [a, b]
    const log = (id: string): string => taskLog(all, id)
    const bWatch = await watchStatusJson(['--join', b.info.join])
    try {
      const status = async (): Promise<StatusJson> => await bWatch.fresh() as StatusJson
      await waitFor(async () => (await status()).main.leader === a.info.peerId,
        { timeoutMs: 120_000, intervalMs: 100, message: () => `a never led\n${all.map(n => n.describe()).join('\n')}` })
      const plan = join(root, 'plan.yaml')
      await writeFile(plan, 'tasks:\n  - id: k2\n    prompt: do k2\n    sim: { duration: 0s, write: { "k2.txt": "k2\\n" } }\n')
      const sub = await runCli(['submit', plan, '--join', b.info.join], { timeoutMs: 90_000 })
      expect(sub.code, describeResult(['submit'], sub)).toBe(0)

      // a ran k2 and holds it alone while its merge waits: after a while a hands it to b
      await waitFor(() => new RegExp(`"event":"branch:handed-off","task":"k2",.*"to":"${b.info.peerId}",.*"as":"backup"`).test(a.stderr()),
        { timeoutMs: 120_000, intervalMs: 100, message: () => `a never backed k2 up to b\n${log('k2')}` })
      await waitFor(() => /"event":"branch:held","task":"k2"/.test(b.stderr()),
        { timeoutMs: 30_000, intervalMs: 100, message: () => `b never wrote itself a holder of k2\n${log('k2')}` })
      expect((await status()).tasks.find(t => t.id === 'k2')?.state, log('k2')).toBe('merging')

      // the leader dies with k2's merge in progress; a new node that may lead joins, and merges k2 from b's copy
      a.proc.kill('SIGKILL')
      await a.exited
      const c = await startNode({ dir: root, name: 'c', join: b.info.join, extraArgs: [...COMMON, '--slots', '1'], startTimeoutMs: 120_000 })
      all.push(c)
      await mergedFromKeeper(status, 'k2', c, b, log)
    } finally {
      await bWatch.close()
      // the dead leader's --verify (its own process group) ends
      await writeFile(never, '')
    }
  })
})
