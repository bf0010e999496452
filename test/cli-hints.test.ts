import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, startCliMesh, startNode, killAllChildren, removeDir, describeResult, makeTempDir, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

/**
 * Every command the CLI suggests is one the mesh accepts in the state it
 * names: the test runs each suggestion it is shown. Also: did-you-mean for
 * flags and commands, and --repo safety (no silent new history).
 */

let dir = ''
let scratch = ''
const nodes: CliNode[] = []
let conn: string[] = []

interface Status {
  tasks: Array<{ id: string, state: string, error: string | null }>
  conflicts: Array<{ id: string, taskId: string, state: string, decision: { action: string } | null }>
}

async function status (): Promise<Status> {
  const r = await runCli(['status', '--json', ...conn], { timeoutMs: 90_000 })
  if (r.code !== 0) throw new Error(describeResult(['status'], r))
  return JSON.parse(r.stdout) as Status
}

/** The backquoted `meshwork ...` commands in a text, with `a|b|c` alternatives narrowed to the first. */
function suggestions (text: string): string[][] {
  return [...text.matchAll(/`meshwork ([^`]+)`/g)].map(m => (m[1] as string).split(/\s+/).map(w => w.includes('|') ? (w.split('|')[0] as string) : w))
}

beforeAll(async () => {
  scratch = await makeTempDir('meshwork-hints-scratch-')
  const mesh = await startCliMesh('meshwork-hints-', ['--agent', 'sim', '--slots', '3'], { names: ['solo'] })
  dir = mesh.dir
  nodes.push(...mesh.nodes)
  conn = mesh.conn
})

afterAll(async () => {
  await killAllChildren()
  if (dir !== '') await removeDir(dir)
  if (scratch !== '') await removeDir(scratch)
})

describe('CLI hints lead somewhere', { timeout: 300_000 }, () => {
  it('unknown flags, commands and actions get a did-you-mean', async () => {
    const slot = await runCli(['node', '--repo', join(scratch, 'r'), '--slot', '2'], { timeoutMs: 30_000 })
    expect(slot.code, describeResult(['node'], slot)).toBe(2)
    expect(slot.stderr).toMatch(/Unknown option '--slot'\. Did you mean --slots\?/)
    const wat = await runCli(['status', '--jsn'], { timeoutMs: 30_000 })
    expect(wat.code).toBe(2)
    expect(wat.stderr).toContain('Did you mean --json?')
    const cmd = await runCli(['stauts'], { timeoutMs: 30_000 })
    expect(cmd.code).toBe(2)
    expect(cmd.stderr).toContain('Did you mean `meshwork status`?')
    const action = await runCli(['resolve', 'x', '--action', 'their', ...conn], { timeoutMs: 30_000 })
    expect(action.code).toBe(2)
    expect(action.stderr).toContain('(did you mean theirs?)')
    const agent = await runCli(['node', '--repo', join(scratch, 'r'), '--agent', 'smi', '--insecure-no-swarm-key'], { timeoutMs: 30_000 })
    expect(agent.code).toBe(2)
    expect(agent.stderr).toContain('--agent must be one of claude, command, sim, got "smi" (did you mean sim?)')
  })

  it('--repo that would need a new history is refused without --init-repo, naming the path; nothing is created', async () => {
    const typo = join(scratch, 'no', 'such', 'project')
    const r = await runCli(['node', '--repo', typo, '--agent', 'sim', '--insecure-no-swarm-key', '--listen', '/ip4/127.0.0.1/tcp/0', '--data', join(scratch, 'data')], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['node'], r)).toBe(2)
    expect(r.stderr).toContain(`--repo ${typo} does not exist and there is no peer to clone it from`)
    expect(r.stderr).toContain('--init-repo')
    expect(existsSync(join(scratch, 'no'))).toBe(false)
    const empty = join(scratch, 'empty')
    await mkdir(empty)
    const e = await runCli(['node', '--repo', empty, '--agent', 'sim', '--insecure-no-swarm-key', '--listen', '/ip4/127.0.0.1/tcp/0', '--data', join(scratch, 'data')], { timeoutMs: 30_000 })
    expect(e.code, describeResult(['node'], e)).toBe(2)
    expect(e.stderr).toContain(`--repo ${empty} is empty`)
    expect(await readdir(empty)).toEqual([])
    // --init-repo with a mesh to clone from is a contradiction
    const both = await runCli(['node', '--repo', empty, '--agent', 'sim', '--init-repo', ...conn], { timeoutMs: 30_000 })
    expect(both.code, describeResult(['node'], both)).toBe(2)
    expect(both.stderr).toContain('Drop --init-repo')
  })

  it('submit --wait, status, retry and resubmission print commands that are accepted when run', async () => {
    const plan = join(dir, 'plan.yaml')
    // red and blue start together from the same main and write the same file: the second to merge conflicts
    await writeFile(plan, `tasks:
  - id: red
    prompt: red
    sim: { duration: 1500ms, write: { "color.txt": "red\\n" } }
  - id: blue
    prompt: blue
    sim: { duration: 1500ms, write: { "color.txt": "blue\\n" } }
  - id: paint
    prompt: paint
    deps: [red, blue]
    sim: { duration: 100ms, write: { "paint.txt": "done\\n" } }
  - id: broken
    prompt: always fails
    maxAttempts: 1
    sim: { duration: 100ms, fail: 5 }
  - id: behind
    prompt: behind broken
    deps: [broken]
    sim: { duration: 100ms, write: { "behind.txt": "x\\n" } }
`)
    const wait = await runCli(['submit', plan, '--wait', ...conn], { timeoutMs: 180_000 })
    expect(wait.code, describeResult(['submit'], wait)).toBe(1)
    const blocked = wait.stdout.split('\n').filter(l => / blocked: /.test(l))
    const behind = blocked.find(l => / behind blocked: its dependency broken is failed/.test(l))
    const paint = blocked.find(l => / paint blocked: its dependency (red|blue) is conflict/.test(l))
    expect(behind, wait.stdout).toBeDefined()
    expect(paint, wait.stdout).toBeDefined()
    expect(suggestions(behind!)).toEqual([['retry', 'broken']])
    const [resolveCmd] = suggestions(paint!)
    expect(resolveCmd?.[0]).toBe('resolve')

    // status: the failure's reason and what holds each pending task
    const st = await runCli(['status', ...conn], { timeoutMs: 90_000 })
    expect(st.code, describeResult(['status'], st)).toBe(0)
    const line = (id: string): string => st.stdout.split('\n').find(l => l.trimStart().startsWith(`${id} `)) ?? ''
    expect(line('broken')).toMatch(/failed .*sim: attempt 1 fails as configured.*`meshwork retry broken`/)
    expect(line('behind')).toContain('blocked: broken is failed (`meshwork retry broken`)')
    expect(line('paint')).toMatch(/blocked: (red|blue) is in conflict \(`meshwork resolve (red|blue)-\d+ --action \.\.\.`\)/)

    // retry of the task in conflict names the resolve command instead; resubmitting a merged id says it is merged
    const s1 = await status()
    const inConflict = s1.tasks.find(t => t.state === 'conflict')!
    const merged = s1.tasks.find(t => t.id !== inConflict.id && (t.id === 'red' || t.id === 'blue'))!
    expect(merged.state).toBe('merged')
    const retryConflict = await runCli(['retry', inConflict.id, ...conn], { timeoutMs: 90_000 })
    expect(retryConflict.code).toBe(2)
    expect(suggestions(retryConflict.stderr)).toEqual([resolveCmd])
    const retryMerged = await runCli(['retry', merged.id, ...conn], { timeoutMs: 90_000 })
    expect(retryMerged.code).toBe(2)
    expect(retryMerged.stderr).toContain('already merged into main; there is nothing to retry')
    expect(suggestions(retryMerged.stderr)).toEqual([])
    const again = join(dir, 'again.yaml')
    await writeFile(again, `tasks:\n  - id: ${merged.id}\n    prompt: again\n  - id: broken\n    prompt: again\n`)
    const resub = await runCli(['submit', again, ...conn], { timeoutMs: 90_000 })
    expect(resub.code).toBe(2)
    expect(resub.stderr).toContain(`task "${merged.id}": a task with this id is already on the board (it is already merged into main, so there is nothing to retry); choose another id`)
    expect(resub.stderr).toContain('task "broken": a task with this id is already on the board (it is failed; `meshwork retry broken` runs it again); choose another id')

    // run every suggestion shown: each is accepted
    for (const cmd of [...suggestions(behind!), resolveCmd!]) {
      const r = await runCli([...cmd, ...conn], { timeoutMs: 90_000 })
      expect(r.code, describeResult(cmd, r)).toBe(0)
    }
    // and the plan goes on: the conflict settled with "ours", broken queued again (and failing again)
    await waitFor(async () => {
      const s = await status()
      return s.tasks.find(t => t.id === 'paint')?.state === 'merged' && s.tasks.find(t => t.id === 'broken')?.state === 'failed'
    }, { timeoutMs: 90_000, intervalMs: 500, message: 'paint did not merge after the conflict was settled' })
  })

  it('resolve accepts a task id when the task has exactly one open conflict', async () => {
    const plan = join(dir, 'plan2.yaml')
    await writeFile(plan, `tasks:
  - id: left
    prompt: left
    sim: { duration: 1500ms, write: { "side.txt": "left\\n" } }
  - id: right
    prompt: right
    sim: { duration: 1500ms, write: { "side.txt": "right\\n" } }
`)
    const wait = await runCli(['submit', plan, '--wait', ...conn], { timeoutMs: 180_000 })
    expect(wait.code, describeResult(['submit'], wait)).toBe(1)
    const s = await status()
    const c = s.conflicts.find(x => (x.taskId === 'left' || x.taskId === 'right') && x.state === 'open')!
    expect(c).toBeDefined()
    const r = await runCli(['resolve', c.taskId, '--action', 'theirs', ...conn], { timeoutMs: 90_000 })
    expect(r.code, describeResult(['resolve'], r)).toBe(0)
    expect(r.stdout).toContain(`${c.id} (the open conflict of task ${c.taskId}): decision "theirs" recorded`)
    await waitFor(async () => (await status()).tasks.find(t => t.id === c.taskId)?.state === 'merged', { timeoutMs: 90_000, intervalMs: 500, message: `${c.taskId} did not merge after "theirs"` })
    // once merged, the task has no open conflict: the message says so instead of "no conflict"
    const none = await runCli(['resolve', c.taskId, '--action', 'theirs', ...conn], { timeoutMs: 90_000 })
    expect(none.code).toBe(2)
    expect(none.stderr).toContain(`task "${c.taskId}" has no open conflict (it is merged; its conflicts ${c.id} are resolved)`)
  })

  it('a node with another mesh\'s key says no peer answers and why; the first Ctrl-C says what it waits for', async () => {
    const otherKey = join(scratch, 'other.key')
    const init = await runCli(['init', '--out', otherKey], { timeoutMs: 30_000 })
    expect(init.code).toBe(0)
    const solo = nodes[0]!
    const stray = await startNode({ dir: scratch, name: 'stray', keyFile: otherKey, bootstrap: solo.info.addrs, extraArgs: ['--agent', 'sim'] })
    await waitFor(() => stray.stderr().includes('mesh:no-peers'), { timeoutMs: 90_000, message: () => `no mesh:no-peers warning\n${stray.describe()}` })
    expect(stray.stderr()).toMatch(/no peer answers\. Likely causes: this node has another mesh's swarm key/)
    stray.proc.kill('SIGINT')
    await waitFor(() => stray.stderr().includes('node:stopping'), { timeoutMs: 30_000, message: () => stray.describe() })
    expect(stray.stderr()).toMatch(/node:stopping.*press Ctrl-C again to exit at once/)
    const exit = await stray.exited
    expect(exit.code, stray.describe()).toBe(0)
  })
})
