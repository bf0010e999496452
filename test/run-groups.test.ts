/**
 * No agent outlives its node: `kill -9` of a node kills its runs' process
 * groups (a watchdog waiting on a pipe only the node holds) and every process
 * carrying its runs' mark in the environment (one that left its group), and a
 * node starting on a data dir kills what an earlier life left running (when
 * even the watchdog was killed), by the groups recorded and by the mark.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, killAllChildren, removeDir, describeResult, makeTempDir, type CliNode } from './helpers/cli.ts'
import { initRepo, commitFiles } from './helpers/git.ts'
import { isAlive } from './helpers/proc.ts'
import { waitFor } from '../src/util/wait.ts'

let dir = ''
afterAll(async () => {
  await killAllChildren()
  // whatever the test left (it asserts there is nothing): never leave a sleeper behind
  for (const pid of [...pids(), ...escaped()]) { try { process.kill(pid, 'SIGKILL') } catch {} }
  if (dir !== '') await removeDir(dir)
})

const pidFile = (): string => join(dir, 'agent.pids')
const escapedFile = (): string => join(dir, 'escaped.pids')

/** For a failure message: the process group of `pid`, the recorded groups and whether the watchdog lives. */
function groupFacts (pid: number, data: string): string {
  let pgid = '?'
  try { const st = readFileSync(`/proc/${pid}/stat`, 'utf8'); pgid = st.slice(st.lastIndexOf(')') + 2).split(' ')[2] ?? '?' } catch {}
  let recorded: string[] = []
  try { recorded = readdirSync(join(data, 'run-groups')).map(f => `${f} ${readFileSync(join(data, 'run-groups', f), 'utf8')}`) } catch {}
  let watchdog = '?'
  try { const w = Number(readFileSync(join(data, 'watchdog.pid'), 'utf8')); watchdog = `${w} ${isAlive(w) ? 'alive' : 'gone'}` } catch {}
  return `pgid of ${pid}: ${pgid}; recorded groups: ${recorded.join(', ') || '(none)'}; watchdog: ${watchdog}`
}
/** The process group of `pid`, from /proc. */
function pgidOf (pid: number): string {
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return st.slice(st.lastIndexOf(')') + 2).split(' ')[2]!
}
/**
 * Waits until the node has recorded the group of agent child `pid`. The node
 * records a group just after spawning it, and the agent may write its pid
 * before that on a busy host: a kill -9 of the node in that instant is the one
 * case the records cannot cover (see src/node/run-groups.ts), not the one here.
 */
async function recorded (pid: number, data: string): Promise<void> {
  await waitFor(() => existsSync(join(data, 'run-groups', pgidOf(pid))), { timeoutMs: 10_000, message: () => `the run's group is not recorded: ${groupFacts(pid, data)}` })
}
const numbers = (file: string): number[] => dir !== '' && existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(l => l.trim() !== '').map(Number) : []
const pids = (): number[] => numbers(pidFile())
const escaped = (): number[] => numbers(escapedFile())
const runLines = (node: CliNode): string => node.stderr().split('\n').filter(l => l.includes('"event":"run:')).join('\n')

describe('runs end with their node', { timeout: 300_000 }, () => {
  it('kill -9 of a node kills its agent\'s process group and what left it; a restart kills what an earlier life left, recorded or not', async () => {
    dir = await makeTempDir('meshwork-rungroups-')
    const data = join(dir, 'data-a')
    const keyFile = join(dir, 'swarm.key')
    const init = await runCli(['init', '--out', keyFile], { timeoutMs: 60_000 })
    expect(init.code, describeResult(['init'], init)).toBe(0)
    const repo = await initRepo(join(dir, 'repo-a'))
    await commitFiles(repo, { 'README.md': '# p\n' }, 'initial')
    // each run: a child in the run's group, and one that moves to a session (and group) of its own
    const cmd = `sleep 1000 & echo $! >> ${pidFile()}; setsid sleep 1001 & echo $! >> ${escapedFile()}; wait`
    const extraArgs = ['--agent', 'command', '--agent-cmd', cmd, '--log-level', 'info']
    const start = async (): Promise<CliNode> => await startNode({ dir, name: 'a', keyFile, extraArgs, startTimeoutMs: 90_000 })
    /** Waits for run number `n` (from 1): its child in the group and its escaped child, both started. */
    const run = async (n: number, node: CliNode): Promise<{ child: number, escaped: number }> => {
      await waitFor(() => pids().length >= n && escaped().length >= n, { timeoutMs: 120_000, message: () => `run ${n} of the agent never started\n${node.describe()}` })
      const r = { child: pids()[n - 1]!, escaped: escaped()[n - 1]! }
      expect(isAlive(r.child) && isAlive(r.escaped), `run ${n}'s processes run`).toBe(true)
      // `$!` is known at the fork, before the child has called setsid
      await waitFor(() => pgidOf(r.escaped) !== pgidOf(r.child), { timeoutMs: 10_000, message: `setsid did not move ${r.escaped} to a group of its own` })
      return r
    }
    const gone = async (pids: number[], why: string, node: CliNode): Promise<void> => {
      for (const pid of pids) await waitFor(() => !isAlive(pid), { timeoutMs: 15_000, message: () => `${pid} ${why}\n${groupFacts(pid, data)}\nits run lines: ${runLines(node)}\n${node.describe()}` })
    }
    /** Kills the node's watchdog, then the node: its runs go on (the case a restart covers). */
    const killBoth = async (node: CliNode): Promise<void> => {
      const watchdog = Number(readFileSync(join(data, 'watchdog.pid'), 'utf8'))
      // it waits on a pipe, not in a loop: no process (a `sleep`) under it while the node lives
      expect(readFileSync(`/proc/${watchdog}/task/${watchdog}/children`, 'utf8').trim(), 'the watchdog polls with child processes').toBe('')
      process.kill(watchdog, 'SIGKILL')
      node.proc.kill('SIGKILL')
      await node.exited
      await waitFor(() => !isAlive(watchdog), { timeoutMs: 5000, message: 'the watchdog survived SIGKILL' })
    }

    let node = await start()
    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: long\n    prompt: run for a long time\n')
    const sub = await runCli(['submit', plan, '--join', node.info.join], { timeoutMs: 90_000 })
    expect(sub.code, describeResult(['submit'], sub)).toBe(0)
    const first = await run(1, node)
    await recorded(first.child, data)

    // 1. kill -9 of the node: its watchdog kills the agent's group, and the escaped child by the mark in its environment
    node.proc.kill('SIGKILL')
    await node.exited
    await gone([first.child], 'outlived its node (the agent\'s group)', node)
    await gone([first.escaped], 'outlived its node (left the agent\'s group)', node)

    // 2. the node comes back and runs the task again; this time the watchdog dies too
    node = await start()
    const second = await run(2, node)
    await recorded(second.child, data)
    await killBoth(node)
    expect(isAlive(second.child) && isAlive(second.escaped), 'with node and watchdog gone the agent still runs (the case the restart covers)').toBe(true)

    // 3. the next start kills the leftover group (its record) and the escaped child (the mark) before anything else
    node = await start()
    await gone([second.child, second.escaped], 'survived the restart', node)
    expect(runLines(node)).toMatch(/"event":"run:leftover-killed","pgid":/)
    expect(runLines(node)).toMatch(/"event":"run:leftover-killed","pid":/)

    // 4. a run with no record (the node killed in the instant between the run's start and its record): the mark
    const third = await run(3, node)
    await recorded(third.child, data)
    await killBoth(node)
    for (const f of readdirSync(join(data, 'run-groups'))) rmSync(join(data, 'run-groups', f))
    expect(isAlive(third.child) && isAlive(third.escaped)).toBe(true)
    node = await start()
    await gone([third.child, third.escaped], 'survived the restart without a record of its group', node)

    // a graceful stop leaves nothing either, the escaped child included
    const fourth = await run(4, node)
    await node.stop('SIGTERM', 60_000)
    await gone([...pids(), ...escaped(), fourth.child, fourth.escaped], 'outlived a graceful stop', node)
  })
})
