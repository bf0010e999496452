/**
 * The serving side of `/meshwork/git/2`: resolves a request against the
 * repository's branches and streams `git pack-objects` output as DATA frames
 * within the flow-control window. The repository is never written to.
 */
import { createHash } from 'node:crypto'
import type { Stream } from '@libp2p/interface'
import { FramedStream, StreamIdleError, closeStream, encodeJsonFrame, parseJson, type Frame } from '../../protocol/frame.ts'
import {
  GIT_PROTOCOL, GitFrame, MAX_CHUNK_BYTES, MAX_HAVES, MAX_REQUEST_FRAME_BYTES, WINDOW_BYTES, gitAckSchema, gitRequestSchema
} from '../../protocol/git.ts'
import { git, spawnGit, type GitProcess } from '../git.ts'
import { OID_RE, isOid, isWellFormedRefName } from '../repo.ts'
import { toError } from '../../util/errors.ts'
import { silentLogger, type Logger } from '../../util/logger.ts'
import {
  DEFAULT_CHUNK_BYTES, DEFAULT_MAX_CONCURRENT_SERVES, DEFAULT_MAX_TRANSFER_BYTES, DEFAULT_TRANSFER_TIMEOUT_MS, lastLines, readFrame, type GitStreams
} from './wire.ts'
import { batchCheck, repoInfo } from './quarantine.ts'
import { GIT_IDLE_MS, GIT_SERVES_PER_PEER, STREAM_IDLE_MS } from '../../node/constants.ts'
import { PackReuse, packKey, type KeptPack } from './pack-reuse.ts'

/** A pack file starts with `PACK`, version 2 or 3, and a 4-byte object count. */
const PACK_HEADER_BYTES = 12
/**
 * How long a commit looked up for a request counts as known here without
 * looking again (see `serveGit`'s `onBranch` and `present`). @default 10 s
 */
export const KNOWN_COMMIT_TTL_MS = 10_000
/** Known commits kept at most; past it, the expired ones are dropped. */
const KNOWN_COMMITS_MAX = 1024
export interface ServeGitOptions {
  /** Largest pack served. @default 2 GiB */
  maxBytes?: number
  /**
   * Transfers served at once (over all peers); past it, a request is served only when a pack
   * kept for reuse (or being made) answers it without a git process, and otherwise answered
   * `busy` (`maxConcurrent * 4` streams at most). @default 4
   */
  maxConcurrent?: number
  /** Transfers served to one peer at once; more are answered `busy`. @default GIT_SERVES_PER_PEER (2) */
  maxPerPeer?: number
  /** How long the request may take to arrive. @default STREAM_IDLE_MS */
  requestIdleMs?: number
  /** How long the requester may then go without sending (its ACKs). @default GIT_IDLE_MS */
  idleMs?: number
  /** Time bound of one served transfer. @default 10 min */
  timeoutMs?: number
  /** Pack bytes per DATA frame (at most 1 MiB). @default 256 KiB */
  chunkBytes?: number
  /**
   * Commits surely here and on a branch, asked at each request: the mains the
   * local main was at lately (`MainFollower.recentMains`). A want or a have
   * among them needs no git process to look it up.
   */
  known?: () => readonly string[]
  /** How long a request waits for the same pack another request is making, before making its own. @default PACK_REUSE_WAIT_MS (2 s) */
  packReuseWaitMs?: number
  /** How long a pack made here is kept to answer the same request again. @default PACK_REUSE_TTL_MS (10 s) */
  packReuseTtlMs?: number
  logger?: Logger
}

export interface GitServeStats {
  served: number
  upToDate: number
  failed: number
  bytesSent: number
  /** Requests answered `busy` because their peer had `maxPerPeer` transfers running already. */
  busyPerPeer: number
  /** Transfers given up because the requester sent nothing for the idle time (its request, or its ACKs). */
  idle: number
  /** Requests whose want and haves were all known commits (no git process to look them up). */
  knownWants: number
  /** Packs sent again as made for an earlier request of the same commit and have (no `git pack-objects`). */
  packsReused: number
}

export interface GitServer {
  /** Transfers in progress. */
  readonly active: number
  /** Transfers in progress for `peer`. */
  activeFor: (peer: string) => number
  readonly stats: GitServeStats
  /**
   * `oid` is a commit a branch of this repository points to now (a task's
   * commit, just made): a request for it in the next `KNOWN_COMMIT_TTL_MS`
   * is served without looking it up.
   */
  vouch: (oid: string) => void
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
  constructor (source: AsyncIterable<Buffer> | Iterable<Buffer>) {
    this.it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : (async function * () { yield * source })()
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
  const maxPerPeer = Math.max(1, opts.maxPerPeer ?? GIT_SERVES_PER_PEER)
  const requestIdleMs = opts.requestIdleMs ?? STREAM_IDLE_MS
  const idleMs = opts.idleMs ?? GIT_IDLE_MS
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS
  const chunkBytes = Math.max(1, Math.min(opts.chunkBytes ?? DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES))
  const log = opts.logger ?? silentLogger
  const stats: GitServeStats = { served: 0, upToDate: 0, failed: 0, bytesSent: 0, busyPerPeer: 0, idle: 0, knownWants: 0, packsReused: 0 }
  /** Peers whose per-peer refusal was logged (once each; bounded). */
  const refusedPeers = new Set<string>()
  await repoInfo(repoDir) // fails early on a directory that is not a repository
  const running = new Set<Promise<void>>()
  const controllers = new Set<AbortController>()
  let active = 0
  /** Transfers in progress by peer (an entry goes when its count reaches 0). */
  const perPeer = new Map<string, number>()
  let closed = false

  /**
   * Commits looked up here lately, until when they count as known
   * (`performance.now()`): `onBranch`, oid wants a branch contained (and
   * commits vouched for); `present`, haves that were commits here (which may
   * be on no branch: never served as a want on that account). After each
   * merge round every follower fetches the same new main with much the same
   * haves, a moment apart: the second and later requests are served without
   * the two git processes that look them up. A commit found here stays (git's
   * gc prunes only what nothing reaches, and only when old);
   * `KNOWN_COMMIT_TTL_MS` bounds how long a want stays served after a branch
   * that contained it was deleted.
   */
  const onBranch = new Map<string, number>()
  const present = new Map<string, number>()
  const remember = (into: Map<string, number>, oids: string[], now: number): void => {
    if (into.size + oids.length > KNOWN_COMMITS_MAX) for (const [o, until] of into) if (until <= now) into.delete(o)
    if (into.size + oids.length > KNOWN_COMMITS_MAX) into.clear()
    for (const o of oids) into.set(o, now + KNOWN_COMMIT_TTL_MS)
  }
  const fresh = (m: Map<string, number>, oid: string, now: number): boolean => (m.get(oid) ?? 0) > now

  /**
   * The want's commit and the haves that are commits here: one `cat-file
   * --batch-check` for the haves (and an oid want) and, side by side, one
   * `for-each-ref` that resolves a branch exactly (no DWIM: `refs/heads/x` never
   * falls back to `refs/tags/refs/heads/x`) or checks that a branch contains an
   * oid want; either only for what it does not know (above). `overBound`: the
   * server is past its bound, and a request that needs a git process is
   * refused with it instead.
   */
  const resolveRequest = async (want: string, haves: string[], signal: AbortSignal, overBound: ServeRefusal | null): Promise<Resolved> => {
    const isOidWant = OID_RE.test(want)
    if (!isOidWant) {
      if (!want.startsWith('refs/heads/')) throw new ServeRefusal('refused', `only refs under refs/heads/ are served, not ${JSON.stringify(want)}`)
      if (!isWellFormedRefName(want)) throw new ServeRefusal('bad-request', `invalid ref name ${JSON.stringify(want)}`)
    }
    const uniqueHaves = [...new Set(haves)]
    const now = performance.now()
    const recentMains = opts.known?.() ?? []
    const lately = new Set(recentMains)
    const wantKnown = isOidWant && (lately.has(want) || fresh(onBranch, want, now))
    // haves only spare bytes: with one known here, the others are left out rather than looked up (a commit
    // here that was left out only makes the pack larger by what lies between it and a known one)
    const knownHaves = uniqueHaves.filter(h => lately.has(h) || fresh(onBranch, h, now) || fresh(present, h, now))
    const unknownHaves = knownHaves.length > 0 ? [] : uniqueHaves
    const lookUp = [...(isOidWant && !wantKnown ? [want] : []), ...unknownHaves]
    if (overBound !== null && (!wantKnown || lookUp.length > 0)) throw overBound
    const opt = { cwd: repoDir, signal, allowFail: true }
    const [checks, refs] = await Promise.all([
      lookUp.length > 0 ? batchCheck(repoDir, lookUp, signal) : Promise.resolve([]),
      wantKnown
        ? null
        : isOidWant
          // only what the branches reach is served
          ? git(['for-each-ref', '--count=1', '--format=%(refname)', `--contains=${want}`, 'refs/heads/'], opt)
          : git(['for-each-ref', '--format=%(objectname) %(objecttype) %(refname)', want], opt)
    ])
    const refLines = refs !== null && refs.code === 0 ? refs.stdout.toString('utf8').split('\n').filter(l => l !== '') : []
    let oid: string
    if (wantKnown) {
      oid = want
    } else if (isOidWant) {
      const w = checks.shift()
      if (w === null || w === undefined || w.type !== 'commit') throw new ServeRefusal('not-found', `no commit ${want}`)
      if (refLines.length === 0) throw new ServeRefusal('not-found', `no branch contains ${want}`)
      oid = w.oid
      remember(onBranch, [oid], now)
    } else {
      const line = refLines.map(l => l.split(' ')).find(([, , name]) => name === want)
      if (line === undefined || !isOid(line[0])) throw new ServeRefusal('not-found', `no branch ${want}`)
      if (line[1] !== 'commit') throw new ServeRefusal('not-found', `${want} is not a commit`)
      oid = line[0]
      remember(onBranch, [oid], now)
    }
    if (lookUp.length === 0 && wantKnown) stats.knownWants++
    const found = unknownHaves.filter((_, i) => checks[i]?.type === 'commit')
    remember(present, found, now)
    // of the mains this node was at lately, the newest the requester has (or the want itself: up to date):
    // the mains before it are in its history, so the pack is the same without them, and requesters at the
    // same main ask for one pack (`PackReuse`)
    const newest = knownHaves.includes(oid) ? oid : recentMains.find(h => knownHaves.includes(h))
    return { oid, haves: newest !== undefined ? [newest] : knownHaves.length > 0 ? knownHaves : found }
  }

  /** Packs made lately, sent again to requests of the same commit from the same main (`PackReuse`). */
  const packs = new PackReuse({ ttlMs: opts.packReuseTtlMs, waitMs: opts.packReuseWaitMs })

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
    const lp = new FramedStream(stream, { maxDataLength: MAX_REQUEST_FRAME_BYTES, idleTimeoutMs: requestIdleMs })
    let pack: GitProcess | undefined
    /** The pack this request makes, kept for the same request from others (`PackReuse`). */
    let making: KeptPack | undefined
    let counted = false
    const started = Date.now()
    try {
      // past the bound, only a request that a pack kept or being made answers is served (below): sending kept
      // bytes costs no git process, and after a merge round every follower asks the leader for the same
      // new main at once (8 nodes: 7 requests; answered busy, they asked nodes without it, 2 a task)
      const busy = active
      const mine = perPeer.get(peer) ?? 0
      if (mine >= maxPerPeer) {
        stats.busyPerPeer++
        if (!refusedPeers.has(peer)) {
          refusedPeers.add(peer)
          if (refusedPeers.size > 1024) refusedPeers.delete(refusedPeers.values().next().value as string)
          log.warn('git:peer-busy', { peer, active: mine, note: `a peer may have ${maxPerPeer} git transfers served here at once; more are answered busy (logged once per peer, counted in the server's busyPerPeer)` })
        }
        throw new ServeRefusal('busy', `serving ${mine} transfers to ${peer} already (at most ${maxPerPeer} per peer)`)
      }
      active++
      perPeer.set(peer, mine + 1)
      counted = true
      let first: Frame
      try {
        first = await readFrame(lp, signal)
      } catch (err) {
        if (signal.aborted || err instanceof StreamIdleError) throw err
        throw new ServeRefusal('bad-request', `unreadable request: ${toError(err).message}`)
      }
      // the request is in: from here on the requester only sends ACKs, each after ACK_BYTES it read
      lp.idleTimeoutMs = idleMs
      const req = parseRequest(first)
      const overBound = busy >= maxConcurrent ? new ServeRefusal('busy', `serving ${busy} transfers already`) : null
      const { oid, haves } = await resolveRequest(req.want, req.haves, signal, overBound)
      const upToDate = async (): Promise<void> => {
        await lp.writeRaw(encodeJsonFrame(GitFrame.HEADER, { oid, ref: req.want, upToDate: true }), { signal })
        await closeStream(stream, idleMs)
        stats.upToDate++
        log.debug('git:serve-up-to-date', { peer, want: req.want, oid })
      }
      if (haves.includes(oid)) {
        await upToDate()
        return
      }
      // `oid` is fixed now: the pack is of that commit even if the branch moves meanwhile
      const key = packKey(oid, haves)
      const kept = packs.take(key)
      const reused = kept === null ? null : await kept
      // (none kept, or the one it waited for was not made whole in time: past the bound it makes no pack of its own)
      if (overBound !== null && reused === null) throw overBound
      let reader: StreamFiller
      if (reused !== null) {
        stats.packsReused++
        reader = new StreamFiller([reused])
      } else {
        pack = spawnGit(['pack-objects', '--revs', '--stdout', '--thin', '--delta-base-offset', '--quiet'], { cwd: repoDir, signal })
        pack.stdin.end([oid, ...haves.map(h => `^${h}`)].join('\n') + '\n')
        making = packs.keep(key)
        reader = new StreamFiller(making.tee(pack.stdout))
      }
      // pack-objects writes the header once it has counted the objects: none means nothing is missing
      const header = Buffer.alloc(PACK_HEADER_BYTES)
      if (await reader.fill(header) < PACK_HEADER_BYTES || header.subarray(0, 4).toString('latin1') !== 'PACK') {
        const { code, stderr } = pack !== undefined ? await pack.exited : { code: null, stderr: 'a kept pack without its header' }
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
      if (pack !== undefined) {
        const { code, stderr } = await pack.exited
        if (code !== 0) throw new Error(`git pack-objects failed (${String(code)}): ${lastLines(stderr, 3)}`)
        making?.done()
      }
      await lp.writeRaw(encodeJsonFrame(GitFrame.END, { bytes: offset, sha256: hash.digest('hex') }), { signal })
      await closeStream(stream, idleMs)
      stats.served++
      stats.bytesSent += offset
      log.debug('git:served', { peer, want: req.want, oid, bytes: offset, haves: haves.length, ms: Date.now() - started })
    } catch (err) {
      stats.failed++
      const e = toError(err)
      const idle = e instanceof StreamIdleError
      if (idle) stats.idle++
      const code = e instanceof ServeRefusal
        ? e.code
        : timeout.aborted || idle ? 'timeout' : 'server'
      const message = e instanceof ServeRefusal ? e.message : timeout.aborted ? `transfer took longer than ${timeoutMs} ms` : idle ? `the requester sent nothing: ${e.message}` : `serving failed: ${e.message.slice(0, 500)}`
      log.debug('git:serve-failed', { peer, code, error: e.message })
      pack?.kill()
      if (stream.writeStatus === 'writable' && !ac.signal.aborted) {
        // tell the requester why (after whatever it has not read yet), then close
        try {
          const bounded = AbortSignal.any([ac.signal, AbortSignal.timeout(2000)])
          await lp.writeRaw(encodeJsonFrame(GitFrame.ERROR, { code, message }), { signal: bounded })
          await closeStream(stream, 2000)
          return
        } catch {}
      }
      stream.abort(e)
    } finally {
      pack?.kill()
      // a pack not made to its end is not kept: those waiting for it make their own
      making?.drop()
      if (counted) {
        active--
        const left = (perPeer.get(peer) ?? 1) - 1
        if (left > 0) perPeer.set(peer, left)
        else perPeer.delete(peer)
      }
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
    activeFor: (peer: string) => perPeer.get(peer) ?? 0,
    stats,
    vouch: (oid: string) => { if (isOid(oid)) remember(onBranch, [oid], performance.now()) },
    close: async () => {
      if (closed) return
      closed = true
      await node.unhandle(GIT_PROTOCOL).catch(() => {})
      for (const ac of controllers) ac.abort(new Error('git server closed'))
      await Promise.race([Promise.allSettled([...running]), new Promise(resolve => setTimeout(resolve, 5000).unref())])
    }
  }
}
