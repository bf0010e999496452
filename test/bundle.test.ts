/**
 * The bundle a clone's commands start from (scripts/bundle.ts makes it,
 * bin/bundle.js says whether it matches the sources). Made here from a copy
 * of this checkout in a temporary directory (the checkout's own .build is
 * left alone): the CLI runs from it without loading a module of the sources,
 * a node started from it applies every library patch, the approval MCP
 * server and the copy reader's worker answer from it, and it is taken only
 * while it matches the sources.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { cp, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { freshBundle, sourcesFingerprint } from '../bin/bundle.js'
import { makeTempDir, removeDir, startNode, type CliNode } from './helpers/cli.ts'
import { MessageChannel, Worker } from 'node:worker_threads'
import { Board } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { AsideState, type CopyRead } from '../src/crdt/copy-reader.ts'
import { waitFor } from '../src/util/wait.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')

let tmp = ''
let copy = ''
const nodes: CliNode[] = []

/** A loader hook that appends every module URL the process loads to the file named by MESHWORK_TEST_LOADED. */
const HOOK = `import { registerHooks } from 'node:module'
import { appendFileSync } from 'node:fs'
registerHooks({ load (url, ctx, next) { appendFileSync(process.env.MESHWORK_TEST_LOADED, url + '\\n'); return next(url, ctx) } })
`

/** Runs the copy's `meshwork ARGS`, and returns its output and the modules it loaded. */
async function meshwork (args: string[], env: Record<string, string> = {}): Promise<{ stdout: string, loaded: string[] }> {
  const list = join(tmp, `loaded-${Math.random().toString(36).slice(2)}`)
  await writeFile(list, '')
  const { stdout } = await run(process.execPath, ['--import', pathToFileURL(join(tmp, 'hook.mjs')).href, join(copy, 'bin', 'meshwork.js'), ...args], { env: { ...process.env, MESHWORK_TEST_LOADED: list, ...env } })
  return { stdout, loaded: (await readFile(list, 'utf8')).split('\n').filter(l => l !== '') }
}

/** Makes the copy's bundle; returns what the script said. */
async function bundle (): Promise<string> {
  const { stderr } = await run(process.execPath, [join(copy, 'scripts', 'bundle.ts')], { timeout: 120_000 })
  return stderr
}

const under = (dir: string) => (url: string): boolean => url.startsWith(pathToFileURL(join(copy, dir)).href + '/')

beforeAll(async () => {
  tmp = await makeTempDir('meshwork-bundle-')
  copy = join(tmp, 'meshwork')
  await mkdir(join(copy, 'scripts'), { recursive: true })
  for (const part of ['bin', 'src']) await cp(join(ROOT, part), join(copy, part), { recursive: true })
  for (const file of ['package.json', 'package-lock.json', 'scripts/bundle.ts']) await cp(join(ROOT, file), join(copy, file))
  await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'))
  await writeFile(join(tmp, 'hook.mjs'), HOOK)
  expect(await bundle()).toMatch(/bundled the CLI into \.build\/cli/)
}, 180_000)

afterAll(async () => {
  await Promise.all(nodes.map(async n => { await n.stop('SIGKILL').catch(() => {}) }))
  if (tmp !== '') await removeDir(tmp)
})

describe('the bundle a clone\'s commands start from', { timeout: 120_000 }, () => {
  it('runs the CLI without loading a module of the sources', async () => {
    expect(freshBundle(copy)).toBe(join(copy, '.build', 'cli', 'main.js'))
    const { stdout, loaded } = await meshwork(['--version'])
    expect(stdout.trim()).toBe((JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version)
    expect(loaded).toContain(pathToFileURL(join(copy, '.build', 'cli', 'main.js')).href)
    expect(loaded.filter(under('src'))).toEqual([])
  })

  it('starts a node that applies every library patch, from the bundle alone', async () => {
    const keyFile = join(tmp, 'swarm.key')
    await meshwork(['init', '--out', keyFile])
    const list = join(tmp, 'loaded-node')
    await writeFile(list, '')
    const node = await startNode({ dir: tmp, name: 'b1', keyFile, extraArgs: ['--agent', 'sim'], bin: join(copy, 'bin', 'meshwork.js'), env: { NODE_OPTIONS: `--import ${pathToFileURL(join(tmp, 'hook.mjs')).href}`, MESHWORK_TEST_LOADED: list } })
    nodes.push(node)
    await node.stop('SIGTERM')
    const loaded = (await readFile(list, 'utf8')).split('\n').filter(l => l !== '')
    expect(loaded.filter(under('.build/cli')).length).toBeGreaterThan(1)
    expect(loaded.filter(under('src'))).toEqual([])
    // a patch that does not apply says so at the start (patches.ts); pnet's fails the start
    expect(node.stderr() + node.stdout()).not.toMatch(/patch:not-applied|LibraryPatchError/)
  })

  it('has the approval MCP server as an entry of its own, which answers Claude\'s first request', async () => {
    const script = join(copy, '.build', 'cli', 'approval-mcp-server.js')
    expect(existsSync(script)).toBe(true)
    const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'] })
    try {
      const first = new Promise<Record<string, unknown>>(resolveLine => { createInterface({ input: child.stdout }).once('line', line => { resolveLine(JSON.parse(line) as Record<string, unknown>) }) })
      child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }) + '\n')
      const reply = await first
      expect(reply).toMatchObject({ jsonrpc: '2.0', id: 1, result: { serverInfo: expect.objectContaining({ name: expect.any(String) }) } })
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('has the copy reader\'s worker as an entry of its own, which reads a board\'s document it is sent', async () => {
    const script = join(copy, '.build', 'cli', 'copy-worker.js')
    expect(existsSync(script)).toBe(true)
    const board = Board.create('mesh-bundle-test', 'ab'.repeat(16))
    board.change('plan', addTasks([simpleTask('one'), simpleTask('two')]))
    const { port1, port2 } = new MessageChannel()
    const state = new Int32Array(new SharedArrayBuffer(4))
    const worker = new Worker(script, { workerData: { port: port2, state }, transferList: [port2] })
    try {
      const answer = new Promise<unknown>(resolveAnswer => { port1.once('message', resolveAnswer) })
      port1.postMessage(board.save())
      const read = await answer as CopyRead
      expect(read.heads).toEqual(board.heads())
      expect(read.entries.tasks.map(([key]) => key).sort()).toEqual(['one', 'two'])
      // (it says so in its state right after it posts the answer)
      await waitFor(() => Atomics.load(state, 0) === AsideState.Answered, { timeoutMs: 30_000, message: 'the worker never said it answered' })
    } finally {
      port1.close()
      await worker.terminate()
    }
  })

  it('is left for the sources once a source changes, and taken again once made again; MESHWORK_SOURCES=1 always takes the sources', async () => {
    const before = sourcesFingerprint(copy)
    const later = new Date(Date.now() + 5000)
    await utimes(join(copy, 'src', 'cli', 'main.ts'), later, later)
    expect(sourcesFingerprint(copy)).not.toBe(before)
    expect(freshBundle(copy)).toBeNull()
    const stale = await meshwork(['--version'])
    expect(stale.loaded).toContain(pathToFileURL(join(copy, 'src', 'cli', 'main.ts')).href)
    expect(stale.loaded.filter(under('.build'))).toEqual([])

    expect(await bundle()).toMatch(/bundled the CLI/)
    expect(await bundle()).toMatch(/up to date/)
    const fresh = await meshwork(['--version'])
    expect(fresh.loaded.filter(under('src'))).toEqual([])
    const forced = await meshwork(['--version'], { MESHWORK_SOURCES: '1' })
    expect(forced.loaded).toContain(pathToFileURL(join(copy, 'src', 'cli', 'main.ts')).href)
  })
})
