/**
 * Git between peers over `/meshwork/git/2`, on a real 3-node in-process mesh with
 * real git repositories in temp dirs:
 *   a  serves its repository (the "maker" of task branches, owner of main)
 *   b  fetches (and serves its own repository in some tests)
 *   c  is a malicious server: a raw handler answering with garbage
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { createMesh, tempDir, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import {
  commitFiles, createBranch, fsckOk, initRepo, listRefs, revParse, showFile, statusPorcelain, transferTemps
} from './helpers/git.ts'
import {
  GIT_PROTOCOL, GitFrame, GitTransferError, HandoffError, MAX_CHUNK_BYTES, PACK_REUSE_MAX_BYTES, cloneFromPeer, encodeFrame, encodeJsonFrame, fetchFromPeer, handOff, removeStaleTransferTemps, serveGit,
  serveHandoffs, type FetchFromPeerOptions, type GitServer, type HandoffRequest, type HandoffServer
} from '../src/git/transfer.ts'
import { git, gitText } from '../src/git/git.ts'
import type { MeshNode } from '../src/node/mesh-node.ts'
import { waitFor } from '../src/util/wait.ts'
import { createLogger } from '../src/util/logger.ts'

const MiB = 1024 * 1024
const T1 = 'refs/heads/meshwork/t1'

let mesh: TestMesh
let root: string
let a: MeshNode
let b: MeshNode
let c: MeshNode
let repoA: string
let serverA: GitServer
/** Filled in as the tests run, printed at the end. */
const sizes: Record<string, number> = {}

type EvilMode =
  | 'garbage' | 'silent' | 'truncated-header' | 'truncated-pack' | 'truncated-stream' | 'wrong-oid' | 'oversize' | 'lie-up-to-date'
  | 'corrupt-pack' | 'garbage-pack' | 'garbage-then-silent' | 'bad-hash' | 'disconnected' | 'not-a-commit'
let evilMode: EvilMode = 'garbage'
/** A real pack of c's main (three commits), and one of its tip commit alone (without what it needs from its parent). */
let evilPack: Uint8Array = new Uint8Array()
let evilTipPack: Uint8Array = new Uint8Array()
let evilPackOid = ''
/** The tree of c's main: in `evilPack`, whole. */
let evilTreeOid = ''
let evilDone = 0
let evilRequests = 0
const evilStreams = new Set<Stream>()

/** Expects `p` to reject with a GitTransferError of `code`; returns it. */
async function expectTransferError (p: Promise<unknown>, code: string): Promise<GitTransferError> {
  const err = await p.then(() => { throw new Error(`expected a GitTransferError ${code}, but it resolved`) }, (e: unknown) => e)
  expect(err).toBeInstanceOf(GitTransferError)
  const e = err as GitTransferError
  expect(e.name).toBe('GitTransferError')
  expect(e.constructor.name).toBe(e.name)
  expect(e.code, e.message).toBe(code)
  return e
}

async function freshRepo (name: string): Promise<string> {
  return await initRepo(join(root, name))
}

/** Every file under the repo's `objects/` (loose objects, packs, temp packs), relative, sorted. */
async function objectFiles (repo: string): Promise<string[]> {
  const entries = await readdir(join(repo, '.git', 'objects'), { recursive: true, withFileTypes: true })
  return entries.filter(e => e.isFile()).map(e => join(e.parentPath, e.name).slice(repo.length)).sort()
}

/** The malicious server on node c: reads the request, then misbehaves as `evilMode` says. */
async function evil (stream: Stream): Promise<void> {
  evilStreams.add(stream)
  const lp = lpStream(stream, { maxDataLength: 1024 * 1024 })
  const signal = AbortSignal.timeout(20_000)
  try {
    await lp.read({ signal })
    evilRequests++
    const header = (oid: string, upToDate = false): Uint8Array => encodeJsonFrame(GitFrame.HEADER, { oid, ref: T1, upToDate })
    const sendPack = async (data: Uint8Array, oid: string, end: 'end' | 'bad-hash' | 'none' = 'end'): Promise<void> => {
      const { createHash } = await import('node:crypto')
      await lp.write(header(oid), { signal })
      for (let off = 0; off < data.length; off += 16 * 1024) await lp.write(encodeFrame(GitFrame.DATA, data.subarray(off, off + 16 * 1024)), { signal })
      if (end === 'none') return
      const sha256 = end === 'bad-hash' ? '0'.repeat(64) : createHash('sha256').update(data).digest('hex')
      await lp.write(encodeJsonFrame(GitFrame.END, { bytes: data.length, sha256 }), { signal })
    }
    switch (evilMode) {
      case 'garbage':
        // not even frames: random bytes straight onto the stream
        stream.send(randomBytes(64 * 1024))
        break
      case 'silent':
        if (stream.status === 'open') {
          await new Promise<void>(resolve => {
            stream.addEventListener('close', () => { resolve() }, { once: true })
            signal.addEventListener('abort', () => { resolve() }, { once: true })
          })
        }
        return
      case 'truncated-header':
        await sendPack(evilPack.subarray(0, 30), evilPackOid)
        break
      case 'truncated-pack':
        await sendPack(evilPack.subarray(0, Math.floor(evilPack.length / 2)), evilPackOid)
        break
      case 'truncated-stream':
        // half the pack, then the stream ends without END
        await sendPack(evilPack.subarray(0, Math.floor(evilPack.length / 2)), evilPackOid, 'none')
        break
      case 'corrupt-pack': {
        const bad = Uint8Array.from(evilPack)
        for (let i = Math.floor(bad.length / 2); i < bad.length - 40; i += 997) bad[i] = (bad[i] ?? 0) ^ 0x5a
        await sendPack(bad, evilPackOid)
        break
      }
      case 'garbage-pack':
        // well-formed frames, END with the right size and hash, but the bytes are no pack
        await sendPack(randomBytes(40 * 1024), evilPackOid)
        break
      case 'garbage-then-silent':
        // bytes that are no pack, then nothing (no END, the stream stays open): the requester must not wait for more
        await lp.write(header(evilPackOid), { signal })
        await lp.write(encodeFrame(GitFrame.DATA, randomBytes(4096)), { signal })
        if (stream.status === 'open') {
          await new Promise<void>(resolve => {
            stream.addEventListener('close', () => { resolve() }, { once: true })
            signal.addEventListener('abort', () => { resolve() }, { once: true })
          })
        }
        return
      case 'bad-hash':
        await sendPack(evilPack, evilPackOid, 'bad-hash')
        break
      case 'wrong-oid':
        // a good pack, but not of the announced commit: the connectivity check finds it missing
        await sendPack(evilPack, 'f'.repeat(40))
        break
      case 'not-a-commit':
        // a good pack that holds the announced object, but as a tree (read from the pack, no git walk)
        await sendPack(evilPack, evilTreeOid)
        break
      case 'disconnected':
        // the tip commit without the parent (and the parent's files) it refers to
        await sendPack(evilTipPack, evilPackOid)
        break
      case 'oversize':
        // a real pack, more of it than the requester's limit (the test sets maxBytes), at full speed
        await sendPack(evilPack, evilPackOid)
        break
      case 'lie-up-to-date':
        await lp.write(header('e'.repeat(40), true), { signal })
        break
    }
    await stream.close({ signal })
  } catch (err) {
    stream.abort(err as Error)
  } finally {
    evilStreams.delete(stream)
    evilDone++
  }
}

beforeAll(async () => {
  mesh = await createMesh(3)
  ;[a, b, c] = mesh.nodes as [MeshNode, MeshNode, MeshNode]
  await waitAllAlive(mesh.nodes)
  await waitFor(() => mesh.nodes.every(x => mesh.nodes.every(y => x === y || x.host.getConnections(y.host.peerId).length > 0)), {
    timeoutMs: 20_000, message: 'nodes did not connect to each other'
  })
  root = await tempDir('meshwork-git-')

  // a: main with a sizeable first commit (incompressible), task branch t1 on top
  repoA = await freshRepo('a')
  await commitFiles(repoA, {
    'README.md': '# project\n',
    'blob/one.bin': randomBytes(MiB),
    'blob/two.bin': randomBytes(MiB),
    'blob/three.bin': randomBytes(MiB),
    'src/app.ts': 'export const x = 1\n'.repeat(200)
  }, 'initial import')
  await createBranch(repoA, 'meshwork/t1')
  await commitFiles(repoA, { 'src/feature.ts': 'export function feature () { return 42 }\n' }, 'add feature\n\nMeshwork-Task: t1')
  await git(['checkout', '--quiet', 'main'], { cwd: repoA })
  serverA = await serveGit(a, repoA)

  await c.host.handle(GIT_PROTOCOL, (stream) => { void evil(stream) })
  // c's packs are real but small (c ignores flow control)
  const repoE = await freshRepo('evil')
  for (let i = 0; i < 3; i++) await commitFiles(repoE, { [`f${i}.txt`]: `evil ${i}\n`.repeat(500) + randomBytes(8 * 1024).toString('hex') }, `evil ${i}`)
  evilPack = (await git(['pack-objects', '--revs', '--stdout', '--quiet'], { cwd: repoE, input: 'main\n' })).stdout
  evilTipPack = (await git(['pack-objects', '--revs', '--stdout', '--quiet'], { cwd: repoE, input: 'main\n^main~1\n' })).stdout
  evilPackOid = (await revParse(repoE, 'refs/heads/main'))!
  evilTreeOid = (await revParse(repoE, 'refs/heads/main^{tree}'))!
  expect(evilPack.length).toBeGreaterThan(20_000)
})

afterAll(async () => {
  await serverA?.close()
  await mesh?.stop()
  if (root !== undefined) await rm(root, { recursive: true, force: true })
  console.log(`git-transfer sizes (bytes): ${JSON.stringify(sizes)}`)
})

describe('fetchFromPeer over a real mesh', () => {
  let repoB: string
  let first = 0

  it('fetches a task branch made on a into b with identical oid and content', async () => {
    repoB = await freshRepo('b')
    const oidA = await revParse(repoA, T1)
    const res = await fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: T1 })
    expect(res).toEqual({ oid: oidA, bytes: expect.any(Number), upToDate: false })
    first = sizes.first = res.bytes
    expect(res.bytes).toBeGreaterThan(3 * MiB) // everything travelled, in several 1 MiB chunks
    expect(await revParse(repoB, T1)).toBe(oidA)
    expect(await revParse(repoB, `${T1}^{tree}`)).toBe(await revParse(repoA, `${T1}^{tree}`))
    expect((await showFile(repoB, T1, 'blob/two.bin')).equals(await showFile(repoA, T1, 'blob/two.bin'))).toBe(true)
    expect((await showFile(repoB, T1, 'src/feature.ts')).toString()).toContain('return 42')
    expect(await gitText(['log', '-1', '--format=%B', T1], { cwd: repoB })).toContain('Meshwork-Task: t1')
    expect(await fsckOk(repoB)).toBe(true)
    expect(await transferTemps(repoB)).toEqual([])
    // the pack was kept from any gc while it moved in (quarantine.ts keepPack), and is not now
    expect((await readdir(join(repoB, '.git', 'objects', 'pack'))).filter(f => f.endsWith('.keep'))).toEqual([])
    await waitFor(() => serverA.active === 0, { timeoutMs: 10_000, message: 'serve did not finish' })
    expect(await transferTemps(repoA)).toEqual([])
    expect(serverA.stats.served).toBeGreaterThanOrEqual(1)
  })

  it('a second fetch after one more commit transfers only the new objects', async () => {
    await git(['checkout', '--quiet', 'meshwork/t1'], { cwd: repoA })
    const oid2 = await commitFiles(repoA, { 'src/feature.ts': 'export function feature () { return 43 }\n' }, 'tweak feature\n\nMeshwork-Task: t1')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    const res = await fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: T1 })
    sizes.second = res.bytes
    expect(res.oid).toBe(oid2)
    expect(res.upToDate).toBe(false)
    expect(res.bytes).toBeGreaterThan(0)
    expect(res.bytes).toBeLessThan(first / 5)
    expect(res.bytes).toBeLessThan(4096)
    expect(await revParse(repoB, T1)).toBe(oid2)
    expect((await showFile(repoB, T1, 'src/feature.ts')).toString()).toContain('return 43')
    expect(await fsckOk(repoB)).toBe(true)
  })

  it('answers "up to date" when nothing is missing, and still points intoRef at the oid', async () => {
    const oid = await revParse(repoA, T1)
    const res = await fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: T1 })
    expect(res).toEqual({ oid, bytes: 0, upToDate: true })
    // main is an ancestor of what b has: up to date as well, into a new ref
    const mainOid = await revParse(repoA, 'refs/heads/main')
    const res2 = await fetchFromPeer(b, a.peerId, repoB, 'refs/heads/main', { intoRef: 'refs/remotes/a/main' })
    expect(res2).toEqual({ oid: mainOid, bytes: 0, upToDate: true })
    expect(await revParse(repoB, 'refs/remotes/a/main')).toBe(mainOid)
    expect(await transferTemps(repoB)).toEqual([])
  })

  it('fetches a commit by oid; refuses oids no branch reaches or that do not exist', async () => {
    await createBranch(repoA, 'meshwork/t2', 'main')
    const oid = await commitFiles(repoA, { 'docs/t2.md': 'task two\n' }, 'task two')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    const res = await fetchFromPeer(b, a.peerId, repoB, oid, { intoRef: 'refs/heads/meshwork/t2' })
    expect(res.oid).toBe(oid)
    expect(res.upToDate).toBe(false)
    expect(res.bytes).toBeLessThan(4096)
    expect(await revParse(repoB, 'refs/heads/meshwork/t2')).toBe(oid)
    // another requester of the same commit a moment later (as every follower after a merge round) is served
    // without looking it up again, and gets the same
    const knownBefore = serverA.stats.knownWants
    const repoC = await freshRepo('c-known')
    const again = await fetchFromPeer(b, a.peerId, repoC, oid, { intoRef: 'refs/heads/meshwork/t2', haves: [] })
    expect(again.oid).toBe(oid)
    expect(await revParse(repoC, 'refs/heads/meshwork/t2')).toBe(oid)
    expect(await fsckOk(repoC)).toBe(true)
    expect(serverA.stats.knownWants).toBe(knownBefore + 1)
    // a commit object that no branch reaches (not served) and one that does not exist
    const tree = await gitText(['rev-parse', 'main^{tree}'], { cwd: repoA })
    const dangling = await gitText(['commit-tree', tree, '-m', 'dangling'], { cwd: repoA })
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, dangling, { intoRef: 'refs/heads/x' }), 'not-found')
    // a commit announced as a have and found here is not thereby on a branch: still not served as a want
    await fetchFromPeer(b, a.peerId, repoB, 'refs/heads/main', { intoRef: 'refs/heads/main-again', haves: [dangling] })
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, dangling, { intoRef: 'refs/heads/x', haves: [] }), 'not-found')
    // one vouched for (a task's commit, just made on its branch) is served without a lookup
    await git(['checkout', '--quiet', 'meshwork/t2'], { cwd: repoA })
    const vouched = await commitFiles(repoA, { 'docs/t2.md': 'task two, vouched\n' }, 'task two vouched')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    const beforeVouch = serverA.stats.knownWants
    serverA.vouch(vouched)
    expect((await fetchFromPeer(b, a.peerId, repoC, vouched, { intoRef: 'refs/heads/meshwork/t2', haves: [oid] })).oid).toBe(vouched)
    expect(serverA.stats.knownWants).toBe(beforeVouch + 1)
    expect(await fsckOk(repoC)).toBe(true)
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, '1'.repeat(40), { intoRef: 'refs/heads/x' }), 'not-found')
    expect(await revParse(repoB, 'refs/heads/x')).toBeNull()
    // an oid needs an explicit intoRef
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, oid), 'bad-request')
  })

  it('fetches a commit by oid into a ref outside refs/heads/ (as the leader fetches a new main)', async () => {
    await git(['checkout', '--quiet', 'meshwork/t2'], { cwd: repoA })
    const oid = await commitFiles(repoA, { 'docs/t2.md': 'task two, again\n' }, 'task two again')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    const objectsBefore = await objectFiles(repoB)
    const res = await fetchFromPeer(b, a.peerId, repoB, oid, { intoRef: 'refs/meshwork/main-incoming' })
    expect(res).toEqual({ oid, bytes: expect.any(Number), upToDate: false })
    expect(res.bytes).toBeGreaterThan(0)
    expect(await revParse(repoB, 'refs/meshwork/main-incoming')).toBe(oid)
    // one new pack with its index, nothing else (the quarantine is gone)
    const added = (await objectFiles(repoB)).filter(f => !objectsBefore.includes(f))
    expect(added).toHaveLength(2)
    expect(added.every(f => /\/objects\/pack\/pack-[0-9a-f]{40}\.(?:pack|idx)$/.test(f))).toBe(true)
    expect(await transferTemps(repoB)).toEqual([])
    expect(await fsckOk(repoB)).toBe(true)
  })

  it('fetches objects only with intoRef null (as a follower fetches a new main): the commit is here, no ref moves', async () => {
    await git(['checkout', '--quiet', 'meshwork/t2'], { cwd: repoA })
    const oid = await commitFiles(repoA, { 'docs/t2.md': 'task two, objects only\n' }, 'task two objects only')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    const refsBefore = await gitText(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: repoB })
    const res = await fetchFromPeer(b, a.peerId, repoB, oid, { intoRef: null, haves: [] })
    expect(res).toEqual({ oid, bytes: expect.any(Number), upToDate: false })
    expect(res.bytes).toBeGreaterThan(0)
    expect(await gitText(['cat-file', '-t', oid], { cwd: repoB })).toBe('commit')
    expect(await gitText(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: repoB })).toBe(refsBefore)
    expect(await transferTemps(repoB)).toEqual([])
    // asked again, the peer finds it here: up to date, still no ref
    expect(await fetchFromPeer(b, a.peerId, repoB, oid, { intoRef: null, haves: [oid] })).toEqual({ oid, bytes: 0, upToDate: true })
    expect(await gitText(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: repoB })).toBe(refsBefore)
    expect(await fsckOk(repoB)).toBe(true)
  })

  it('an unknown ref is a clear not-found error and creates nothing', async () => {
    const before = await listRefs(repoB)
    const err = await expectTransferError(fetchFromPeer(b, a.peerId, repoB, 'refs/heads/meshwork/nope', { intoRef: 'refs/heads/meshwork/nope' }), 'not-found')
    expect(err.message).toContain('refs/heads/meshwork/nope')
    expect(err.peer).toBe(a.peerId)
    expect(await listRefs(repoB)).toEqual(before)
    expect(await transferTemps(repoB)).toEqual([])
  })

  it('refuses refs outside refs/heads/', async () => {
    await git(['tag', 'v1', 'main'], { cwd: repoA })
    await git(['update-ref', 'refs/meshwork-private/secret', 'main'], { cwd: repoA })
    const before = await listRefs(repoB)
    for (const want of ['refs/tags/v1', 'refs/meshwork-private/secret', 'HEAD', 'main', 'refs/remotes/origin/main']) {
      const err = await expectTransferError(fetchFromPeer(b, a.peerId, repoB, want, { intoRef: 'refs/heads/stolen' }), 'refused')
      expect(err.message).toContain('refs/heads/')
    }
    // malformed names under refs/heads are rejected too
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, 'refs/heads/../tags/v1', { intoRef: 'refs/heads/stolen' }), 'bad-request')
    // a branch name is resolved exactly: git's DWIM would find refs/tags/refs/heads/hidden for refs/heads/hidden
    await git(['update-ref', 'refs/tags/refs/heads/hidden', 'main'], { cwd: repoA })
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, 'refs/heads/hidden', { intoRef: 'refs/heads/stolen' }), 'not-found')
    expect(await listRefs(repoB)).toEqual(before)
  })

  it('removeStaleTransferTemps clears what a crashed transfer left in the git dir', async () => {
    const gitDir = join(repoB, '.git')
    await mkdir(join(gitDir, 'meshwork-fetch-crashed'))
    await writeFile(join(gitDir, 'meshwork-fetch-crashed', 'in.bundle'), 'partial')
    await mkdir(join(gitDir, 'meshwork-serve-crashed'))
    expect(await transferTemps(repoB)).toHaveLength(2)
    expect(await removeStaleTransferTemps(repoB)).toBe(2)
    expect(await transferTemps(repoB)).toEqual([])
    expect(await fsckOk(repoB)).toBe(true)
  })

  it('a bad intoRef or a checked-out intoRef is refused locally', async () => {
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: 'meshwork/t1' }), 'bad-request')
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: 'refs/heads/a..b' }), 'bad-request')
    // b's primary worktree has main checked out (unborn): fetching into it would leave the worktree stale
    await expectTransferError(fetchFromPeer(b, a.peerId, repoB, 'refs/heads/main', { intoRef: 'refs/heads/main' }), 'bad-request')
    expect(await revParse(repoB, 'refs/heads/main')).toBeNull()
  })

  it('maxBytes exceeded (requester or server side) is a typed error; nothing is created', async () => {
    const repo = await freshRepo('b-small')
    await expectTransferError(fetchFromPeer(b, a.peerId, repo, T1, { intoRef: T1, maxBytes: 100_000 }), 'too-large')
    expect(await listRefs(repo)).toEqual(new Map())
    expect(await transferTemps(repo)).toEqual([])
    // b serves its own copy with a small limit; a asks for it
    const serverB = await serveGit(b, repoB, { maxBytes: 100_000 })
    try {
      const repoA2 = await freshRepo('a-small')
      await expectTransferError(fetchFromPeer(a, b.peerId, repoA2, T1, { intoRef: T1 }), 'too-large')
      expect(await listRefs(repoA2)).toEqual(new Map())
      await waitFor(() => serverB.active === 0, { timeoutMs: 10_000, message: 'serve did not finish' })
      expect(await transferTemps(repoB)).toEqual([])
    } finally {
      await serverB.close()
    }
  })

  it('flow control: a pack in many small chunks arrives intact', async () => {
    const serverB = await serveGit(b, repoB, { chunkBytes: 4 * 1024 })
    try {
      const repo = await freshRepo('a-chunks')
      const res = await fetchFromPeer(a, b.peerId, repo, T1, { intoRef: T1 })
      sizes.smallChunks = res.bytes
      expect(res.bytes).toBeGreaterThan(3 * MiB) // ~800 DATA frames, ~6 ACKs
      expect(res.oid).toBe(await revParse(repoB, T1))
      expect(await fsckOk(repo)).toBe(true)
    } finally {
      await serverB.close()
    }
  })

  it('flow control: a pack in the largest chunks (MAX_CHUNK_BYTES) arrives intact, the window does not stall', async () => {
    const serverB = await serveGit(b, repoB, { chunkBytes: MAX_CHUNK_BYTES })
    try {
      const repo = await freshRepo('a-big-chunks')
      const res = await fetchFromPeer(a, b.peerId, repo, T1, { intoRef: T1, timeoutMs: 20_000 })
      expect(res.bytes).toBeGreaterThan(3 * MiB) // 4 DATA frames
      expect(res.oid).toBe(await revParse(repoB, T1))
      expect(await fsckOk(repo)).toBe(true)
    } finally {
      await serverB.close()
    }
  })

  it('moves objects between SHA-256 repositories', async () => {
    const src = join(root, 'sha256-src')
    await mkdir(src, { recursive: true })
    await git(['init', '--quiet', '--object-format=sha256', '-b', 'main'], { cwd: src })
    await initRepo(src) // identity (re-running init on an existing repo keeps its format)
    await commitFiles(src, { 'a.txt': 'one\n' }, 'one')
    const tip = await commitFiles(src, { 'b.txt': 'two\n' }, 'two')
    expect(tip).toMatch(/^[0-9a-f]{64}$/)
    const serverB = await serveGit(b, src)
    try {
      const dest = join(root, 'sha256-dest')
      await mkdir(dest, { recursive: true })
      await git(['init', '--quiet', '--object-format=sha256', '-b', 'main'], { cwd: dest })
      const res = await fetchFromPeer(a, b.peerId, dest, 'refs/heads/main', { intoRef: 'refs/heads/from-b' })
      expect(res.oid).toBe(tip)
      expect(await revParse(dest, 'refs/heads/from-b')).toBe(tip)
      expect(await fsckOk(dest)).toBe(true)
    } finally {
      await serverB.close()
    }
  })

  it('makes one pack for requesters of the same commit from the same main (the followers after a merge round), and keeps no large one', async () => {
    const src = await freshRepo('reuse-src')
    const m1 = await commitFiles(src, { 'a.txt': 'one\n' }, 'one')
    const m2 = await commitFiles(src, { 'b.txt': 'two\n' }, 'two')
    // the server's node was at m1, then m2, then m3 (newest first, as `MainFollower.recentMains`)
    const recent: string[] = [m2, m1]
    // (the second of two requests at once waits for the first's pack, and the pack is kept, however slow the host)
    const serverB = await serveGit(b, src, { known: () => recent, packReuseWaitMs: 120_000, packReuseTtlMs: 120_000 })
    try {
      const followers = await Promise.all(['f1', 'f2', 'f3', 'f4'].map(async f => await freshRepo(`reuse-${f}`)))
      for (const repo of followers) await fetchFromPeer(a, b.peerId, repo, m2, { intoRef: 'refs/heads/from-b', haves: [] })
      const m3 = await commitFiles(src, { 'c.txt': 'three\n' }, 'three')
      recent.unshift(m3)
      const made = serverB.stats.packsReused
      // two at once, with different lists of older mains: one pack-objects, the other waits for its pack
      const [r1, r2] = await Promise.all([
        fetchFromPeer(a, b.peerId, followers[0] as string, m3, { intoRef: null, haves: [m2, m1] }),
        fetchFromPeer(a, b.peerId, followers[1] as string, m3, { intoRef: null, haves: [m2] })
      ])
      expect(serverB.stats.packsReused).toBe(made + 1)
      expect(r2.bytes).toBe(r1.bytes)
      // a moment later, the kept pack again
      await fetchFromPeer(a, b.peerId, followers[2] as string, m3, { intoRef: null, haves: [m1, m2] })
      expect(serverB.stats.packsReused).toBe(made + 2)
      // a requester at another main gets a pack of its own
      await fetchFromPeer(a, b.peerId, followers[3] as string, m3, { intoRef: null, haves: [m1] })
      expect(serverB.stats.packsReused).toBe(made + 2)
      for (const repo of followers) {
        expect(await gitText(['cat-file', '-t', m3], { cwd: repo })).toBe('commit')
        expect(await gitText(['show', `${m3}:c.txt`], { cwd: repo })).toBe('three')
        expect(await fsckOk(repo)).toBe(true)
      }
      // a pack over PACK_REUSE_MAX_BYTES is made for each request
      const m4 = await commitFiles(src, { 'big.bin': randomBytes(PACK_REUSE_MAX_BYTES + 4096).toString('base64') }, 'big')
      recent.unshift(m4)
      for (const repo of followers.slice(0, 2)) {
        const res = await fetchFromPeer(a, b.peerId, repo, m4, { intoRef: null, haves: [m3] })
        expect(res.bytes).toBeGreaterThan(PACK_REUSE_MAX_BYTES)
        expect(await fsckOk(repo)).toBe(true)
      }
      expect(serverB.stats.packsReused).toBe(made + 2)
    } finally {
      await serverB.close()
    }
  })

  it('bounds concurrent serves', async () => {
    const serverB = await serveGit(b, repoB, { maxConcurrent: 1 })
    try {
      const repo = await freshRepo('a-busy')
      // a silent requester takes the only slot…
      const silent = await a.host.dialProtocol(peerIdFromString(b.peerId), GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      await waitFor(() => serverB.active === 1, { timeoutMs: 10_000, message: 'silent requester not being served' })
      await expectTransferError(fetchFromPeer(a, b.peerId, repo, T1, { intoRef: T1 }), 'busy')
      expect(await listRefs(repo)).toEqual(new Map())
      // …until it goes away
      silent.abort(new Error('done'))
      await waitFor(() => serverB.active === 0, { timeoutMs: 10_000, message: 'the server kept the slot of a reset stream' })
      const res = await fetchFromPeer(a, b.peerId, repo, T1, { intoRef: T1 })
      expect(res.oid).toBe(await revParse(repoB, T1))
      expect(await transferTemps(repoB)).toEqual([])
    } finally {
      await serverB.close()
    }
  })

  it('past its bound still serves a kept pack (the followers after a merge round), and nothing that needs git', async () => {
    const src = await freshRepo('bound-src')
    const m1 = await commitFiles(src, { 'a.txt': 'one\n' }, 'one')
    const recent: string[] = [m1]
    const serverB = await serveGit(b, src, { maxConcurrent: 1, known: () => recent, packReuseWaitMs: 120_000, packReuseTtlMs: 120_000 })
    try {
      const followers = await Promise.all(['f1', 'f2', 'f3'].map(async f => await freshRepo(`bound-${f}`)))
      for (const repo of followers) await fetchFromPeer(a, b.peerId, repo, m1, { intoRef: 'refs/heads/from-b', haves: [] })
      const m2 = await commitFiles(src, { 'b.txt': 'two\n' }, 'two')
      recent.unshift(m2)
      // the first follower's fetch makes the pack (and keeps it)
      await fetchFromPeer(a, b.peerId, followers[0] as string, m2, { intoRef: null, haves: [m1] })
      const made = serverB.stats.packsReused
      // a silent requester takes the only slot
      const silent = await a.host.dialProtocol(peerIdFromString(b.peerId), GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      try {
        await waitFor(() => serverB.active === 1, { timeoutMs: 10_000, message: 'silent requester not being served' })
        // the same main from the same old one: the kept pack, past the bound
        const res = await fetchFromPeer(a, b.peerId, followers[1] as string, m2, { intoRef: null, haves: [m1] })
        expect(res.oid).toBe(m2)
        expect(serverB.stats.packsReused).toBe(made + 1)
        expect(await gitText(['show', `${m2}:b.txt`], { cwd: followers[1] as string })).toBe('two')
        // a pack nobody made yet (no have it knows), and a branch (looked up by git): busy
        await expectTransferError(fetchFromPeer(a, b.peerId, followers[2] as string, m2, { intoRef: null, haves: [] }), 'busy')
        await expectTransferError(fetchFromPeer(a, b.peerId, followers[2] as string, 'refs/heads/main', { intoRef: 'refs/heads/other' }), 'busy')
        expect(serverB.stats.packsReused).toBe(made + 1)
      } finally {
        silent.abort(new Error('done'))
      }
    } finally {
      await serverB.close()
    }
  })

  it('bounds the time of a serve: a requester that never asks is told and dropped', async () => {
    const serverB = await serveGit(b, repoB, { timeoutMs: 1000 })
    try {
      const silent = await a.host.dialProtocol(peerIdFromString(b.peerId), GIT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(silent)
      const reply = (await lp.read({ signal: AbortSignal.timeout(15_000) })).subarray()
      expect(reply[0]).toBe(GitFrame.ERROR)
      expect(JSON.parse(new TextDecoder().decode(reply.subarray(1)))).toMatchObject({ code: 'timeout' })
      await waitFor(() => serverB.active === 0, { timeoutMs: 10_000, message: 'the server never gave up on the silent requester' })
      expect(serverB.stats.failed).toBe(1)
      silent.abort(new Error('done'))
    } finally {
      await serverB.close()
    }
  })

  it('a malformed request gets a bad-request ERROR frame and the server keeps serving', async () => {
    const ask = async (frame: Uint8Array): Promise<Record<string, unknown>> => {
      const stream = await b.host.dialProtocol(peerIdFromString(a.peerId), GIT_PROTOCOL, { signal: AbortSignal.timeout(5000) })
      const lp = lpStream(stream)
      await lp.write(frame, { signal: AbortSignal.timeout(5000) })
      const reply = (await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray()
      await stream.close().catch(() => {})
      expect(reply[0]).toBe(GitFrame.ERROR)
      return JSON.parse(new TextDecoder().decode(reply.subarray(1))) as Record<string, unknown>
    }
    expect(await ask(encodeFrame(GitFrame.REQUEST, new TextEncoder().encode('not json')))).toMatchObject({ code: 'bad-request' })
    expect(await ask(encodeJsonFrame(GitFrame.ACK, { bytes: 0 }))).toMatchObject({ code: 'bad-request' })
    expect(await ask(encodeJsonFrame(GitFrame.REQUEST, { want: T1, haves: Array.from({ length: 257 }, () => 'a'.repeat(40)) }))).toMatchObject({ code: 'bad-request' })
    expect(await ask(encodeJsonFrame(GitFrame.REQUEST, { want: T1, haves: ['--upload-pack=evil'] }))).toMatchObject({ code: 'bad-request' })
    expect(await ask(encodeJsonFrame(GitFrame.REQUEST, { want: '--all', haves: [] }))).toMatchObject({ code: 'refused' })
    const res = await fetchFromPeer(b, a.peerId, repoB, T1, { intoRef: T1 })
    expect(res.upToDate).toBe(true)
  })

  it('the requester\'s time bound and signal abort a transfer cleanly', async () => {
    evilMode = 'silent'
    const repo = await freshRepo('b-timeout')
    const started = Date.now()
    await expectTransferError(fetchFromPeer(b, c.peerId, repo, T1, { intoRef: T1, timeoutMs: 2000 }), 'timeout')
    expect(Date.now() - started).toBeLessThan(15_000)
    await waitFor(() => evilStreams.size === 0, { timeoutMs: 15_000, message: 'c still holds the timed-out stream' })
    const requests = evilRequests
    const ac = new AbortController()
    const p = fetchFromPeer(b, c.peerId, repo, T1, { intoRef: T1, signal: ac.signal })
    await waitFor(() => evilRequests > requests, { timeoutMs: 10_000, message: 'request never reached c' })
    ac.abort()
    await expectTransferError(p, 'aborted')
    expect(await listRefs(repo)).toEqual(new Map())
    expect(await transferTemps(repo)).toEqual([])
    await waitFor(() => evilStreams.size === 0, { timeoutMs: 15_000, message: 'c still holds streams' })
  })
})

describe('a malicious server', () => {
  const cases: Array<[EvilMode, string, Partial<FetchFromPeerOptions>?]> = [
    ['garbage', 'protocol'],
    ['truncated-header', 'bad-bundle'],
    ['truncated-pack', 'bad-bundle'],
    ['truncated-stream', 'protocol'],
    ['corrupt-pack', 'bad-bundle'],
    ['garbage-pack', 'bad-bundle'],
    ['garbage-then-silent', 'bad-bundle'],
    ['bad-hash', 'protocol'],
    ['wrong-oid', 'bad-bundle'],
    ['disconnected', 'bad-bundle'],
    ['not-a-commit', 'bad-bundle'],
    ['oversize', 'too-large', { maxBytes: 8 * 1024 }],
    ['lie-up-to-date', 'protocol']
  ]
  for (const [mode, code, extra] of cases) {
    it(`${mode} → GitTransferError ${code}, no ref created, no objects added, temp files gone`, async () => {
      evilMode = mode
      const repo = await freshRepo(`b-evil-${mode}`)
      await commitFiles(repo, { 'x.txt': 'local work\n' }, 'local work')
      const before = await listRefs(repo)
      const objectsBefore = await objectFiles(repo)
      const done = evilDone
      const opts: FetchFromPeerOptions = { intoRef: 'refs/heads/meshwork/evil', timeoutMs: 20_000, ...extra }
      const err = await expectTransferError(fetchFromPeer(b, c.peerId, repo, T1, opts), code)
      expect(err.peer).toBe(c.peerId)
      expect(await listRefs(repo)).toEqual(before)
      expect(await objectFiles(repo)).toEqual(objectsBefore)
      expect(await revParse(repo, 'refs/heads/meshwork/evil')).toBeNull()
      expect(await transferTemps(repo)).toEqual([])
      expect(await fsckOk(repo)).toBe(true)
      expect(await statusPorcelain(repo)).toBe('')
      await waitFor(() => evilDone > done, { timeoutMs: 15_000, message: 'c did not finish' })
    })
  }
})

describe('cloneFromPeer', () => {
  it('clones main into a missing dir: a clean checkout with the same HEAD', async () => {
    const dir = join(root, 'clones', 'missing', 'repo')
    const res = await cloneFromPeer(b, a.peerId, dir, 'main')
    sizes.clone = res.bytes
    const head = await revParse(repoA, 'refs/heads/main')
    expect(res.oid).toBe(head)
    expect(await revParse(dir, 'HEAD')).toBe(head)
    expect(await gitText(['symbolic-ref', 'HEAD'], { cwd: dir })).toBe('refs/heads/main')
    expect(await statusPorcelain(dir)).toBe('')
    expect((await readFile(join(dir, 'blob', 'one.bin'))).equals(await readFile(join(repoA, 'blob', 'one.bin')))).toBe(true)
    expect(await readFile(join(dir, 'README.md'), 'utf8')).toBe('# project\n')
    expect(await fsckOk(dir)).toBe(true)
    expect(await transferTemps(dir)).toEqual([])
    // with main in hand, fetching a task branch moves only the task's objects
    const t = await fetchFromPeer(b, a.peerId, dir, T1, { intoRef: T1 })
    sizes.taskAfterClone = t.bytes
    expect(t.bytes).toBeLessThan(8192)
    expect(await revParse(dir, T1)).toBe(await revParse(repoA, T1))
  })

  it('clones main into an empty dir', async () => {
    const dir = join(root, 'clones', 'empty')
    await mkdir(dir, { recursive: true })
    const res = await cloneFromPeer(b, a.peerId, dir, 'main')
    expect(res.upToDate).toBe(false)
    expect(await revParse(dir, 'HEAD')).toBe(await revParse(repoA, 'refs/heads/main'))
    expect(await statusPorcelain(dir)).toBe('')
    expect(await readFile(join(dir, 'src', 'app.ts'), 'utf8')).toBe('export const x = 1\n'.repeat(200))
  })

  it('refuses a non-empty dir; an unknown branch leaves the dir as it was', async () => {
    const full = join(root, 'clones', 'full')
    await mkdir(full, { recursive: true })
    await writeFile(join(full, 'keep.txt'), 'mine\n')
    await expect(cloneFromPeer(b, a.peerId, full, 'main')).rejects.toMatchObject({ name: 'UsageError' })
    expect(await readFile(join(full, 'keep.txt'), 'utf8')).toBe('mine\n')

    const missing = join(root, 'clones', 'never')
    await expectTransferError(cloneFromPeer(b, a.peerId, missing, 'no-such-branch'), 'not-found')
    await expect(stat(missing)).rejects.toMatchObject({ code: 'ENOENT' })
    const empty = join(root, 'clones', 'still-empty')
    await mkdir(empty)
    evilMode = 'truncated-pack'
    await expectTransferError(cloneFromPeer(b, c.peerId, empty, 'main'), 'bad-bundle')
    expect(await readdir(empty)).toEqual([])
  })
})

describe('handOff (/meshwork/git-handoff/1): a asks b to take a branch, b fetches it from a', () => {
  let repoH: string
  let server: HandoffServer
  const taken: Array<{ peer: string, req: HandoffRequest }> = []
  const ref = 'refs/heads/meshwork/h1'
  let oid = ''

  /** Expects `p` to reject with a HandoffError of `code`; returns its message. */
  const expectHandoffError = async (p: Promise<unknown>, code: string): Promise<string> => {
    const err = await p.then(() => { throw new Error(`expected a HandoffError ${code}, but it resolved`) }, (e: unknown) => e)
    expect(err).toBeInstanceOf(HandoffError)
    expect((err as HandoffError).code, (err as Error).message).toBe(code)
    return (err as Error).message
  }

  /** What b announces as haves for its fetches (empty: read from its repository); the fetches b logs. */
  let havesH: string[] = []
  const fetched: Array<Record<string, unknown>> = []

  beforeAll(async () => {
    repoH = await freshRepo('h')
    server = await serveHandoffs(b, repoH, {
      // b takes only tasks h1 and h2 from a
      accept: async (peer, req) => peer === a.peerId && (req.task === 'h1' || req.task === 'h2') ? null : `not taking ${req.task} from ${peer}`,
      onTaken: (peer, req) => { taken.push({ peer, req }) },
      haves: () => havesH,
      logger: createLogger('h', { level: 'debug', format: 'json', write: line => { const e = JSON.parse(line) as Record<string, unknown>; if (e.event === 'git:fetched') fetched.push(e) } })
    })
    await createBranch(repoA, 'meshwork/h1', 'main')
    oid = await commitFiles(repoA, { 'h1.txt': 'handed off\n' }, 'task h1\n\nMeshwork-Task: h1')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
  })

  afterAll(async () => {
    await server?.close()
  })

  it('b has the commit on the branch when handOff resolves, checked like any fetch', async () => {
    await handOff(a, b.peerId, { task: 'h1', epoch: 0, ref, oid })
    expect(await revParse(repoH, ref)).toBe(oid)
    expect((await showFile(repoH, ref, 'h1.txt')).toString()).toBe('handed off\n')
    expect(await fsckOk(repoH)).toBe(true)
    expect(await transferTemps(repoH)).toEqual([])
    expect(taken).toEqual([{ peer: a.peerId, req: { task: 'h1', epoch: 0, ref, oid } }])
  })

  it('what accept refuses is refused, and nothing is fetched', async () => {
    const before = await listRefs(repoH)
    const msg = await expectHandoffError(handOff(a, b.peerId, { task: 'other', epoch: 0, ref: 'refs/heads/meshwork/other', oid }), 'refused')
    expect(msg).toContain('not taking other')
    // not a branch: refused before accept is asked
    await expectHandoffError(handOff(a, b.peerId, { task: 'h1', epoch: 0, ref: 'refs/tags/h1', oid }), 'refused')
    expect(await listRefs(repoH)).toEqual(before)
    expect(taken.length).toBe(1)
  })

  it('a commit the requester does not have fails the hand-off and creates no ref', async () => {
    await git(['update-ref', '-d', ref], { cwd: repoH })
    await expectHandoffError(handOff(a, b.peerId, { task: 'h1', epoch: 0, ref, oid: 'f'.repeat(40) }), 'failed')
    expect(await revParse(repoH, ref)).toBe(null)
    expect(await transferTemps(repoH)).toEqual([])
  })

  it('a peer that does not serve the protocol (an older node) is told apart: unsupported', async () => {
    await expectHandoffError(handOff(a, c.peerId, { task: 'h1', epoch: 0, ref, oid }), 'unsupported')
  })

  it('the haves b is given (its recent mains) are what it announces: no git process reads them, and only what they lack travels', async () => {
    await createBranch(repoA, 'meshwork/h2', oid)
    const h2 = await commitFiles(repoA, { 'h2.txt': 'on top of h1\n' }, 'task h2\n\nMeshwork-Task: h2')
    await git(['checkout', '--quiet', 'main'], { cwd: repoA })
    // b has h1's commit (taken above; its ref deleted since, its objects kept)
    havesH = [oid]
    fetched.length = 0
    await handOff(a, b.peerId, { task: 'h2', epoch: 0, ref: 'refs/heads/meshwork/h2', oid: h2 })
    expect(await revParse(repoH, 'refs/heads/meshwork/h2')).toBe(h2)
    expect(fetched.map(e => e.haves)).toEqual([1])
    // one commit, one tree, one blob: nothing of h1 travelled again
    expect(Number(fetched[0]?.bytes)).toBeLessThan(1000)
    expect(await fsckOk(repoH)).toBe(true)
  })
})
