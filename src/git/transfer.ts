/**
 * Git between peers: `/meshwork/git/2` moves a branch (or a commit) from one
 * node's repository to another's as a git pack over a libp2p stream, with no
 * git server. The pack streams through: the server's `git pack-objects` output
 * goes onto the stream as it is produced and the requester feeds it to
 * `git index-pack` as it arrives, so packing, the wire and indexing overlap.
 *
 * The frames and their JSON bodies are defined in src/protocol/git.ts.
 *
 * The server resolves the want and the haves it actually has (one `git cat-file
 * --batch-check` and one exact `git for-each-ref`, side by side; the branch's
 * oid is fixed from then on) and streams `git pack-objects --revs --stdout
 * --thin` of `want ^haves` (a thin pack: deltas may use objects the haves
 * reach); an empty pack means the requester is up to date. Its repository is
 * never written to. The requester pipes DATA into `git index-pack --stdin
 * --fix-thin --strict` (what `git fetch` with `transfer.fsckObjects` runs)
 * writing into a quarantine directory in the git dir, while counting bytes
 * against its limit and hashing; after END and a matching size and hash it
 * checks that `oid` is connected (`git rev-list --objects <oid> --not --all`
 * with the quarantine as an alternate), moves the pack into `objects/pack` and
 * only then updates `intoRef`. The quarantine is removed on every path, so a
 * failed transfer leaves neither refs nor objects behind.
 */
import { createHash } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import type { AbortOptions, PeerId, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import type { z } from 'zod'
import { EmptyFrameError, FramedStream, encodeJsonFrame, parseJson, type Frame } from '../protocol/frame.ts'
import {
  ACK_BYTES, GIT_PROTOCOL, GitFrame, MAX_CHUNK_BYTES, MAX_HAVES, MAX_REQUEST_FRAME_BYTES, MAX_WANT_LENGTH, WINDOW_BYTES,
  gitAckSchema, gitEndSchema, gitErrorSchema, gitHeaderSchema, gitRequestSchema
} from '../protocol/git.ts'
import { GitError, git, spawnGit, type GitProcess } from './git.ts'
import { OID_RE, gitCommonDir, isOid, isValidBranchName, isWellFormedRefName, refOid } from './repo.ts'
import { UsageError, toError } from '../util/errors.ts'
import { silentLogger, type Logger } from '../util/logger.ts'

export { GIT_PROTOCOL, GitFrame, MAX_CHUNK_BYTES, MAX_HAVES, WINDOW_BYTES, ACK_BYTES } from '../protocol/git.ts'
export { encodeFrame, encodeJsonFrame } from '../protocol/frame.ts'
/**
 * Pack bytes per DATA frame a server sends by default. Fewer, larger frames
 * cost less CPU per byte on the libp2p path (one trip through yamux, Noise and
 * pnet each; with 64 KiB frames a 25 MiB transfer took about a fifth more CPU
 * in the trial). Writes this large through pnet's xsalsa20 are safe since
 * src/node/pnet-fix.ts (its shared WebAssembly memory used to grow without
 * bound after one write above 64 KiB).
 * @default 256 KiB
 */
export const DEFAULT_CHUNK_BYTES = 256 * 1024
/** Default cap on one transfer's pack. @default 2 GiB */
export const DEFAULT_MAX_TRANSFER_BYTES = 2 * 1024 * 1024 * 1024
/** Default time bound of one transfer, either side. @default 10 min */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10 * 60_000
/** Default bound on transfers one node serves at once. */
export const DEFAULT_MAX_CONCURRENT_SERVES = 4

/** A pack file starts with `PACK`, version 2 or 3, and a 4-byte object count. */
const PACK_HEADER_BYTES = 12
/**
 * Packs in `objects/pack` above which a fetch runs `git maintenance run --auto`
 * (git's own `gc.autoPackLimit` default; git then decides by its config, as
 * after a `git fetch`).
 */
const AUTO_MAINTENANCE_PACKS = 50

export type GitTransferErrorCode =
  /** malformed request (from the server) or bad arguments (local) */
  | 'bad-request'
  /** the server will not serve that `want` (outside `refs/heads/`) */
  | 'refused'
  /** no such branch or commit on the server */
  | 'not-found'
  /** the server is serving its maximum of transfers */
  | 'busy'
  /** the pack is larger than a `maxBytes` */
  | 'too-large'
  /** the transfer took longer than allowed */
  | 'timeout'
  /** the caller's signal aborted the transfer */
  | 'aborted'
  /** the peer could not be dialled */
  | 'unreachable'
  /** the peer broke the protocol (bad frame, bad size or hash, stream reset or ended early) */
  | 'protocol'
  /**
   * what arrived is not a valid pack of what was announced (git rejected the
   * pack, or the announced commit is not connected); the name is from the
   * bundle-based `/meshwork/git/1`
   */
  | 'bad-bundle'
  /** the server failed */
  | 'server'
  /** a local git command failed */
  | 'git'
  /** a local file operation failed (or the repository is not a git repository) */
  | 'local'

const REMOTE_CODES = new Set<string>(['bad-request', 'refused', 'not-found', 'busy', 'too-large', 'timeout', 'server'])

/** A failed peer-to-peer git transfer; `code` says why. The local repository is left as it was. */
export class GitTransferError extends Error {
  override name = 'GitTransferError'
  readonly code: GitTransferErrorCode
  readonly peer: string | undefined
  constructor (code: GitTransferErrorCode, message: string, opts: { peer?: string, cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined)
    this.code = code
    this.peer = opts.peer
  }
}

/** What git transfers need of a node: open and serve streams (a `MeshNode` is one). */
export interface GitStreams {
  dialProtocol: (peer: PeerId, protocol: string, options?: AbortOptions) => Promise<Stream>
  handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
  unhandle: (protocol: string) => Promise<void>
}

// ---------------------------------------------------------------------------
// frames

async function readFrame (lp: FramedStream, signal: AbortSignal): Promise<Frame> {
  try {
    return await lp.read({ signal })
  } catch (err) {
    if (err instanceof EmptyFrameError) throw new GitTransferError('protocol', 'empty frame')
    throw err
  }
}

/** The JSON body of a `what` frame, checked against `schema`; a protocol error otherwise. */
function parseBody<S extends z.ZodType> (schema: S, body: Uint8Array, what: string): z.infer<S> {
  const r = parseJson(schema, body)
  if (!r.ok) throw new GitTransferError('protocol', `${what} frame ${r.reason === 'not JSON' ? 'is not JSON' : `is malformed: ${r.reason.slice(0, 300)}`}`)
  return r.value
}

const lastLines = (text: string, n: number): string => text.trim().split('\n').slice(-n).join(' | ')

// ---------------------------------------------------------------------------
// the repository, looked up once

interface RepoInfo { commonDir: string, bare: boolean }

const repoInfos = new Map<string, RepoInfo>()

/**
 * The repository's common git dir and whether it is bare, from one `git
 * rev-parse`, remembered per directory while that git dir exists.
 */
async function repoInfo (repoDir: string, signal?: AbortSignal): Promise<RepoInfo> {
  const key = resolve(repoDir)
  const cached = repoInfos.get(key)
  if (cached !== undefined && await stat(cached.commonDir).then(s => s.isDirectory(), () => false)) return cached
  repoInfos.delete(key)
  const res = await git(['rev-parse', '--path-format=absolute', '--git-common-dir', '--is-bare-repository'], { cwd: repoDir, ...(signal !== undefined ? { signal } : {}) })
  const [dir, bare] = res.stdout.toString('utf8').trim().split('\n')
  if (dir === undefined || dir === '') throw new Error(`git rev-parse printed no git dir for ${repoDir}`)
  const info = { commonDir: isAbsolute(dir) ? dir : resolve(repoDir, dir), bare: bare === 'true' }
  repoInfos.set(key, info)
  return info
}

/**
 * Full ref names of branches checked out in any worktree of the repository:
 * the `HEAD` files of the main worktree (unless bare) and of each linked one,
 * which is what `git worktree list` reads, without starting git (and without
 * waiting behind the worktree commands `git()` runs one at a time).
 */
async function checkedOutBranches (info: RepoInfo): Promise<Set<string>> {
  const heads = info.bare ? [] : [join(info.commonDir, 'HEAD')]
  const linked = await readdir(join(info.commonDir, 'worktrees')).catch(() => [] as string[])
  for (const name of linked) heads.push(join(info.commonDir, 'worktrees', name, 'HEAD'))
  const refs = new Set<string>()
  for (const file of heads) {
    const text = await readFile(file, 'utf8').catch(() => '')
    const m = /^ref: (refs\/\S+)\s*$/.exec(text)
    if (m !== null) refs.add(m[1] as string)
  }
  return refs
}

/**
 * `git cat-file --batch-check` of `names` (full oids, one process): for each,
 * its oid and type, or null when the repository lacks it.
 */
async function batchCheck (repoDir: string, names: string[], signal: AbortSignal, env?: NodeJS.ProcessEnv): Promise<Array<{ oid: string, type: string } | null>> {
  if (names.length === 0) return []
  const res = await git(['cat-file', '--batch-check=%(objectname) %(objecttype)'], { cwd: repoDir, input: names.join('\n') + '\n', signal, ...(env !== undefined ? { env } : {}) })
  const lines = res.stdout.toString('utf8').split('\n')
  return names.map((_, i) => {
    const m = /^([0-9a-f]{40}|[0-9a-f]{64}) ([a-z]+)$/.exec(lines[i] ?? '')
    return m === null ? null : { oid: m[1] as string, type: m[2] as string }
  })
}

// ---------------------------------------------------------------------------
// server

export interface ServeGitOptions {
  /** Largest pack served. @default 2 GiB */
  maxBytes?: number
  /** Transfers served at once (over all peers); more are answered `busy`. @default 4 */
  maxConcurrent?: number
  /** Time bound of one served transfer. @default 10 min */
  timeoutMs?: number
  /** Pack bytes per DATA frame (at most 1 MiB). @default 256 KiB */
  chunkBytes?: number
  logger?: Logger
}

export interface GitServeStats {
  served: number
  upToDate: number
  failed: number
  bytesSent: number
}

export interface GitServer {
  /** Transfers in progress. */
  readonly active: number
  readonly stats: GitServeStats
  /** Unregisters the protocol and aborts transfers in progress. */
  close: () => Promise<void>
}

/** A refusal the server reports to the requester as an ERROR frame. */
class ServeRefusal extends Error {
  override name = 'ServeRefusal'
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.code = code
  }
}

interface Resolved { oid: string, haves: string[] }

/**
 * Reads a stream of buffers in order into buffers the caller provides, so a
 * DATA frame is filled with one copy of each byte.
 */
class StreamFiller {
  private readonly it: AsyncIterator<Buffer>
  private rest: Buffer = Buffer.alloc(0)
  private ended = false
  constructor (source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]()
  }

  /** Puts `piece` back in front of what is still to be read. */
  unshift (piece: Buffer): void {
    this.rest = this.rest.length === 0 ? piece : Buffer.concat([piece, this.rest])
  }

  /** Fills `target` from `from` on; returns the bytes written (fewer than asked only at the end). */
  async fill (target: Buffer, from = 0): Promise<number> {
    let at = from
    while (at < target.length) {
      if (this.rest.length === 0) {
        if (this.ended) break
        const next = await this.it.next()
        if (next.done === true) {
          this.ended = true
          break
        }
        this.rest = next.value
      }
      const n = this.rest.copy(target, at)
      this.rest = this.rest.subarray(n)
      at += n
    }
    return at - from
  }
}

/**
 * Serves `repoDir`'s branches (`refs/heads/*`, or commits reachable from them)
 * to mesh peers over `/meshwork/git/2`.
 */
export async function serveGit (node: GitStreams, repoDir: string, opts: ServeGitOptions = {}): Promise<GitServer> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TRANSFER_BYTES
  const maxConcurrent = Math.max(1, opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT_SERVES)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS
  const chunkBytes = Math.max(1, Math.min(opts.chunkBytes ?? DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES))
  const log = opts.logger ?? silentLogger
  const stats: GitServeStats = { served: 0, upToDate: 0, failed: 0, bytesSent: 0 }
  await repoInfo(repoDir) // fails early on a directory that is not a repository
  const running = new Set<Promise<void>>()
  const controllers = new Set<AbortController>()
  let active = 0
  let closed = false

  /**
   * The want's commit and the haves that are commits here: one `cat-file
   * --batch-check` for the haves (and an oid want) and, side by side, one
   * `for-each-ref` that resolves a branch exactly (no DWIM: `refs/heads/x` never
   * falls back to `refs/tags/refs/heads/x`) or checks that a branch contains an
   * oid want.
   */
  const resolveRequest = async (want: string, haves: string[], signal: AbortSignal): Promise<Resolved> => {
    const isOidWant = OID_RE.test(want)
    if (!isOidWant) {
      if (!want.startsWith('refs/heads/')) throw new ServeRefusal('refused', `only refs under refs/heads/ are served, not ${JSON.stringify(want)}`)
      if (!isWellFormedRefName(want)) throw new ServeRefusal('bad-request', `invalid ref name ${JSON.stringify(want)}`)
    }
    const uniqueHaves = [...new Set(haves)]
    const opt = { cwd: repoDir, signal, allowFail: true }
    const [checks, refs] = await Promise.all([
      batchCheck(repoDir, isOidWant ? [want, ...uniqueHaves] : uniqueHaves, signal),
      isOidWant
        // only what the branches reach is served
        ? git(['for-each-ref', '--count=1', '--format=%(refname)', `--contains=${want}`, 'refs/heads/'], opt)
        : git(['for-each-ref', '--format=%(objectname) %(objecttype) %(refname)', want], opt)
    ])
    const refLines = refs.code === 0 ? refs.stdout.toString('utf8').split('\n').filter(l => l !== '') : []
    let oid: string
    if (isOidWant) {
      const w = checks.shift()
      if (w === null || w === undefined || w.type !== 'commit') throw new ServeRefusal('not-found', `no commit ${want}`)
      if (refLines.length === 0) throw new ServeRefusal('not-found', `no branch contains ${want}`)
      oid = w.oid
    } else {
      const line = refLines.map(l => l.split(' ')).find(([, , name]) => name === want)
      if (line === undefined || !isOid(line[0])) throw new ServeRefusal('not-found', `no branch ${want}`)
      if (line[1] !== 'commit') throw new ServeRefusal('not-found', `${want} is not a commit`)
      oid = line[0]
    }
    return { oid, haves: uniqueHaves.filter((_, i) => checks[i]?.type === 'commit') }
  }

  const parseRequest = (frame: Frame): { want: string, haves: string[] } => {
    if (frame.tag !== GitFrame.REQUEST) throw new ServeRefusal('bad-request', `expected a REQUEST frame, got tag ${frame.tag}`)
    const r = parseJson(gitRequestSchema, frame.body)
    if (!r.ok) {
      if (r.reason === 'not JSON') throw new ServeRefusal('bad-request', 'REQUEST frame is not JSON')
      if (r.reason.startsWith('haves')) throw new ServeRefusal('bad-request', `\`haves\` must be at most ${MAX_HAVES} full oids`)
      throw new ServeRefusal('bad-request', '`want` must be a ref name or an oid')
    }
    return { want: r.value.want, haves: r.value.haves ?? [] }
  }

  const serveOne = async (stream: Stream, peer: string): Promise<void> => {
    const ac = new AbortController()
    controllers.add(ac)
    const timeout = AbortSignal.timeout(timeoutMs)
    const signal = AbortSignal.any([ac.signal, timeout])
    const lp = new FramedStream(stream, { maxDataLength: MAX_REQUEST_FRAME_BYTES })
    let pack: GitProcess | undefined
    let counted = false
    const started = Date.now()
    try {
      if (active >= maxConcurrent) throw new ServeRefusal('busy', `serving ${active} transfers already`)
      active++
      counted = true
      let first: Frame
      try {
        first = await readFrame(lp, signal)
      } catch (err) {
        if (signal.aborted) throw err
        throw new ServeRefusal('bad-request', `unreadable request: ${toError(err).message}`)
      }
      const req = parseRequest(first)
      const { oid, haves } = await resolveRequest(req.want, req.haves, signal)
      const upToDate = async (): Promise<void> => {
        await lp.writeRaw(encodeJsonFrame(GitFrame.HEADER, { oid, ref: req.want, upToDate: true }), { signal })
        await stream.close({ signal })
        stats.upToDate++
        log.debug('git:serve-up-to-date', { peer, want: req.want, oid })
      }
      if (haves.includes(oid)) {
        await upToDate()
        return
      }
      // `oid` is fixed now: the pack is of that commit even if the branch moves meanwhile
      pack = spawnGit(['pack-objects', '--revs', '--stdout', '--thin', '--delta-base-offset', '--quiet'], { cwd: repoDir, signal })
      pack.child.stdin.end([oid, ...haves.map(h => `^${h}`)].join('\n') + '\n')
      const reader = new StreamFiller(pack.child.stdout)
      // pack-objects writes the header once it has counted the objects: none means nothing is missing
      const header = Buffer.alloc(PACK_HEADER_BYTES)
      if (await reader.fill(header) < PACK_HEADER_BYTES || header.subarray(0, 4).toString('latin1') !== 'PACK') {
        const { code, stderr } = await pack.exited
        throw new Error(`git pack-objects produced no pack (exit ${String(code)}): ${lastLines(stderr, 3)}`)
      }
      if (header.readUInt32BE(8) === 0) {
        await upToDate()
        return
      }
      await lp.writeRaw(encodeJsonFrame(GitFrame.HEADER, { oid, ref: req.want, upToDate: false }), { signal })

      const hash = createHash('sha256')
      let offset = 0 // bytes sent
      let acked = 0
      /** Sends `frame` (the DATA tag, then a piece of the pack) within the window. */
      const send = async (frame: Buffer): Promise<void> => {
        const piece = frame.subarray(1)
        if (offset + piece.length > maxBytes) throw new ServeRefusal('too-large', `the pack of ${req.want} is more than this server's limit of ${maxBytes} bytes`)
        while (offset > acked && offset - acked + piece.length > WINDOW_BYTES) {
          const ack = await readFrame(lp, signal)
          if (ack.tag !== GitFrame.ACK) throw new ServeRefusal('bad-request', `expected an ACK frame, got tag ${ack.tag}`)
          const parsed = parseJson(gitAckSchema, ack.body)
          const bytes = parsed.ok ? parsed.value.bytes : null
          if (bytes === null || bytes < acked || bytes > offset) throw new ServeRefusal('bad-request', `bad ACK of ${parsed.ok ? String(bytes) : 'malformed'} bytes (sent ${offset})`)
          acked = bytes
        }
        hash.update(piece)
        await lp.writeRaw(frame, { signal })
        offset += piece.length
      }
      // the header, then the rest as pack-objects produces it, in frames of chunkBytes (a fresh
      // buffer each: lp.write may hold on to it)
      reader.unshift(header)
      for (;;) {
        const frame = Buffer.allocUnsafe(1 + chunkBytes)
        frame[0] = GitFrame.DATA
        const n = await reader.fill(frame, 1)
        if (n > 0) await send(n < chunkBytes ? frame.subarray(0, 1 + n) : frame)
        if (n < chunkBytes) break
      }
      const { code, stderr } = await pack.exited
      if (code !== 0) throw new Error(`git pack-objects failed (${String(code)}): ${lastLines(stderr, 3)}`)
      await lp.writeRaw(encodeJsonFrame(GitFrame.END, { bytes: offset, sha256: hash.digest('hex') }), { signal })
      await stream.close({ signal })
      stats.served++
      stats.bytesSent += offset
      log.debug('git:served', { peer, want: req.want, oid, bytes: offset, haves: haves.length, ms: Date.now() - started })
    } catch (err) {
      stats.failed++
      const e = toError(err)
      const code = e instanceof ServeRefusal
        ? e.code
        : timeout.aborted ? 'timeout' : 'server'
      const message = e instanceof ServeRefusal ? e.message : timeout.aborted ? `transfer took longer than ${timeoutMs} ms` : `serving failed: ${e.message.slice(0, 500)}`
      log.debug('git:serve-failed', { peer, code, error: e.message })
      pack?.kill()
      if (stream.writeStatus === 'writable' && !ac.signal.aborted) {
        // tell the requester why (after whatever it has not read yet), then close
        try {
          const bounded = AbortSignal.any([ac.signal, AbortSignal.timeout(2000)])
          await lp.writeRaw(encodeJsonFrame(GitFrame.ERROR, { code, message }), { signal: bounded })
          await stream.close({ signal: bounded })
          return
        } catch {}
      }
      stream.abort(e)
    } finally {
      pack?.kill()
      if (counted) active--
      controllers.delete(ac)
    }
  }

  await node.handle(GIT_PROTOCOL, (stream, connection) => {
    if (closed) {
      stream.abort(new Error('git server closed'))
      return
    }
    const p = serveOne(stream, connection.remotePeer.toString()).catch(() => {})
    running.add(p)
    void p.finally(() => running.delete(p))
  }, { maxInboundStreams: maxConcurrent * 4 })

  return {
    get active () { return active },
    stats,
    close: async () => {
      if (closed) return
      closed = true
      await node.unhandle(GIT_PROTOCOL).catch(() => {})
      for (const ac of controllers) ac.abort(new Error('git server closed'))
      await Promise.race([Promise.allSettled([...running]), new Promise(resolve => setTimeout(resolve, 5000).unref())])
    }
  }
}
// ---------------------------------------------------------------------------
// requester

export interface FetchFromPeerOptions {
  /**
   * Ref to create or force-update with the fetched commit. @default `want`
   * (required when `want` is an oid)
   */
  intoRef?: string
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
  /** The commit `intoRef` now points to. */
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
  const intoRef = opts.intoRef ?? (OID_RE.test(want) ? undefined : want)
  if (intoRef === undefined) throw new GitTransferError('bad-request', 'intoRef is required when fetching an oid')
  if (!isWellFormedRefName(intoRef)) throw new GitTransferError('bad-request', `invalid intoRef ${JSON.stringify(intoRef)}`)
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TRANSFER_BYTES
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = opts.signal !== undefined ? AbortSignal.any([opts.signal, timeout]) : timeout
  const fail = (err: unknown): GitTransferError => {
    if (err instanceof GitTransferError) return err
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
  const mayBeCheckedOut = opts.updateHeadOk !== true && intoRef.startsWith('refs/heads/')
  const protectCheckedOut = async (): Promise<void> => {
    if (mayBeCheckedOut && (await checkedOutBranches(info)).has(intoRef)) {
      throw new GitTransferError('bad-request', `${intoRef} is checked out; pass updateHeadOk to update it anyway`)
    }
  }
  let quarantine: string | undefined
  try {
    const haves = (opts.haves ?? await collectHaves(repoDir, { intoRef, ...(opts.baseRef !== undefined ? { baseRef: opts.baseRef } : {}), signal })).filter(isOid).slice(0, MAX_HAVES)
    const got = await receivePack(node, peer, want, haves, maxBytes, signal, {
      // only once the server offers a pack: an up-to-date answer may leave intoRef as it is
      beforePack: protectCheckedOut,
      quarantine: async () => {
        quarantine = await mkdtemp(join(info.commonDir, 'meshwork-fetch-'))
        await mkdir(join(quarantine, 'objects', 'pack'), { recursive: true })
        return quarantine
      },
      repoDir,
      mark
    })

    if (got.upToDate) {
      // the peer says we have it: check, then point intoRef at it
      const [[have], cur] = await Promise.all([batchCheck(repoDir, [got.oid], signal), refOid(repoDir, intoRef, signal)])
      if (have?.type !== 'commit') {
        throw new GitTransferError('protocol', `peer ${peerText} said we are up to date with ${got.oid}, which we do not have`, { peer: peerText })
      }
      if (cur !== got.oid) {
        await protectCheckedOut()
        await git(['update-ref', '-m', `meshwork: fetch ${want} from ${peerText}`, intoRef, got.oid], local)
      }
      log.debug('git:fetch-up-to-date', { peer: peerText, want, oid: got.oid })
      return { oid: got.oid, bytes: 0, upToDate: true }
    }

    // index-pack checked every object (--strict) and that each object the pack refers to exists; what
    // is left is that the announced commit is there and complete down to what our refs already reach
    const objects = join(got.dir, 'objects')
    const alternates = [objects, process.env.GIT_ALTERNATE_OBJECT_DIRECTORIES].filter(d => d !== undefined && d !== '').join(':')
    const withPack = { GIT_ALTERNATE_OBJECT_DIRECTORIES: alternates }
    const [connected, [obj]] = await Promise.all([
      git(['rev-list', '--objects', '--quiet', got.oid, '--not', '--all'], { ...local, allowFail: true, env: withPack }),
      // update-ref refuses non-commits for branches only
      intoRef.startsWith('refs/heads/') ? Promise.resolve([{ oid: got.oid, type: 'commit' }]) : batchCheck(repoDir, [got.oid], signal, withPack)
    ])
    if (connected.code !== 0) {
      throw new GitTransferError('bad-bundle', `the pack from ${peerText} does not hold ${got.oid} with everything it needs: ${lastLines(connected.stderr, 2)}`, { peer: peerText })
    }
    if (obj?.type !== 'commit') throw new GitTransferError('bad-bundle', `${got.oid} from ${peerText} is a ${String(obj?.type)}, not a commit`, { peer: peerText })
    mark('connected')
    // the pack joins the repository (the .idx last: it makes the pack visible), then the ref moves
    const packDir = join(info.commonDir, 'objects', 'pack')
    await mkdir(packDir, { recursive: true })
    await moveFile(join(objects, 'pack', 'incoming.pack'), join(packDir, `pack-${got.packHash}.pack`))
    await moveFile(join(objects, 'pack', 'incoming.idx'), join(packDir, `pack-${got.packHash}.idx`))
    await protectCheckedOut()
    await git(['update-ref', '-m', `meshwork: fetch ${want} from ${peerText}`, intoRef, got.oid], local)
    mark('updated')
    log.debug('git:fetched', { peer: peerText, want, oid: got.oid, bytes: got.bytes, haves: haves.length, ms: Date.now() - started, steps })
    await autoMaintenance(repoDir, packDir)
    return { oid: got.oid, bytes: got.bytes, upToDate: false }
  } catch (err) {
    throw fail(err)
  } finally {
    if (quarantine !== undefined) await rm(quarantine, { recursive: true, force: true }).catch(() => {})
  }
}

/** `rename`, or a copy when `objects/` is on another file system than the git dir (a symlink). */
async function moveFile (from: string, to: string): Promise<void> {
  try {
    await rename(from, to)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
    await copyFile(from, `${to}.meshwork-tmp`)
    await rename(`${to}.meshwork-tmp`, to)
  }
}

/**
 * Every fetch adds a pack, as `git fetch` of a bundle does; past git's pack
 * limit, let git's own auto maintenance decide (it detaches its gc). Failures
 * here are not the transfer's.
 */
async function autoMaintenance (repoDir: string, packDir: string): Promise<void> {
  const packs = (await readdir(packDir).catch(() => [] as string[])).filter(f => f.endsWith('.idx')).length
  if (packs > AUTO_MAINTENANCE_PACKS) await git(['maintenance', 'run', '--auto', '--quiet'], { cwd: repoDir, allowFail: true }).catch(() => {})
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
    maxBufferSize: WINDOW_BYTES + MAX_CHUNK_BYTES + 64 * 1024
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
    proc.child.stdout.on('data', (c: Buffer) => { stdout.push(c) })
    const stdin = proc.child.stdin
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
        if (err instanceof GitTransferError || signal.aborted) throw err
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

/**
 * Removes `meshwork-fetch-*` / `meshwork-serve-*` temp dirs a crashed process
 * left in a repository's git dir. Call at startup, before serving or fetching.
 */
export async function removeStaleTransferTemps (repoDir: string): Promise<number> {
  const gitDir = await gitCommonDir(repoDir)
  let n = 0
  for (const entry of await readdir(gitDir)) {
    if (/^meshwork-(?:fetch|serve)-/.test(entry)) {
      await rm(join(gitDir, entry), { recursive: true, force: true })
      n++
    }
  }
  return n
}
