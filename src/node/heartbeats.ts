/*
 * Over 450 lines, on purpose: a node's presence in one class. What it sends
 * (the heartbeat, its timing, acknowledgements brought forward, the addresses
 * and the direct-peer report it carries) and what it does with the peers'
 * (validation, membership updates, the failure detector's tick) share the
 * timer and the last-sent state; the forwarding rule lives apart
 * (presence-relay.ts), as does the wire format (protocol/presence.ts).
 */
import { loadavg, availableParallelism } from 'node:os'
import { performance as hooks } from 'node:perf_hooks'
import { TopicValidatorResult, type SignedMessage } from '@libp2p/gossipsub'
import type { Startable } from './service.ts'
import type { Gossip } from './gossip.ts'
import type { Membership, Member, Transition } from './membership.ts'
import { MAX_GOSSIP_BYTES, MAX_LIVE_MEMBERS } from './constants.ts'
import { decodePresence, encodePresence, type Presence } from '../protocol/presence.ts'
import type { Board } from '../crdt/board.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'
import { HEALTH_OK, type HealthState } from './health.ts'
import { MESHWORK_VERSION } from './version.ts'
import { PresenceRelay, peerTag } from './presence-relay.ts'

/** How often the resident set size reported in heartbeats is sampled. */
const RSS_SAMPLE_MS = 10_000

/**
 * Event-loop time (ms) below which a heartbeat period counts as quiet: the
 * loop was busy for less than this in all, so no stall of this length can
 * have happened in it (the failure detector widens its timeouts only for lag
 * above 50 ms). After a quiet period the failure detector does not tick four
 * times a period: see `Heartbeats`. @default 50 ms
 */
export const QUIET_BUSY_MS = 50

/** CPUs this node may use (read once: the call opens two files in /proc each time). */
let cpus = 0
function cpuCount (): number {
  if (cpus === 0) cpus = availableParallelism()
  return cpus
}

/**
 * Shortest gap between two presence messages of this node when an
 * acknowledgement brings the next heartbeat forward: acknowledgements of a
 * burst of remote claims share one message. @default 100 ms
 */
export const ACK_MIN_GAP_MS = 100

/** Wait between a remote claim reaching this node's disk and its acknowledgement (claims arriving together share it). @default 20 ms */
export const ACK_DELAY_MS = 20

/**
 * A heartbeat carries this node's addresses when they changed, while the node
 * or a peer of it is new (`ADDRS_FRESH_MS`), and on every `ADDRS_EVERY`th
 * beat; the others carry none (receivers keep what they last heard). Heads go
 * in every beat: they are the claim acknowledgements. @default 10
 */
export const ADDRS_EVERY = 10

/** How long after this node starts, or after a peer comes alive, every heartbeat carries the addresses. @default 10 s */
export const ADDRS_FRESH_MS = 10_000

/**
 * Fields the scheduler adds to each heartbeat: the tasks it runs and its
 * rate-limit back-off; and whether the node is calm (nothing open on its
 * board, nothing running or settling on it), which spaces its heartbeats by
 * `Membership.calmPeriodMs`.
 */
export type PresenceExtras = Partial<Pick<Presence, 'running' | 'backoffUntil' | 'health'>> & { calm?: boolean }

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
  /** Whether this node takes acknowledgements over `/meshwork/ack/1` (announced as `acks`). @default false */
  directAcks?: boolean
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
  /** The event loop's busy time so far, in ms (tests set it). @default from `performance.eventLoopUtilization()` */
  loopBusyMs?: () => number
  logger: Logger
}

/**
 * Presence and failure detection: this node's heartbeat every period (load,
 * event-loop lag, heads, addresses), brought forward after a remote claim so
 * claimants settle quickly (`ackSoon`), the last one on the way down
 * (`leaving`), and the failure detector fed by everyone else's.
 *
 * An acknowledgement is the next heartbeat sent early, not an extra message:
 * the period restarts from it. A node therefore sends one presence message a
 * period while remote claims come less often than that, and at most one per
 * `ACK_MIN_GAP_MS` under a burst (every node acknowledging every claim with
 * an extra message made presence traffic grow with nodes x claims).
 *
 * One class though it is long: the heartbeat timer and the detector's tick
 * share the event-loop lag they measure and the quiet state that decides when
 * the detector ticks at all; the relay's own bookkeeping is apart
 * (presence-relay.ts), as are the detector's states (membership.ts).
 */
export class Heartbeats implements Startable {
  readonly #c: HeartbeatsComponents
  readonly #log: Logger
  /** The failure detector's tick: its period while the event loop is busy, and its largest delay since the last heartbeat. */
  #tickMs = 0
  #tickLate = 0
  /** The detector's next tick, and when it falls due (monotonic ms). */
  #tickTimer: NodeJS.Timeout | null = null
  #tickDue = 0
  /** Whether the event loop was quiet over the last heartbeat period (`QUIET_BUSY_MS`). */
  #quiet = false
  /** The event loop's busy time (ms) at the last heartbeat. */
  #busyAt: number
  #decoded = new WeakMap<SignedMessage, Presence>()
  #extras: () => PresenceExtras = () => ({})
  #seq = 0
  #lagMs = 0
  #rss = 0
  #rssAt = 0
  /** The next presence message: the regular heartbeat, or earlier for an acknowledgement. */
  #beatTimer: NodeJS.Timeout | null = null
  /** When `#beatTimer` fires (wall ms). */
  #beatAt = 0
  /** When the last presence message went out (wall ms). */
  #lastSent = 0
  /** Presence messages sent early as acknowledgements (each replaced a heartbeat). */
  #acks = 0
  /** The addresses last sent, joined, and the beat they went in. */
  #addrsSent = ''
  #addrsSeq = -Infinity
  /** Until when every heartbeat carries the addresses (a peer came alive: it may not know them yet). */
  #addrsFreshUntil = 0
  #onError: (err: unknown) => void = () => {}
  /** Who hears whose heartbeats directly: this node's report, and its peers' for forwarding. */
  readonly #relay: PresenceRelay
  #started = false
  #stopped = false

  constructor (components: HeartbeatsComponents) {
    this.#c = components
    this.#log = components.logger
    this.#busyAt = this.#loopBusy()
    this.#relay = new PresenceRelay(() => components.membership.heartbeatMs)
    components.gossip.route(components.topic, {
      validate: (msg, from, direct) => this.#validate(msg, from, direct),
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
    this.seedFromBoard()
    this.#onError = (err: unknown): void => { this.#log.error('timer:failed', { error: toError(err).message }) }
    // the failure detector looks four times per heartbeat while the event loop is busy: a silent peer is
    // declared as soon as its timeout passes, not up to a whole period later
    // the tick measures the event-loop lag too, by how late it runs: a stall delays it by what is left
    // of the stall when it falls due, so any stall longer than a tick (a quarter period) is seen within a
    // tick of its length, at no cost of its own (a 20 ms delay sampler woke an idle node 50 times a
    // second, more than all its other timers and its gossip together)
    // after a quiet period (the loop busy for less than QUIET_BUSY_MS in all) there was no stall to
    // measure: the detector then ticks at each heartbeat, and in between only when a peer's timeout
    // falls due before the next one (see #armTick), so an idle node is not woken four times a second
    this.#tickMs = Math.max(50, Math.floor(membership.heartbeatMs / 4))
    this.#fire()
  }

  /** The event loop's busy time so far (ms). */
  #loopBusy (): number {
    return this.#c.loopBusyMs?.() ?? hooks.eventLoopUtilization().active
  }

  /** The failure detector's tick: the detector advances, and its next tick is set. */
  #tick (): void {
    this.#tickTimer = null
    if (this.#stopped) return
    try {
      this.#tickLate = Math.max(this.#tickLate, performance.now() - this.#tickDue)
      for (const t of this.#c.membership.tick(this.#lagMs)) this.#c.onTransition(t)
      // an author this node last reported hearing directly has gone quiet on that link: the forwarders
      // learn it from an early heartbeat and send its heartbeats here again
      if (this.#relay.lapsed()) this.#soon()
    } catch (err) {
      this.#onError(err)
    }
    this.#armTick()
  }

  /**
   * Sets the detector's next tick: a quarter period from now while the event
   * loop is busy; after a quiet period, when the next peer's timeout falls due
   * or an author this node reported hearing directly would count as lapsed, if
   * that comes before the next heartbeat (which ticks the detector itself),
   * else none.
   */
  #armTick (): void {
    if (this.#stopped) return
    // busy: a tick already set within a quarter period keeps its pace (heartbeats brought forward do not put it off)
    if (!this.#quiet && this.#tickTimer !== null && this.#tickDue - performance.now() <= this.#tickMs) return
    let ms: number | null = this.#tickMs
    if (this.#quiet) {
      // a peer's timeout, or an author heard directly going quiet on its link (the forwarders must learn
      // it at once, before this node's next heartbeat: within a suspect timeout)
      const member = this.#c.membership.nextChangeIn()
      const lapse = this.#relay.nextLapseIn()
      const due = member === null ? lapse : lapse === null ? member : Math.min(member, lapse)
      ms = due !== null && due < this.#beatAt - Date.now() ? due + 1 : null
    }
    if (this.#tickTimer !== null) clearTimeout(this.#tickTimer)
    this.#tickTimer = null
    if (ms === null) return
    this.#tickDue = performance.now() + ms
    this.#tickTimer = setTimeout(() => { this.#tick() }, ms)
  }

  /** Stops the timers (no more heartbeats). */
  beforeStop (): void {
    if (this.#tickTimer !== null) clearTimeout(this.#tickTimer)
    this.#tickTimer = null
    if (this.#beatTimer !== null) clearTimeout(this.#beatTimer)
    this.#beatTimer = null
    this.#stopped = true
  }

  /**
   * Peers (of `among`: those it would go to; default: any) a forwarded gossip
   * message by `author` (its multihash bytes) need not be sent to: those whose
   * latest heartbeat says they hear the author directly (src/node/presence-relay.ts). The caller says on which topics
   * that holds (`MeshNode`: every topic a node both publishes and follows).
   */
  forwardSkip (author: Uint8Array | undefined, among?: Iterable<string>): ReadonlySet<string> | null {
    if (author === undefined) return null
    return this.#relay.skipFor(peerTag(author), among)
  }

  /** Presence messages this node sent early as acknowledgements, each in place of a heartbeat. */
  get acksSent (): number {
    return this.#acks
  }

  /** Publishes the last heartbeat, with `leaving` set. */
  async announceLeaving (): Promise<void> {
    await this.#c.gossip.publish(this.#c.topic, encodePresence(this.presence(true)))
  }

  stop (): void {
    this.beforeStop()
  }

  /** This node's heartbeat as of now; `every` set while its period is longer than the usual one: the node is calm, or the mesh large (`Membership.periodMs`). */
  presence (leaving: boolean): Presence {
    const extras = this.#extras()
    const period = this.#c.membership.periodMs(extras.calm === true)
    const every = !leaving && period > this.#c.membership.heartbeatMs ? period : undefined
    const now = Date.now()
    if (now - this.#rssAt >= RSS_SAMPLE_MS) {
      this.#rss = process.memoryUsage.rss()
      this.#rssAt = now
    }
    const eligible = this.#c.eligible()
    const direct = this.#relay.report()
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
      load: Math.round(100 * (loadavg()[0] ?? 0) / cpuCount()) / 100,
      rssBytes: this.#rss,
      backoffUntil: extras.backoffUntil ?? null,
      // absent means ok and eligible, to every version (membership.ts)
      ...(extras.health !== undefined && !isOk(extras.health) ? { health: extras.health } : {}),
      startedAt: this.#c.startedAt(),
      seq: this.#seq++,
      sentAt: Date.now(),
      ...(eligible ? {} : { eligible }),
      ...(direct !== '' ? { direct } : {}),
      ...(every !== undefined ? { every } : {}),
      version: MESHWORK_VERSION,
      ...(this.#c.directAcks === true ? { acks: true as const } : {}),
      leaving
    }
  }

  /** Keeps every heartbeat carrying this node's addresses for a while (a peer came alive and may not know them). */
  peerCameAlive (): void {
    this.#addrsFreshUntil = Date.now() + ADDRS_FRESH_MS
  }

  /** `p` as it goes out in a heartbeat: without its addresses when receivers have them (see `ADDRS_EVERY`). */
  #trimmed (p: Presence): Presence {
    const joined = p.addrs.join(' ')
    const now = Date.now()
    const fresh = now - this.#c.startedAt() < ADDRS_FRESH_MS || now < this.#addrsFreshUntil
    if (fresh || joined !== this.#addrsSent || p.seq - this.#addrsSeq >= ADDRS_EVERY) {
      this.#addrsSent = joined
      this.#addrsSeq = p.seq
      return p
    }
    return { ...p, addrs: [] }
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
   * Brings the next heartbeat (with this node's new heads) forward to
   * `ACK_DELAY_MS` from now, or `ACK_MIN_GAP_MS` after the last one; the
   * period restarts from it. Call once a remote claim is on disk (only heads
   * on disk are acknowledged).
   */
  ackSoon (): void {
    if (this.#soon()) this.#acks++
  }

  /**
   * Brings the next heartbeat forward to `ACK_DELAY_MS` from now, or
   * `ACK_MIN_GAP_MS` after the last one; false when one is due by then anyway.
   */
  #soon (): boolean {
    if (!this.#c.announce || !this.#started || this.#stopped) return false
    const now = Date.now()
    const at = Math.max(now + ACK_DELAY_MS, this.#lastSent + ACK_MIN_GAP_MS)
    // the heartbeat already due by then carries it
    if (this.#beatTimer !== null && this.#beatAt <= at) return false
    this.#arm(at - now)
    return true
  }

  /** Sets the next presence message `ms` from now (replacing the one set before). */
  #arm (ms: number): void {
    if (this.#beatTimer !== null) clearTimeout(this.#beatTimer)
    this.#beatAt = Date.now() + ms
    this.#beatTimer = setTimeout(() => { this.#fire() }, ms)
  }

  /** Sends this node's heartbeat now and sets the next one a period later. */
  #fire (): void {
    this.#beatTimer = null
    if (this.#stopped) return
    let period = this.#c.membership.heartbeatMs
    try {
      period = this.#beat()
    } catch (err) {
      this.#onError(err)
    }
    this.#arm(period)
    this.#armTick()
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

  /** Sends this node's heartbeat; returns the period until the next one (longer while calm). */
  #beat (): number {
    const now = Date.now()
    // how late this beat's timer fired (an early one, an acknowledgement, is never late)
    const drift = this.#beatAt === 0 ? 0 : Math.max(0, now - this.#beatAt)
    this.#lastSent = now
    // a stall still under way (the tick is overdue) counts too
    const loopLag = Math.max(this.#tickLate, this.#tickTimer === null ? 0 : performance.now() - this.#tickDue)
    this.#tickLate = 0
    this.#lagMs = Math.round(Math.max(0, drift, loopLag))
    // how busy the event loop was since the last heartbeat: a quiet period had no stall worth measuring
    const busy = this.#loopBusy()
    this.#quiet = busy - this.#busyAt < QUIET_BUSY_MS && this.#lagMs < QUIET_BUSY_MS
    this.#busyAt = busy
    for (const t of this.#c.membership.tick(this.#lagMs)) this.#c.onTransition(t)
    const p = this.presence(false)
    this.#c.membership.announced(p.every ?? this.#c.membership.heartbeatMs)
    this.#relay.sent(p.direct ?? '')
    void this.#c.gossip.publish(this.#c.topic, encodePresence(this.#trimmed(p)))
    return p.every ?? this.#c.membership.heartbeatMs
  }

  #validate (msg: SignedMessage, from: string, direct: boolean): TopicValidatorResult {
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
    this.#relay.heard(peerTag(msg.from.toMultihash().bytes), direct, p.leaving, p.every)
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
    if (t !== null) {
      if (t.to === 'alive') this.peerCameAlive()
      this.#c.onTransition(t)
    }
    this.#relay.peerReport(p.peerId, p.direct, p.every)
    if (this.#quiet && this.#started) {
      // the detector does not tick between heartbeats now: the arrivals of peers' heartbeats are when
      // this node looks whether an author it reported hearing directly went quiet on its link
      if (this.#relay.lapsed()) this.#soon()
      // a timeout shorter than what is left of the period (--suspect-after under the heartbeat period) needs a tick of its own
      if (this.#tickTimer === null && this.#c.membership.suspectAfterMs < this.#beatAt - Date.now()) this.#armTick()
    }
    this.#c.onPresence(p)
    this.#c.peerHeads(from, p.heads)
    if (!p.leaving) this.#c.peerAddrs(p)
  }
}

/** Whether `h` says what an absent `health` says (ok, nothing more). */
function isOk (h: HealthState): boolean {
  return h.state === 'ok' && h.reason === null && h.until === null && h.cause === undefined && h.credential === undefined
}
