/**
 * What an agent can reach on a running node: its environment, and the
 * directories above its worktree (an agent with a shell lists them first).
 * Neither may hold the mesh's secrets: the join token and swarm key are not in
 * the environment of agents, `--setup` or `--verify`, and worktrees live
 * outside the data dir (identity key, node.json with the token, board,
 * transcripts), so no directory from a worktree up to `/` holds those files.
 * Also: a data dir of an older meshwork, with worktrees inside, still works
 * (they are cleaned up and new ones go outside).
 */
import { describe, it, expect, afterEach } from 'vitest'
import { existsSync } from 'node:fs'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { createMesh, type TestMesh } from './helpers/mesh.ts'
import { commitFiles, initRepo } from './helpers/git.ts'
import { Worker } from '../src/node/worker.ts'
import { commandAgent } from '../src/agent/command.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { defaultWorktreesDir } from '../src/git/worktree.ts'
import { isWithin } from '../src/cli/data-dir.ts'
import { git, gitText } from '../src/git/git.ts'
import { silentLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'

/** What a node's data dir holds that an agent must not reach. */
const DATA_SECRETS = ['identity.key', 'node.json', 'board.am', 'board.log', 'transcripts', 'claude', 'run-groups']
/** The node's own settings that carry secrets (or lead to them). */
const SECRET_VARS = ['MESHWORK_JOIN', 'MESHWORK_SWARM_KEY', 'MESHWORK_JOIN_FILE', 'MESHWORK_IDENTITY']

let mesh: TestMesh | null = null
let worker: Worker | null = null
const saved = new Map<string, string | undefined>()

afterEach(async () => {
  await worker?.stop(0)
  worker = null
  await mesh?.stop()
  mesh = null
  for (const [k, v] of saved) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  saved.clear()
})

function setEnv (vars: Record<string, string>): void {
  for (const [k, v] of Object.entries(vars)) {
    if (!saved.has(k)) saved.set(k, process.env[k])
    process.env[k] = v
  }
}

/** Every directory from `path`'s parent up to `/`. */
function ancestors (path: string): string[] {
  const out: string[] = []
  let d = resolve(path)
  while (dirname(d) !== d) { d = dirname(d); out.push(d) }
  return out
}

async function startWorker (m: TestMesh, setupCmd: string, verifyCmd: string, agentCmd: string): Promise<{ dataDir: string, repo: string }> {
  const node = m.nodes[0]!
  const root = m.dirs[0] as string
  const dataDir = join(root, 'n0')
  const repo = await initRepo(join(root, 'repo'))
  await commitFiles(repo, { 'README.md': 'project\n' }, 'initial')
  worker = new Worker({ node, agent: commandAgent({ cmd: agentCmd, nodeName: 'n0' }), repo, dataDir, branch: 'main', slots: 1, hasBootstrap: false, logger: silentLogger, setup: setupCmd, verify: verifyCmd })
  await worker.start()
  await worker.ready
  return { dataDir, repo }
}

describe('an agent\'s reach', () => {
  it('its environment and every directory above its worktree hold none of the node\'s secrets', async () => {
    mesh = await createMesh(1)
    const root = mesh.dirs[0] as string
    const out = join(root, 'dumps')
    await mkdir(out)
    const dataDir = join(root, 'n0')
    const token = mesh.nodes[0]!.joinToken()
    const keyFile = join(root, 'keys', 'swarm.key')
    setEnv({ MESHWORK_JOIN: token, MESHWORK_SWARM_KEY: keyFile, MESHWORK_JOIN_FILE: join(root, 'keys', 'join'), MESHWORK_IDENTITY: join(root, 'keys', 'client.key') })
    // what `meshwork node` writes at start: the token, beside the identity key and the board
    await writeFile(join(dataDir, 'node.json'), JSON.stringify({ peerId: mesh.nodes[0]!.peerId, addrs: mesh.nodes[0]!.addrs(), join: token, pid: process.pid }))
    const dump = (who: string): string => `env > ${out}/${who}-env; pwd > ${out}/${who}-pwd`
    await startWorker(mesh, dump('setup'), dump('verify'), `${dump('agent')}; echo done > done.txt`)
    mesh.nodes[0]!.changeBoard('plan', addTasks([simpleTask('t1')]))
    await waitFor(() => mesh!.nodes[0]!.board.task('t1')?.state === 'merged', { timeoutMs: 60_000, message: () => `t1 did not merge: ${JSON.stringify(mesh!.nodes[0]!.board.task('t1'))}` })

    const keyHex = mesh.key.hex
    for (const who of ['setup', 'agent', 'verify']) {
      const env = await readFile(join(out, `${who}-env`), 'utf8')
      for (const v of SECRET_VARS) expect(env, `${who} sees ${v}`).not.toMatch(new RegExp(`^${v}=`, 'm'))
      expect(env, `${who} sees the join token`).not.toContain(token)
      expect(env, `${who} sees the swarm key`).not.toContain(keyHex)
      // (its sibling <data>-worktrees is fine: the path of the data dir itself, or below it, is not)
      expect(env, `${who} sees the data dir`).not.toMatch(new RegExp(`${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(/|$|:)`, 'm'))

      const cwd = (await readFile(join(out, `${who}-pwd`), 'utf8')).trim()
      expect(isWithin(cwd, dataDir), `${who} ran in ${cwd}, inside the data dir ${dataDir}`).toBe(false)
      if (who !== 'verify') expect(isWithin(cwd, defaultWorktreesDir(dataDir)), `${who} ran in ${cwd}`).toBe(true)
      for (const up of ancestors(cwd)) {
        expect(isWithin(up, dataDir), `${up} (above ${who}'s worktree) is in the data dir`).toBe(false)
        const entries = await readdir(up).catch(() => [] as string[])
        const found = entries.filter(e => DATA_SECRETS.includes(e))
        expect(found, `${up}, above ${who}'s worktree ${cwd}, holds ${found.join(', ')}`).toEqual([])
      }
    }
    // nothing was ever made inside the data dir for a worktree
    expect(existsSync(join(dataDir, 'worktrees'))).toBe(false)
  })

  it('a data dir of an older meshwork, with worktrees inside, keeps working: they are removed, the branches kept, new ones go outside', async () => {
    mesh = await createMesh(1)
    const root = mesh.dirs[0] as string
    const dataDir = join(root, 'n0')
    // an older node crashed with a run's worktree in DATA/worktrees
    const repo = await initRepo(join(root, 'repo'))
    await commitFiles(repo, { 'README.md': 'project\n' }, 'initial')
    await mkdir(join(dataDir, 'worktrees'))
    await git(['worktree', 'add', '-q', '-b', 'meshwork/old', join(dataDir, 'worktrees', 'old')], { cwd: repo })
    await commitFiles(join(dataDir, 'worktrees', 'old'), { 'old.txt': 'committed before the crash\n' }, 'old work')
    const oldHead = await gitText(['rev-parse', 'meshwork/old'], { cwd: repo })
    worker = new Worker({ node: mesh.nodes[0]!, agent: commandAgent({ cmd: 'pwd > where.txt', nodeName: 'n0' }), repo, dataDir, branch: 'main', slots: 1, hasBootstrap: false, logger: silentLogger })
    await worker.start()
    await worker.ready
    expect(existsSync(join(dataDir, 'worktrees'))).toBe(false)
    expect(await gitText(['rev-parse', 'meshwork/old'], { cwd: repo })).toBe(oldHead)
    expect(await gitText(['worktree', 'list', '--porcelain'], { cwd: repo })).not.toContain(join(dataDir, 'worktrees'))
    mesh.nodes[0]!.changeBoard('plan', addTasks([simpleTask('t2')]))
    await waitFor(() => mesh!.nodes[0]!.board.task('t2')?.state === 'merged', { timeoutMs: 60_000, message: () => `t2 did not merge: ${JSON.stringify(mesh!.nodes[0]!.board.task('t2'))}` })
    const where = (await gitText(['show', 'main:where.txt'], { cwd: repo })).trim()
    expect(where).toBe(join(defaultWorktreesDir(dataDir), 't2'))
  })
})
