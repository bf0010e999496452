import { TopicValidatorResult } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream, Connection, StreamHandler, StreamHandlerOptions, AbortOptions, PeerId } from '@libp2p/interface'
import { withTimeout, type Startable } from './service.ts'
import type { Gossip } from './gossip.ts'
import { MAX_GOSSIP_BYTES, MAX_REFUSED_AUTHORS, STREAM_IDLE_MS, SYNC_REFUSED_RETRIES, SYNC_SERVE_MS, SYNC_SESSION_MS, SYNC_STARTS_PER_PEER, SYNC_STREAMS_PER_PEER } from './constants.ts'
import { PeerStreamLimiter, serveBounded, type PeerLimits } from './peer-limits.ts'
import { Board, BoardAuthorRefusedError, BoardForgedChangeError, actorBelongsTo, peerTagOfActor, type BoardUpdate } from '../crdt/board.ts'
import type { BoardStore } from '../crdt/store.ts'
import { runSyncSession } from '../crdt/sync.ts'
import { decodeBoardGossip, encodeBoardChange, encodeBoardHeads } from '../protocol/board-gossip.ts'
import { SYNC_PROTOCOL } from '../protocol/sync.ts'
import { StreamIdleError } from '../protocol/frame.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import { countBounded, type Forgotten } from '../util/bounded.ts'

/** Sync sessions a heartbeat showing missing heads may start while others run. */
const MAX_HEARTBEAT_SYNCS = 2

/** What of the libp2p host stream protocols use. */
export interface StreamHost {
  readonly status: string
  handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
  unhandle: (protocol: string) => Promise<void>
  dialProtocol: (peer: PeerId, protocols: string | string[], options?: AbortOptions) => Promise<Stream>
}

/** Counters the replication keeps (part of the node's `stats`). */
export interface ReplicationStats {
  syncSessions: number
  syncFailures: number
  changesBroadcast: number
  changesReceived: number
  /** Bytes of anti-entropy sync sessions, both directions. */
  syncBytes: { in: number, out: number }
  /**
   * Board changes refused for their author (not on `--allow`, or a write its role does not allow),
   * by author: its peer id when the peer that sent them wrote them, else the author's actor tag.
   */
  refusedAuthors: Record<string, number>
  /** Authors dropped from `refusedAuthors` to keep it within MAX_REFUSED_AUTHORS (least recently refused first), and their changes. */
  refusedForgotten: Forgotten
  /** Inbound streams refused or dropped by a per-peer bound, by `protocol:reason` (`sync:too-fast`, `sync:too-many-streams`, `sync:idle`). */
  streamsRefused: Record<string, number>
}

export interface BoardReplicationComponents {
  board: Board
  /** Where a node persists the board; null for a light client. */
  store: BoardStore | null
  gossip: Gossip
  /** The board gossip topic. */
  topic: string
  streams: StreamHost
  /** The presence period: a peer whose heads stay ahead for two of them is synced with. */
  heartbeatMs: number
  stats: ReplicationStats
  logger: Logger
  /** Per-peer bounds on inbound sync sessions. @default SYNC_STREAMS_PER_PEER at once, SYNC_STARTS_PER_PEER */
  syncLimits?: PeerLimits
  /** How long a sync stream may go without a frame. @default STREAM_IDLE_MS */
  idleMs?: number
  /** Monotonic clock in ms (tests inject one). */
  now?: () => number
}

/**
 * Board replication: every local change is written to disk, then gossiped
 * (or, too large for gossip, announced by its heads); gossiped changes are
 * checked (signed by their author's actor) and applied; anti-entropy sessions
 * over `/meshwork/sync/1` fill any gap.
 */
export class BoardReplication implements Startable {
  readonly #c: BoardReplicationComponents
  readonly #log: Logger
  #persistQueue: Promise<void> = Promise.resolve()
  #storeClosed = false
  #started = false
  #stopped = false
  readonly #syncing = new Map<string, Promise<boolean>>()
  /**
   * Peers whose heartbeat showed heads this board lacks: the latest such heads,
   * since when, and the check due `2 * heartbeatMs` after the first (null: it
   * found the sync sessions full; the peer's next heartbeat that still shows
   * the gap starts one).
   */
  readonly #syncWanted = new Map<string, { since: number, heads: string[], timer: NodeJS.Timeout | null }>()
  readonly #limiter: PeerStreamLimiter
  readonly #idleMs: number

  constructor (components: BoardReplicationComponents) {
    this.#c = components
    this.#log = components.logger
    this.#idleMs = components.idleMs ?? STREAM_IDLE_MS
    this.#limiter = new PeerStreamLimiter(components.syncLimits ?? { maxConcurrent: SYNC_STREAMS_PER_PEER, ...SYNC_STARTS_PER_PEER }, components.now)
    components.gossip.route(components.topic, {
      validate: (msg, from) => this.#validate(msg.data, from),
      handle: (msg, from) => { this.#handle(msg.data, from) }
    })
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.#c.streams.handle(SYNC_PROTOCOL, (stream, conn) => { this.#admitSync(stream, conn) }, { maxInboundStreams: 64, maxOutboundStreams: 64 })
  }

  /** Peers the sync limits keep state for now (see `prune`). */
  get limitedPeers (): number {
    return this.#limiter.size
  }

  /**
   * Drops per-peer state no longer needed: sync limits of peers quiet again,
   * and heads-ahead marks older than `staleMs` (their peer went quiet before
   * the two heartbeats that would start a sync; a later heartbeat marks it again).
   */
  prune (staleMs = 30 * this.#c.heartbeatMs): void {
    this.#limiter.prune()
    const now = Date.now()
    for (const [peer, wanted] of this.#syncWanted) if (now - wanted.since > staleMs) this.#unwant(peer)
  }

  /** Forgets that `peer` showed heads ahead of this board. */
  #unwant (peer: string): void {
    const wanted = this.#syncWanted.get(peer)
    if (wanted === undefined) return
    if (wanted.timer !== null) clearTimeout(wanted.timer)
    this.#syncWanted.delete(peer)
  }

  /** Waits (bounded) for pending writes, then closes the store. Call after the host stopped. */
  async stop (): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    for (const peer of [...this.#syncWanted.keys()]) this.#unwant(peer)
    await withTimeout(this.#persistQueue, 5000).catch(() => {})
    this.#storeClosed = true
    await withTimeout(this.#c.store?.close() ?? Promise.resolve(), 5000).catch(() => {})
  }

  /** Starts receiving gossiped changes (nodes at once, light clients after their first sync). */
  follow (): void {
    this.#c.gossip.subscribe(this.#c.topic)
  }

  /** Resolves once every board write so far is on disk (and handed to gossip). */
  async flush (): Promise<void> {
    await this.#persistQueue
  }

  /** A board change happened (local or applied from a peer): persist it, then gossip it. */
  /** The board heads last written to disk (null before the first write: the loaded board is on disk). */
  #durableHeads: string[] | null = null

  /** The heads this node may acknowledge: only what is on disk (a claim counts as seen here once it would survive a crash). */
  durableHeads (): string[] {
    return this.#durableHeads ?? this.#c.board.heads()
  }

  onUpdate (update: BoardUpdate): void {
    const store = this.#c.store
    const board = this.#c.board
    // a change is on disk before it is acknowledged to anyone: write, then publish
    this.#persistQueue = this.#persistQueue.then(async () => {
      if (store !== null && !this.#storeClosed) {
        const heads = board.heads()
        await store.append(board)
        this.#durableHeads = heads
      }
      for (const change of update.changes) await this.#broadcastChange(change)
    }).catch(err => {
      this.#log.error('board:persist-failed', { error: toError(err).message })
    })
  }

  async #broadcastChange (change: Uint8Array): Promise<void> {
    // too large for gossip: announce the new heads; peers pull over the sync protocol
    const msg = change.length + 1 <= MAX_GOSSIP_BYTES ? encodeBoardChange(change) : encodeBoardHeads(this.#c.board.heads())
    this.#c.stats.changesBroadcast++
    await this.#c.gossip.publish(this.#c.topic, msg)
  }

  #validate (data: Uint8Array, from: string): TopicValidatorResult {
    const gossip = this.#c.gossip
    if (data.length > MAX_GOSSIP_BYTES) return gossip.reject('oversized', from)
    const m = decodeBoardGossip(data)
    if (m.kind === 'invalid') return gossip.reject(m.reason, from)
    if (m.kind === 'change') {
      try {
        const decoded = this.#c.board.checkChange(m.change)
        if (!actorBelongsTo(decoded.actor, from)) return gossip.reject('foreign-actor', from)
      } catch (err) {
        return gossip.reject(this.#refused(err, from) ? 'forbidden-write' : 'bad-change', from)
      }
    }
    return TopicValidatorResult.Accept
  }

  #handle (data: Uint8Array, from: string): void {
    const m = decodeBoardGossip(data)
    if (m.kind === 'change') {
      this.#c.stats.changesReceived++
      try {
        this.#c.board.applyChanges([m.change])
      } catch (err) {
        // the role rules that need the change's history run once it is applied (and rolled back)
        if (!this.#refused(err, from)) throw err
        this.#c.gossip.reject('forbidden-write', from)
      }
    } else if (m.kind === 'heads') {
      if (!this.#c.board.hasHeads(m.heads)) void this.requestSync(from)
    }
  }

  /**
   * A peer's heartbeat showed `heads`. If they are ahead of ours: sync if the
   * heads it showed last are still not all here two heartbeat periods after
   * the first such heartbeat (`heartbeatMs`: the usual period, also in a large
   * mesh whose heartbeats come further apart) and fewer than
   * MAX_HEARTBEAT_SYNCS sessions are running (else at a later heartbeat that
   * still shows the gap). While changes are being written, heads differ
   * everywhere for a gossip round; on a busy host a round lasts seconds, and
   * syncing with every such peer at once (up to N x N sessions) loaded the
   * host further and made every round longer still.
   */
  peerHeads (peer: string, heads: string[]): void {
    if (heads.length === 0 || this.#c.board.hasHeads(heads)) {
      this.#unwant(peer)
      return
    }
    const wanted = this.#syncWanted.get(peer)
    if (wanted !== undefined) {
      wanted.heads = heads
      // its check found the sessions full: this heartbeat still shows the gap
      if (wanted.timer === null && this.#syncing.size < MAX_HEARTBEAT_SYNCS) {
        this.#unwant(peer)
        void this.requestSync(peer)
      }
      return
    }
    const timer = setTimeout(() => { this.#recheck(peer) }, 2 * this.#c.heartbeatMs)
    timer.unref()
    this.#syncWanted.set(peer, { since: Date.now(), heads, timer })
  }

  /** Two heartbeat periods after `peer` showed heads ahead of ours: sync with it if they are still not all here. */
  #recheck (peer: string): void {
    const wanted = this.#syncWanted.get(peer)
    if (wanted === undefined) return
    wanted.timer = null
    if (this.#stopped || this.#c.board.hasHeads(wanted.heads)) {
      this.#unwant(peer)
      return
    }
    if (this.#syncing.size >= MAX_HEARTBEAT_SYNCS) return
    this.#unwant(peer)
    void this.requestSync(peer)
  }

  /**
   * Runs an anti-entropy session with `peer` unless one is already running;
   * resolves true when it completed. The session may last `timeoutMs` (default
   * a minute), and the peer may answer nothing for as long (while it checks a
   * large change) when that is longer than the usual idle time.
   */
  requestSync (peer: string, opts: { timeoutMs?: number } = {}): Promise<boolean> {
    const running = this.#syncing.get(peer)
    if (running !== undefined) return running
    const timeoutMs = opts.timeoutMs ?? SYNC_SESSION_MS
    const idleMs = Math.max(this.#idleMs, opts.timeoutMs ?? 0)
    const run = (async () => {
      const streams = this.#c.streams
      try {
        for (let attempt = 0; ; attempt++) {
          if (streams.status !== 'started') return false
          let stream: Stream | undefined
          try {
            stream = await streams.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
            const res = await runSyncSession(this.#c.board, stream, true, AbortSignal.timeout(timeoutMs), idleMs)
            this.#c.stats.syncSessions++
            this.#c.stats.syncBytes.in += res.bytesIn
            this.#c.stats.syncBytes.out += res.bytesOut
            this.#log.debug('sync:done', { peer, ...res })
            return true
          } catch (err) {
            this.#c.stats.syncFailures++
            if (this.#refused(err, peer)) return false
            // reset by the peer: how it refuses a sync over its per-peer bounds; a slot is free again shortly
            const reset = stream?.status === 'reset'
            this.#log.debug('sync:failed', { peer, error: toError(err).message, ...(reset ? { reset, attempt } : {}) })
            if (!reset || attempt >= SYNC_REFUSED_RETRIES) return false
          }
          await new Promise(resolve => setTimeout(resolve, 250 * 2 ** attempt))
        }
      } finally {
        this.#syncing.delete(peer)
      }
    })()
    this.#syncing.set(peer, run)
    return run
  }

  /** Counts and logs changes refused for their author (`--allow`, or a write its role does not allow); false for any other error. */
  #refused (err: unknown, peer: string): boolean {
    if (!(err instanceof BoardAuthorRefusedError)) return false
    // a forgery (a change under another peer's actor without its signature) is the sender's doing, not the named author's
    const forged = err instanceof BoardForgedChangeError
    const authors = forged ? [peer] : err.actors.map(a => actorBelongsTo(a, peer) ? peer : peerTagOfActor(a))
    // bounded: a key holder can make up authors without end (the counts go to every client asking for members)
    for (const a of authors) countBounded(this.#c.stats.refusedAuthors, a, MAX_REFUSED_AUTHORS, this.#c.stats.refusedForgotten)
    this.#log.warn('board:refused', { peer, authors, reason: err.reason, ...(forged ? { forged: err.actors.map(a => a.slice(0, 12)) } : {}), note: 'refused whole (a sync session is dropped); other peers\' changes still arrive' })
    return true
  }

  /**
   * An inbound sync stream: served unless its peer holds SYNC_STREAMS_PER_PEER
   * sessions already or starts them faster than SYNC_STARTS_PER_PEER; a refused
   * stream is reset at once, counted, and logged once per peer.
   */
  #admitSync (stream: Stream, conn: Connection): void {
    const peer = conn.remotePeer.toString()
    serveBounded(this.#limiter, stream, peer, { name: 'sync', what: 'board syncs', counts: this.#c.stats.streamsRefused, logger: this.#log }, async () => { await this.#serveSync(stream, peer) })
  }

  #countRefused (key: string): void {
    const counts = this.#c.stats.streamsRefused
    counts[key] = (counts[key] ?? 0) + 1
  }

  async #serveSync (stream: Stream, peer: string): Promise<void> {
    try {
      const res = await runSyncSession(this.#c.board, stream, false, AbortSignal.timeout(SYNC_SERVE_MS), this.#idleMs)
      this.#c.stats.syncSessions++
      this.#c.stats.syncBytes.in += res.bytesIn
      this.#c.stats.syncBytes.out += res.bytesOut
    } catch (err) {
      this.#c.stats.syncFailures++
      if (err instanceof StreamIdleError) {
        this.#countRefused('sync:idle')
        this.#log.debug('sync:idle', { peer, error: err.message })
      } else if (!this.#refused(err, peer)) {
        this.#log.warn('sync:serve-failed', { peer, error: toError(err).message })
      }
      stream.abort(toError(err))
    }
  }
}

