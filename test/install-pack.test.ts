/**
 * The documented VM install, done here: `npm pack` the repository, install the
 * tarball into an empty prefix with the Node >= 22 of the npm `node` package
 * (the pinned devDependency), then run `meshwork --help` and a two-node sim
 * mesh from that install alone: a submitted task is merged. Loopback only.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { writeFile, readFile, realpath, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../src/util/wait.ts'
import { makeTempDir, removeDir, tail, LOOPBACK_LISTEN } from './helpers/cli.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')

const dirs: string[] = []
const children: Array<ReturnType<typeof spawn>> = []
afterAll(async () => {
  for (const c of children) { try { c.kill('SIGKILL') } catch {} }
  await Promise.all(children.map(async c => { if (c.exitCode === null && c.signalCode === null) await new Promise(r => c.once('close', r)) }))
  await Promise.all(dirs.map(removeDir))
})

/** The Node of the npm `node` package, and its major version. */
async function pinnedNode (): Promise<string> {
  const bin = await realpath(join(ROOT, 'node_modules', 'node', 'bin', 'node'))
  return bin
}

describe('install from an npm pack tarball', () => {
  it('packs, installs into an empty prefix with a Node >= 22 from npm, and runs a two-node mesh from the install', async () => {
    const node = await pinnedNode()
    const { stdout: version } = await run(node, ['--version'])
    expect(Number(version.trim().replace(/^v/, '').split('.')[0])).toBeGreaterThanOrEqual(22)
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(node)}:${process.env.PATH ?? ''}` }
    for (const k of Object.keys(env)) if (k.startsWith('MESHWORK_')) delete env[k]

    const dir = await makeTempDir('meshwork-install-')
    dirs.push(dir)
    const packDir = join(dir, 'pack')
    const prefix = join(dir, 'prefix')
    await run('npm', ['pack', '--pack-destination', await mkdir(packDir)], { cwd: ROOT, env, maxBuffer: 16 << 20 })
    const tarball = join(packDir, `meshwork-${JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version as string}.tgz`)
    expect((await stat(tarball)).size).toBeGreaterThan(10_000)
    await run('npm', ['install', '-g', '--prefix', await mkdir(prefix), '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: dir, env, maxBuffer: 16 << 20 })
    const bin = join(prefix, 'bin', 'meshwork')

    // the installed command runs the built JavaScript, not this checkout's sources
    const installed = await realpath(bin)
    expect(installed.startsWith(await realpath(prefix)), installed).toBe(true)
    // the package's dist/ is the bundle (scripts/bundle.ts --dist): the CLI, the approval MCP server's and the copy
    // reader's worker's entries in dist/cli, no tree of modules beside them
    const pkg = join(dirname(installed), '..')
    expect(existsSync(join(pkg, 'dist', 'cli', 'main.js'))).toBe(true)
    expect(existsSync(join(pkg, 'dist', 'cli', 'approval-mcp-server.js'))).toBe(true)
    expect(existsSync(join(pkg, 'dist', 'cli', 'copy-worker.js'))).toBe(true)
    expect(existsSync(join(pkg, 'dist', 'crdt'))).toBe(false)
    const help = await run(bin, ['--help'], { env })
    expect(help.stdout).toMatch(/Usage: meshwork <command>/)
    const ver = await run(bin, ['--version'], { env })
    expect(ver.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/)

    const key = join(dir, 'swarm.key')
    await run(bin, ['init', '--out', key], { env })
    const start = (name: string, conn: string[]): { data: string, out: () => string } => {
      const data = join(dir, `data-${name}`)
      let out = ''
      // the first node (it joins nobody) starts the project's history; the second clones it
      const first = !conn.some(a => a === '--join' || a === '--bootstrap')
      const p = spawn(bin, ['node', '--repo', join(dir, `repo-${name}`), '--data', data, '--listen', LOOPBACK_LISTEN, '--name', name, '--agent', 'sim', ...(first ? ['--init-repo'] : []), ...conn], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      p.stdout.on('data', (c: Buffer) => { out += c.toString() })
      p.stderr.on('data', (c: Buffer) => { out += c.toString() })
      children.push(p)
      return { data, out: () => out }
    }
    const nodeInfo = async (data: string, out: () => string): Promise<{ join: string }> => await waitFor(async () => {
      try { return JSON.parse(await readFile(join(data, 'node.json'), 'utf8')) as { join: string } } catch { return null }
    }, { timeoutMs: 90_000, intervalMs: 100, message: () => `installed node did not write node.json\n${tail('output', out())}` })
    const a = start('a', ['--swarm-key', key])
    const infoA = await nodeInfo(a.data, a.out)
    const b = start('b', ['--join', infoA.join])
    await nodeInfo(b.data, b.out)

    const plan = join(dir, 'plan.yaml')
    await writeFile(plan, 'tasks:\n  - id: hello\n    prompt: write hello\n    sim:\n      write: { "hello.txt": "hello\\n" }\n')
    const conn = ['--join', infoA.join]
    const sub = await run(bin, ['submit', plan, '--wait', ...conn], { env, timeout: 90_000 }).catch((err: { stdout?: string, stderr?: string, message: string }) => {
      throw new Error(`submit --wait failed: ${err.message}\n${tail('a', a.out())}\n${tail('b', b.out())}`)
    })
    expect(sub.stdout).toMatch(/hello/)
    const status = JSON.parse((await run(bin, ['status', '--json', ...conn], { env, timeout: 60_000 })).stdout) as { tasks: Array<{ id: string, state: string, mergeCommit: string | null }>, nodes: Array<{ name: string, state: string }> }
    const task = status.tasks.find(t => t.id.endsWith('hello'))
    expect(task?.state, JSON.stringify(status.tasks)).toBe('merged')
    expect(task?.mergeCommit).toMatch(/^[0-9a-f]{40}$/)
    expect(status.nodes.map(n => `${n.name}=${n.state}`).sort()).toEqual(['a=alive', 'b=alive'])
  }, 300_000)
})

async function mkdir (p: string): Promise<string> {
  await (await import('node:fs/promises')).mkdir(p, { recursive: true })
  return p
}
