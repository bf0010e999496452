import { describe, it, expect, afterAll, beforeAll } from 'vitest'
import { existsSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { Leadership } from '../src/merge/leadership.ts'
import { commandAgent } from '../src/agent/command.ts'
import { claudeAgent } from '../src/agent/claude.ts'
import { simAgent } from '../src/agent/sim.ts'
import type { Agent } from '../src/agent/types.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { str } from '../src/crdt/board.ts'
import type { Conflict } from '../src/crdt/schema.ts'
import { conflictPrompt } from '../src/merge/agent-resolve.ts'
import { filesWithMarkers } from '../src/git/agent-merge.ts'
import { silentLogger } from '../src/util/logger.ts'
import { buildStatus } from '../src/api/status.ts'
import { renderStatus } from '../src/cli/render.ts'
import { waitFor } from '../src/util/wait.ts'
import { git, gitText } from '../src/git/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'

const FAKE_CLAUDE = fileURLToPath(new URL('./fixtures/fake-claude.mjs', import.meta.url))

let mesh: TestMesh | null = null
let leadership: Leadership | null = null

afterAll(async () => {
  await leadership?.stop()
  await mesh?.stop()
})

/** A finished task on the board whose branch `meshwork/<id>` (from `from`) writes `files`, held by `node`. */
async function doneTask (node: MeshNode, repo: string, id: string, files: Record<string, string | null>, from = 'main', sim: Record<string, string> = {}): Promise<string> {
  // plumbing only: the leader may be moving the primary checkout meanwhile
  const env = { GIT_INDEX_FILE: join(repo, '.git', `index-${id}`) }
  await git(['read-tree', from], { cwd: repo, env })
  for (const [path, text] of Object.entries(files)) {
    if (text === null) { await git(['update-index', '--force-remove', path], { cwd: repo, env }); continue }
    const blob = await gitText(['hash-object', '-w', '--stdin'], { cwd: repo, input: text })
    await git(['update-index', '--add', '--cacheinfo', `100644,${blob},${path}`], { cwd: repo, env })
  }
  const tree = await gitText(['write-tree'], { cwd: repo, env })
  const head = await gitText(['commit-tree', tree, '-p', from, '-m', id], { cwd: repo })
  await git(['update-ref', `refs/heads/meshwork/${id}`, head], { cwd: repo })
  node.changeBoard('test:done', d => {
    addTasks([simpleTask(id, { title: `Paint it ${id}`, prompt: `Make the colour ${id}.`, sim: Object.keys(sim).length === 0 ? null : { durationMs: 10, write: sim, append: {}, fail: 0 } })])(d)
    const rec = d.tasks[id] as Record<string, unknown>
    rec.state = str('done')
    rec.head = str(head)
    rec.holders = [str(node.peerId)]
    rec.doneAt = Date.now()
  })
  return head
}

/** What `meshwork resolve ID --action agent` writes. */
function decideAgent (node: MeshNode, id: string, note = ''): void {
  node.changeBoard('test:decision', d => {
    const rec = d.conflicts[id]
    if (rec === undefined) throw new Error(`no conflict ${id}`)
    rec.decision = { action: str('agent'), by: str(node.peerId), at: Date.now(), note: str(note) }
    rec.error = null
  })
}

describe('conflictPrompt and markers (unit)', () => {
  it('names the files, both sides and the task, and forbids nothing but committing and undoing the merge', () => {
    const p = conflictPrompt({ id: 'blue', title: 'Paint it blue', prompt: 'Make the colour blue.' }, ['color.txt'], 'main', '0123456789abcdef', 'keep both')
    expect(p).toMatch(/task "blue" \(Paint it blue\)/)
    expect(p).toMatch(/- color\.txt/)
    expect(p).toMatch(/"<<<<<<<" and "=======" is main's side/)
    expect(p).toMatch(/Make the colour blue\./)
    expect(p).toMatch(/Note from the person who asked for this resolution: keep both/)
    expect(p).toMatch(/Do not commit/)
  })
})

describe('the "agent" conflict action on the merge leader (real git)', { timeout: 120_000 }, () => {
  let root = ''
  let repo = ''
  let node: MeshNode
  let which: 'command' | 'claude' | 'sim' = 'command'
  const flag = (): string => join(root, 'resolve-ok')

  beforeAll(async () => {
    mesh = await createMesh(1)
    node = mesh.nodes[0] as MeshNode
    root = mesh.dirs[0] as string
    repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'README.md': 'base\n', 'doomed.txt': 'doomed\n' }, 'base')
    // the command agent resolves only once the flag file exists; it keeps the prompt and the conflict env for the test
    // with a "hold" file it waits (bounded) for a "go" file first, so the test can move main while it works
    const cmd = [
      `cat > "${root}/prompt-$MESHWORK_CONFLICT_ID.txt"; printf '%s' "$MESHWORK_CONFLICT_FILES" > "${root}/files-$MESHWORK_CONFLICT_ID.txt"`,
      `if [ -e "${root}/hold" ]; then touch "${root}/held"; i=0; while [ ! -e "${root}/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi`,
      `if [ -e "${flag()}" ]; then for f in $MESHWORK_CONFLICT_FILES; do printf 'both sides of %s\\n' "$f" > "$f"; done; fi`
    ].join('\n')
    const command = commandAgent({ cmd, nodeName: 'n0' })
    const claude = claudeAgent({ bin: FAKE_CLAUDE, dataDir: join(root, 'claude-data'), nodeName: 'n0', env: { FAKE_CLAUDE_FILE: 'shade.txt', FAKE_CLAUDE_COST: '0.25', FAKE_CLAUDE_DELAY_MS: '1' } })
    const sim = simAgent()
    // the node's agent; which adapter answers is switched per case
    const agent: Agent = { kind: 'test', run: async init => await (which === 'command' ? command : which === 'claude' ? claude : sim).run(init) }
    leadership = new Leadership({
      node,
      repo,
      worktreesDir: join(root, 'data-worktrees'),
      branch: 'main',
      logger: silentLogger,
      electionTimeoutMs: 300,
      agent,
      // no merge reaches main with a conflict marker in it
      verify: "! grep -rqs --exclude-dir=.git '^<<<<<<<' ."
    })
    leadership.start()
    await waitFor(() => leadership!.isLeader(), { timeoutMs: 20_000, message: 'the only node did not become leader' })
  })

  const describeBoard = (): string => JSON.stringify({ tasks: [...node.board.snapshot().tasks.values()].map(t => [t.id, t.state, t.error]), conflicts: [...node.board.snapshot().conflicts.values()].map(c => [c.id, c.state, c.decision?.action, c.error]) })
  const openConflict = async (ids: string[]): Promise<Conflict> => await waitFor(() => [...node.board.snapshot().conflicts.values()].find(c => c.state === 'open' && ids.includes(c.taskId)), { timeoutMs: 30_000, message: () => `no conflict: ${describeBoard()}` })

  it('markers left: the conflict stays open with the decision cleared and the reason; then a good resolution merges through --verify with the trailer', async () => {
    const base = await gitText(['rev-parse', 'main'], { cwd: repo })
    const heads = { red: await doneTask(node, repo, 'red', { 'color.txt': 'red\n' }, base), blue: await doneTask(node, repo, 'blue', { 'color.txt': 'blue\n' }, base) }
    const c = await openConflict(['red', 'blue'])
    expect(c.files).toEqual(['color.txt'])
    const loser = c.taskId as 'red' | 'blue'
    const mainBefore = node.board.snapshot().main.head as string

    // the agent runs but leaves git's markers: nothing merges, a human can choose again
    decideAgent(node, c.id, 'keep both colours')
    await waitFor(() => { const x = node.board.snapshot().conflicts.get(c.id); return x?.decision === null && x.error !== null }, { timeoutMs: 30_000, message: () => `the failed resolution was not reported: ${describeBoard()}` })
    const failed = node.board.snapshot().conflicts.get(c.id)!
    expect(failed.state).toBe('open')
    expect(failed.error).toMatch(/conflict markers are left in color\.txt/)
    expect(node.board.task(loser)?.state).toBe('conflict')
    expect(node.board.task(loser)?.error).toMatch(/"agent" failed: .*markers/)
    expect(node.board.snapshot().main.head).toBe(mainBefore)
    // status shows why: the conflict's error in --json and in the text view
    const report = buildStatus(node.board.snapshot(), null)
    expect(report.conflicts.find(x => x.id === c.id)?.error).toMatch(/^"agent" failed: conflict markers are left in color\.txt/)
    expect(renderStatus(report, node.peerId)).toContain(`${c.id}: "agent" failed: conflict markers are left in color.txt`)
    // the agent was told what conflicted, and where it runs
    const prompt = await readFile(join(root, `prompt-${c.id}.txt`), 'utf8')
    expect(prompt).toMatch(/- color\.txt/)
    expect(prompt).toMatch(/keep both colours/)
    expect(await readFile(join(root, `files-${c.id}.txt`), 'utf8')).toBe('color.txt')
    // the resolution's worktree is gone
    expect(existsSync(join(root, 'data-worktrees', `.agent-merge-${loser}`))).toBe(false)

    // now the agent resolves the markers
    await writeFile(flag(), '')
    decideAgent(node, c.id)
    await waitFor(() => node.board.task(loser)?.state === 'merged', { timeoutMs: 30_000, message: () => `not merged: ${describeBoard()}` })
    const done = node.board.snapshot().conflicts.get(c.id)!
    expect(done.state).toBe('resolved')
    expect(done.error).toBeNull()
    const head = node.board.snapshot().main.head as string
    expect(node.board.task(loser)?.mergeCommit).toBe(head)
    expect(node.board.task(loser)?.error).toBeNull()
    // a merge commit: main first, the task's head second, with the trailer; main's checkout follows
    expect(await gitText(['rev-parse', `${head}^1`], { cwd: repo })).toBe(mainBefore)
    expect(await gitText(['rev-parse', `${head}^2`], { cwd: repo })).toBe(heads[loser])
    expect(await gitText(['log', '-1', '--format=%(trailers:key=Meshwork-Task,valueonly)', head], { cwd: repo })).toBe(loser)
    expect(await gitText(['show', `${head}:color.txt`], { cwd: repo })).toBe('both sides of color.txt')
    await waitFor(async () => await gitText(['rev-parse', 'main'], { cwd: repo }) === head, { timeoutMs: 10_000, message: 'local main did not move' })
  })

  it('the merge loop goes on while the agent works; a main that moved meanwhile gets the resolution on top of it', async () => {
    const base = await gitText(['rev-parse', 'main'], { cwd: repo })
    const heads = { circle: await doneTask(node, repo, 'circle', { 'shape.txt': 'circle\n' }, base), square: await doneTask(node, repo, 'square', { 'shape.txt': 'square\n' }, base) }
    const c = await openConflict(['circle', 'square'])
    const loser = c.taskId as 'circle' | 'square'
    await writeFile(join(root, 'hold'), '')
    decideAgent(node, c.id)
    await waitFor(() => existsSync(join(root, 'held')), { timeoutMs: 30_000, message: () => `the agent did not start: ${describeBoard()}` })
    // another task merges while the agent holds
    await doneTask(node, repo, 'other', { 'other.txt': 'other\n' }, node.board.snapshot().main.head as string)
    await waitFor(() => node.board.task('other')?.state === 'merged', { timeoutMs: 30_000, message: () => `the merge loop was blocked by the agent: ${describeBoard()}` })
    const moved = node.board.snapshot().main.head as string
    expect(node.board.task(loser)?.state).toBe('conflict')
    await writeFile(join(root, 'go'), '')
    await waitFor(() => node.board.task(loser)?.state === 'merged', { timeoutMs: 30_000, message: () => `not merged: ${describeBoard()}` })
    const head = node.board.snapshot().main.head as string
    expect(await gitText(['rev-parse', `${head}^1`], { cwd: repo })).toBe(moved)
    expect(await gitText(['rev-parse', `${head}^2`], { cwd: repo })).toBe(heads[loser])
    expect(await gitText(['log', '-1', '--format=%(trailers:key=Meshwork-Task,valueonly)', head], { cwd: repo })).toBe(loser)
    expect(await gitText(['show', `${head}:shape.txt`], { cwd: repo })).toBe('both sides of shape.txt')
    expect(await gitText(['show', `${head}:other.txt`], { cwd: repo })).toBe('other')
    await rm(join(root, 'hold'))
  })

  it('a side git cannot take (modify/delete) fails with the reason on the conflict; the agent then settles it', async () => {
    which = 'command'
    const base = await gitText(['rev-parse', 'main'], { cwd: repo })
    await doneTask(node, repo, 'edit', { 'doomed.txt': 'edited\n' }, base)
    await doneTask(node, repo, 'drop', { 'doomed.txt': null }, base)
    const c = await openConflict(['edit', 'drop'])
    expect(c.files).toEqual(['doomed.txt'])
    node.changeBoard('test:decision', d => { const rec = d.conflicts[c.id]!; rec.decision = { action: str(c.taskId === 'drop' ? 'theirs' : 'ours'), by: str(node.peerId), at: Date.now(), note: str('') } })
    await waitFor(() => { const x = node.board.snapshot().conflicts.get(c.id); return x?.decision === null && x.error !== null }, { timeoutMs: 30_000, message: () => `the failed decision was not reported: ${describeBoard()}` })
    expect(node.board.snapshot().conflicts.get(c.id)?.error).toMatch(/failed: git could not settle the conflict/)
    decideAgent(node, c.id)
    await waitFor(() => node.board.task(c.taskId)?.state === 'merged', { timeoutMs: 30_000, message: () => `not merged: ${describeBoard()}` })
    expect(await gitText(['show', `${node.board.snapshot().main.head as string}:doomed.txt`], { cwd: repo })).toBe('both sides of doomed.txt')
  })

  it('the claude adapter resolves a conflict; its cost and tokens are added to the task', async () => {
    which = 'claude'
    const base = await gitText(['rev-parse', 'main'], { cwd: repo })
    await doneTask(node, repo, 'green', { 'shade.txt': 'green\n' }, base)
    await doneTask(node, repo, 'yellow', { 'shade.txt': 'yellow\n' }, base)
    const c = await openConflict(['green', 'yellow'])
    const before = node.board.task(c.taskId)!
    decideAgent(node, c.id)
    await waitFor(() => node.board.task(c.taskId)?.state === 'merged', { timeoutMs: 30_000, message: () => `not merged: ${describeBoard()}` })
    const t = node.board.task(c.taskId)!
    expect(t.costUsd).toBeCloseTo(before.costUsd + 0.25, 6)
    expect(t.tokens.output).toBeGreaterThan(before.tokens.output)
    expect(await gitText(['show', `${t.mergeCommit as string}:shade.txt`], { cwd: repo })).toMatch(/^hello from fake claude/)
  })

  it('the sim agent re-applies the task\'s `write` files over the conflict', async () => {
    which = 'sim'
    const base = await gitText(['rev-parse', 'main'], { cwd: repo })
    await doneTask(node, repo, 'tea', { 'drink.txt': 'tea\n' }, base, { 'drink.txt': 'tea\n' })
    await doneTask(node, repo, 'coffee', { 'drink.txt': 'coffee\n' }, base, { 'drink.txt': 'coffee\n' })
    const c = await openConflict(['tea', 'coffee'])
    decideAgent(node, c.id)
    await waitFor(() => node.board.task(c.taskId)?.state === 'merged', { timeoutMs: 30_000, message: () => `not merged: ${describeBoard()}` })
    expect(await gitText(['show', `${node.board.task(c.taskId)!.mergeCommit as string}:drink.txt`], { cwd: repo })).toBe(c.taskId)
    expect(await filesWithMarkers(repo, ['drink.txt'])).toEqual([])
  })
})
