/*
 * Over 400 lines, on purpose: MeshNode is where a node's parts are wired and
 * started in order (lock, identity, board store, libp2p host with its gater,
 * then the services: gossip, replication, heartbeats, claim acks, dialer, known peers,
 * progress, members) and stopped in reverse; each service is its own file
 * behind a narrow interface (components.ts), and this class only connects them.
 */
import { mkdir } from 'node:fs/promises'
import { TypedEventEmitter, type PeerId, type Stream, type AbortOptions, type StreamHandler, type StreamHandlerOptions } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { createHost, type Host } from './host.ts'
import { combineGaters } from './allowlist.ts'
import { loadOrCreateIdentity } from './identity.ts'
import type { SwarmKey } from './swarm-key.ts'
import { encodeJoinToken } from './join-token.ts'
import { Membership, type Transition } from './membership.ts'
import { HEARTBEAT_INTERVAL_MS, MEMBER_PRUNE_AFTER_MS, PRUNE_INTERVAL_MS, topics } from './constants.ts'
import { every, withTimeout, type Startable } from './service.ts'
import { Gossip } from './gossip.ts'
import { filterForwards } from './gossip-forward.ts'
import { BoardReplication } from './board-replication.ts'
import { Heartbeats, type PresenceExtras } from './heartbeats.ts'
import { Dialer } from './dialer.ts'
import { KnownPeers } from './known-peers.ts'
import { Progress } from './progress.ts'
import { MembersProtocol } from './members-protocol.ts'
import { acquireLock, type Lock } from './lock.ts'
import type { ProgressEvent } from '../protocol/presence.ts'
import type { MeshNodeEvents, MeshNodeInit, NodeStats, Role } from './types.ts'
import type { MembersView } from '../protocol/members.ts'
import { SYNC_PROTOCOL } from '../protocol/sync.ts'
import { incompatibility } from './version.ts'
import { Board, nodeActorForPeer, sessionActorForPeer, str, type BoardUpdate, type BoardWrite } from '../crdt/board.ts'
import { signerFromPrivateKey } from '../crdt/signing.ts'
import { FINAL_TASK_STATES, asPeerId, type PeerIdString, type TaskState } from '../crdt/schema.ts'
import { BoardStore, type LoadReport } from '../crdt/store.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import { ClaimAcks } from './claim-acks.ts'

export type { MeshNodeEvents, MeshNodeInit, NodeStats, Role } from './types.ts'
export type { MembersView }

/** The services a started node runs. */
/** Live peers whose addresses a join token carries besides the node's own. @default 3 */
export const JOIN_TOKEN_PEERS = 3

interface Services {
  gossip: Gossip
  replication: BoardReplication
  heartbeats: Heartbeats
  dialer: Dialer
  known: KnownPeers | null
  progress: Progress
  members: MembersProtocol
  acks: ClaimAcks
}

/** How long a new joiner waits to identify a compatible peer before it registers on the board anyway. @default 10 s */
const REGISTER_FALLBACK_MS = 10_000

/** Longest a node's own address list is reused before libp2p is asked again (`MeshNode.addrs`). @default 5000 ms */
const ADDRS_READ_MS = 5000

/**
 * One meshwork peer: the place where the libp2p host, the replicated board and
 * the node's services are wired together. Each service is its own `Startable`
 * with a narrow set of components: gossip routing (`gossip.ts`), board
 * replication and sync (`board-replication.ts`), presence and failure
 * detection (`heartbeats.ts`), the dialing policy (`dialer.ts`), agent progress
 * (`progress.ts`) and the members protocol (`members-protocol.ts`). Nodes and
 * light clients are the same code with a different role: clients use an
 * ephemeral identity, keep nothing on disk and never announce presence, so
 * they never appear among the nodes.
 *
 * `start()` and `stop()` are idempotent; `stop()` is ordered and time-boxed.
 */
export class MeshNode extends TypedEventEmitter<MeshNodeEvents> {
  readonly role: Role
  readonly swarmKey: SwarmKey
  readonly membership: Membership
  readonly stats: NodeStats = { gossipRejected: {}, syncSessions: 0, syncFailures: 0, changesBroadcast: 0, changesReceived: 0, invalidEntries: 0, gossipSent: { messages: 0, bytes: 0 }, syncBytes: { in: 0, out: 0 }, refusedAuthors: {}, refusedForgotten: { keys: 0, total: 0 }, streamsRefused: {}, gossipCopies: { copies: 0 }, presenceForwardsSkipped: 0, forwardsSkipped: 0, claimAcks: { sent: 0, received: 0, failed: 0 } }
  readonly name: string
  /** Whether this node may ever become merge leader (false with --no-leader). */
  readonly leaderEligible: boolean
  /** Why this node stands down from leading now (a full disk), or null: see `setLeaderHold`. */
  #leaderHold: string | null = null
  #slots: number
  #init: MeshNodeInit
  #log: Logger
  #host: Host | null = null
  #board: Board | null = null
  #store: BoardStore | null = null
  #lock: Lock | null = null
  #services: Services | null = null
  #startedAt = 0
  #started = false
  #stopping = false
  /** Peers whose latest heartbeat says they take acknowledgements directly (`Presence.acks`). */
  readonly #ackPeers = new Set<string>()
  #loadReport: LoadReport | null = null
  #extras: () => PresenceExtras = () => ({})
  #stopPrune: (() => void) | null = null

  constructor (init: MeshNodeInit) {
    super()
    if (init.role === 'node' && init.dataDir === undefined) throw new Error('a node needs a data dir')
    this.#init = init
    this.role = init.role
    this.swarmKey = init.swarmKey
    this.name = init.name ?? ''
    this.#slots = init.slots ?? (init.role === 'node' ? 1 : 0)
    this.leaderEligible = init.role === 'node' && init.eligible !== false
    this.#log = init.logger ?? silentLogger
    this.membership = new Membership({
      ...(init.suspectAfterMs !== undefined ? { suspectAfterMs: init.suspectAfterMs } : {}),
      ...(init.deadAfterMs !== undefined ? { deadAfterMs: init.deadAfterMs } : {}),
      heartbeatMs: init.heartbeatMs ?? HEARTBEAT_INTERVAL_MS
    })
  }

  /** The libp2p host (for this folder and tests; the rest of meshwork uses the node's methods). */
  get host (): Host {
    if (this.#host === null) throw new Error('node not started')
    return this.#host
  }

  get board (): Board {
    if (this.#board === null) throw new Error('node not started')
    return this.#board
  }

  get peerId (): PeerIdString {
    // PeerId.toString() encodes the id every time, and every heartbeat and gossip message asks
    this.#peerIdText ??= asPeerId(this.host.peerId.toString())
    return this.#peerIdText
  }

  #peerIdText: PeerIdString | undefined

  get meshId (): string {
    return this.swarmKey.meshId
  }

  /** Agent slots this node advertises in its heartbeats. */
  get slots (): number {
    return this.#slots
  }

  /** Changes the slots advertised from the next heartbeat on (0 while the node cannot take work). */
  setSlots (slots: number): void {
    if (!Number.isInteger(slots) || slots < 0) throw new RangeError(`slots must be a whole number >= 0, got ${slots}`)
    this.#slots = slots
  }

  /**
   * Whether this node stands for merge leader now: eligible (no --no-leader)
   * and not standing down (`setLeaderHold`). Announced in every heartbeat, so
   * peers elect another leader while it is false.
   */
  get eligible (): boolean {
    return this.leaderEligible && this.#leaderHold === null
  }

  /**
   * Stands down from leading for `reason` (a full disk where merges write), or
   * stands again (null). While standing down the node is not eligible: its
   * heartbeats say so, peers elect another leader, and it merges nothing.
   */
  setLeaderHold (reason: string | null): void {
    this.#leaderHold = reason
  }

  /** Why this node stands down from leading now, or null. */
  get leaderHold (): string | null {
    return this.#leaderHold
  }

  /** Sets what the scheduler adds to each heartbeat (the tasks it runs, its back-off); read at every beat. */
  setPresenceExtras (extras: () => PresenceExtras): void {
    this.#extras = extras
  }

  /** Wall-clock ms when this node started. */
  get startedAt (): number {
    return this.#startedAt
  }

  /**
   * Whether this node's disk (or quota) is full: its last board write failed
   * with ENOSPC/EDQUOT and is being retried. The scheduler claims nothing
   * meanwhile; it clears by itself once a write succeeds.
   */
  get diskFull (): boolean {
    return this.#store?.diskFull ?? false
  }

  get loadReport (): LoadReport | null {
    return this.#loadReport
  }

  /** This node's addresses as last read from libp2p, and when (see `addrs`). */
  #addrs: { list: string[], at: number } | null = null

  /**
   * Dialable addresses, each ending in /p2p/<peerId>. Read from libp2p again
   * when it says they changed (`self:peer:update`) and at least every
   * `ADDRS_READ_MS`: every heartbeat asks, and libp2p builds the list anew
   * each time (a sixth of a lone idle node's heartbeat).
   */
  addrs (): string[] {
    const host = this.#host
    if (host === null) return []
    const now = Date.now()
    if (this.#addrs !== null && now - this.#addrs.at < ADDRS_READ_MS) return [...this.#addrs.list]
    const list = host.getMultiaddrs().map(a => a.toString())
    // none yet (not listening): asked again next time
    this.#addrs = list.length > 0 ? { list, at: now } : null
    return [...list]
  }

  /**
   * A join token carrying the swarm key, this node's addresses and those of up
   * to `JOIN_TOKEN_PEERS` live peers, so the token works while any of them is up.
   */
  joinToken (): string {
    const peers = this.membership.members()
      .filter(m => m.state === 'alive' && m.addrs.length > 0 && m.peerId !== this.peerId)
      .sort((a, b) => (a.aliveSince ?? Infinity) - (b.aliveSince ?? Infinity))
      .slice(0, JOIN_TOKEN_PEERS)
      .map(m => m.addrs.filter(a => a.includes('/p2p/')).slice(0, 2))
    return encodeJoinToken(this.swarmKey, [...this.addrs(), ...peers.flat()])
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
    const isNode = this.role === 'node'
    this.#startedAt = Date.now()
    let privateKey
    if (isNode) {
      const dir = init.dataDir as string
      await mkdir(dir, { recursive: true, mode: 0o700 })
      this.#lock = await acquireLock(dir)
      privateKey = await loadOrCreateIdentity(dir)
    } else {
      privateKey = init.privateKey ?? await generateKeyPair('Ed25519')
    }
    const peerId = peerIdFromPrivateKey(privateKey).toString()
    // a client's peer id outlives one run (--identity): each run writes as its own actor of that peer
    const actor = isNode ? nodeActorForPeer(peerId) : sessionActorForPeer(peerId)
    // every change this peer writes carries its signature: nobody else can write under its actor
    const signer = signerFromPrivateKey(peerId, privateKey)
    let board: Board
    if (isNode) {
      this.#store = new BoardStore(init.dataDir as string, {
        onWriteFailed: info => {
          // the first failure of a streak, then every 10th: a full disk retries every few seconds
          if (this.#store !== null && this.#store.failingWrites % 10 !== 1) return
          this.#log.error(info.diskFull ? 'board:disk-full' : 'board:write-failed', { error: info.error, code: info.code, failures: this.#store?.failingWrites ?? 0, retryInMs: info.retryInMs, note: 'board changes are kept in memory and written when the disk takes them; nothing is published or acknowledged before; this node claims no work meanwhile' })
        },
        onWriteRecovered: info => { this.#log.info('board:write-recovered', { failures: info.failures }) }
      })
      const loaded = await this.#store.load(this.meshId, actor, signer)
      board = loaded.board
      this.#loadReport = loaded.report
      if (loaded.report.tornTailBytes > 0) this.#log.warn('board:torn-tail', { bytes: loaded.report.tornTailBytes, note: 'the last board write was interrupted (crash); dropped it, peers hold the data' })
    } else {
      board = Board.create(this.meshId, actor, signer)
    }
    this.#board = board
    board.onInvalid = (key, reason) => {
      this.stats.invalidEntries++
      this.#log.warn('board:invalid-entry', { key, reason })
    }
    board.checkOwnChanges = true
    board.onWithheld = (message, reason) => { this.#log.warn('board:write-withheld', { change: message, reason, note: 'peers would refuse this change (made on a board where this node\'s role had changed, say): dropped, not sent; this node\'s later changes still apply' }) }
    board.subscribe(update => { this.#onBoardUpdate(update) })
    const allow = init.allow
    allow?.addSelf(peerId)
    if (allow !== undefined) allow.onDenied = (peer, direction) => { this.#log.warn('peer:not-allowed', { peer, direction, note: 'not on this node\'s --allow list: connection refused (logged once per peer)' }) }
    if (allow !== undefined) board.authorFilter = actor => allow.actorAllowed(actor)

    const host = this.#host = await createHost({
      privateKey,
      swarmKey: this.swarmKey,
      listen: init.listen ?? (isNode ? ['/ip4/0.0.0.0/tcp/4001'] : ['/ip4/127.0.0.1/tcp/0']),
      bootstrap: init.bootstrap ?? [],
      connectionGater: combineGaters(init.connectionGater, allow?.gater()),
      logger: this.#log,
      received: this.stats.gossipCopies
    })
    const t = topics(this.meshId)
    const logger = this.#log
    const gossip = new Gossip({ pubsub: host.services.pubsub, hostStarted: () => host.status === 'started', logger, rejected: this.stats.gossipRejected, sent: this.stats.gossipSent, delayMs: init.gossipDelayMs ?? 0, ...(allow !== undefined ? { admits: (p: string) => allow.has(p) } : {}) })
    const replication = new BoardReplication({ board, store: this.#store, gossip, topic: t.board, streams: host, heartbeatMs: this.membership.heartbeatMs, stats: this.stats, logger, ...(init.streamIdleMs !== undefined ? { idleMs: init.streamIdleMs } : {}) })
    const known = isNode ? new KnownPeers({ dataDir: init.dataDir as string, live: () => this.membership.members(), self: () => this.peerId, logger }) : null
    const dialer = new Dialer({ host, membership: this.membership, bootstrap: init.bootstrap ?? [], peerId: () => this.peerId, remembered: () => known?.list() ?? [], logger })
    const heartbeats = new Heartbeats({
      announce: isNode,
      gossip,
      topic: t.presence,
      membership: this.membership,
      board,
      ackHeads: () => replication.durableHeads(),
      directAcks: isNode && init.directAcks !== false,
      peerId: () => this.peerId,
      name: this.name,
      slots: () => this.#slots,
      eligible: () => this.eligible,
      startedAt: () => this.#startedAt,
      addrs: () => this.addrs(),
      peerHeads: (peer, heads) => { replication.peerHeads(peer, heads) },
      peerAddrs: p => { dialer.learnAddrs(p) },
      onTransition: tr => { this.#emitTransition(tr) },
      onPresence: p => {
        if (p.acks === true) this.#ackPeers.add(p.peerId)
        else this.#ackPeers.delete(p.peerId)
        this.dispatchEvent(new CustomEvent('presence', { detail: p }))
      },
      vouched: p => board.snapshot().nodes.has(p as PeerIdString) || host.getConnections().some(c => c.remotePeer.toString() === p),
      logger
    })
    heartbeats.setExtras(() => this.#extras())
    // a peer that hears an author's heartbeats straight from it gets that author's board changes and
    // progress the same way (publishing floods every peer following the topic): a forwarded copy would be a
    // duplicate. A copy it misses all the same (a subscription not yet known to the author) comes with the
    // next sync: the author's heads in its heartbeats tell the peer it lacks a change.
    const forwarding = filterForwards(host.services.pubsub, (topic, author, meshPeers) => {
      if (topic !== t.presence && topic !== t.board && topic !== t.progress) return null
      const skip = heartbeats.forwardSkip(author, meshPeers)
      if (skip !== null) {
        if (topic === t.presence) this.stats.presenceForwardsSkipped += skip.size
        else this.stats.forwardsSkipped += skip.size
      }
      return skip
    })
    if (forwarding.state === 'failed') logger.warn('patch:not-applied', { patch: forwarding.name, detail: forwarding.detail, note: 'every heartbeat and board change is forwarded to every mesh peer (more CPU); reinstall the exact versions in package.json (npm ci)' })
    const progress = new Progress({ gossip, topic: t.progress, follow: isNode, peerId: () => this.peerId, onProgress: p => { this.dispatchEvent(new CustomEvent('progress', { detail: p })) } })
    const members = new MembersProtocol({ streams: host, serve: isNode, view: () => this.membersView(), ...(init.streamIdleMs !== undefined ? { idleMs: init.streamIdleMs } : {}) })
    const acks = new ClaimAcks({
      streams: host,
      stats: this.stats.claimAcks,
      connected: p => host.getConnections().some(c => c.remotePeer.toString() === p && c.status === 'open'),
      heads: () => replication.durableHeads(),
      onAck: (peerId, heads) => { this.dispatchEvent(new CustomEvent('ack', { detail: { peerId, heads } })) },
      // a claimant that stopped taking them (rolled back to an older version) hears it by heartbeat
      onFailed: () => { heartbeats.ackSoon() },
      logger
    })
    const services: Services = this.#services = { gossip, replication, heartbeats, dialer, known, progress, members, acks }
    const all: Startable[] = [gossip, replication, members, progress, ...(isNode && init.directAcks !== false ? [acks] : []), ...(known !== null ? [known] : []), dialer, heartbeats]
    for (const s of all) await s.start()
    host.addEventListener('self:peer:update', () => { this.#addrs = null })
    host.addEventListener('peer:identify', evt => {
      if (evt.detail.protocols.includes(SYNC_PROTOCOL)) void replication.requestSync(evt.detail.peerId.toString())
    })
    await host.start()
    // a light client follows the board once its first sync is done (followBoard): changes gossiped
    // into it during that sync would only make the session longer
    if (isNode) {
      replication.follow()
      const register = (): void => {
        if (this.#stopping) return
        const self = board.snapshot().nodes.get(this.peerId)
        if (self === undefined || self.name !== this.name || self.slots !== this.#slots || self.leftAt !== null || self.startedAt !== this.#startedAt || self.readsCompactTasks !== true) {
          this.changeBoard('node:join', d => {
            d.nodes[this.peerId] = { name: str(this.name), slots: this.#slots, startedAt: this.#startedAt, leftAt: null, readsCompactTasks: true }
          })
        }
      }
      if ((init.bootstrap ?? []).length === 0 || board.snapshot().nodes.has(this.peerId)) register()
      else this.#registerOnceCompatible(host, register)
    }
    for (const s of [services.progress, services.heartbeats, services.dialer]) await s.afterStart?.()
    services.known?.afterStart()
    this.#stopPrune = every(PRUNE_INTERVAL_MS, () => { this.prune() }, err => { this.#log.error('timer:failed', { error: toError(err).message }) })
  }

  /**
   * Drops what this node keeps per peer or per task and no longer needs
   * (every PRUNE_INTERVAL_MS): members gone for MEMBER_PRUNE_AFTER_MS that the
   * board does not register, per-peer sync limits of quiet peers, stale
   * heads-ahead marks, progress of finished tasks and expired throttles.
   */
  prune (): void {
    const s = this.#services
    const board = this.#board
    if (s === null || board === null) return
    const snap = board.snapshot()
    const dropped = this.membership.prune(MEMBER_PRUNE_AFTER_MS, p => snap.nodes.has(p))
    if (dropped.length > 0) this.#log.info('members:pruned', { peers: dropped.length, note: `dead or left for ${MEMBER_PRUNE_AFTER_MS / 60_000} min and not on the board` })
    const host = this.#host
    for (const p of dropped) {
      s.dialer.forget(p)
      this.#ackPeers.delete(p)
      // libp2p's peer store keeps every peer it was told of, in memory, for the life of the process
      let id: PeerId
      try { id = peerIdFromString(p) } catch { continue }
      if (host !== null && host.getConnections(id).length === 0) void host.peerStore.delete(id).catch(() => {})
    }
    s.replication.prune()
    const tasks: ReadonlyMap<string, { state: TaskState }> = snap.tasks
    s.progress.prune(id => { const st = tasks.get(id)?.state; return st !== undefined && FINAL_TASK_STATES.has(st) })
  }

  /**
   * A node joining through bootstrap peers for the first time puts its record
   * on the board only once it has identified a meshwork peer it can work with,
   * so a node of another wire version (which exits 2 saying so, see
   * cli/node-watch.ts) leaves no record behind on the mesh's board. When no
   * meshwork peer at all has been identified after `REGISTER_FALLBACK_MS` (its
   * bootstrap peers are unreachable: it may be the first), it registers anyway.
   */
  #registerOnceCompatible (host: Host, register: () => void): void {
    let incompatible = false
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      host.removeEventListener('peer:identify', onIdentify)
      clearTimeout(fallback)
      register()
    }
    const onIdentify = (evt: CustomEvent<{ protocols: string[] }>): void => {
      const { protocols } = evt.detail
      if (!protocols.some(p => p.startsWith('/meshwork/'))) return
      if (incompatibility(protocols) === null) finish()
      else incompatible = true
    }
    host.addEventListener('peer:identify', onIdentify)
    const fallback = setTimeout(() => { if (!incompatible) finish() }, REGISTER_FALLBACK_MS)
    fallback.unref()
  }

  /**
   * Stops the node: announces `left` (nodes), flushes the board, stops libp2p.
   * Best-effort and bounded: a step that hangs does not block the rest.
   */
  async stop (): Promise<void> {
    if (this.#stopping) return
    this.#stopping = true
    const s = this.#services
    s?.gossip.beforeStop()
    s?.dialer.stop()
    s?.heartbeats.beforeStop()
    this.#stopPrune?.()
    this.#stopPrune = null
    const host = this.#host
    if (s !== null && host !== null && this.role === 'node' && host.status === 'started') {
      try {
        this.changeBoard('node:leave', d => {
          const rec = d.nodes[this.peerId]
          if (rec !== undefined) rec.leftAt = Date.now()
        })
        await withTimeout(s.replication.flush(), 3000)
        await withTimeout(s.heartbeats.announceLeaving(), 1000)
      } catch (err) {
        this.#log.debug('node:leave-announce-failed', { error: toError(err).message })
      }
    }
    if (host !== null) await withTimeout(Promise.resolve(host.stop()), 5000).catch(() => {})
    s?.gossip.stop()
    s?.heartbeats.stop()
    s?.progress.stop()
    s?.members.stop()
    s?.acks.stop()
    await withTimeout(s?.known?.stop() ?? Promise.resolve(), 2000).catch(() => {})
    if (s !== null) await s.replication.stop()
    else await withTimeout(this.#store?.close() ?? Promise.resolve(), 5000).catch(() => {})
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

  /**
   * Like `changeBoard`, saying what came of the change: written, unchanged,
   * or withheld because peers would refuse it (with the reason; logged as
   * `board:write-withheld`). For writes whose caller must not assume they landed.
   */
  writeBoard (message: string, fn: Parameters<Board['change']>[1]): BoardWrite {
    return this.board.write(message, fn)
  }

  /** Like `changeBoard`, returning the change's hash (null when nothing changed). */
  changeBoardHash (message: string, fn: Parameters<Board['change']>[1]): string | null {
    const bytes = this.board.change(message, fn)
    return bytes === null ? null : Board.hashOf(bytes)
  }

  /** Resolves once every board write so far is on disk. */
  async flush (): Promise<void> {
    await this.#services?.replication.flush()
  }

  /** The peers (not this node) whose claims of the current epoch are on the claimed tasks among `tasks`. */
  #claimants (tasks: readonly string[]): Set<string> {
    const out = new Set<string>()
    for (const id of tasks) {
      const t = this.board.task(id)
      if (t?.state !== 'claimed') continue
      for (const [peer, claim] of Object.entries(t.claims)) if (claim.epoch === t.epoch && peer !== this.peerId) out.add(peer)
    }
    return out
  }

  #onBoardUpdate (update: BoardUpdate): void {
    const s = this.#services
    s?.replication.onUpdate(update)
    if (s !== null && (update.tasks.length > 0 || !update.local)) s.heartbeats.seedFromBoard()
    // acknowledge remote claims quickly: a claimant settles once every peer's heads contain its claim. Once
    // the claim is on disk (only heads on disk are acknowledged), to the claimant alone where it takes that
    // (src/node/claim-acks.ts), else by bringing the next heartbeat forward; other remote changes ride the
    // regular heartbeat
    if (s !== null && !update.local) {
      const claimants = this.#claimants(update.tasks)
      if (claimants.size > 0) {
        void s.replication.flush().then(() => {
          // to each claimant that takes them directly, its acknowledgement alone; the others read heartbeats
          let viaHeartbeat = false
          for (const peer of claimants) {
            if (!this.#ackPeers.has(peer) || !s.acks.send(peer)) viaHeartbeat = true
          }
          if (viaHeartbeat) s.heartbeats.ackSoon()
        })
      }
    }
    if (s !== null && !update.local && this.role === 'node') this.#keepRegistered()
    this.dispatchEvent(new CustomEvent('board:update', { detail: update }))
  }

  /**
   * Writes this node's registration again when a remote change replaced it with
   * an older one: a key rotation's carry change holds every node's record from
   * before the rotation (stopped, `leftAt` set), and a node that took the board
   * from its peers (`rotate-key --from-peers`) registered concurrently with it.
   */
  #keepRegistered (): void {
    const self = this.board.snapshot().nodes.get(this.peerId)
    if (this.#stopping || self === undefined || (self.leftAt === null && self.startedAt === this.#startedAt)) return
    queueMicrotask(() => {
      const now = this.board.snapshot().nodes.get(this.peerId)
      if (this.#stopping || now === undefined || (now.leftAt === null && now.startedAt === this.#startedAt)) return
      this.changeBoard('node:join', d => {
        d.nodes[this.peerId] = { name: str(this.name), slots: this.#slots, startedAt: this.#startedAt, leftAt: null, readsCompactTasks: true }
      })
    })
  }

  /**
   * Shares an agent's progress with the mesh (status and the TUI show it). At
   * most four events a second per task go out; the rest are kept locally only.
   */
  publishProgress (taskId: string, kind: ProgressEvent['kind'], text: string): void {
    this.#services?.progress.publish(taskId, kind, text)
  }

  /** Starts receiving the mesh's agent progress (`progress` events); nodes always do, light clients call this. */
  followProgress (): void {
    this.#services?.progress.follow()
  }

  /** Runs an anti-entropy session with `peer` unless one is already running; resolves true when it completed. */
  async requestSync (peer: string, opts: { timeoutMs?: number } = {}): Promise<boolean> {
    return await (this.#services?.replication.requestSync(peer, opts) ?? Promise.resolve(false))
  }

  /** This node's view of the membership, itself included. */
  membersView (): MembersView {
    const members = this.membership.members()
    const s = this.#services
    if (this.role === 'node' && s !== null) members.unshift(s.heartbeats.selfMember())
    const progress: NonNullable<MembersView['progress']> = {}
    for (const [id, p] of s?.progress.latest() ?? []) progress[id] = { kind: p.kind, text: p.text, at: p.at, peerId: p.peerId }
    const forgotten = this.stats.refusedForgotten
    return { self: this.peerId, members, progress, refused: { ...this.stats.refusedAuthors }, ...(forgotten.keys > 0 ? { refusedForgotten: { authors: forgotten.keys, changes: forgotten.total } } : {}) }
  }

  /** Asks a node for its membership view (what `status` shows). */
  async fetchMembers (peer: string): Promise<MembersView> {
    if (this.#services === null) throw new Error('node not started')
    return await this.#services.members.fetch(peer)
  }

  #emitTransition (t: Transition): void {
    if (this.#host !== null && t.peerId === this.peerId) return
    this.#log.info(`peer:${t.to}`, { peer: t.peerId, from: t.from })
    // a peer that came alive is remembered at once, not at the next periodic save: a node killed in its
    // first seconds (the first node of a mesh, started without --bootstrap) finds its mesh again from it
    if (t.to === 'alive') void this.#services?.known?.save().catch(() => {})
    // a peer silent for deadAfter: its connections are dropped, so a redial (the dialer tries dead peers
    // again) or the peer's own starts afresh rather than on a link that may be dead without knowing it
    if (t.to === 'dead') this.#hangUpDead(t.peerId)
    this.dispatchEvent(new CustomEvent('peer:state', { detail: t }))
  }

  #hangUpDead (peer: PeerIdString): void {
    const host = this.#host
    if (host === null || this.#stopping) return
    let id: PeerId
    try { id = peerIdFromString(peer) } catch { return }
    if (host.getConnections(id).length === 0) return
    this.#log.debug('peer:hang-up', { peer, reason: 'declared dead' })
    void host.hangUp(id).catch(() => {})
  }

  /** Starts receiving board changes as they are gossiped (light clients call this after their first sync). */
  followBoard (): void {
    this.#services?.replication.follow()
  }

  /** Hangs up on connected peers the allowlist no longer admits (after a reload); returns how many. */
  async dropUnlisted (): Promise<number> {
    const allow = this.#init.allow
    if (allow === undefined || this.#host === null) return 0
    const gone = this.#host.getPeers().filter(p => !allow.has(p.toString()))
    await Promise.all(gone.map(async p => { await this.#host?.hangUp(p).catch(() => {}) }))
    return gone.length
  }

  /** Peers this node has an open connection to. */
  connectedPeers (): PeerId[] {
    return this.#host?.getPeers() ?? []
  }

  /** The protocols `peer` announced (identify), or none when unknown. */
  async peerProtocols (peer: PeerId): Promise<string[]> {
    const rec = await this.#host?.peerStore.get(peer).catch(() => null)
    return rec?.protocols ?? []
  }

  /** Opens a stream to `peer` for `protocol` (git, sync, members). */
  async dialProtocol (peer: PeerId, protocol: string, options?: AbortOptions): Promise<Stream> {
    return await this.host.dialProtocol(peer, protocol, options)
  }

  /** Serves `protocol`'s inbound streams with `handler`. */
  async handle (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void> {
    await this.host.handle(protocol, handler, options)
  }

  /** Stops serving `protocol`. */
  async unhandle (protocol: string): Promise<void> {
    await this.host.unhandle(protocol)
  }
}
