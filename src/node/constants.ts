/**
 * Largest gossip message meshwork publishes (enforced at the sender). Bigger
 * payloads go over a direct stream; receivers drop anything larger.
 * @default 256 KiB
 */
export const MAX_GOSSIP_BYTES = 256 * 1024

/**
 * Gossip messages at least this large make gossipsub send IDONTWANT to its mesh
 * peers; smaller ones are cheaper to receive twice than to cancel.
 * @default 16 KiB
 */
export const GOSSIP_IDONTWANT_MIN_BYTES = 16 * 1024

/**
 * Gossipsub mesh degree: target D, bounds Dlo..Dhi, peers kept by score
 * (Dscore) and outbound (Dout), and peers sent IHAVE gossip per heartbeat
 * (Dlazy). Gossipsub's defaults (6, 4..12, 4, 2, 6) suit large public networks;
 * every message reaches each node about once per mesh peer, so for meshes of
 * tens of nodes a smaller degree cuts the work of every heartbeat. From 4 (3..6)
 * to 3 (2..4), in turns on one 2-core host: 50 local nodes delivered a change to
 * all in p99 18.6 and 15.6 s against 22.2 and 25.2 s, and 20 idle nodes used
 * 2.43 % of a core each against 2.70 % (docs/benchmarks.md). A copy a thinner
 * mesh loses is still repaired: authors flood their own messages to every
 * peer, IHAVE gossip goes to Dlazy more, and heartbeats' heads start a board sync.
 */
export const GOSSIP_MESH = { D: 3, Dlo: 2, Dhi: 4, Dscore: 1, Dout: 1, Dlazy: 3 } as const

/** Presence heartbeat period. @default 1000 ms */
export const HEARTBEAT_INTERVAL_MS = 1000

/**
 * Live peers up to which a node heartbeats every period. Past it, its period
 * grows in proportion to the live peers it sees (and it announces the longer
 * period, `Presence.every`, so peers time it out later): each node then
 * receives about this many heartbeats a period however large the mesh, where
 * all-to-all presence made a node's work grow with the mesh and made it the
 * first limit of a large one (docs/scaling.md). The cost is a slower failure
 * detector past this size: suspect after 1.5 announced periods, dead after
 * `--dead-after` or that, whichever is later. At 50 local nodes on 2 cores, 8
 * against 10 in turns: p99 to every node 5.3 and 1.5 s against 8.2 and 2.9 s,
 * idle 1.34 and 1.12 % of a core a node against 1.76 and 1.44 %. @default 8
 */
export const PRESENCE_FULL_RATE_PEERS = 8

/**
 * A calm node (nothing open on its board, nothing running or settling on it)
 * sends its heartbeat this many periods apart, no further apart than its
 * peers' suspect timeout allows (`Membership.calmPeriodMs`): in an idle mesh
 * heartbeat traffic is almost all of a node's CPU. @default 2
 */
export const CALM_HEARTBEAT_PERIODS = 2

/** A peer is suspect after this long without a heartbeat (the product's documented default). @default 3000 ms */
export const DEFAULT_SUSPECT_AFTER_MS = 3000

/** A peer is dead after this long without a heartbeat (the product's documented default). @default 10000 ms */
export const DEFAULT_DEAD_AFTER_MS = 10_000

/**
 * Live peers (alive or suspect) a node keeps in its failure detector. Past it,
 * the presence of a peer it does not know yet is ignored. Every live member
 * costs its share of the heartbeats (`PRESENCE_FULL_RATE_PEERS`), a place in
 * every claim's acknowledgement wait and in the election's candidates; docs/scaling.md models meshes up to 1,000 nodes
 * (where full presence already costs the mesh several cores), so more live
 * members than that can only be peers that are not real, and a bound keeps
 * them from growing those costs without limit.
 * @default 1024
 */
export const MAX_LIVE_MEMBERS = 1024

/** How often a node re-dials bootstrap and known peers it is not connected to. @default 2000 ms */
export const REDIAL_INTERVAL_MS = 2000

/**
 * For how long after its start a node dials the peers it remembers from before
 * a restart (DATA/peers.json) every round while they are not alive, rather than
 * only with the dead ones (every fifth round). Its peers may know it only by the
 * address it had before: if its first dial of one of them fails, that peer may
 * have no other way back to the mesh.
 * @default 30000 ms
 */
export const REMEMBERED_EAGER_MS = 30_000

/**
 * Peers a node dials on its own once it has learned them from heartbeats. Gossip
 * reaches everyone else through them (gossipsub keeps a mesh of about six per
 * topic), and a stream to any peer (sync, git) dials it when needed. Without a
 * bound every node dialled every other one: N x N connections, a storm of
 * handshakes when a large mesh forms on one host, and N-1 copies of every
 * heartbeat under flood publishing. Inbound connections and bootstrap peers do
 * not count against it; peers that look dead or suspect are always redialled
 * (that is how a healed partition finds its way back).
 * @default 10
 */
export const PEER_TARGET = 10

/**
 * How long a dial (TCP, pnet, Noise, Yamux) may take, per address and in all,
 * and how long an inbound upgrade may take. libp2p's defaults (6 s per address,
 * 10 s inbound) aborted handshakes that were nearly done when many nodes start on
 * one busy host (event loops lagging by seconds), and the redials that followed
 * repeated the work: hundreds of "aborted due to timeout" dials at 20 nodes.
 * @default 20000 ms
 */
export const DIAL_TIMEOUT_MS = 20_000

/** Dials of peers learned from heartbeats that may run at once. @default 2 */
export const MAX_LEARNED_DIALS = 2

/** Default listen address of a node (`meshwork node --listen`). */
export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/4001'

/** Largest single frame on meshwork's stream protocols. @default 64 MiB */
export const MAX_STREAM_FRAME_BYTES = 64 * 1024 * 1024

/*
 * Bounds on what one peer can make this node hold (issue 11, case 9). A peer
 * with the swarm key can open streams and start work here; each bound below is
 * set well above what an honest peer does, so only a misbehaving one meets it.
 */

/**
 * Board sync sessions one peer may run against this node at once, over all its
 * connections. An honest node runs one per peer at a time (`requestSync` joins
 * a running session); a client identity (`--identity`, one key for every run
 * of a user) can be open in several processes at once (a `tui` beside a
 * `resolve`, a script submitting in parallel), each with one session. More are
 * refused: the stream is reset at once, logged once per peer and counted in
 * `stats.streamsRefused`; the peer's `requestSync` tries again shortly
 * (SYNC_REFUSED_RETRIES), so a burst of honest commands is slowed, not failed.
 * @default 8
 */
export const SYNC_STREAMS_PER_PEER = 8

/**
 * Sync sessions one peer may start per second (a token bucket: `burst` at
 * once, then `perSecond`). A node starts one when it connects, when a
 * heartbeat shows heads it lacks for two periods and when an oversized change
 * is announced; a client resyncs once a second (CLIENT_RESYNC_MS) plus once or
 * twice per command. Several processes of one client identity together stay
 * well under 10 a second; a peer in a loop starts hundreds, each costing this
 * node an Automerge sync computation over the whole board.
 * @default 10 per second, bursts of 40
 */
export const SYNC_STARTS_PER_PEER = { perSecond: 10, burst: 40 } as const

/**
 * Times `requestSync` tries again, 250 ms, 500 ms and 1 s later, when the
 * peer reset the stream before answering (how a node refuses a sync over its
 * per-peer bounds): a burst of honest commands waits for a slot rather than
 * failing. A peer that cannot be reached at all is not retried.
 * @default 3
 */
export const SYNC_REFUSED_RETRIES = 3

/**
 * How long a sync or members stream may go without a frame arriving (or one
 * being taken by the peer). A sync turn costs the other side one Automerge
 * sync message, well under a second even for a large board on a lagging host;
 * without the bound a peer that opens a stream and sends nothing held it (and
 * its slot) until the session's 60 s limit, or for ever once half-closed.
 * @default 20000 ms
 */
export const STREAM_IDLE_MS = 20_000

/**
 * How long a git transfer (`/meshwork/git/2`, either side) may go without a
 * frame arriving once its request is in. Longer than `STREAM_IDLE_MS`: the
 * server's `git pack-objects` may count and compress a large repository for
 * a minute before the pack header or the next piece, and a requester whose
 * `git index-pack` is slow sends its ACKs late. The request itself must come
 * within `STREAM_IDLE_MS`.
 * @default 120000 ms
 */
export const GIT_IDLE_MS = 120_000

/**
 * Git transfers one peer may have served by this node at once (of the
 * server's 4 in all, DEFAULT_MAX_CONCURRENT_SERVES). An honest leader fetches
 * at most 2 at once (MAX_PARALLEL_FETCHES); a third is answered `busy` and
 * retried, like any request over the server's total. Without it one peer could
 * hold every slot and no other node could fetch a branch from here.
 * @default 2
 */
export const GIT_SERVES_PER_PEER = 2

/**
 * How often a node drops what it keeps per peer or per task and no longer
 * needs (`MeshNode`'s prune timer: membership, sync limits, progress).
 * @default 60000 ms
 */
export const PRUNE_INTERVAL_MS = 60_000

/**
 * A peer this node has not heard for this long, that is dead or left and not
 * registered on the board, is dropped from the membership (a node the board
 * registers stays: it counts toward the majority until `--forget-after` or
 * `meshwork forget`, and the board would seed it again). Peers that only ever
 * heartbeated (a node whose board record never arrived, or one made up by a
 * misbehaving peer) would otherwise be kept for the life of the process.
 * @default 3600000 ms (1 h)
 */
export const MEMBER_PRUNE_AFTER_MS = 3_600_000

/** Gossip topic names of a mesh. */
export function topics (meshId: string): { board: string, presence: string, progress: string } {
  return {
    board: `meshwork/${meshId}/board/1`,
    presence: `meshwork/${meshId}/presence/1`,
    progress: `meshwork/${meshId}/progress/1`
  }
}

/**
 * Peers refused by `--allow` that a node remembers, so it logs each refusal
 * once (`peer:not-allowed`) rather than at every redial. Beyond this the
 * oldest are forgotten (a peer forgotten and refused again is logged again):
 * key holders can generate peer ids without end, and each id would otherwise
 * stay in memory for the life of the process. Forgotten ones are counted
 * (`Allowlist.deniedForgotten`). @default 1024
 */
export const MAX_DENIED_REMEMBERED = 1024

/**
 * Authors whose refused board changes a node counts one by one
 * (`stats.refusedAuthors`, `refused` in `status --json`). The counts travel
 * in every members answer to clients, and a key holder can make up authors
 * without end; beyond this many the author refused least recently is dropped
 * and its count added to `stats.refusedForgotten` (`refusedForgotten` in
 * status). An honest mesh has a handful at most. @default 256
 */
export const MAX_REFUSED_AUTHORS = 256

/** Longest board sync session a node starts (a client confirming its write waits its `--timeout` instead). @default 60 s */
export const SYNC_SESSION_MS = 60_000

/**
 * Longest board sync session a node serves: a client waits up to its
 * `--timeout` for a large change to be taken (a peer that stalls is cut off
 * after `STREAM_IDLE_MS` of silence whatever this says). @default 10 min
 */
export const SYNC_SERVE_MS = 10 * 60_000
