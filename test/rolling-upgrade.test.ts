/**
 * A rolling upgrade across two real versions of meshwork: the version a user
 * could be running (`FROM`, checked out of this repository's history with `git
 * archive`, sharing this checkout's node_modules) and this checkout. Three
 * `meshwork node` processes on fixed loopback ports (as VMs keep their
 * addresses; c never leads) start on the old version and merge a batch from an
 * old client. Then one at a time each is started again on the same --data and
 * --repo by the new version, with tasks submitted and merging throughout:
 *   1. b (or a): stopped (SIGTERM, as `systemctl stop`), the other two held
 *      busy by sim tasks waiting on a file, started on the new version: it
 *      alone runs a batch, which the old leader merges;
 *   2. the leader: stopped with a batch in flight; the new node takes over;
 *   3. c: drained by a new client with a batch in flight (docs/operations.md).
 * At the end every task is merged exactly once (one merge commit with its
 * trailer on main's first-parent history) and main is the same on every node.
 * Then c is rolled back to the old version on the data the new one wrote,
 * runs a batch from an old client alone, and the new leader merges it.
 *
 * A version that cannot work with the mesh: a copy of this checkout whose git
 * protocol id is moved on (`/meshwork/git/2` -> `/3`, version 9.0.0, as a far
 * future release would be) joins the mesh, says so in one line and exits 2,
 * leaving no record on the board; the mesh goes on.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { createServer, type AddressInfo } from 'node:net'
import { cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../src/util/wait.ts'
import { gitText } from '../src/git/git.ts'
import { GIT_PROTOCOL } from '../src/protocol/git.ts'
import { BIN, runCli, startNode, killAllChildren, removeDir, describeResult, watchStatusJson, newMeshDir, nodeStates, type CliNode, type StatusWatch } from './helpers/cli.ts'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')

/**
 * The version the mesh is upgraded from: the last commit of the previous
 * working session (2026-12-05, 89c7d14), which is what a mesh set up from
 * this repository then runs. Move it to the previous release whenever the
 * version in package.json is bumped. (It was 5bb9541 of 2026-12-03 until the
 * runtime dependencies were pinned exactly since; 89c7d14 signs its board
 * changes, so the roll back runs, and reads only whole task records, so the
 * mesh writes plans whole while it has such a node.)
 */
const FROM = '89c7d1417e02c992bb9210e29b5a800a775c6177'

interface Task { id: string, state: string, node: string | null, mergeCommit: string | null, error: string | null }
interface Status { main: { head: string | null, leader: string | null, term: number }, nodes: Array<{ peerId: string, name: string, state: string, version?: string | null }>, tasks: Task[] }

/** A node as a VM: its name, fixed address, flags, and the process running it now. */
interface Vm {
  name: string
  port: number
  extra: string[]
  node: CliNode | null
  /** The executable it runs now. */
  bin: string
  peerId: string
}

const dirs: string[] = []
let dir = ''
let keyFile = ''
/** The old version's `bin/meshwork.js`, or why there is none here. */
let oldBin = ''
let skipWhy: string | null = null
const vms: Vm[] = []
let watch: StatusWatch | null = null
let watchVm: Vm | null = null
let last: Status | null = null
/** Set once the first test has upgraded the mesh: the others go on from there. */
let upgraded = false

afterAll(async () => {
  await watch?.close().catch(() => {})
  await killAllChildren()
  await Promise.all(dirs.map(removeDir))
})

const t0 = Date.now()
/** One line on stderr per step, so a slow or stuck run shows where it is. */
function step (what: string): void {
  process.stderr.write(`[rolling-upgrade ${((Date.now() - t0) / 1000).toFixed(1)}s] ${what}\n`)
}

/** A port nobody listens on now (the OS's pick), for a node that keeps its address across restarts. */
async function freePort (): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo
      s.close(() => { resolvePort(port) })
    })
  })
}

/** The runtime dependencies of a package.json. */
async function deps (file: string): Promise<string> {
  const p = JSON.parse(await readFile(file, 'utf8')) as { dependencies?: Record<string, string> }
  return JSON.stringify(Object.entries(p.dependencies ?? {}).sort(([a], [b]) => a.localeCompare(b)))
}

/**
 * Extracts `FROM`'s bin/, src/ and package.json into DIR/old with this
 * checkout's node_modules linked in; returns its executable, or null (with
 * `skipWhy` set) when this clone does not have that commit.
 */
async function checkoutOld (): Promise<string | null> {
  const have = await run('git', ['-C', ROOT, 'cat-file', '-e', `${FROM}^{commit}`]).then(() => true, () => false)
  if (!have) {
    skipWhy = `commit ${FROM.slice(0, 12)} (the version upgraded from) is not in this clone: a shallow clone? (git fetch --unshallow)`
    return null
  }
  const old = join(dir, 'old')
  await mkdir(old)
  const tar = join(dir, 'old.tar')
  await run('git', ['-C', ROOT, 'archive', '--format=tar', `--output=${tar}`, FROM, 'bin', 'src', 'package.json'])
  await run('tar', ['-xf', tar, '-C', old])
  // the old version runs on this checkout's packages: only right while it asked for the same ones
  const [was, is] = [await deps(join(old, 'package.json')), await deps(join(ROOT, 'package.json'))]
  if (was !== is) throw new Error(`the runtime dependencies changed since ${FROM.slice(0, 12)}, so the old version cannot run on this checkout's node_modules: move FROM to a release with the same dependencies, or install the old ones for it\nthen: ${was}\nnow:  ${is}`)
  await symlink(join(ROOT, 'node_modules'), join(old, 'node_modules'))
  return join(old, 'bin', 'meshwork.js')
}

const addr = (vm: Vm): string => `/ip4/127.0.0.1/tcp/${vm.port}/p2p/${vm.peerId}`
const keyArgs = (): string[] => ['--swarm-key', keyFile]
/** Client connection through every node (a client gets through while one is down). */
const everyNode = (): string[] => [...keyArgs(), ...vms.flatMap(v => ['--bootstrap', addr(v)]), '--timeout', '30s']
const isOld = (vm: Vm): boolean => vm.bin === oldBin
const versions = (): string => vms.map(v => `${v.name}=${isOld(v) ? 'old' : 'new'}`).join(' ')

/** Starts `vm` on `bin` with the same flags every time (as a unit file's ExecStart): the first node has the key, the others join it. */
async function boot (vm: Vm, bin: string): Promise<void> {
  step(`start ${vm.name} on the ${bin === oldBin ? 'old' : 'new'} version`)
  const first = vm === vms[0]
  const join0 = first ? undefined : `${addr(vms[0] as Vm)}`
  vm.node = await startNode({ dir, name: vm.name, listen: `/ip4/127.0.0.1/tcp/${vm.port}`, bin, keyFile, ...(join0 !== undefined ? { bootstrap: [join0] } : {}), extraArgs: vm.extra, startTimeoutMs: 60_000 })
  vm.bin = bin
  if (vm.peerId !== '') expect(vm.node.info.peerId, 'the same --data keeps the peer id').toBe(vm.peerId)
  vm.peerId = vm.node.info.peerId
}

/** Stops `vm` as `systemctl stop` does (SIGTERM: runs finish within --grace, the node announces it leaves); it must exit 0. */
async function stop (vm: Vm): Promise<void> {
  step(`stop ${vm.name}`)
  if (watchVm === vm) await watchThrough(vms.find(v => v !== vm && v.node?.running() === true) as Vm)
  const node = vm.node as CliNode
  const r = await node.stop('SIGTERM', 60_000)
  expect(r, `${vm.name} (${isOld(vm) ? 'old' : 'new'}) did not stop cleanly\n${node.describe()}`).toEqual({ code: 0, signal: null })
  vm.node = null
}

/** (Re)opens the one status watch, through `vm` (a watch reads its node's membership view, so it must not be the one stopped). */
async function watchThrough (vm: Vm): Promise<void> {
  await watch?.close()
  watch = await watchStatusJson([...keyArgs(), '--bootstrap', addr(vm)])
  watchVm = vm
}

function context (): string {
  return `versions: ${versions()}; nodes: ${nodeStates(last as Parameters<typeof nodeStates>[0])}; main: ${JSON.stringify(last?.main)}\ntasks: ${JSON.stringify(last?.tasks.map(t => [t.id, t.state, t.node?.slice(-6) ?? null, t.error]))}\n${vms.map(v => v.node?.describe() ?? `${v.name}: stopped`).join('\n')}`
}

/** Waits until the watch's newest report satisfies `cond`. */
async function until (cond: (s: Status) => boolean, what: string, timeoutMs = 90_000): Promise<Status> {
  step(`waiting (else: ${what})`)
  return await waitFor(() => {
    const s = watch?.latest() as Status | null
    if (s == null) return null
    last = s
    return cond(s) ? s : null
  }, { timeoutMs, intervalMs: 100, message: () => `${what}\n${context()}` })
}

const state = (s: Status, id: string): string | undefined => s.tasks.find(t => t.id === id)?.state
const allMerged = (ids: string[]) => (s: Status): boolean => ids.every(id => state(s, id) === 'merged')

let planSeq = 0
/** Submits tasks `ids` (each writes its own file) with the client `bin`; `hold`: each run then waits until that file exists. */
async function submit (ids: string[], opts: { bin?: string, hold?: string } = {}): Promise<void> {
  const plan = join(dir, `plan-${++planSeq}.yaml`)
  const until = opts.hold === undefined ? '' : `, until: ${JSON.stringify(opts.hold)}`
  await writeFile(plan, 'tasks:\n' + ids.map(id => `  - id: ${id}\n    prompt: ${id}\n    sim: { duration: 200ms${until}, write: { "up/${id}.txt": "${id}\\n" } }\n`).join(''))
  const args = ['submit', plan, ...everyNode()]
  step(`submit ${ids.join(' ')} (${opts.bin === oldBin ? 'old' : 'new'} client)`)
  const r = await runCli(args, { timeoutMs: 90_000, ...(opts.bin !== undefined ? { bin: opts.bin } : {}) })
  expect(r.code, `${opts.bin === oldBin ? 'old' : 'new'} client: ${describeResult(args, r)}\n${context()}`).toBe(0)
}

/** Every task submitted, in the order submitted. */
const all: string[] = []
/** Ids of batch `n`: `k` tasks, added to `all`. */
function batch (n: number, k: number): string[] {
  const ids = Array.from({ length: k }, (_, i) => `t${n}-${i}`)
  all.push(...ids)
  return ids
}

/**
 * Every task merged exactly once (one merge commit each on main's
 * first-parent history, with its trailer), none left in another state, and
 * main the same in every node's repository.
 */
async function mergedOnceEverywhere (): Promise<void> {
  const end = await until(allMerged(all), 'not every task merged')
  expect(end.tasks.filter(t => t.state !== 'merged'), context()).toEqual([])
  expect(end.tasks.map(t => t.id).sort()).toEqual([...all].sort())
  const head = end.main.head as string
  for (const v of vms) {
    const repo = join(dir, `repo-${v.name}`)
    await waitFor(async () => (await gitText(['rev-parse', 'main'], { cwd: repo })) === head, { timeoutMs: 30_000, intervalMs: 200, message: () => `${v.name}'s main is not the mesh's ${head}\n${context()}` })
  }
  const trailers = (await gitText(['log', '--first-parent', '--format=%(trailers:key=Meshwork-Task,valueonly)', 'main'], { cwd: join(dir, 'repo-a') })).split('\n').map(l => l.trim()).filter(l => l !== '')
  expect(trailers.sort()).toEqual([...all].sort())
  const lastId = all[all.length - 1] as string
  expect(await gitText(['show', `main:up/${lastId}.txt`], { cwd: join(dir, 'repo-c') })).toBe(lastId)
}

let holdSeq = 0
/**
 * Stops `target`, holds every other node busy (one sim task each, waiting on a
 * file), starts `target` on `bin`, submits `batch` with the client `client`:
 * only `target` has a free slot, so it runs the whole batch, and the others
 * merge it. Then lets the held tasks finish and waits until all are merged.
 */
async function runOnlyOn (target: Vm, bin: string, batch: string[], client: string): Promise<string[]> {
  await stop(target)
  const hold = join(dir, `hold-${++holdSeq}`)
  const holds = vms.filter(v => v !== target).map((_, i) => `hold-${holdSeq}-${i}`)
  await submit(holds, { hold, bin: client })
  await until(s => holds.every(id => state(s, id) === 'running'), `the held tasks ${holds.join(', ')} never ran on the other nodes`)
  await boot(target, bin)
  await submit(batch, { bin: client })
  const s = await until(allMerged(batch), `${target.name} (${isOld(target) ? 'old' : 'new'}) did not run and merge ${batch.join(', ')} while the others were busy`)
  for (const id of batch) expect(s.tasks.find(t => t.id === id)?.node, `${id} ran elsewhere than ${target.name}\n${context()}`).toBe(target.peerId)
  await writeFile(hold, '')
  await until(allMerged(holds), `the held tasks ${holds.join(', ')} did not merge once let go`)
  return holds
}

beforeAll(async () => {
  ;({ dir, keyFile } = await newMeshDir('meshwork-upgrade-', dirs))
  oldBin = await checkoutOld() ?? ''
  const common = ['--agent', 'sim', '--slots', '1', '--suspect-after', '2s', '--dead-after', '5s', '--grace', '10s']
  for (const name of ['a', 'b', 'c']) {
    // c never leads: the leader is a or b, so who leads after each step is known
    vms.push({ name, port: await freePort(), extra: name === 'c' ? [...common, '--no-leader'] : common, node: null, bin: '', peerId: '' })
  }
}, 60_000)

describe('rolling upgrade', { timeout: 420_000 }, () => {
  it('from the previous version, one node at a time, with tasks submitted and merging throughout: every task merged exactly once, main the same everywhere', async (ctx) => {
    if (skipWhy !== null) ctx.skip(true, skipWhy)
    const [a, b, c] = vms as [Vm, Vm, Vm]
    // the mesh on the old version, with work from an old client
    await boot(a, oldBin)
    await Promise.all([boot(b, oldBin), boot(c, oldBin)])
    await watchThrough(c)
    const b0 = batch(0, 3)
    await submit(b0, { bin: oldBin })
    const s0 = await until(allMerged(b0), 'the old mesh did not merge the first batch')
    const leader = vms.find(v => v.peerId === s0.main.leader)
    expect(leader === a || leader === b, `the leader is a or b\n${context()}`).toBe(true)
    const L = leader as Vm
    const X = L === a ? b : a

    // 1. X to the new version: it alone runs a batch (new client), which the old leader merges
    all.push(...await runOnlyOn(X, BIN, batch(1, 2), BIN))

    // 2. the leader to the new version, with a batch in flight: leadership moves to X (new), the only other that may lead
    const b2 = batch(2, 3)
    await submit(b2)
    await stop(L)
    await until(s => s.main.leader === X.peerId, 'X (new) did not take over as leader')
    await boot(L, BIN)
    await until(allMerged(b2), 'the batch submitted before the leader was stopped did not merge')

    // 3. the last node to the new version, with a batch in flight, taken out as docs/operations.md says:
    // drained by a new client, the old node finishes its runs, waits for its work to merge and exits 0
    const b3 = batch(3, 3)
    await submit(b3)
    await watchThrough(a)
    const drainArgs = ['drain', 'c', '--wait', ...everyNode()]
    step('drain c')
    const dr = await runCli(drainArgs, { timeoutMs: 120_000 })
    expect(dr.code, `${describeResult(drainArgs, dr)}\n${context()}`).toBe(0)
    await waitFor(() => !(c.node as CliNode).running(), { timeoutMs: 60_000, intervalMs: 100, message: () => `c did not exit after its drain\n${context()}` })
    const cExit = await (c.node as CliNode).exited
    expect(cExit, (c.node as CliNode).describe()).toEqual({ code: 0, signal: null })
    c.node = null
    await boot(c, BIN)
    expect(vms.every(v => v.bin === BIN)).toBe(true)
    const newVersion = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
    await until(s => allMerged(all)(s) && s.nodes.filter(n => n.state === 'alive' && n.version === newVersion).length === 3, 'not every task merged on the upgraded mesh, or not every node alive and announcing the new version')
    await mergedOnceEverywhere()
    upgraded = true
  })

  // (a FROM from before signed board changes cannot be rolled back to: a peer that has signed one is refused
  // when it writes unsigned again, by design; FROM signs now)
  it('rolling back: a node started again on the previous version reads what the new one wrote; its work (from an old client) merges through a new leader', async (ctx) => {
    if (skipWhy !== null) ctx.skip(true, skipWhy)
    if (!upgraded) ctx.skip(true, 'the first test did not upgrade the mesh')
    all.push(...await runOnlyOn(vms[2] as Vm, oldBin, batch(4, 2), oldBin))
    await until(allMerged(all), 'not every task merged after the roll back')
    await mergedOnceEverywhere()
  })

  it('a version whose wire protocols differ says so in one line when it joins, exits 2, and the mesh goes on', async (ctx) => {
    if (skipWhy !== null) ctx.skip(true, skipWhy)
    if (!upgraded) ctx.skip(true, 'the first test did not upgrade the mesh')
    // a far future release: this checkout with the git protocol moved on and another version
    const future = join(dir, 'future')
    await mkdir(future)
    for (const p of ['bin', 'src', 'package.json']) await cp(join(ROOT, p), join(future, p), { recursive: true })
    await symlink(join(ROOT, 'node_modules'), join(future, 'node_modules'))
    const gitTs = join(future, 'src', 'protocol', 'git.ts')
    const text = await readFile(gitTs, 'utf8')
    const next = GIT_PROTOCOL.replace(/\d+$/, n => String(Number(n) + 1))
    expect(text).toContain(`'${GIT_PROTOCOL}'`)
    await writeFile(gitTs, text.replace(`'${GIT_PROTOCOL}'`, `'${next}'`))
    const pkg = JSON.parse(await readFile(join(future, 'package.json'), 'utf8')) as { version: string }
    await writeFile(join(future, 'package.json'), JSON.stringify({ ...pkg, version: '9.0.0' }))

    const args = ['node', '--repo', join(dir, 'repo-future'), '--data', join(dir, 'data-future'), '--listen', '/ip4/127.0.0.1/tcp/0', '--name', 'future', '--agent', 'sim', ...keyArgs(), '--bootstrap', addr(vms[0] as Vm)]
    const r = await runCli(args, { bin: join(future, 'bin', 'meshwork.js'), timeoutMs: 90_000 })
    expect(r.code, describeResult(args, r)).toBe(2)
    // logs are JSON lines (stderr is not a TTY): the message is the one other line
    const lines = r.stderr.split('\n').filter(l => l !== '' && !l.startsWith('{'))
    expect(lines, describeResult(args, r)).toHaveLength(1)
    expect(lines[0]).toMatch(new RegExp(`^meshwork node: this node runs meshwork/9\\.0\\.0 and the mesh node ${vms[0]!.peerId} runs meshwork/\\S+, which speaks ${GIT_PROTOCOL.replaceAll('/', '\\/')} \\(this node: ${next.replaceAll('/', '\\/')}\\): they cannot work together`))

    // the mesh goes on: a new task merges, and the board has no record of the refused node (it is no voter
    // for main's majority; the nodes that heard its heartbeats show it as left until they restart)
    await submit(['after-future'])
    await until(allMerged(['after-future']), 'the mesh did not merge a task after the incompatible node tried to join')
    const exportArgs = ['export', ...everyNode()]
    const ex = await runCli(exportArgs, { timeoutMs: 90_000 })
    expect(ex.code, describeResult(exportArgs, ex)).toBe(0)
    const board = JSON.parse(ex.stdout) as { nodes: Array<{ name: string }> }
    expect(board.nodes.map(n => n.name).sort(), context()).toEqual(['a', 'b', 'c'])
  })
})
