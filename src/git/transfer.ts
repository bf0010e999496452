/**
 * Git between peers: `/meshwork/git/1` moves a branch (or a commit) from one
 * node's repository to another's as a `git bundle` over a libp2p stream, with no
 * git server.
 *
 * Every frame is length-prefixed (`lpStream`) and starts with a one-byte tag:
 *
 *   requester → server
 *     REQUEST 0x01  JSON `{ want, haves }`: `want` is a ref under `refs/heads/`
 *                   or a full oid; `haves` are up to `MAX_HAVES` commit oids the
 *                   requester already has.
 *     ACK     0x05  JSON `{ bytes }`: bundle bytes written to disk so far; sent
 *                   whenever `ACK_BYTES` more have arrived (flow control).
 *   server → requester
 *     HEADER  0x02  JSON `{ oid, ref, upToDate, bytes }`. With `upToDate` the
 *                   requester already has `oid` and nothing follows; otherwise a
 *                   bundle of `bytes` bytes follows.
 *     DATA    0x03  a piece of the bundle (64 KiB by default, at most 1 MiB).
 *                   The server keeps at most `WINDOW_BYTES` unacknowledged
 *                   (or one piece, if a piece is larger).
 *     END     0x04  JSON `{ bytes, sha256 }` of the whole bundle; then the server
 *                   closes its side.
 *     ERROR   0x00  JSON `{ code, message }`: the server gives up, in place of
 *                   the HEADER or after some DATA; then it closes its side.
 *
 * The server builds the bundle of `want` minus the haves it actually has in a
 * throwaway bare repository borrowing its objects (alternates), so its own
 * repository is never written to. The requester receives the bundle into a temp
 * file, checks size and hash, runs `git bundle verify`, then
 * `git fetch <bundle> +<head>:<intoRef>` (git 2.39 cannot verify or unbundle
 * from stdin, and `unbundle` does not update refs). Temp files are removed on
 * every path.
 */
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId, Stream } from '@libp2p/interface'
import type { MeshNode } from '../node/mesh-node.ts'
import { GitError, git, gitText } from './git.ts'
import {
  OID_RE, checkedOutBranches, gitCommonDir, isOid, isValidBranchName, isValidRefName, objectFormat, objectType, presentCommits, refOid
} from './repo.ts'
import { UsageError, toError } from '../util/errors.ts'
import { silentLogger, type Logger } from '../util/logger.ts'

export const GIT_PROTOCOL = '/meshwork/git/1'

/** Frame tags on `/meshwork/git/1`. */
export const GitFrame = {
  ERROR: 0x00,
  REQUEST: 0x01,
  HEADER: 0x02,
  DATA: 0x03,
  END: 0x04,
  ACK: 0x05
} as const

/** Largest bundle piece in one DATA frame a requester accepts. */
export const MAX_CHUNK_BYTES = 1024 * 1024
/**
 * Bundle bytes per DATA frame a server sends by default. Kept small together
 * with the window because pnet's xsalsa20 (WASM, shared by the whole process)
 * leaks memory and eventually throws `WebAssembly.Memory.grow(): Maximum memory
 * size exceeded` once a single write through a connection exceeds its initial
 * 640 KiB (js-libp2p PR #3585): with 384 KiB in flight per transfer no write
 * gets near that.
 * @default 64 KiB
 */
export const DEFAULT_CHUNK_BYTES = 64 * 1024
/** Most haves a request may carry. */
export const MAX_HAVES = 256
/** Bundle bytes a server sends ahead of the requester's ACKs. */
export const WINDOW_BYTES = 384 * 1024
/**
 * The requester ACKs whenever this many bytes arrived since its last ACK.
 * `2 * ACK_BYTES <= WINDOW_BYTES` keeps the window from deadlocking.
 */
export const ACK_BYTES = 128 * 1024
/** Default cap on one transfer's bundle. @default 2 GiB */
export const DEFAULT_MAX_TRANSFER_BYTES = 2 * 1024 * 1024 * 1024
/** Default time bound of one transfer, either side. @default 10 min */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10 * 60_000
/** Default bound on transfers one node serves at once. */
export const DEFAULT_MAX_CONCURRENT_SERVES = 4

/** Largest REQUEST or ACK frame a server accepts. */
const MAX_REQUEST_FRAME_BYTES = 64 * 1024
/** Largest `want` string. */
const MAX_WANT_LENGTH = 1024

export type GitTransferErrorCode =
  /** malformed request (from the server) or bad arguments (local) */
  | 'bad-request'
  /** the server will not serve that `want` (outside `refs/heads/`) */
  | 'refused'
  /** no such branch or commit on the server */
  | 'not-found'
  /** the server is serving its maximum of transfers */
  | 'busy'
  /** the bundle is larger than a `maxBytes` */
  | 'too-large'
  /** the transfer took longer than allowed */
  | 'timeout'
  /** the caller's signal aborted the transfer */
  | 'aborted'
  /** the peer could not be dialled */
  | 'unreachable'
  /** the peer broke the protocol (bad frame, bad size or hash, stream reset) */
  | 'protocol'
  /** what arrived is not a valid bundle of what was announced */
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

// ---------------------------------------------------------------------------
// frames

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/** One frame: `tag` then `body`. */
export function encodeFrame (tag: number, body?: Uint8Array): Uint8Array {
  const frame = new Uint8Array(1 + (body?.length ?? 0))
  frame[0] = tag
  if (body !== undefined) frame.set(body, 1)
  return frame
}

/** One frame: `tag` then `value` as JSON. */
export function encodeJsonFrame (tag: number, value: unknown): Uint8Array {
  return encodeFrame(tag, encoder.encode(JSON.stringify(value)))
}

interface Frame { tag: number, body: Uint8Array }

type Lp = ReturnType<typeof lpStream>

async function readFrame (lp: Lp, signal: AbortSignal): Promise<Frame> {
  const data = (await lp.read({ signal })).subarray()
  if (data.length === 0) throw new GitTransferError('protocol', 'empty frame')
  return { tag: data[0] as number, body: data.subarray(1) }
}

function parseJson (body: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(decoder.decode(body))
  } catch {
    throw new GitTransferError('protocol', `${what} frame is not JSON`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new GitTransferError('protocol', `${what} frame is not a JSON object`)
  return value as Record<string, unknown>
}

function isCount (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

// ---------------------------------------------------------------------------
// server

export interface ServeGitOptions {
  /** Largest bundle served. @default 2 GiB */
  maxBytes?: number
  /** Transfers served at once (over all peers); more are answered `busy`. @default 4 */
  maxConcurrent?: number
  /** Time bound of one served transfer. @default 10 min */
  timeoutMs?: number
  /** Where bundles are built. @default the repository's git dir */
  tmpDir?: string
  /** Bundle bytes per DATA frame (at most 1 MiB). @default 64 KiB */
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

interface Resolved { oid: string, ref: string | null }

/**
 * Serves `repoDir`'s branches (`refs/heads/*`, or commits reachable from them)
 * to mesh peers over `/meshwork/git/1`.
 */
export async function serveGit (node: MeshNode, repoDir: string, opts: ServeGitOptions = {}): Promise<GitServer> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_TRANSFER_BYTES
  const maxConcurrent = Math.max(1, opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT_SERVES)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS
  const chunkBytes = Math.max(1, Math.min(opts.chunkBytes ?? DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES))
  const log = opts.logger ?? silentLogger
  const stats: GitServeStats = { served: 0, upToDate: 0, failed: 0, bytesSent: 0 }
  const gitDir = await gitCommonDir(repoDir)
  const objectsDir = join(gitDir, 'objects')
  const format = await objectFormat(repoDir)
  const running = new Set<Promise<void>>()
  const controllers = new Set<AbortController>()
  let active = 0
  let closed = false

  const resolveWant = async (want: string, signal: AbortSignal): Promise<Resolved> => {
    const opt = { cwd: repoDir, signal, allowFail: true }
    if (OID_RE.test(want)) {
      if (await objectType(repoDir, want, signal) !== 'commit') throw new ServeRefusal('not-found', `no commit ${want}`)
      // only what the branches reach is served
      const res = await git(['for-each-ref', '--count=1', '--format=%(refname)', `--contains=${want}`, 'refs/heads/'], opt)
      if (res.code !== 0 || res.stdout.toString('utf8').trim() === '') throw new ServeRefusal('not-found', `no branch contains ${want}`)
      return { oid: want, ref: null }
    }
    if (!want.startsWith('refs/heads/')) throw new ServeRefusal('refused', `only refs under refs/heads/ are served, not ${JSON.stringify(want)}`)
    if (!await isValidRefName(repoDir, want)) throw new ServeRefusal('bad-request', `invalid ref name ${JSON.stringify(want)}`)
    const oid = await refOid(repoDir, want, signal)
    if (oid === null) throw new ServeRefusal('not-found', `no branch ${want}`)
    if (await objectType(repoDir, oid, signal) !== 'commit') throw new ServeRefusal('not-found', `${want} is not a commit`)
    return { oid, ref: want }
  }

  const parseRequest = (frame: Frame): { want: string, haves: string[] } => {
    if (frame.tag !== GitFrame.REQUEST) throw new ServeRefusal('bad-request', `expected a REQUEST frame, got tag ${frame.tag}`)
    let req: Record<string, unknown>
    try {
      req = parseJson(frame.body, 'REQUEST')
    } catch (err) {
      throw new ServeRefusal('bad-request', toError(err).message)
    }
    const { want, haves } = req
    if (typeof want !== 'string' || want === '' || want.length > MAX_WANT_LENGTH) throw new ServeRefusal('bad-request', '`want` must be a ref name or an oid')
    if (haves !== undefined && (!Array.isArray(haves) || haves.length > MAX_HAVES || !haves.every(isOid))) {
      throw new ServeRefusal('bad-request', `\`haves\` must be at most ${MAX_HAVES} full oids`)
    }
    return { want, haves: (haves ?? []) as string[] }
  }

  const serveOne = async (stream: Stream, peer: string): Promise<void> => {
    const ac = new AbortController()
    controllers.add(ac)
    const timeout = AbortSignal.timeout(timeoutMs)
    const signal = AbortSignal.any([ac.signal, timeout])
    const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_FRAME_BYTES })
    let tmp: string | undefined
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
      const resolved = await resolveWant(req.want, signal)
      const haves = await presentCommits(repoDir, req.haves, signal)
      if (haves.length > 0) {
        const missing = await gitText(['rev-list', '--max-count=1', resolved.oid, '--not', ...haves], { cwd: repoDir, signal })
        if (missing === '') {
          await lp.write(encodeJsonFrame(GitFrame.HEADER, { oid: resolved.oid, ref: req.want, upToDate: true, bytes: 0 }), { signal })
          await stream.close({ signal })
          stats.upToDate++
          log.debug('git:serve-up-to-date', { peer, want: req.want, oid: resolved.oid })
          return
        }
      }
      // Build the bundle in a throwaway bare repo that borrows our objects: a
      // bundle needs a ref, and a fixed ref keeps the announced oid exact even if
      // the branch moves meanwhile.
      tmp = await mkdtemp(join(opts.tmpDir ?? gitDir, 'meshwork-serve-'))
      const scratch = join(tmp, 'scratch.git')
      const file = join(tmp, 'out.bundle')
      await git(['init', '--quiet', '--bare', '--template=', `--object-format=${format}`, scratch], { cwd: tmp, signal })
      await mkdir(join(scratch, 'objects', 'info'), { recursive: true })
      await writeFile(join(scratch, 'objects', 'info', 'alternates'), objectsDir + '\n')
      const inScratch = { cwd: tmp, signal, env: { GIT_DIR: scratch } }
      const bundleRef = resolved.ref ?? 'refs/heads/meshwork-want'
      await git(['update-ref', bundleRef, resolved.oid], inScratch)
      await git(['bundle', 'create', '--quiet', file, bundleRef, ...haves.map(h => `^${h}`)], inScratch)
      const size = (await stat(file)).size
      if (size > maxBytes) throw new ServeRefusal('too-large', `bundle of ${req.want} is ${size} bytes, more than this server's limit of ${maxBytes}`)
      await lp.write(encodeJsonFrame(GitFrame.HEADER, { oid: resolved.oid, ref: req.want, upToDate: false, bytes: size }), { signal })

      const fh = await open(file, 'r')
      const hash = createHash('sha256')
      let offset = 0 // bytes sent
      let acked = 0
      try {
        const buf = Buffer.allocUnsafe(chunkBytes)
        while (offset < size) {
          const n = Math.min(chunkBytes, size - offset)
          while (offset > acked && offset - acked + n > WINDOW_BYTES) {
            const ack = await readFrame(lp, signal)
            if (ack.tag !== GitFrame.ACK) throw new ServeRefusal('bad-request', `expected an ACK frame, got tag ${ack.tag}`)
            const { bytes } = parseJson(ack.body, 'ACK')
            if (!isCount(bytes) || bytes < acked || bytes > offset) throw new ServeRefusal('bad-request', `bad ACK of ${String(bytes)} bytes (sent ${offset})`)
            acked = bytes
          }
          const { bytesRead } = await fh.read(buf, 0, n, offset)
          if (bytesRead === 0) throw new Error('bundle file shrank while being sent')
          const piece = buf.subarray(0, bytesRead)
          hash.update(piece)
          await lp.write(encodeFrame(GitFrame.DATA, piece), { signal })
          offset += bytesRead
        }
      } finally {
        await fh.close()
      }
      await lp.write(encodeJsonFrame(GitFrame.END, { bytes: offset, sha256: hash.digest('hex') }), { signal })
      await stream.close({ signal })
      stats.served++
      stats.bytesSent += offset
      log.debug('git:served', { peer, want: req.want, oid: resolved.oid, bytes: offset, haves: haves.length, ms: Date.now() - started })
    } catch (err) {
      stats.failed++
      const e = toError(err)
      const code = e instanceof ServeRefusal
        ? e.code
        : timeout.aborted ? 'timeout' : 'server'
      const message = e instanceof ServeRefusal ? e.message : timeout.aborted ? `transfer took longer than ${timeoutMs} ms` : `serving failed: ${e.message.slice(0, 500)}`
      log.debug('git:serve-failed', { peer, code, error: e.message })
      if (stream.writeStatus === 'writable' && !ac.signal.aborted) {
        // tell the requester why (after whatever it has not read yet), then close
        try {
          const bounded = AbortSignal.any([ac.signal, AbortSignal.timeout(2000)])
          await lp.write(encodeJsonFrame(GitFrame.ERROR, { code, message }), { signal: bounded })
          await stream.close({ signal: bounded })
          return
        } catch {}
      }
      stream.abort(e)
    } finally {
      if (tmp !== undefined) await rm(tmp, { recursive: true, force: true }).catch(() => {})
      if (counted) active--
      controllers.delete(ac)
    }
  }

  await node.host.handle(GIT_PROTOCOL, (stream, connection) => {
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
      await node.host.unhandle(GIT_PROTOCOL).catch(() => {})
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
  /** Largest bundle accepted. @default 2 GiB */
  maxBytes?: number
  /** Time bound of the whole transfer. @default 10 min */
  timeoutMs?: number
  /** Where the bundle is received. @default the repository's git dir */
  tmpDir?: string
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
  /** Bundle bytes received (0 when up to date). */
  bytes: number
  /** The requester already had everything: nothing was transferred. */
  upToDate: boolean
}

/**
 * What to announce as haves: the current `intoRef`, tips of local branches (most
 * recent first) and recent first-parent history of `baseRef`, at most `MAX_HAVES`.
 */
export async function collectHaves (repoDir: string, opts: { intoRef?: string, baseRef?: string, signal?: AbortSignal } = {}): Promise<string[]> {
  const sig = opts.signal !== undefined ? { signal: opts.signal } : {}
  const out: string[] = []
  const seen = new Set<string>()
  const add = (oid: string): void => {
    if (isOid(oid) && !seen.has(oid) && out.length < MAX_HAVES) {
      seen.add(oid)
      out.push(oid)
    }
  }
  if (opts.intoRef !== undefined) {
    const cur = await refOid(repoDir, opts.intoRef, opts.signal).catch(() => null)
    if (cur !== null) add(cur)
  }
  const tips = await git(['for-each-ref', '--sort=-committerdate', `--count=${MAX_HAVES / 2}`, '--format=%(objectname)', 'refs/heads/'], { cwd: repoDir, allowFail: true, ...sig })
  if (tips.code === 0) for (const line of tips.stdout.toString('utf8').split('\n')) add(line.trim())
  const base = opts.baseRef ?? 'HEAD'
  if (base === 'HEAD' || base.startsWith('refs/')) {
    const hist = await git(['rev-list', '--first-parent', `--max-count=${MAX_HAVES}`, base, '--'], { cwd: repoDir, allowFail: true, ...sig })
    if (hist.code === 0) for (const line of hist.stdout.toString('utf8').split('\n')) add(line.trim())
  }
  return out
}

type Received =
  | { upToDate: true, oid: string }
  | { upToDate: false, oid: string, bytes: number }

/**
 * Fetches `want` (a branch `refs/heads/…` or a commit oid) from a peer into
 * `intoRef` (force-updated). Only objects the peer cannot prove we have travel.
 * On any failure the local repository is left as it was and a
 * `GitTransferError` says why.
 */
export async function fetchFromPeer (node: MeshNode, peer: string | PeerId, repoDir: string, want: string, opts: FetchFromPeerOptions = {}): Promise<FetchResult> {
  const peerText = peer.toString()
  const log = opts.logger ?? silentLogger
  if (typeof want !== 'string' || want === '' || want.length > MAX_WANT_LENGTH || /[\0-\x1f\x7f]/.test(want)) {
    throw new GitTransferError('bad-request', `invalid want ${JSON.stringify(want)}`)
  }
  let gitDir: string
  try {
    gitDir = await gitCommonDir(repoDir)
  } catch (err) {
    throw new GitTransferError('local', `${repoDir} is not a git repository: ${toError(err).message}`, { cause: err })
  }
  const intoRef = opts.intoRef ?? (OID_RE.test(want) ? undefined : want)
  if (intoRef === undefined) throw new GitTransferError('bad-request', 'intoRef is required when fetching an oid')
  if (!await isValidRefName(repoDir, intoRef)) throw new GitTransferError('bad-request', `invalid intoRef ${JSON.stringify(intoRef)}`)
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
  let tmp: string | undefined
  try {
    const haves = (opts.haves ?? await collectHaves(repoDir, { intoRef, ...(opts.baseRef !== undefined ? { baseRef: opts.baseRef } : {}), signal })).filter(isOid).slice(0, MAX_HAVES)
    tmp = await mkdtemp(join(opts.tmpDir ?? gitDir, 'meshwork-fetch-'))
    const file = join(tmp, 'in.bundle')
    const got = await receiveBundle(node, peer, want, haves, file, maxBytes, signal)
    const local = { cwd: repoDir, signal }
    const protectCheckedOut = async (): Promise<void> => {
      if (opts.updateHeadOk !== true && (await checkedOutBranches(repoDir, signal)).has(intoRef)) {
        throw new GitTransferError('bad-request', `${intoRef} is checked out; pass updateHeadOk to update it anyway`)
      }
    }

    if (got.upToDate) {
      // the peer says we have it: check, then point intoRef at it
      if (await objectType(repoDir, got.oid, signal) !== 'commit') {
        throw new GitTransferError('protocol', `peer ${peerText} said we are up to date with ${got.oid}, which we do not have`, { peer: peerText })
      }
      if (await refOid(repoDir, intoRef, signal) !== got.oid) {
        await protectCheckedOut()
        await git(['update-ref', '-m', `meshwork: fetch ${want} from ${peerText}`, intoRef, got.oid], local)
      }
      log.debug('git:fetch-up-to-date', { peer: peerText, want, oid: got.oid })
      return { oid: got.oid, bytes: 0, upToDate: true }
    }

    const verify = await git(['bundle', 'verify', '--quiet', file], { ...local, allowFail: true })
    if (verify.code !== 0) {
      throw new GitTransferError('bad-bundle', `bundle from ${peerText} failed verification: ${verify.stderr.trim().split('\n').slice(-2).join(' | ')}`, { peer: peerText })
    }
    const heads = await git(['bundle', 'list-heads', file], { ...local, allowFail: true })
    const lines = heads.code === 0 ? heads.stdout.toString('utf8').trim().split('\n').filter(l => l !== '') : []
    const entry = lines.length === 1 ? /^([0-9a-f]{40}|[0-9a-f]{64}) (refs\/[^\s:^~?*[\\]+)$/.exec(lines[0] as string) : null
    if (entry === null || entry[1] !== got.oid) {
      throw new GitTransferError('bad-bundle', `bundle from ${peerText} does not hold exactly the announced ${got.oid}`, { peer: peerText })
    }
    await protectCheckedOut()
    const args = ['-c', 'transfer.fsckObjects=true', 'fetch', '--quiet', '--no-tags', '--no-write-fetch-head', '--no-recurse-submodules']
    if (opts.updateHeadOk === true) args.push('--update-head-ok')
    const res = await git([...args, file, `+${entry[2] as string}:${intoRef}`], { ...local, allowFail: true })
    if (res.code !== 0) {
      // the bundle passed verify, so a failure is its pack's fault unless git says the problem is local
      const isLocal = /cannot lock ref|unable to (?:create|write|open)|permission denied|no space left|quota|read-only file system|refusing to fetch/i.test(res.stderr)
      throw new GitTransferError(isLocal ? 'git' : 'bad-bundle',
        `git fetch of the bundle from ${peerText} failed: ${res.stderr.trim().split('\n').slice(-3).join(' | ')}`, { peer: peerText })
    }
    const now = await refOid(repoDir, intoRef, signal)
    if (now !== got.oid) throw new GitTransferError('git', `${intoRef} is ${String(now)} after the fetch, expected ${got.oid}`, { peer: peerText })
    log.debug('git:fetched', { peer: peerText, want, oid: got.oid, bytes: got.bytes, haves: haves.length, ms: Date.now() - started })
    return { oid: got.oid, bytes: got.bytes, upToDate: false }
  } catch (err) {
    throw fail(err)
  } finally {
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true }).catch(() => {})
  }
}

/** Dials the peer, sends the request and receives the bundle into `file` (checked for size and hash). */
async function receiveBundle (node: MeshNode, peer: string | PeerId, want: string, haves: string[], file: string, maxBytes: number, signal: AbortSignal): Promise<Received> {
  const peerText = peer.toString()
  const pid = typeof peer === 'string' ? peerIdFromString(peer) : peer
  let stream: Stream
  try {
    stream = await node.host.dialProtocol(pid, GIT_PROTOCOL, { signal })
  } catch (err) {
    if (signal.aborted) throw err
    throw new GitTransferError('unreachable', `cannot open ${GIT_PROTOCOL} to ${peerText}: ${toError(err).message}`, { peer: peerText, cause: err })
  }
  const lp = lpStream(stream, {
    maxDataLength: 1 + MAX_CHUNK_BYTES,
    // a well-behaved server never has more than a window (or one piece) in flight
    maxBufferSize: WINDOW_BYTES + MAX_CHUNK_BYTES + 64 * 1024
  })
  const protocolError = (message: string): GitTransferError => new GitTransferError('protocol', `peer ${peerText}: ${message}`, { peer: peerText })
  const remoteError = (frame: Frame): GitTransferError => {
    const e = parseJson(frame.body, 'ERROR') // throws a protocol error if malformed
    if (typeof e.code !== 'string' || typeof e.message !== 'string') return protocolError('malformed ERROR frame')
    const code = (REMOTE_CODES.has(e.code) ? e.code : 'server') as GitTransferErrorCode
    return new GitTransferError(code, `peer ${peerText}: ${e.message.slice(0, 1000)}`, { peer: peerText })
  }
  try {
    await lp.write(encodeJsonFrame(GitFrame.REQUEST, { want, haves }), { signal })
    const first = await readFrame(lp, signal)
    if (first.tag === GitFrame.ERROR) throw remoteError(first)
    if (first.tag !== GitFrame.HEADER) throw protocolError(`expected a HEADER frame, got tag ${first.tag}`)
    const header = parseJson(first.body, 'HEADER')
    if (!isOid(header.oid)) throw protocolError('HEADER without a valid oid')
    if (isOid(want) && header.oid !== want) throw protocolError(`asked for ${want}, offered ${header.oid}`)
    if (header.upToDate === true) {
      await stream.close({ signal }).catch(() => {})
      return { upToDate: true, oid: header.oid }
    }
    if (!isCount(header.bytes)) throw protocolError('HEADER without a valid size')
    const size = header.bytes
    if (size > maxBytes) {
      throw new GitTransferError('too-large', `peer ${peerText} offers a ${size}-byte bundle of ${want}, more than the limit of ${maxBytes} bytes`, { peer: peerText })
    }
    const hash = createHash('sha256')
    let received = 0
    let acked = 0
    const fh = await open(file, 'wx')
    try {
      for (;;) {
        const frame = await readFrame(lp, signal)
        if (frame.tag === GitFrame.DATA) {
          if (frame.body.length === 0) throw protocolError('empty DATA frame')
          received += frame.body.length
          if (received > size) {
            throw received > maxBytes
              ? new GitTransferError('too-large', `peer ${peerText} sent more than the limit of ${maxBytes} bytes`, { peer: peerText })
              : protocolError(`sent more than the announced ${size} bytes`)
          }
          hash.update(frame.body)
          await fh.write(frame.body)
          if (received - acked >= ACK_BYTES) {
            acked = received
            await lp.write(encodeJsonFrame(GitFrame.ACK, { bytes: received }), { signal })
          }
        } else if (frame.tag === GitFrame.END) {
          const end = parseJson(frame.body, 'END')
          if (end.bytes !== received || received !== size) throw protocolError(`bundle ended after ${received} of ${size} bytes`)
          if (end.sha256 !== hash.digest('hex')) throw protocolError('bundle hash mismatch')
          break
        } else if (frame.tag === GitFrame.ERROR) {
          throw remoteError(frame)
        } else {
          throw protocolError(`unexpected frame tag ${frame.tag}`)
        }
      }
    } finally {
      await fh.close()
    }
    await stream.close({ signal }).catch(() => {})
    return { upToDate: false, oid: header.oid, bytes: received }
  } catch (err) {
    stream.abort(toError(err))
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
export async function cloneFromPeer (node: MeshNode, peer: string | PeerId, dir: string, branch = 'main', opts: CloneFromPeerOptions = {}): Promise<FetchResult> {
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
