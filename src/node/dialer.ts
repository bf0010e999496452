import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions, PeerId, PeerData, Libp2pEvents, TypedEventTarget, Connection } from '@libp2p/interface'
import { every, type Startable } from './service.ts'
import type { Membership } from './membership.ts'
import { DIAL_TIMEOUT_MS, MAX_LEARNED_DIALS, PEER_TARGET, REDIAL_INTERVAL_MS, REMEMBERED_EAGER_MS } from './constants.ts'
import type { Presence } from '../protocol/presence.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** What of the libp2p host the dialing policy uses. */
export interface DialHost extends Pick<TypedEventTarget<Libp2pEvents>, 'addEventListener' | 'removeEventListener'> {
  readonly status: string
  dial: (peer: Multiaddr[], options?: AbortOptions) => Promise<Connection>
  peerStore: { merge: (id: PeerId, data: PeerData) => Promise<unknown> }
}

export interface DialerComponents {
  host: DialHost
  membership: Membership
  /** Addresses to keep trying (`--bootstrap`). */
  bootstrap: string[]
  peerId: () => string
  /** Peers heard before a restart, with their last known addresses (DATA/peers.json); default none. */
  remembered?: () => Array<{ peerId: string, addrs: string[] }>
  logger: Logger
}

/**
 * The dialing policy: keep trying the bootstrap addresses (the first node may
 * come up later), top up to PEER_TARGET peers from addresses learned in
 * heartbeats (at most MAX_LEARNED_DIALS dials at once), and redial peers that
 * went suspect or dead: they may be cut off from us (a partition) rather than
 * gone. A node with no connection at all dials every address it knows every
 * round, of peers that look dead or left too: a peer that restarted on a new
 * port, through which alone it was linked, may not know where it is.
 */
export class Dialer implements Startable {
  readonly #c: DialerComponents
  readonly #log: Logger
  readonly #dialing = new Set<string>()
  /** Dials of peers learned from heartbeats now running (bounded by MAX_LEARNED_DIALS). */
  #learnedDials = 0
  /** Peers with at least one open connection (kept from libp2p's connect/disconnect events). */
  readonly #connected = new Set<string>()
  /** The addresses last put into the peer store for each peer, joined. */
  readonly #storedAddrs = new Map<string, string>()
  #redialRound = 0
  #startedAt = 0
  #stopTimer: (() => void) | null = null
  #started = false
  #stopped = false
  readonly #onConnect = (evt: CustomEvent<PeerId>): void => { this.#connected.add(evt.detail.toString()) }
  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => { this.#connected.delete(evt.detail.toString()) }

  constructor (components: DialerComponents) {
    this.#c = components
    this.#log = components.logger
  }

  start (): void {
    if (this.#started) return
    this.#started = true
    this.#c.host.addEventListener('peer:connect', this.#onConnect)
    this.#c.host.addEventListener('peer:disconnect', this.#onDisconnect)
  }

  afterStart (): void {
    if (this.#stopTimer !== null || this.#stopped) return
    this.#startedAt = Date.now()
    this.#stopTimer = every(REDIAL_INTERVAL_MS, () => { this.#redial() }, err => { this.#log.error('timer:failed', { error: toError(err).message }) })
    this.#redial()
  }

  stop (): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#stopTimer?.()
    this.#stopTimer = null
    this.#c.host.removeEventListener('peer:connect', this.#onConnect)
    this.#c.host.removeEventListener('peer:disconnect', this.#onDisconnect)
  }

  /**
   * A heartbeat told us where its sender listens: record it in the peer store
   * (so a sync or git stream can dial the peer later), and dial the peer if this
   * node has fewer than PEER_TARGET peers and no more than MAX_LEARNED_DIALS
   * such dials running.
   */
  learnAddrs (p: Presence): void {
    if (p.addrs.length === 0 || p.peerId === this.#c.peerId()) return
    const joined = p.addrs.join(' ')
    const connected = this.#connected.has(p.peerId)
    if (this.#storedAddrs.get(p.peerId) !== joined) {
      this.#storedAddrs.set(p.peerId, joined)
      if (this.#storedAddrs.size > 4096) this.#storedAddrs.delete(this.#storedAddrs.keys().next().value as string)
      const addrs = parseAddrs(p.addrs)
      if (addrs.length > 0) void this.#c.host.peerStore.merge(peerIdFromString(p.peerId), { multiaddrs: addrs }).catch(() => {})
    }
    if (connected) return
    this.#dialLearned(p.peerId, p.addrs)
  }

  /** Forgets what was recorded for `peerId` (a peer the membership dropped). */
  forget (peerId: string): void {
    this.#storedAddrs.delete(peerId)
  }

  /** Dials a peer learned from a heartbeat if this node is below its peer target (bounded, never more than MAX_LEARNED_DIALS at once). */
  #dialLearned (peerId: string, addrs: string[]): void {
    if (this.#learnedDials >= MAX_LEARNED_DIALS || this.#connected.size >= PEER_TARGET || this.#dialing.has(peerId)) return
    const parsed = parseAddrs(addrs)
    if (parsed.length === 0) return
    this.#learnedDials++
    void this.#dial(parsed, peerId).finally(() => { this.#learnedDials-- })
  }

  #redial (): void {
    if (this.#c.host.status !== 'started') return
    const self = this.#c.peerId()
    // one dial per peer with all its addresses: dialed one by one, the first (a join token lists
    // 127.0.0.1 first) kept the others out, and on hosts that all listen on port 4001 it is this
    // node's own listener, so a joiner never tried the address that reaches the peer
    const byPeer = new Map<string, Multiaddr[]>()
    for (const addr of this.#c.bootstrap) {
      let ma: Multiaddr
      try { ma = multiaddr(addr) } catch { continue }
      const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
      if (peer !== undefined && this.#connected.has(peer)) continue
      if (peer === self) continue
      const key = peer ?? addr
      byPeer.set(key, [...(byPeer.get(key) ?? []), ma])
    }
    for (const [key, addrs] of byPeer) void this.#dial(addrs, key)
    // a node linked to nobody tries everything it knows, every round: it has nothing else to do, and the
    // peer it was linked through may be back on a new port that only the others can tell it
    const isolated = this.#connected.size === 0
    // dead peers are retried less often: a healed partition must find its way back
    const retryDead = this.#redialRound++ % 5 === 0 || isolated
    // peers remembered from before a restart: every round while isolated or just started (they may know this
    // node only by its old address), then with the dead ones
    if (retryDead || Date.now() - this.#startedAt < REMEMBERED_EAGER_MS) {
      for (const p of this.#c.remembered?.() ?? []) {
        if (p.peerId === self || this.#connected.has(p.peerId)) continue
        const m = this.#c.membership.get(p.peerId)
        if (m !== undefined && !isolated && (m.state === 'alive' || m.state === 'left')) continue
        void this.#dial(parseAddrs(p.addrs), p.peerId)
      }
    }
    for (const m of this.#c.membership.members()) {
      if ((m.state === 'left' && !isolated) || (m.state === 'dead' && !retryDead) || m.addrs.length === 0) continue
      if (this.#connected.has(m.peerId)) continue
      if (m.state === 'alive' && !isolated) this.#dialLearned(m.peerId, m.addrs)
      else void this.#dial(parseAddrs(m.addrs), m.peerId)
    }
  }

  async #dial (addrs: Multiaddr[], key: string): Promise<void> {
    if (addrs.length === 0 || this.#dialing.has(key) || this.#dialing.size >= 16) return
    this.#dialing.add(key)
    try {
      await this.#c.host.dial(addrs, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
    } catch (err) {
      this.#log.debug('dial:failed', { peer: key, error: toError(err).message })
    } finally {
      this.#dialing.delete(key)
    }
  }
}

function parseAddrs (addrs: string[]): Multiaddr[] {
  const out: Multiaddr[] = []
  for (const a of addrs) {
    try { out.push(multiaddr(a)) } catch {}
  }
  return out
}
