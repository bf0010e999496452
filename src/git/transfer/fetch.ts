/**
 * The requesting side of `/meshwork/git/2`: asks a peer for a branch or a
 * commit, pipes the pack into `git index-pack` in a quarantine while counting
 * and hashing it, checks the result is connected, and only then moves the pack
 * into the repository and updates the ref. On any failure the repository is
 * left as it was.
 */
import { createHash } from 'node:crypto'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId, Stream } from '@libp2p/interface'
import { FramedStream, StreamIdleError, encodeJsonFrame, parseJson, type Frame } from '../../protocol/frame.ts'
import { GIT_IDLE_MS } from '../../node/constants.ts'
import {
  ACK_BYTES, GIT_PROTOCOL, GitFrame, MAX_CHUNK_BYTES, MAX_HAVES, MAX_WANT_LENGTH, WINDOW_BYTES, gitEndSchema, gitErrorSchema, gitHeaderSchema
} from '../../protocol/git.ts'
import { GitError, git, spawnGit, type GitProcess } from '../git.ts'
import { OID_RE, isOid, isValidBranchName, isWellFormedRefName, refOid } from '../repo.ts'
import { UsageError, toError } from '../../util/errors.ts'
import { silentLogger, type Logger } from '../../util/logger.ts'
import {
  DEFAULT_MAX_TRANSFER_BYTES, DEFAULT_TRANSFER_TIMEOUT_MS, GitTransferError, REMOTE_CODES, lastLines, parseBody, readFrame, type GitStreams, type GitTransferErrorCode
} from './wire.ts'
import { autoMaintenance, batchCheck, checkedOutBranches, keepPack, makeQuarantine, moveFile, removeQuarantine, repoInfo, type RepoInfo } from './quarantine.ts'
import { packedCommit } from './pack-index.ts'
import { refUpdater } from '../ref-updater.ts'

export interface FetchFromPeerOptions {
  /**
   * Ref to create or force-update with the fetched commit. @default `want`
   * (required when `want` is an oid). `null`: objects only, no ref, and no
   * check that the fetched oid names a commit (one git process fewer, and a
   * second for the ref): the caller moves a ref of its own to it at once, by
   * a command that takes only commits (the main follower's fast-forward).
   * Until then the objects are reachable from no ref, which git's gc keeps
   * (it prunes only unreachable objects older than `gc.pruneExpire`).
   */
  intoRef?: string | null
  signal?: AbortSignal
  /** Largest pack accepted, enforced as bytes arrive. @default 2 GiB */
  maxBytes?: number
  /** Time bound of the whole transfer. @default 10 min */
  timeoutMs?: number
  /** Oids to announce as haves instead of the default (local branch tips, recent first-parent history). */
  haves?: string[]
  /** Whose first-parent history is announced as haves besides the branch tips. @default HEAD */
  baseRef?: string
  /** Allow updating a branch checked out in a worktree (the worktree is left stale). */
  updateHeadOk?: boolean
  logger?: Logger
}

export interface FetchResult {
  /** The commit `intoRef` now points to (the fetched oid, with `intoRef: null`). */
  oid: string
  /** Pack bytes received (0 when up to date). */
  bytes: number
  /** The requester already had everything: nothing was transferred. */
  upToDate: boolean
}

/**
 * What to announce as haves: the current `intoRef`, tips of local branches (most
 * recent first) and recent first-parent history of `baseRef`, at most
 * `MAX_HAVES`. Two git processes, run side by side.
 */
export async function collectHaves (repoDir: string, opts: { intoRef?: string, baseRef?: string, signal?: AbortSignal } = {}): Promise<string[]> {
  const sig = opts.signal !== undefined ? { signal: opts.signal } : {}
  const patterns = ['refs/heads/']
  const intoRef = opts.intoRef !== undefined && isWellFormedRefName(opts.intoRef) ? opts.intoRef : undefined
  if (intoRef !== undefined && !intoRef.startsWith('refs/heads/')) patterns.push(intoRef)
  const base = opts.baseRef ?? 'HEAD'
  const [tips, hist] = await Promise.all([
    git(['for-each-ref', '--sort=-committerdate', '--format=%(objectname) %(refname)', ...patterns], { cwd: repoDir, allowFail: true, ...sig }),
    base === 'HEAD' || base.startsWith('refs/')
      ? git(['rev-list', '--first-parent', `--max-count=${MAX_HAVES}`, base, '--'], { cwd: repoDir, allowFail: true, ...sig })
      : Promise.resolve(null)
  ])
  const out: string[] = []
  const seen = new Set<string>()
  const add = (oid: string | undefined): void => {
    if (isOid(oid) && !seen.has(oid) && out.length < MAX_HAVES) {
      seen.add(oid)
      out.push(oid)
    }
  }
  const refs = tips.code === 0 ? tips.stdout.toString('utf8').split('\n').map(l => l.split(' ')) : []
  add(refs.find(([, name]) => name === intoRef)?.[0])
  for (const [oid] of refs.slice(0, MAX_HAVES / 2)) add(oid)
  if (hist !== null && hist.code === 0) for (const line of hist.stdout.toString('utf8').split('\n')) add(line.trim())
  return out
}

/**
 * Fetches `want` (a branch `refs/heads/…` or a commit oid) from a peer into
 * `intoRef` (force-updated). Only objects the peer cannot prove we have travel.
 * On any failure the local repository is left as it was (no ref changed, no
 * objects added) and a `GitTransferError` says why.
 */
export async function fetchFromPeer (node: GitStreams, peer: string | PeerId, repoDir: string, want: string, opts: FetchFromPeerOptions = {}): Promise<FetchResult> {
  const peerText = peer.toString()
  const log = opts.logger ?? silentLogger
  if (typeof want !== 'string' || want === '' || want.length > MAX_WANT_LENGTH || /[\0-\x1f\x7f]/.test(want)) {
    throw new GitTransferError('bad-request', `invalid want ${JSON.stringify(want)}`)
  }
  let info: RepoInfo
  try {
    info = await repoInfo(repoDir)
  } catch (err) {
    throw new GitTransferError('local', `${repoDir} is not a git repository: ${toError(err).message}`, { cause: err })
  }
  const intoRef = opts.intoRef === null ? null : opts.intoRef ?? (OID_RE.test(want) ? undefined : want)
  if (intoRef === undefined) throw new GitTransferError('bad-request', 'intoRef is required when fetching an oid')
  if (intoRef !== null && !isWellFormedRefName(intoRef)) throw new GitTransferError('bad-request', `invalid intoRef ${JSON.stringify(intoRef)}`)
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TRANSFER_BYTES
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = opts.signal !== undefined ? AbortSignal.any([opts.signal, timeout]) : timeout
  const fail = (err: unknown): GitTransferError => {
    // a frame the wire could not read says nothing of whose it was: the error names the peer that sent it
    if (err instanceof GitTransferError) return err.peer !== undefined ? err : new GitTransferError(err.code, `peer ${peerText}: ${err.message}`, { peer: peerText, cause: err })
    if (opts.signal?.aborted === true) return new GitTransferError('aborted', `fetch of ${want} from ${peerText} aborted`, { peer: peerText, cause: err })
    if (timeout.aborted) return new GitTransferError('timeout', `fetch of ${want} from ${peerText} took longer than ${timeoutMs} ms`, { peer: peerText, cause: err })
    if (err instanceof GitError) return new GitTransferError('git', toError(err).message, { peer: peerText, cause: err })
    if (typeof (err as NodeJS.ErrnoException | null)?.syscall === 'string') return new GitTransferError('local', toError(err).message, { peer: peerText, cause: err })
    return new GitTransferError('protocol', `peer ${peerText}: ${toError(err).message}`, { peer: peerText, cause: err })
  }

  const started = Date.now()
  const t0 = performance.now()
  const steps: Partial<Record<FetchStep, number>> = {}
  const mark = (step: FetchStep): void => { steps[step] = Math.round(performance.now() - t0) }
  const local = { cwd: repoDir, signal }
  const mayBeCheckedOut = opts.updateHeadOk !== true && intoRef?.startsWith('refs/heads/') === true
  const protectCheckedOut = async (): Promise<void> => {
    if (mayBeCheckedOut && (await checkedOutBranches(info)).has(intoRef as string)) {
      throw new GitTransferError('bad-request', `${intoRef} is checked out; pass updateHeadOk to update it anyway`)
    }
  }
  let quarantine: string | undefined
  try {
    const haves = (opts.haves ?? await collectHaves(repoDir, { ...(intoRef !== null ? { intoRef } : {}), ...(opts.baseRef !== undefined ? { baseRef: opts.baseRef } : {}), signal })).filter(isOid).slice(0, MAX_HAVES)
    const got = await receivePack(node, peer, want, haves, maxBytes, signal, {
      // only once the server offers a pack: an up-to-date answer may leave intoRef as it is
      beforePack: protectCheckedOut,
      quarantine: async () => {
        quarantine = await makeQuarantine(info.commonDir)
        return quarantine
      },
      repoDir,
      mark
    })

    if (got.upToDate) {
      // the peer says we have it: check, then point intoRef at it
      const [[have], cur] = await Promise.all([batchCheck(repoDir, [got.oid], signal), intoRef === null ? null : refOid(repoDir, intoRef, signal)])
      if (have?.type !== 'commit') {
        throw new GitTransferError('protocol', `peer ${peerText} said we are up to date with ${got.oid}, which we do not have`, { peer: peerText })
      }
      if (intoRef !== null && cur !== got.oid) {
        await protectCheckedOut()
        await pointRef(repoDir, intoRef, got.oid, local)
      }
      log.debug('git:fetch-up-to-date', { peer: peerText, want, oid: got.oid })
      return { oid: got.oid, bytes: 0, upToDate: true }
    }

    // index-pack checked every object (--strict) and that each object the pack refers to exists; what
    // is left is that the announced commit is there and complete down to what our refs already reach
    const objects = join(got.dir, 'objects')
    // held whole in the pack, it is there, and complete: every object it reaches is in the pack or here (index-pack
    // saw each link), and what is here is complete; read from the pack, with no git process (one per fetch on
    // every node: each hand-off on the leader, each new main on the others)
    const held = await packedCommit(join(objects, 'pack', 'incoming.idx'), join(objects, 'pack', 'incoming.pack'), got.oid)
    if (held === false) throw new GitTransferError('bad-bundle', `${got.oid} from ${peerText} is not a commit`, { peer: peerText })
    if (held === null) {
      // not in the pack, or a delta or a tag there: git walks it
      const alternates = [objects, process.env.GIT_ALTERNATE_OBJECT_DIRECTORIES].filter(d => d !== undefined && d !== '').join(':')
      const withPack = { GIT_ALTERNATE_OBJECT_DIRECTORIES: alternates }
      const [connected, [obj]] = await Promise.all([
        // peeled to a commit: a tree or blob fails here (what every fetch wants is a commit), so a main fetched
        // objects-only is known to be one (a run may start from it before main moves there)
        git(['rev-list', '--objects', '--quiet', `${got.oid}^{commit}`, '--not', '--all'], { ...local, allowFail: true, env: withPack }),
        // update-ref refuses non-commits for branches only; objects only: the peel above checks
        intoRef === null || intoRef.startsWith('refs/heads/') ? Promise.resolve([{ oid: got.oid, type: 'commit' }]) : batchCheck(repoDir, [got.oid], signal, withPack)
      ])
      if (connected.code !== 0) {
        throw new GitTransferError('bad-bundle', `the pack from ${peerText} does not hold ${got.oid} with everything it needs: ${lastLines(connected.stderr, 2)}`, { peer: peerText })
      }
      if (obj?.type !== 'commit') throw new GitTransferError('bad-bundle', `${got.oid} from ${peerText} is a ${String(obj?.type)}, not a commit`, { peer: peerText })
    }
    mark('connected')
    // the pack joins the repository (the .idx last: it makes the pack visible), then the ref moves; kept
    // from any gc until the ref reaches its objects (`keepPack`)
    const packDir = join(info.commonDir, 'objects', 'pack')
    await mkdir(packDir, { recursive: true })
    const unkeep = await keepPack(packDir, got.packHash)
    try {
      await moveFile(join(objects, 'pack', 'incoming.pack'), join(packDir, `pack-${got.packHash}.pack`))
      await moveFile(join(objects, 'pack', 'incoming.idx'), join(packDir, `pack-${got.packHash}.idx`))
      if (intoRef !== null) {
        await protectCheckedOut()
        await pointRef(repoDir, intoRef, got.oid, local)
      }
    } finally {
      await unkeep()
    }
    mark('updated')
    log.debug('git:fetched', { peer: peerText, want, oid: got.oid, bytes: got.bytes, haves: haves.length, ms: Date.now() - started, steps })
    // not waited for: a gc may take a while, and the fetch is done
    void autoMaintenance(repoDir, packDir).catch(() => {})
    return { oid: got.oid, bytes: got.bytes, upToDate: false }
  } catch (err) {
    throw fail(err)
  } finally {
    if (quarantine !== undefined) await removeQuarantine(quarantine)
  }
}

/**
 * Points `ref` at `oid` after a fetch: through the repository's long-lived
 * `update-ref --stdin` (src/git/ref-updater.ts: no git process per fetch), or
 * a `git update-ref` of its own when that fails (whose error is the one that
 * counts). Reflog message "meshwork: fetch".
 */
async function pointRef (repoDir: string, ref: string, oid: string, local: { cwd: string, signal?: AbortSignal }): Promise<void> {
  try {
    await refUpdater(repoDir, 'meshwork: fetch').update(ref, oid)
  } catch {
    await git(['update-ref', '-m', 'meshwork: fetch', ref, oid], local)
  }
}

/**
 * Steps of a fetch, in order, as ms since the call in the `steps` field of the
 * `git:fetched` debug event: `asked` (haves gathered, request sent), `header`
 * (the server's HEADER arrived: it resolved the want and its pack-objects
 * started producing), `end` (the last pack byte and END arrived and went to
 * index-pack), `indexed` (index-pack finished), `connected` (connectivity
 * checked), `updated` (pack moved into the repository, ref updated).
 */
export type FetchStep = 'asked' | 'header' | 'end' | 'indexed' | 'connected' | 'updated'

type Received =
  | { upToDate: true, oid: string }
  | { upToDate: false, oid: string, bytes: number, dir: string, packHash: string }

interface ReceiveHooks {
  repoDir: string
  /** Notes when a step of the transfer is reached (for the `git:fetched` event). */
  mark: (step: FetchStep) => void
  /** Runs when the server announces a pack, before any of it is read. */
  beforePack: () => Promise<void>
  /** Makes the quarantine dir (with `objects/pack`) and returns it. */
  quarantine: () => Promise<string>
}

/** Recognises local trouble in index-pack's complaints; anything else is the pack's fault. */
const LOCAL_GIT_TROUBLE = /unable to (?:create|write|open)|permission denied|no space left|quota|read-only file system|cannot (?:store|fsync)|out of memory/i

/**
 * Dials the peer, sends the request and streams the pack into `git index-pack`
 * in the quarantine, counting bytes against `maxBytes` and hashing them.
 */
async function receivePack (node: GitStreams, peer: string | PeerId, want: string, haves: string[], maxBytes: number, signal: AbortSignal, hooks: ReceiveHooks): Promise<Received> {
  const peerText = peer.toString()
  const pid = typeof peer === 'string' ? peerIdFromString(peer) : peer
  let stream: Stream
  try {
    stream = await node.dialProtocol(pid, GIT_PROTOCOL, { signal })
  } catch (err) {
    if (signal.aborted) throw err
    throw new GitTransferError('unreachable', `cannot open ${GIT_PROTOCOL} to ${peerText}: ${toError(err).message}`, { peer: peerText, cause: err })
  }
  const lp = new FramedStream(stream, {
    maxDataLength: 1 + MAX_CHUNK_BYTES,
    // a well-behaved server never has more than a window (or one piece) in flight
    maxBufferSize: WINDOW_BYTES + MAX_CHUNK_BYTES + 64 * 1024,
    // a server that stops sending is given up on long before the transfer's own time bound
    idleTimeoutMs: GIT_IDLE_MS
  })
  const protocolError = (message: string): GitTransferError => new GitTransferError('protocol', `peer ${peerText}: ${message}`, { peer: peerText })
  const badPack = (stderr: string): GitTransferError => new GitTransferError(LOCAL_GIT_TROUBLE.test(stderr) ? 'git' : 'bad-bundle',
    `git index-pack of the pack from ${peerText} failed: ${lastLines(stderr, 3)}`, { peer: peerText })
  const remoteError = (frame: Frame): GitTransferError => {
    const parsed = parseJson(gitErrorSchema, frame.body)
    if (!parsed.ok) return parsed.reason === 'not JSON' ? new GitTransferError('protocol', 'ERROR frame is not JSON') : protocolError('malformed ERROR frame')
    const e = parsed.value
    const code = (REMOTE_CODES.has(e.code) ? e.code : 'server') as GitTransferErrorCode
    return new GitTransferError(code, `peer ${peerText}: ${e.message.slice(0, 1000)}`, { peer: peerText })
  }
  let index: GitProcess | undefined
  try {
    await lp.writeRaw(encodeJsonFrame(GitFrame.REQUEST, { want, haves }), { signal })
    hooks.mark('asked')
    const first = await readFrame(lp, signal)
    hooks.mark('header')
    if (first.tag === GitFrame.ERROR) throw remoteError(first)
    if (first.tag !== GitFrame.HEADER) throw protocolError(`expected a HEADER frame, got tag ${first.tag}`)
    const headerJson = parseJson(gitHeaderSchema, first.body)
    if (!headerJson.ok) throw headerJson.reason === 'not JSON' ? new GitTransferError('protocol', 'HEADER frame is not JSON') : protocolError('HEADER without a valid oid')
    const header = headerJson.value
    if (isOid(want) && header.oid !== want) throw protocolError(`asked for ${want}, offered ${header.oid}`)
    if (header.upToDate === true) {
      await stream.close({ signal }).catch(() => {})
      return { upToDate: true, oid: header.oid }
    }
    await hooks.beforePack()
    const dir = await hooks.quarantine()
    const proc = spawnGit(['index-pack', '--stdin', '--fix-thin', '--strict', join(dir, 'objects', 'pack', 'incoming.pack')], { cwd: hooks.repoDir, signal })
    index = proc
    const state: { exited?: { code: number | null, stderr: string } } = {}
    void proc.exited.then(r => { state.exited = r })
    const checkAlive = (): void => {
      if (state.exited === undefined) return
      if (state.exited.code === 0) throw new GitTransferError('bad-bundle', `the pack from ${peerText} goes on after its end`, { peer: peerText })
      throw badPack(state.exited.stderr)
    }
    // a pack index-pack gave up on fails the transfer at once, even while the server sends nothing more
    const failed = proc.exited.then(async r => {
      if (r.code !== 0) throw badPack(r.stderr)
      return await new Promise<never>(() => {})
    })
    failed.catch(() => {})
    const stdout: Buffer[] = []
    proc.stdout.on('data', (c: Buffer) => { stdout.push(c) })
    const stdin = proc.stdin
    const hash = createHash('sha256')
    let received = 0
    let acked = 0
    for (;;) {
      let frame: Frame
      try {
        const read = readFrame(lp, signal)
        read.catch(() => {})
        frame = await Promise.race([read, failed])
      } catch (err) {
        if (err instanceof GitTransferError || err instanceof StreamIdleError || signal.aborted) throw err
        throw protocolError(`the stream ended or broke after ${received} pack bytes, before END: ${toError(err).message}`)
      }
      if (frame.tag === GitFrame.DATA) {
        if (frame.body.length === 0) throw protocolError('empty DATA frame')
        received += frame.body.length
        if (received > maxBytes) throw new GitTransferError('too-large', `peer ${peerText} sent more than the limit of ${maxBytes} bytes for ${want}`, { peer: peerText })
        // index-pack stops at the first bad object: no point reading on
        checkAlive()
        hash.update(frame.body)
        if (!stdin.write(frame.body)) {
          await Promise.race([new Promise(resolve => stdin.once('drain', resolve)), proc.exited])
          checkAlive()
        }
        if (received - acked >= ACK_BYTES) {
          acked = received
          await lp.writeRaw(encodeJsonFrame(GitFrame.ACK, { bytes: received }), { signal })
        }
      } else if (frame.tag === GitFrame.END) {
        const end = parseBody(gitEndSchema, frame.body, 'END')
        if (end.bytes !== received) throw protocolError(`pack ended after ${received} bytes, END says ${String(end.bytes)}`)
        if (end.sha256 !== hash.digest('hex')) throw protocolError('pack hash mismatch')
        hooks.mark('end')
        break
      } else if (frame.tag === GitFrame.ERROR) {
        throw remoteError(frame)
      } else {
        throw protocolError(`unexpected frame tag ${frame.tag}`)
      }
    }
    stdin.end()
    const { code, stderr } = await proc.exited
    if (code !== 0) throw badPack(stderr)
    hooks.mark('indexed')
    const printed = /^(?:pack|keep)\t([0-9a-f]{40}|[0-9a-f]{64})$/m.exec(Buffer.concat(stdout).toString('utf8'))
    if (printed === null) throw new GitTransferError('git', `git index-pack printed no pack name: ${Buffer.concat(stdout).toString('utf8').slice(0, 200)}`, { peer: peerText })
    await stream.close({ signal }).catch(() => {})
    return { upToDate: false, oid: header.oid, bytes: received, dir, packHash: printed[1] as string }
  } catch (err) {
    stream.abort(toError(err))
    if (index !== undefined) {
      // dead before the caller removes the quarantine it writes into
      index.kill()
      await index.exited
    }
    if (err instanceof StreamIdleError) throw new GitTransferError('timeout', `peer ${peerText}: ${err.message}`, { peer: peerText, cause: err })
    // local file errors and aborts are classified by the caller; the rest is the peer's doing
    if (err instanceof GitTransferError || signal.aborted || typeof (err as NodeJS.ErrnoException | null)?.syscall === 'string') throw err
    throw new GitTransferError('protocol', `peer ${peerText}: ${toError(err).message}`, { peer: peerText, cause: err })
  }
}

// ---------------------------------------------------------------------------
// clone

export interface CloneFromPeerOptions extends Omit<FetchFromPeerOptions, 'intoRef' | 'haves' | 'updateHeadOk' | 'baseRef'> {}

/**
 * Makes `dir` (missing or empty) a clone of a peer's `branch`: `git init -b
 * <branch>`, fetch the peer's `refs/heads/<branch>` into it, check it out. On
 * failure `dir` is put back as it was (removed if it was missing, emptied if it
 * was empty).
 */
export async function cloneFromPeer (node: GitStreams, peer: string | PeerId, dir: string, branch = 'main', opts: CloneFromPeerOptions = {}): Promise<FetchResult> {
  let existed = true
  try {
    const entries = await readdir(dir)
    if (entries.length > 0) throw new UsageError(`cannot clone into ${dir}: the directory is not empty`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') existed = false
    else if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new UsageError(`cannot clone into ${dir}: not a directory`)
    else throw err
  }
  await mkdir(dir, { recursive: true })
  try {
    if (!await isValidBranchName(dir, branch)) throw new UsageError(`invalid branch name ${JSON.stringify(branch)}`)
    await git(['init', '--quiet', '-b', branch], { cwd: dir })
    const ref = `refs/heads/${branch}`
    const res = await fetchFromPeer(node, peer, dir, ref, { ...opts, intoRef: ref, haves: [], updateHeadOk: true })
    await git(['reset', '--quiet', '--hard', ref], { cwd: dir, ...(opts.signal !== undefined ? { signal: opts.signal } : {}) })
    return res
  } catch (err) {
    if (existed) {
      for (const entry of await readdir(dir).catch(() => [] as string[])) await rm(join(dir, entry), { recursive: true, force: true }).catch(() => {})
    } else {
      await rm(dir, { recursive: true, force: true }).catch(() => {})
    }
    throw err
  }
}

