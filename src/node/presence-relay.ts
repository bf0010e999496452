/**
 * Which peers hear whose heartbeats straight from their author, so that a
 * node forwarding a heartbeat leaves out the mesh peers that already have it.
 *
 * Gossipsub forwards every message to every mesh peer but the one it came
 * from. With flood publishing an author sends its heartbeat to every peer it
 * is connected to, so in a mesh where nodes are connected to each other (every
 * mesh up to about `PEER_TARGET` nodes) each forwarded copy is a duplicate: in
 * a 4-node mesh two thirds of the presence frames a node received were, and
 * forwarding them was a third of an idle node's CPU.
 *
 * Each heartbeat says which authors the sender heard directly in the last
 * `DIRECT_FRESH_PERIODS` periods (`direct`: a tag per author), and a node
 * forwarding author A's heartbeat skips the peers whose latest report, still
 * fresh, names A. Only the receiver's own experience counts (a copy that
 * arrived from its author), never a sender's belief about its links, so a link
 * that dies silently is noticed by the side that stops hearing: its author
 * lapses from the receiver's report after `DIRECT_FRESH_PERIODS` periods, the
 * receiver sends its next heartbeat early with the shorter report
 * (`Heartbeats`), and the forwarders send it A's heartbeats again from then
 * on, within about two periods of the last direct one (suspect takes three).
 * Periods are the author's and the reporter's own as they announce them
 * (`Presence.every`: a calm node's are longer); a calm author's cut link can
 * then make the receiver suspect it briefly, at its 1.5 calm periods, until a
 * forwarded copy comes: nothing is open on a board that calms its nodes.
 * A peer that sends no report (an older version, or a client) gets every
 * copy, as before, and so does the last heartbeat of an author that is leaving.
 *
 * The same reports spare the forwards of the author's board changes and
 * progress (`MeshNode`): an author floods what it publishes to every peer
 * following the topic, so a peer that hears its heartbeats directly gets those
 * directly too. A copy missed all the same is repaired by the board sync the
 * author's heads in its next heartbeats start.
 */

/** Bytes of a peer's multihash (its last ones) a tag is made of: 48 random bits of its public key. */
const TAG_BYTES = 6

/** Characters of a tag (base64url of `TAG_BYTES` bytes). */
export const TAG_CHARS = 8

/** A peer's tag in `direct` reports: the last 6 bytes of its multihash (its peer id's bytes), base64url. */
export function peerTag (multihash: Uint8Array): string {
  const n = Math.min(TAG_BYTES, multihash.byteLength)
  return Buffer.from(multihash.buffer, multihash.byteOffset + multihash.byteLength - n, n).toString('base64url')
}

/**
 * An author counts as heard directly for this many heartbeat periods after
 * its last heartbeat that arrived from itself. @default 1.5
 */
export const DIRECT_FRESH_PERIODS = 1.5

/**
 * A peer's report is used for this many heartbeat periods after it arrived;
 * an older one (the peer's heartbeats stopped reaching this node) is not, and
 * the peer gets every copy again. @default 2
 */
export const REPORT_FRESH_PERIODS = 2

/** Entries not refreshed for this long are dropped (authors and reporters gone). @default 60 s */
const FORGET_AFTER_MS = 60_000

interface Report {
  tags: Set<string>
  /** Until when the report is used (wall ms): `REPORT_FRESH_PERIODS` of the reporter's period. */
  until: number
}

/** What one node knows about direct heartbeat delivery: its own, and what its peers report. */
export class PresenceRelay {
  readonly #periodMs: () => number
  readonly #now: () => number
  /**
   * Author tag to the wall ms until which it counts as heard directly: its
   * last heartbeat that came from the author itself, plus
   * `DIRECT_FRESH_PERIODS` of the author's period.
   */
  readonly #heard = new Map<string, number>()
  /** Peer id to its last report and when it arrived. */
  readonly #reports = new Map<string, Report>()
  /** Tags of authors whose last heartbeat was their leaving one. */
  readonly #leaving = new Set<string>()
  /** The tags in the last report this node sent. */
  #sent: string[] = []
  #lastForget = 0

  constructor (periodMs: () => number, now: () => number = Date.now) {
    this.#periodMs = periodMs
    this.#now = now
  }

  /**
   * A heartbeat of the author tagged `tag` passed validation; `direct`: it
   * came from the author itself; `periodMs`: the author's announced period
   * until its next one (a calm author's is longer). @default this node's period
   */
  heard (tag: string, direct: boolean, leaving: boolean, periodMs = this.#periodMs()): void {
    if (direct) this.#heard.set(tag, this.#now() + DIRECT_FRESH_PERIODS * periodMs)
    if (leaving) this.#leaving.add(tag)
    else if (this.#leaving.size > 0) this.#leaving.delete(tag)
  }

  /** This node's report for its next heartbeat: the tags of authors heard directly lately, joined. */
  report (): string {
    const now = this.#now()
    let out = ''
    for (const [tag, until] of this.#heard) if (until >= now) out += tag
    this.#forget(now)
    return out
  }

  /** Records `report` as sent (the tags a lapse is looked for in). */
  sent (report: string): void {
    this.#sent = split(report)
  }

  /**
   * Whether an author in the last report sent is no longer heard directly: the
   * forwarders should learn it now (an early heartbeat), not at the next one.
   */
  lapsed (): boolean {
    if (this.#sent.length === 0) return false
    const now = this.#now()
    for (const tag of this.#sent) if ((this.#heard.get(tag) ?? -Infinity) < now) return true
    return false
  }

  /** Milliseconds until `lapsed` would turn true if no author in the last report is heard directly meanwhile; null: never. */
  nextLapseIn (): number | null {
    if (this.#sent.length === 0) return null
    let next = Infinity
    for (const tag of this.#sent) next = Math.min(next, this.#heard.get(tag) ?? -Infinity)
    return next === Infinity ? null : Math.max(0, next - this.#now())
  }

  /**
   * A peer's heartbeat arrived with its report (`undefined`: it sends none,
   * so it gets every copy); `periodMs`: the peer's announced period until its
   * next one. @default this node's period
   */
  peerReport (peerId: string, report: string | undefined, periodMs = this.#periodMs()): void {
    if (report === undefined) {
      this.#reports.delete(peerId)
      return
    }
    const now = this.#now()
    this.#reports.set(peerId, { tags: new Set(split(report)), until: now + REPORT_FRESH_PERIODS * periodMs })
  }

  /**
   * The peers (of `among`, the peers a copy would go to; default: every peer
   * that reported) that need no forwarded copy of a heartbeat by the author
   * tagged `tag`: those whose fresh report names it. Null when none (or the
   * author is leaving: its last heartbeat goes every way).
   */
  skipFor (tag: string, among?: Iterable<string>): Set<string> | null {
    if (this.#leaving.has(tag)) return null
    const now = this.#now()
    let out: Set<string> | null = null
    for (const peer of among ?? this.#reports.keys()) {
      const r = this.#reports.get(peer)
      if (r === undefined || r.until < now || !r.tags.has(tag)) continue
      out ??= new Set()
      out.add(peer)
    }
    return out
  }

  #forget (now: number): void {
    if (now - this.#lastForget < FORGET_AFTER_MS) return
    this.#lastForget = now
    for (const [tag, until] of this.#heard) if (now - until > FORGET_AFTER_MS) { this.#heard.delete(tag); this.#leaving.delete(tag) }
    for (const [peer, r] of this.#reports) if (now - r.until > FORGET_AFTER_MS) this.#reports.delete(peer)
  }
}

/** The tags of a report. */
function split (report: string): string[] {
  const out: string[] = []
  for (let i = 0; i + TAG_CHARS <= report.length; i += TAG_CHARS) out.push(report.slice(i, i + TAG_CHARS))
  return out
}
