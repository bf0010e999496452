import { monitorEventLoopDelay } from 'node:perf_hooks'
import { loadavg, availableParallelism } from 'node:os'
import { mkdir } from 'node:fs/promises'
import { MESHWORK_VERSION } from './version.ts'
import { TypedEventEmitter, type PeerId, type ConnectionGater, type Stream, type Connection } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString, peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import { createHost, type Host } from './host.ts'
import { loadOrCreateIdentity } from './identity.ts'
import type { SwarmKey } from './swarm-key.ts'
import { encodeJoinToken } from './join-token.ts'
import { Membership, type Member, type Transition } from './membership.ts'
import { decodePresence, encodePresence, decodeProgress, type Presence, type ProgressEvent } from './presence.ts'
import {
  DIAL_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, MAX_GOSSIP_BYTES, MAX_LEARNED_DIALS, MAX_STREAM_FRAME_BYTES, MEMBERS_PROTOCOL, PEER_TARGET, REDIAL_INTERVAL_MS, SYNC_PROTOCOL, topics
} from './constants.ts'
import { Board, actorForPeer, str, type BoardUpdate } from '../crdt/board.ts'
import { BoardStore, type LoadReport } from '../crdt/store.ts'
import { runSyncSession } from '../crdt/sync.ts'
import { acquireLock, type Lock } from './lock.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** A worker node (claims work, persists, heartbeats) or a light client (status, submit, tui). */
export type Role = 'node' | 'client'

export interface MeshNodeInit {
  role: Role
  swarmKey: SwarmKey
  /** Data dir (identity, board). Required for nodes; clients keep nothing on disk. */
  dataDir?: string
  listen?: string[]
  bootstrap?: string[]
  name?: string
  slots?: number
  suspectAfterMs?: number
  deadAfterMs?: number
  heartbeatMs?: number
  logger?: Logger
  connectionGater?: ConnectionGater
  /** May this node become merge leader? @default true for nodes */
  eligible?: boolean
  /** Test and benchmark knob: hold every inbound gossip message this long before handling it. */
  gossipDelayMs?: number
}

/** Counters of what the node dropped or did, for logs, status and tests. */
export interface NodeStats {
  gossipRejected: Record<string, number>
  syncSessions: number
  syncFailures: number
  changesBroadcast: number
  changesReceived: number
  invalidEntries: number
  /** Gossip this node published (all topics), for metrics. */
  gossipSent: { messages: number, bytes: number }
  /** Bytes of anti-entropy sync sessions, both directions, for metrics. */
  syncBytes: { in: number, out: number }
}

export interface MeshNodeEvents {
  'board:update': CustomEvent<BoardUpdate>
  'peer:state': CustomEvent<Transition>
  'presence': CustomEvent<Presence>
  'progress': CustomEvent<ProgressEvent>
}

/** What a node reports about the mesh's membership over `/meshwork/members/1`. */
export interface MembersView {
  self: string
  members: Member[]
  /** The latest agent progress event of each task this node has heard about. */
  progress?: Record<string, { kind: string, text: string, at: number, peerId: string }>
}

/** Sync sessions a heartbeat showing missing heads may start while others run. */
const MAX_HEARTBEAT_SYNCS = 2

/** How often the resident set size reported in heartbeats is sampled. */
const RSS_SAMPLE_MS = 10_000

/** Gossip board message tags. */
const MSG_CHANGE = 1
const MSG_HEADS = 2

/**
 * One meshwork peer: the libp2p host, the replicated board (gossip + anti-entropy
 * sync + persistence) and membership (presence heartbeats + failure detector).
 * Nodes and light clients are the same code with a different role: clients use
 * an ephemeral identity, keep nothing on disk and never announce presence, so
 * they never appear among the nodes.
 *
 * `start()` and `stop()` are idempotent; `stop()` is ordered and time-boxed.
 */
export class MeshNode extends TypedEventEmitter<MeshNodeEvents> {
  readonly role: Role
  readonly swarmKey: SwarmKey
  readonly membership: Membership
  readonly stats: NodeStats = { gossipRejected: {}, syncSessions: 0, syncFailures: 0, changesBroadcast: 0, changesReceived: 0, invalidEntries: 0, gossipSent: { messages: 0, bytes: 0 }, syncBytes: { in: 0, out: 0 } }
  readonly name: string
  slots: number
  /** Whether this node may become merge leader (false with --no-leader). */
  eligible: boolean
  #init: MeshNodeInit
  #log: Logger
  #host: Host | null = null
  #board: Board | null = null
  #store: BoardStore | null = null
  #lock: Lock | null = null
  #topics: ReturnType<typeof topics>
  #timers: NodeJS.Timeout[] = []
  #seq = 0
  #startedAt = 0
  #lag: ReturnType<typeof monitorEventLoopDelay> | null = null
  #syncing = new Map<string, Promise<boolean>>()
  #syncWanted = new Map<string, number>()
  #dialing = new Set<string>()
  /** Dials of peers learned from heartbeats now running (bounded by MAX_LEARNED_DIALS). */
  #learnedDials = 0
  /** Peers with at least one open connection (kept from libp2p's connect/disconnect events). */
  #connected = new Set<string>()
  /** The addresses last put into the peer store for each peer, joined. */
  #storedAddrs = new Map<string, string>()
  /** Presence messages decoded by the validator, so the handler does not parse them again. */
  #decoded = new WeakMap<Message, Presence>()
  #persistQueue: Promise<void> = Promise.resolve()
  #started = false
  #stopping = false
  #redialRound = 0
  #storeClosed = false
  #loadReport: LoadReport | null = null
  /** Extra fields the scheduler puts into each heartbeat. */
  presenceExtras: () => Partial<Pick<Presence, 'running' | 'backoffUntil'>> = () => ({})

  constructor (init: MeshNodeInit) {
    super()
    if (init.role === 'node' && init.dataDir === undefined) throw new Error('a node needs a data dir')
    this.#init = init
    this.role = init.role
    this.swarmKey = init.swarmKey
    this.name = init.name ?? ''
    this.slots = init.slots ?? (init.role === 'node' ? 1 : 0)
    this.eligible = init.role === 'node' && init.eligible !== false
    this.#log = init.logger ?? silentLogger
    this.#topics = topics(init.swarmKey.meshId)
    this.membership = new Membership({
      ...(init.suspectAfterMs !== undefined ? { suspectAfterMs: init.suspectAfterMs } : {}),
      ...(init.deadAfterMs !== undefined ? { deadAfterMs: init.deadAfterMs } : {}),
      heartbeatMs: init.heartbeatMs ?? HEARTBEAT_INTERVAL_MS
    })
  }

  get host (): Host {
    if (this.#host === null) throw new Error('node not started')
    return this.#host
  }

  get board (): Board {
    if (this.#board === null) throw new Error('node not started')
    return this.#board
  }

  get peerId (): string {
    // PeerId.toString() encodes the id every time, and every heartbeat and gossip message asks
    this.#peerIdText ??= this.host.peerId.toString()
    return this.#peerIdText
  }

  #peerIdText: string | undefined

  get meshId (): string {
    return this.swarmKey.meshId
  }

  /** Wall-clock ms when this node started. */
  get startedAt (): number {
    return this.#startedAt
  }

  get loadReport (): LoadReport | null {
    return this.#loadReport
  }

  /** Dialable addresses, each ending in /p2p/<peerId>. */
  addrs (): string[] {
    return this.#host?.getMultiaddrs().map(a => a.toString()) ?? []
  }

  /** A join token carrying the swarm key and this node's addresses. */
  joinToken (): string {
    return encodeJoinToken(this.swarmKey, this.addrs())
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    try {
      await this.#start()
    } catch (err) {
      await this.stop().catch(() => {})
      throw err
    }
  }

  async #start (): Promise<void> {
    const init = this.#init
    this.#startedAt = Date.now()
    let privateKey
    if (this.role === 'node') {
      const dir = init.dataDir as string
      await mkdir(dir, { recursive: true, mode: 0o700 })
      this.#lock = await acquireLock(dir)
      privateKey = await loadOrCreateIdentity(dir)
    } else {
      privateKey = await generateKeyPair('Ed25519')
    }
    const peerId = peerIdFromPrivateKey(privateKey).toString()
    const actor = actorForPeer(peerId)
    if (this.role === 'node') {
      this.#store = new BoardStore(init.dataDir as string)
      const { board, report } = await this.#store.load(this.meshId, actor)
      this.#board = board
      this.#loadReport = report
      if (report.tornTailBytes > 0) this.#log.warn('board:torn-tail', { bytes: report.tornTailBytes, note: 'the last board write was interrupted (crash); dropped it, peers hold the data' })
    } else {
      this.#board = Board.create(this.meshId, actor)
    }
    this.#board.onInvalid = (key, reason) => {
      this.stats.invalidEntries++
      this.#log.warn('board:invalid-entry', { key, reason })
    }
    this.#board.subscribe(update => { this.#onBoardUpdate(update) })

    this.#host = await createHost({
      privateKey,
      swarmKey: this.swarmKey,
      listen: init.listen ?? (this.role === 'node' ? ['/ip4/0.0.0.0/tcp/4001'] : ['/ip4/127.0.0.1/tcp/0']),
      bootstrap: init.bootstrap ?? [],
      ...(init.connectionGater !== undefined ? { connectionGater: init.connectionGater } : {})
    })
    const host = this.#host
    await host.handle(SYNC_PROTOCOL, (stream, conn) => { void this.#serveSync(stream, conn) }, { maxInboundStreams: 64, maxOutboundStreams: 64 })
    if (this.role === 'node') {
      await host.handle(MEMBERS_PROTOCOL, (stream) => { void this.#serveMembers(stream) }, { maxInboundStreams: 32 })
    }
    const pubsub = host.services.pubsub
    pubsub.topicValidators.set(this.#topics.board, (_peer, msg) => this.#validateBoardMessage(msg))
    pubsub.topicValidators.set(this.#topics.presence, (_peer, msg) => this.#validatePresence(msg))
    pubsub.topicValidators.set(this.#topics.progress, (_peer, msg) => this.#validateProgress(msg))
    const delay = init.gossipDelayMs ?? 0
    pubsub.addEventListener('message', evt => {
      if (delay > 0) setTimeout(() => { if (!this.#stopping) this.#onGossip(evt.detail) }, delay)
      else this.#onGossip(evt.detail)
    })
    host.addEventListener('peer:connect', evt => { this.#connected.add(evt.detail.toString()) })
    host.addEventListener('peer:disconnect', evt => { this.#connected.delete(evt.detail.toString()) })
    host.addEventListener('peer:identify', evt => {
      if (evt.detail.protocols.includes(SYNC_PROTOCOL)) this.requestSync(evt.detail.peerId.toString())
    })
    await host.start()
    // a light client subscribes once its first sync is done (followBoard): changes gossiped
    // into it during that sync would only make the session longer
    if (this.role === 'node') pubsub.subscribe(this.#topics.board)
    if (this.role === 'node') {
      pubsub.subscribe(this.#topics.presence)
      pubsub.subscribe(this.#topics.progress)
    }

    if (this.role === 'node') {
      this.#lag = monitorEventLoopDelay({ resolution: 20 })
      this.#lag.enable()
      const self = this.board.snapshot().nodes.get(this.peerId as never)
      if (self === undefined || self.name !== this.name || self.slots !== this.slots || self.leftAt !== null || self.startedAt !== this.#startedAt) {
        this.changeBoard('node:join', d => {
          d.nodes[this.peerId] = { name: str(this.name), slots: this.slots, startedAt: this.#startedAt, leftAt: null }
        })
      }
      this.#seedMembersFromBoard()
      this.#every(this.membership.heartbeatMs, () => { this.#heartbeat() })
      // the failure detector looks four times per heartbeat: a silent peer is declared as soon as its
      // timeout passes, not up to a whole period later
      this.#every(Math.max(50, Math.floor(this.membership.heartbeatMs / 4)), () => {
        for (const t of this.membership.tick(this.#lagMs)) this.#emitTransition(t)
      })
      this.#heartbeat()
    }
    this.#every(REDIAL_INTERVAL_MS, () => { this.#redial() })
    this.#redial()
  }

  /**
   * Stops the node: announces `left` (nodes), flushes the board, stops libp2p.
   * Best-effort and bounded: a step that hangs does not block the rest.
   */
  async stop (): Promise<void> {
    if (this.#stopping) return
    this.#stopping = true
    for (const t of this.#timers) clearInterval(t)
    if (this.#ackTimer !== null) clearTimeout(this.#ackTimer)
    this.#timers = []
    this.#lag?.disable()
    const host = this.#host
    if (host !== null && this.role === 'node' && host.status === 'started') {
      try {
        this.changeBoard('node:leave', d => {
          const rec = d.nodes[this.peerId]
          if (rec !== undefined) rec.leftAt = Date.now()
        })
        await withTimeout(this.#persistQueue, 3000)
        await withTimeout(this.#publish(this.#topics.presence, encodePresence(this.#presence(true))), 1000)
      } catch (err) {
        this.#log.debug('node:leave-announce-failed', { error: toError(err).message })
      }
    }
    if (host !== null) await withTimeout(Promise.resolve(host.stop()), 5000).catch(() => {})
    await withTimeout(this.#persistQueue, 5000).catch(() => {})
    this.#storeClosed = true
    await withTimeout(this.#store?.close() ?? Promise.resolve(), 5000).catch(() => {})
    await this.#lock?.release()
    this.#lock = null
  }

  /**
   * Makes one board change, persists it (nodes) and broadcasts it. Returns
   * false when `fn` changed nothing.
   */
  changeBoard (message: string, fn: Parameters<Board['change']>[1]): boolean {
    return this.board.change(message, fn) !== null
  }

  /** Like `changeBoard`, returning the change's hash (null when nothing changed). */
  changeBoardHash (message: string, fn: Parameters<Board['change']>[1]): string | null {
    const bytes = this.board.change(message, fn)
    return bytes === null ? null : Board.hashOf(bytes)
  }

  /** Resolves once every board write so far is on disk. */
  async flush (): Promise<void> {
    await this.#persistQueue
  }

  #onBoardUpdate (update: BoardUpdate): void {
    const store = this.#store
    const board = this.#board
    // a change is on disk before it is acknowledged to anyone: write, then publish
    this.#persistQueue = this.#persistQueue.then(async () => {
      if (store !== null && board !== null && !this.#storeClosed) await store.append(board)
      for (const change of update.changes) await this.#broadcastChange(change)
    }).catch(err => {
      this.#log.error('board:persist-failed', { error: toError(err).message })
    })
    if (update.tasks.length > 0 || !update.local) this.#seedMembersFromBoard()
    // acknowledge remote claims quickly: a claimant settles once every peer's heads contain its claim.
    // Other remote changes are acknowledged by the next heartbeat (an extra presence message from every
    // node for every change made acknowledgements O(nodes x changes))
    if (!update.local && update.tasks.some(id => this.board.task(id)?.state === 'claimed')) this.#ackSoon()
    this.dispatchEvent(new CustomEvent('board:update', { detail: update }))
  }

  async #broadcastChange (change: Uint8Array): Promise<void> {
    let msg: Uint8Array
    if (change.length + 1 <= MAX_GOSSIP_BYTES) {
      msg = new Uint8Array(change.length + 1)
      msg[0] = MSG_CHANGE
      msg.set(change, 1)
    } else {
      // too large for gossip: announce the new heads; peers pull over the sync protocol
      const body = new TextEncoder().encode(JSON.stringify(this.board.heads()))
      msg = new Uint8Array(body.length + 1)
      msg[0] = MSG_HEADS
      msg.set(body, 1)
    }
    this.stats.changesBroadcast++
    await this.#publish(this.#topics.board, msg)
  }

  async #publish (topic: string, data: Uint8Array): Promise<void> {
    if (data.length > MAX_GOSSIP_BYTES) throw new Error(`refusing to publish ${data.length} bytes on ${topic}: the cap is ${MAX_GOSSIP_BYTES}`)
    const host = this.#host
    if (host === null || host.status !== 'started') return
    try {
      await host.services.pubsub.publish(topic, data)
      this.stats.gossipSent.messages++; this.stats.gossipSent.bytes += data.length
    } catch (err) {
      this.#log.debug('gossip:publish-failed', { topic, error: toError(err).message })
    }
  }

  #reject (reason: string, from: string): TopicValidatorResult {
    this.stats.gossipRejected[reason] = (this.stats.gossipRejected[reason] ?? 0) + 1
    this.#log.warn('gossip:rejected', { reason, from })
    return TopicValidatorResult.Reject
  }

  #validateBoardMessage (msg: Message): TopicValidatorResult {
    if (msg.type !== 'signed') return this.#reject('unsigned', '?')
    const from = msg.from.toString()
    if (msg.data.length > MAX_GOSSIP_BYTES) return this.#reject('oversized', from)
    const tag = msg.data[0]
    if (tag === MSG_CHANGE) {
      try {
        const decoded = this.board.checkChange(msg.data.subarray(1))
        if (decoded.actor !== actorForPeer(from)) return this.#reject('foreign-actor', from)
      } catch {
        return this.#reject('bad-change', from)
      }
      return TopicValidatorResult.Accept
    }
    if (tag === MSG_HEADS) {
      return parseHeads(msg.data.subarray(1)) === null ? this.#reject('bad-heads', from) : TopicValidatorResult.Accept
    }
    return this.#reject('unknown-tag', from)
  }

  #validateProgress (msg: Message): TopicValidatorResult {
    if (msg.type !== 'signed') return this.#reject('unsigned', '?')
    const from = msg.from.toString()
    if (msg.data.length > 4096) return this.#reject('oversized', from)
    const p = decodeProgress(msg.data)
    if (p === null) return this.#reject('bad-progress', from)
    if (p.peerId !== from) return this.#reject('progress-spoofed', from)
    return TopicValidatorResult.Accept
  }

  #progress = new Map<string, ProgressEvent>()
  #progressSent = new Map<string, number>()

  #noteProgress (p: ProgressEvent): void {
    this.#progress.set(p.taskId, p)
    if (this.#progress.size > 1000) this.#progress.delete(this.#progress.keys().next().value as string)
    this.dispatchEvent(new CustomEvent('progress', { detail: p }))
  }

  /**
   * Shares an agent's progress with the mesh (status and the TUI show it). At
   * most four events a second per task go out; the rest are kept locally only.
   */
  publishProgress (taskId: string, kind: ProgressEvent['kind'], text: string): void {
    const p: ProgressEvent = { v: 1, peerId: this.peerId, taskId, kind, text: text.slice(0, 1000), at: Date.now() }
    this.#noteProgress(p)
    const last = this.#progressSent.get(taskId) ?? 0
    if (p.at - last < 250) return
    this.#progressSent.set(taskId, p.at)
    void this.#publish(this.#topics.progress, new TextEncoder().encode(JSON.stringify(p)))
  }

  #validatePresence (msg: Message): TopicValidatorResult {
    if (msg.type !== 'signed') return this.#reject('unsigned', '?')
    const from = msg.from.toString()
    if (msg.data.length > MAX_GOSSIP_BYTES) return this.#reject('oversized', from)
    const p = decodePresence(msg.data)
    if (p === null) return this.#reject('bad-presence', from)
    if (p.peerId !== from) return this.#reject('presence-spoofed', from)
    this.#decoded.set(msg, p)
    return TopicValidatorResult.Accept
  }

  #onGossip (msg: Message): void {
    if (msg.type !== 'signed') return
    const from = msg.from.toString()
    try {
      if (msg.topic === this.#topics.progress) {
        const p = decodeProgress(msg.data)
        if (p !== null) this.#noteProgress(p)
        return
      }
      if (msg.topic === this.#topics.board) {
        const tag = msg.data[0]
        if (tag === MSG_CHANGE) {
          this.stats.changesReceived++
          this.board.applyChanges([msg.data.subarray(1)])
        } else if (tag === MSG_HEADS) {
          const heads = parseHeads(msg.data.subarray(1))
          if (heads !== null && !this.board.hasHeads(heads)) this.requestSync(from)
        }
      } else if (msg.topic === this.#topics.presence) {
        const p = this.#decoded.get(msg) ?? decodePresence(msg.data)
        if (p === null) return
        const t = this.membership.heartbeat(p)
        if (t !== null) this.#emitTransition(t)
        this.dispatchEvent(new CustomEvent('presence', { detail: p }))
        if (p.heads.length > 0 && !this.board.hasHeads(p.heads)) this.#wantSync(from)
        else this.#syncWanted.delete(from)
        if (!p.leaving) this.#learnAddrs(p)
      }
    } catch (err) {
      this.#reject('apply-failed', from)
      this.#log.warn('gossip:apply-failed', { from, error: toError(err).message })
    }
  }

  /**
   * A peer's heads are ahead of ours: sync if it stays that way for two
   * heartbeats and fewer than MAX_HEARTBEAT_SYNCS sessions are running (else
   * wait for a later heartbeat that still shows the gap). While changes are
   * being written, heads differ everywhere for a gossip round; on a busy host a
   * round lasts seconds, and syncing with every such peer at once (up to N x N
   * sessions) loaded the host further and made every round longer still.
   */
  #wantSync (peer: string): void {
    const since = this.#syncWanted.get(peer)
    const now = Date.now()
    if (since === undefined) {
      this.#syncWanted.set(peer, now)
    } else if (now - since >= 2 * this.membership.heartbeatMs && this.#syncing.size < MAX_HEARTBEAT_SYNCS) {
      this.#syncWanted.delete(peer)
      this.requestSync(peer)
    }
  }

  /** Runs an anti-entropy session with `peer` unless one is already running; resolves true when it completed. */
  requestSync (peer: string): Promise<boolean> {
    const running = this.#syncing.get(peer)
    if (running !== undefined) return running
    const run = (async () => {
      const host = this.#host
      if (host === null || host.status !== 'started') return false
      try {
        const stream = await host.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
        const res = await runSyncSession(this.board, stream, true, AbortSignal.timeout(60_000))
        this.stats.syncSessions++; this.stats.syncBytes.in += res.bytesIn; this.stats.syncBytes.out += res.bytesOut
        this.#log.debug('sync:done', { peer, ...res })
        return true
      } catch (err) {
        this.stats.syncFailures++
        this.#log.debug('sync:failed', { peer, error: toError(err).message })
        return false
      } finally {
        this.#syncing.delete(peer)
      }
    })()
    this.#syncing.set(peer, run)
    return run
  }

  async #serveSync (stream: Stream, conn: Connection): Promise<void> {
    try {
      const res = await runSyncSession(this.board, stream, false, AbortSignal.timeout(60_000))
      this.stats.syncSessions++; this.stats.syncBytes.in += res.bytesIn; this.stats.syncBytes.out += res.bytesOut
    } catch (err) {
      this.stats.syncFailures++
      this.#log.warn('sync:serve-failed', { peer: conn.remotePeer.toString(), error: toError(err).message })
      stream.abort(toError(err))
    }
  }

  async #serveMembers (stream: Stream): Promise<void> {
    try {
      const lp = lpStream(stream)
      await lp.write(new TextEncoder().encode(JSON.stringify(this.membersView())), { signal: AbortSignal.timeout(5000) })
      await stream.close()
    } catch (err) {
      stream.abort(toError(err))
    }
  }

  /** This node's view of the membership, itself included. */
  membersView (): MembersView {
    const members = this.membership.members()
    if (this.role === 'node') {
      const p = this.#presence(false)
      members.unshift({
        peerId: p.peerId, name: p.name, slots: p.slots, running: p.running, heads: p.heads, addrs: p.addrs,
        load: p.load, lagMs: p.lagMs, backoffUntil: p.backoffUntil, state: 'alive', eligible: p.eligible ?? true, aliveSince: this.#startedAt, lastSeenAt: Date.now(), silentMs: 0
      })
    }
    const progress: NonNullable<MembersView['progress']> = {}
    for (const [id, p] of this.#progress) progress[id] = { kind: p.kind, text: p.text, at: p.at, peerId: p.peerId }
    return { self: this.peerId, members, progress }
  }

  /** Asks a node for its membership view (what `status` shows). */
  async fetchMembers (peer: string): Promise<MembersView> {
    const stream = await this.host.dialProtocol(peerIdFromString(peer), MEMBERS_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const lp = lpStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
    const data = await lp.read({ signal: AbortSignal.timeout(5000) })
    await stream.close().catch(() => {})
    return JSON.parse(new TextDecoder().decode(data.subarray())) as MembersView
  }

  #presence (leaving: boolean): Presence {
    const extras = this.presenceExtras()
    const now = Date.now()
    if (now - this.#rssAt >= RSS_SAMPLE_MS) {
      this.#rss = process.memoryUsage.rss()
      this.#rssAt = now
    }
    return {
      v: 1,
      peerId: this.peerId,
      name: this.name,
      slots: this.slots,
      running: extras.running ?? [],
      heads: this.board.heads().slice(0, 64),
      addrs: this.addrs().slice(0, 16),
      lagMs: this.#lagMs,
      load: (loadavg()[0] ?? 0) / availableParallelism(),
      rssBytes: this.#rss,
      backoffUntil: extras.backoffUntil ?? null,
      startedAt: this.#startedAt,
      seq: this.#seq++,
      sentAt: Date.now(),
      eligible: this.eligible,
      version: MESHWORK_VERSION,
      leaving
    }
  }

  #lagMs = 0
  #lastBeat = 0
  #rss = 0
  #rssAt = 0

  #heartbeat (): void {
    const now = Date.now()
    const drift = this.#lastBeat === 0 ? 0 : Math.max(0, now - this.#lastBeat - this.membership.heartbeatMs)
    this.#lastBeat = now
    const loopLag = this.#lag !== null ? this.#lag.max / 1e6 : 0
    this.#lag?.reset()
    this.#lagMs = Math.round(Math.max(drift, loopLag))
    for (const t of this.membership.tick(this.#lagMs)) this.#emitTransition(t)
    void this.#publish(this.#topics.presence, encodePresence(this.#presence(false)))
  }

  #ackTimer: NodeJS.Timeout | null = null
  #lastAck = 0

  /** Publishes an extra presence (with our new heads) soon, at most every 100 ms. */
  #ackSoon (): void {
    if (this.role !== 'node' || this.#ackTimer !== null || this.#stopping) return
    const wait = Math.max(20, 100 - (Date.now() - this.#lastAck))
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null
      this.#lastAck = Date.now()
      if (this.#host?.status === 'started') void this.#publish(this.#topics.presence, encodePresence(this.#presence(false)))
    }, wait)
  }

  #emitTransition (t: Transition): void {
    if (this.#host !== null && t.peerId === this.peerId) return
    this.#log.info(`peer:${t.to}`, { peer: t.peerId, from: t.from })
    this.dispatchEvent(new CustomEvent('peer:state', { detail: t }))
  }

  #seedMembersFromBoard (): void {
    if (this.role !== 'node' || this.#host === null) return
    const self = this.peerId
    for (const [peerId, rec] of this.board.snapshot().nodes) {
      if (peerId === self) continue
      this.membership.seed(peerId, rec.name, rec.slots, rec.leftAt !== null)
    }
  }

  /**
   * A heartbeat told us where its sender listens: record it in the peer store
   * (so a sync or git stream can dial the peer later), and dial the peer if this
   * node has fewer than PEER_TARGET peers and no more than MAX_LEARNED_DIALS
   * such dials running.
   */
  #learnAddrs (p: Presence): void {
    const host = this.#host
    if (host === null || p.addrs.length === 0 || p.peerId === this.peerId) return
    const joined = p.addrs.join(' ')
    const connected = this.#connected.has(p.peerId)
    if (this.#storedAddrs.get(p.peerId) !== joined) {
      this.#storedAddrs.set(p.peerId, joined)
      if (this.#storedAddrs.size > 4096) this.#storedAddrs.delete(this.#storedAddrs.keys().next().value as string)
      const addrs = parseAddrs(p.addrs)
      if (addrs.length > 0) void host.peerStore.merge(peerIdFromString(p.peerId), { multiaddrs: addrs }).catch(() => {})
    }
    if (connected) return
    this.#dialLearned(p.peerId, p.addrs)
  }

  /** Dials a peer learned from a heartbeat if this node is below its peer target (bounded, never more than MAX_LEARNED_DIALS at once). */
  #dialLearned (peerId: string, addrs: string[]): void {
    if (this.#learnedDials >= MAX_LEARNED_DIALS || this.#connected.size >= PEER_TARGET || this.#dialing.has(peerId)) return
    const parsed = parseAddrs(addrs)
    if (parsed.length === 0) return
    this.#learnedDials++
    void this.#dial(parsed, peerId).finally(() => { this.#learnedDials-- })
  }

  /**
   * Keeps trying the bootstrap addresses (the first node may come up later), tops
   * up to PEER_TARGET peers, and redials peers that went suspect or dead: they may
   * be cut off from us (a partition) rather than gone.
   */
  #redial (): void {
    const host = this.#host
    if (host === null || host.status !== 'started') return
    for (const addr of this.#init.bootstrap ?? []) {
      let ma: Multiaddr
      try { ma = multiaddr(addr) } catch { continue }
      const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
      if (peer !== undefined && this.#connected.has(peer)) continue
      if (peer === this.peerId) continue
      void this.#dial([ma], peer ?? addr)
    }
    // dead peers are retried less often: a healed partition must find its way back
    const retryDead = this.#redialRound++ % 5 === 0
    for (const m of this.membership.members()) {
      if (m.state === 'left' || (m.state === 'dead' && !retryDead) || m.addrs.length === 0) continue
      if (this.#connected.has(m.peerId)) continue
      if (m.state === 'alive') this.#dialLearned(m.peerId, m.addrs)
      else void this.#dial(parseAddrs(m.addrs), m.peerId)
    }
  }

  async #dial (addrs: Multiaddr[], key: string): Promise<void> {
    const host = this.#host
    if (host === null || addrs.length === 0 || this.#dialing.has(key) || this.#dialing.size >= 16) return
    this.#dialing.add(key)
    try {
      await host.dial(addrs, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
    } catch (err) {
      this.#log.debug('dial:failed', { peer: key, error: toError(err).message })
    } finally {
      this.#dialing.delete(key)
    }
  }

  #every (ms: number, fn: () => void): void {
    this.#timers.push(setInterval(() => {
      try { fn() } catch (err) { this.#log.error('timer:failed', { error: toError(err).message }) }
    }, ms))
  }

  /** Starts receiving board changes as they are gossiped (light clients call this after their first sync). */
  followBoard (): void {
    const host = this.#host
    if (host !== null && !host.services.pubsub.getTopics().includes(this.#topics.board)) host.services.pubsub.subscribe(this.#topics.board)
  }

  /** Peers this node has an open connection to. */
  connectedPeers (): PeerId[] {
    return this.#host?.getPeers() ?? []
  }
}

function parseAddrs (addrs: string[]): Multiaddr[] {
  const out: Multiaddr[] = []
  for (const a of addrs) {
    try { out.push(multiaddr(a)) } catch {}
  }
  return out
}

function parseHeads (data: Uint8Array): string[] | null {
  try {
    const v: unknown = JSON.parse(new TextDecoder().decode(data))
    if (Array.isArray(v) && v.length <= 64 && v.every(h => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))) return v as string[]
  } catch {}
  return null
}

async function withTimeout<T> (p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<undefined>(resolve => { timer = setTimeout(() => { resolve(undefined) }, ms) })
  try {
    return await Promise.race([p, t])
  } finally {
    clearTimeout(timer)
  }
}

