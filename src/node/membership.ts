import { MAX_PRESENCE_EVERY_MS, type Presence } from '../protocol/presence.ts'
import { HEALTH_OK, type HealthState } from './health.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import { CALM_HEARTBEAT_PERIODS, DEFAULT_DEAD_AFTER_MS, DEFAULT_SUSPECT_AFTER_MS, HEARTBEAT_INTERVAL_MS, PRESENCE_FULL_RATE_PEERS } from './constants.ts'

/**
 * A peer is suspect no sooner than this many of its announced heartbeat
 * periods after its last heartbeat (`Presence.every`): a calm peer's slower
 * heartbeat never makes it suspect, whatever this node's own timeouts.
 * @default 1.5
 */
export const SUSPECT_PERIODS = 1.5

/**
 * A peer counts toward the majority main needs while heard within this many
 * of this node's own announced heartbeat periods, at least (`leaseMs`): more
 * than one period, so a heartbeat a little late does not drop it, and less than
 * `SUSPECT_PERIODS`, so the lease ends before the peers can hold this node dead.
 * @default 1.25
 */
export const LEASE_PERIODS = 1.25

/** Liveness of a peer as this node sees it. */
export const MEMBER_STATES = ['alive', 'suspect', 'dead', 'left'] as const
export type MemberState = typeof MEMBER_STATES[number]

/** What this node knows about one peer. */
export interface Member {
  peerId: PeerIdString
  name: string
  slots: number
  running: string[]
  heads: string[]
  addrs: string[]
  load: number
  lagMs: number
  backoffUntil: number | null
  /** Whether the peer can run agents (paused: claims nothing until the cause is gone); absent: ok. */
  health?: HealthState
  state: MemberState
  /** May become merge leader (false with --no-leader). */
  eligible: boolean
  /** The meshwork version the peer announces; absent until heard, or from versions before it was announced. */
  version?: string
  /** Wall-clock ms since which the peer has been continuously alive, or null. */
  aliveSince: number | null
  /** Wall-clock ms of the last heartbeat, or null if never heard from (known from the board only). */
  lastSeenAt: number | null
  /** Milliseconds since the last heartbeat, as this node's failure detector counts them. */
  silentMs: number
}

export interface MembershipInit {
  suspectAfterMs?: number
  deadAfterMs?: number
  heartbeatMs?: number
  /** Wall clock (tests may replace it). */
  now?: () => number
}

/** A state change produced by `tick()` or a heartbeat. */
export interface Transition {
  peerId: PeerIdString
  from: MemberState | null
  to: MemberState
}

interface Entry {
  member: Member
  /** Failure-detector clock reading of the last heartbeat. */
  seenClock: number
  /** The period the peer announced for its next heartbeat (its `every`, else this node's own period). */
  periodMs: number
  heard: boolean
  /** Wall-clock ms of the last heartbeat, or of the seed when never heard (for `prune`). */
  seenWall: number
}

/**
 * The failure detector: heartbeats make a peer alive; silence for
 * `suspectAfterMs` makes it suspect and for `deadAfterMs` dead; a leaving
 * heartbeat makes it left.
 *
 * Two guards against false positives on a busy host (after memberlist's
 * Lifeguard): silence is measured on a clock that advances by at most two
 * heartbeat periods per tick, so a stalled event loop does not age every peer at
 * once; and the timeouts widen with this node's own event-loop lag and with the
 * lag each peer reports about itself.
 */
export class Membership {
  readonly suspectAfterMs: number
  readonly deadAfterMs: number
  readonly heartbeatMs: number
  #now: () => number
  #entries = new Map<string, Entry>()
  #clock = 0
  #lastTickWall: number
  #localLagMs = 0
  /** The period this node announced in its last heartbeat (`announced`): a stall counts as at most two of them. */
  #ownPeriodMs: number
  /** The shorter of the last two periods announced (`leaseMs`). */
  #leasePeriodMs: number

  constructor (init: MembershipInit = {}) {
    this.suspectAfterMs = init.suspectAfterMs ?? DEFAULT_SUSPECT_AFTER_MS
    this.deadAfterMs = init.deadAfterMs ?? DEFAULT_DEAD_AFTER_MS
    this.heartbeatMs = init.heartbeatMs ?? HEARTBEAT_INTERVAL_MS
    if (this.deadAfterMs < this.suspectAfterMs) throw new RangeError('deadAfterMs must be at least suspectAfterMs')
    this.#now = init.now ?? Date.now
    this.#lastTickWall = this.#now()
    this.#ownPeriodMs = this.heartbeatMs
    this.#leasePeriodMs = this.heartbeatMs
  }

  /**
   * The period of this node's next heartbeat: `heartbeatMs` (or `calmPeriodMs`
   * while calm), and longer in a mesh of more than `PRESENCE_FULL_RATE_PEERS`
   * live peers, in proportion to them, so that each node receives about that
   * many heartbeats a period whatever the mesh's size (up to
   * `MAX_PRESENCE_EVERY_MS`, the longest period peers take: 480 live peers).
   */
  periodMs (calm: boolean): number {
    let live = 0
    for (const e of this.#entries.values()) if (e.member.state === 'alive' || e.member.state === 'suspect') live++
    const scaled = Math.min(MAX_PRESENCE_EVERY_MS, Math.round(this.heartbeatMs * live / PRESENCE_FULL_RATE_PEERS))
    return Math.max(calm ? this.calmPeriodMs : this.heartbeatMs, scaled)
  }

  /**
   * Records the period this node announced in the heartbeat it just sent (its
   * `every`, else `heartbeatMs`): the failure detector's clock lets a stall
   * count as two of them, and the lease follows them (`leaseMs`).
   */
  announced (periodMs: number): void {
    this.#leasePeriodMs = Math.min(this.#ownPeriodMs, periodMs)
    this.#ownPeriodMs = periodMs
  }

  /**
   * How recently a peer must have been heard to count toward the majority main
   * needs (`quorum` in scheduler/election.ts): half of `deadAfterMs`, or
   * `LEASE_PERIODS` of this node's announced period when that is longer (a
   * large mesh). Never widened. Either way shorter than the time its peers take
   * to hold this node dead once it goes silent: `deadAfterMs` and 1.5 of its
   * announced periods, whichever is later (of the last two periods announced,
   * the shorter counts: the heartbeat announcing the longer may not have
   * reached them).
   */
  get leaseMs (): number {
    return Math.max(Math.floor(this.deadAfterMs / 2), Math.ceil(LEASE_PERIODS * this.#leasePeriodMs))
  }

  /**
   * The period a calm node sends its heartbeats at (`CALM_HEARTBEAT_PERIODS`),
   * short enough that a peer with this node's suspect timeout never suspects
   * it (`SUSPECT_PERIODS`); `heartbeatMs` when that leaves no room.
   */
  get calmPeriodMs (): number {
    return Math.max(this.heartbeatMs, Math.min(CALM_HEARTBEAT_PERIODS * this.heartbeatMs, Math.floor(this.suspectAfterMs / SUSPECT_PERIODS)))
  }

  /**
   * The failure detector's clock: wall time, except that a stall counts as at
   * most two heartbeat periods. Two usual periods, also while this node is
   * calm and ticks once a calm period: a stall of its own must not age its
   * peers past their suspect timeout at once; its clock then falls behind by
   * how late its timers run, and a silent peer is declared that much later.
   */
  #clockNow (): number {
    const delta = this.#now() - this.#lastTickWall
    return this.#clock + Math.max(0, Math.min(delta, this.#stallCapMs()))
  }

  /** The most the detector's clock advances in one step: two of this node's heartbeat periods (a quiet node ticks at each). */
  #stallCapMs (): number {
    return 2 * Math.max(this.heartbeatMs, this.#ownPeriodMs)
  }

  /** A peer's suspect and dead timeouts before widening: this node's, or longer for a peer that announced a long period. */
  #limits (e: Entry): { suspect: number, dead: number } {
    const suspect = Math.max(this.suspectAfterMs, SUSPECT_PERIODS * e.periodMs)
    return { suspect, dead: Math.max(this.deadAfterMs, suspect) }
  }

  /** Records a heartbeat; returns the transition it caused, if any. */
  heartbeat (p: Presence): Transition | null {
    const prev = this.#entries.get(p.peerId)
    const from = prev?.member.state ?? null
    const member: Member = {
      peerId: p.peerId,
      name: p.name,
      slots: p.slots,
      running: p.running,
      heads: p.heads,
      // a heartbeat without addresses keeps the last ones heard (they are sent when they change, see heartbeats.ts)
      addrs: p.addrs.length > 0 ? p.addrs : prev?.member.addrs ?? [],
      load: p.load,
      lagMs: p.lagMs,
      backoffUntil: p.backoffUntil,
      health: p.health ?? HEALTH_OK,
      state: p.leaving ? 'left' : 'alive',
      eligible: p.eligible ?? true,
      ...(p.version !== undefined ? { version: p.version } : {}),
      aliveSince: p.leaving ? null : prev?.member.state === 'alive' ? prev.member.aliveSince : this.#now(),
      lastSeenAt: this.#now(),
      silentMs: 0
    }
    this.#entries.set(p.peerId, { member, seenClock: this.#clockNow(), periodMs: p.every ?? this.heartbeatMs, heard: true, seenWall: this.#now() })
    return from === member.state ? null : { peerId: p.peerId, from, to: member.state }
  }

  /**
   * Makes a peer known without having heard from it (from the board's node
   * registry). It starts suspect and turns dead unless it speaks up; a peer
   * recorded as gracefully left starts left.
   */
  seed (peerId: PeerIdString, name: string, slots: number, left: boolean): void {
    if (this.#entries.has(peerId)) return
    this.#entries.set(peerId, {
      member: { peerId, name, slots, running: [], heads: [], addrs: [], load: 0, lagMs: 0, backoffUntil: null, health: HEALTH_OK, state: left ? 'left' : 'suspect', eligible: true, aliveSince: null, lastSeenAt: null, silentMs: 0 },
      seenClock: this.#clockNow(),
      periodMs: this.heartbeatMs,
      heard: false,
      seenWall: this.#now()
    })
  }

  /** Removes a peer (e.g. ourselves). */
  forget (peerId: string): void {
    this.#entries.delete(peerId)
  }

  /**
   * Drops peers gone for long: dead or left, not heard from (nor seeded) for
   * `afterMs` of wall-clock time, and not kept by `keep` (the node keeps the
   * peers its board registers: they still count toward the majority, and the
   * board would seed them again). Returns the peers dropped.
   */
  prune (afterMs: number, keep: (peerId: PeerIdString) => boolean): PeerIdString[] {
    const now = this.#now()
    const dropped: PeerIdString[] = []
    for (const [id, e] of this.#entries) {
      const m = e.member
      if (m.state !== 'dead' && m.state !== 'left') continue
      if (now - e.seenWall < afterMs || keep(m.peerId)) continue
      this.#entries.delete(id)
      dropped.push(m.peerId)
    }
    return dropped
  }

  /** Peers known (for tests of `prune`). */
  get size (): number {
    return this.#entries.size
  }

  /**
   * Advances the detector; call once per heartbeat period. `localLagMs` is this
   * node's recent event-loop lag. Returns the state changes.
   */
  tick (localLagMs = 0): Transition[] {
    const wall = this.#now()
    this.#clock += Math.max(0, Math.min(wall - this.#lastTickWall, this.#stallCapMs()))
    this.#lastTickWall = wall
    this.#localLagMs = localLagMs
    const out: Transition[] = []
    for (const e of this.#entries.values()) {
      const m = e.member
      m.silentMs = this.#clock - e.seenClock
      if (m.state === 'left') continue
      const widen = this.#widening(m.lagMs)
      const limit = this.#limits(e)
      let next: MemberState = 'alive'
      if (m.silentMs >= limit.dead * widen) next = 'dead'
      else if (m.silentMs >= limit.suspect * widen || !e.heard) next = 'suspect'
      if (next !== m.state) {
        out.push({ peerId: m.peerId, from: m.state, to: next })
        m.state = next
        if (next !== 'alive') m.aliveSince = null
      }
    }
    return out
  }

  /**
   * Milliseconds from now until the next change `tick` would make if no
   * heartbeat arrives meanwhile (a peer's suspect or dead timeout, widened as
   * they are now), or null when none is coming (no peer, or every one dead or
   * left: only a heartbeat changes those).
   */
  nextChangeIn (): number | null {
    const clock = this.#clockNow()
    let next = Infinity
    for (const e of this.#entries.values()) {
      const m = e.member
      if (m.state === 'dead' || m.state === 'left') continue
      const limit = this.#limits(e)
      const at = e.seenClock + (m.state === 'alive' ? limit.suspect : limit.dead) * this.#widening(m.lagMs)
      if (at < next) next = at
    }
    return next === Infinity ? null : Math.max(0, next - clock)
  }

  /** Timeout multiplier: 1 on a healthy host, up to 4 when this node or the peer lags. */
  #widening (peerLagMs: number): number {
    const lag = Math.max(0, this.#localLagMs - 50) + Math.max(0, peerLagMs - 50)
    return 1 + Math.min(3, lag / this.heartbeatMs)
  }

  get (peerId: string): Member | undefined {
    return this.#entries.get(peerId)?.member
  }

  /** Every known peer. */
  members (): Member[] {
    return [...this.#entries.values()].map(e => ({ ...e.member, silentMs: this.#clockNow() - e.seenClock }))
  }

  /** Peers currently alive. */
  alive (): Member[] {
    return this.members().filter(m => m.state === 'alive')
  }
}
