import { monitorEventLoopDelay } from 'node:perf_hooks'
import { loadavg, availableParallelism } from 'node:os'
import { TopicValidatorResult, type SignedMessage } from '@libp2p/gossipsub'
import { every, type Startable } from './service.ts'
import type { Gossip } from './gossip.ts'
import type { Membership, Member, Transition } from './membership.ts'
import { MAX_GOSSIP_BYTES, MAX_LIVE_MEMBERS } from './constants.ts'
import { decodePresence, encodePresence, type Presence } from '../protocol/presence.ts'
import type { Board } from '../crdt/board.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import { HEALTH_OK } from './health.ts'
import { MESHWORK_VERSION } from './version.ts'

/** How often the resident set size reported in heartbeats is sampled. */
const RSS_SAMPLE_MS = 10_000

/** Fields the scheduler adds to each heartbeat: the tasks it runs and its rate-limit back-off. */
export type PresenceExtras = Partial<Pick<Presence, 'running' | 'backoffUntil' | 'health'>>

export interface HeartbeatsComponents {
  /** Whether this node announces itself (nodes do; light clients only listen). */
  announce: boolean
  gossip: Gossip
  /** The presence gossip topic. */
  topic: string
  membership: Membership
  board: Board
  /** The board heads to acknowledge in heartbeats (those on disk). @default the board's heads */
  ackHeads?: () => string[]
  /**
   * Resolves once the board changes made or applied so far are on disk (in
   * `ackHeads`): an early acknowledgement waits for it. @default none: at once
   */
  durable?: () => Promise<void>
  peerId: () => PeerIdString
  name: string
  slots: () => number
  eligible: () => boolean
  startedAt: () => number
  addrs: () => string[]
  /** A peer's heartbeat showed these heads (the replication decides whether to sync). */
  peerHeads: (peer: string, heads: string[]) => void
  /** A peer's heartbeat told where it listens. */
  peerAddrs: (p: Presence) => void
  /** A peer changed state (alive, suspect, dead, left). */
  onTransition: (t: Transition) => void
  /** A heartbeat arrived. */
  onPresence: (p: Presence) => void
  /**
   * Whether a peer has shown it is part of the mesh: connected to this node
   * (it completed the pnet and Noise handshakes with it), or registered on the
   * board by its own change. Presence of any other peer id is ignored.
   * @default every peer
   */
  vouched?: (peerId: string) => boolean
  logger: Logger
}

/**
 * Presence and failure detection: this node's heartbeat every period (load,
 * event-loop lag, heads, addresses), an extra one soon after a remote claim so
 * claimants settle quickly, the last one on the way down (`leaving`), and the
 * failure detector fed by everyone else's.
 */
export class Heartbeats implements Startable {
  readonly #c: HeartbeatsComponents
  readonly #log: Logger
  #stopTimers: Array<() => void> = []
  #lag: ReturnType<typeof monitorEventLoopDelay> | null = null
  #decoded = new WeakMap<SignedMessage, Presence>()
  #extras: () => PresenceExtras = () => ({})
  #seq = 0
  #lagMs = 0
  #lastBeat = 0
  #rss = 0
  #rssAt = 0
  #ackTimer: NodeJS.Timeout | null = null
  #lastAck = 0
  #started = false
  #stopped = false

  constructor (components: HeartbeatsComponents) {
    this.#c = components
    this.#log = components.logger
    components.gossip.route(components.topic, {
      validate: (msg, from) => this.#validate(msg, from),
      handle: (msg, from) => { this.#handle(msg, from) }
    })
  }

  /** This node's event-loop lag as of the last heartbeat (ms). */
  get lagMs (): number {
    return this.#lagMs
  }

  /** Sets what the scheduler adds to each heartbeat (read at every beat). */
  setExtras (extras: () => PresenceExtras): void {
    this.#extras = extras
  }

  start (): void {}

  afterStart (): void {
    if (this.#started || !this.#c.announce) return
    this.#started = true
    const { gossip, membership } = this.#c
    gossip.subscribe(this.#c.topic)
    this.#lag = monitorEventLoopDelay({ resolution: 20 })
    this.#lag.enable()
    this.seedFromBoard()
    const onError = (err: unknown): void => { this.#log.error('timer:failed', { error: toError(err).message }) }
    this.#stopTimers.push(every(membership.heartbeatMs, () => { this.#beat() }, onError))
    // the failure detector looks four times per heartbeat: a silent peer is declared as soon as its
    // timeout passes, not up to a whole period later
    this.#stopTimers.push(every(Math.max(50, Math.floor(membership.heartbeatMs / 4)), () => {
      for (const t of membership.tick(this.#lagMs)) this.#c.onTransition(t)
    }, onError))
    this.#beat()
  }

  /** Stops the timers (no more heartbeats). */
  beforeStop (): void {
    for (const stop of this.#stopTimers) stop()
    this.#stopTimers = []
    if (this.#ackTimer !== null) clearTimeout(this.#ackTimer)
    this.#lag?.disable()
    this.#stopped = true
  }

  /** Publishes the last heartbeat, with `leaving` set. */
  async announceLeaving (): Promise<void> {
    await this.#c.gossip.publish(this.#c.topic, encodePresence(this.presence(true)))
  }

  stop (): void {
    this.beforeStop()
  }

  /** This node's heartbeat as of now. */
  presence (leaving: boolean): Presence {
    const extras = this.#extras()
    const now = Date.now()
    if (now - this.#rssAt >= RSS_SAMPLE_MS) {
      this.#rss = process.memoryUsage.rss()
      this.#rssAt = now
    }
    return {
      v: 1,
      peerId: this.#c.peerId(),
      name: this.#c.name,
      slots: this.#c.slots(),
      running: extras.running ?? [],
      // only heads on disk are acknowledged: a peer's claim counts as seen here once it would survive a crash
      heads: (this.#c.ackHeads?.() ?? this.#c.board.heads()).slice(0, 64),
      addrs: this.#c.addrs().slice(0, 16),
      lagMs: this.#lagMs,
      load: (loadavg()[0] ?? 0) / availableParallelism(),
      rssBytes: this.#rss,
      backoffUntil: extras.backoffUntil ?? null,
      ...(extras.health !== undefined ? { health: extras.health } : {}),
      startedAt: this.#c.startedAt(),
      seq: this.#seq++,
      sentAt: Date.now(),
      eligible: this.#c.eligible(),
      version: MESHWORK_VERSION,
      leaving
    }
  }

  /** This node as a member (the first entry of its members view). */
  selfMember (): Member {
    const p = this.presence(false)
    return {
      peerId: p.peerId, name: p.name, slots: p.slots, running: p.running, heads: p.heads, addrs: p.addrs,
      load: p.load, lagMs: p.lagMs, backoffUntil: p.backoffUntil, health: p.health ?? HEALTH_OK, state: 'alive', eligible: p.eligible ?? true, ...(p.version !== undefined ? { version: p.version } : {}), aliveSince: this.#c.startedAt(), lastSeenAt: Date.now(), silentMs: 0
    }
  }

  /**
   * Publishes an extra heartbeat (with our new heads) soon, at most every
   * 100 ms, once what the board holds now is on disk: a heartbeat sent before
   * would name the heads from before the change it is meant to acknowledge (a
   * write takes longer than the 20 ms this waited on a loaded host), and the
   * claimant would wait for the next regular heartbeat, a whole period.
   */
  ackSoon (): void {
    if (!this.#c.announce || this.#stopped) return
    const durable = this.#c.durable
    if (durable === undefined) { this.#ackAfterWrite(); return }
    void durable().then(() => { this.#ackAfterWrite() }, () => { this.#ackAfterWrite() })
  }

  #ackAfterWrite (): void {
    if (!this.#c.announce || this.#ackTimer !== null || this.#stopped) return
    const wait = Math.max(20, 100 - (Date.now() - this.#lastAck))
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null
      this.#lastAck = Date.now()
      void this.#c.gossip.publish(this.#c.topic, encodePresence(this.presence(false)))
    }, wait)
  }

  /** Makes the peers the board knows of known to the failure detector (nodes only). */
  seedFromBoard (): void {
    if (!this.#c.announce) return
    const self = this.#c.peerId()
    for (const [peerId, rec] of this.#c.board.snapshot().nodes) {
      if (peerId === self) continue
      this.#c.membership.seed(peerId, rec.name, rec.slots, rec.leftAt !== null)
    }
  }

  #beat (): void {
    const now = Date.now()
    const drift = this.#lastBeat === 0 ? 0 : Math.max(0, now - this.#lastBeat - this.#c.membership.heartbeatMs)
    this.#lastBeat = now
    const loopLag = this.#lag !== null ? this.#lag.max / 1e6 : 0
    this.#lag?.reset()
    this.#lagMs = Math.round(Math.max(drift, loopLag))
    for (const t of this.#c.membership.tick(this.#lagMs)) this.#c.onTransition(t)
    void this.#c.gossip.publish(this.#c.topic, encodePresence(this.presence(false)))
  }

  #validate (msg: SignedMessage, from: string): TopicValidatorResult {
    const gossip = this.#c.gossip
    if (msg.data.length > MAX_GOSSIP_BYTES) return gossip.reject('oversized', from)
    const p = decodePresence(msg.data)
    if (p === null) return gossip.reject('bad-presence', from)
    if (p.peerId !== from) return gossip.reject('presence-spoofed', from)
    // a key holder can sign heartbeats with any number of generated keys: a peer id that never
    // connected to this node nor registered is no member (it would hold every claim's settle for its
    // acknowledgement and could win elections nobody records). Ignored, not rejected: a forwarder
    // whose board already has the registration is not to blame
    if (this.#c.vouched !== undefined && !this.#c.vouched(p.peerId)) return gossip.ignore('presence-unvouched', from)
    if (this.#c.membership.get(p.peerId) === undefined && this.#liveMembers() >= MAX_LIVE_MEMBERS) return gossip.ignore('members-full', from)
    // decoded once: the handler takes it from here
    this.#decoded.set(msg, p)
    return TopicValidatorResult.Accept
  }

  /** Peers alive or suspect in the failure detector (counted only when an unknown peer speaks up). */
  #liveMembers (): number {
    let n = 0
    for (const m of this.#c.membership.members()) if (m.state === 'alive' || m.state === 'suspect') n++
    return n
  }

  #handle (msg: SignedMessage, from: string): void {
    const p = this.#decoded.get(msg) ?? decodePresence(msg.data)
    if (p === null) return
    const t = this.#c.membership.heartbeat(p)
    if (t !== null) this.#c.onTransition(t)
    this.#c.onPresence(p)
    this.#c.peerHeads(from, p.heads)
    if (!p.leaving) this.#c.peerAddrs(p)
  }
}
