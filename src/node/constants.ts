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
 * tens of nodes a smaller degree cuts the work of every heartbeat.
 */
export const GOSSIP_MESH = { D: 4, Dlo: 3, Dhi: 6, Dscore: 2, Dout: 2, Dlazy: 3 } as const

/** Presence heartbeat period. @default 1000 ms */
export const HEARTBEAT_INTERVAL_MS = 1000

/** A peer is suspect after this long without a heartbeat (the product's documented default). @default 3000 ms */
export const DEFAULT_SUSPECT_AFTER_MS = 3000

/** A peer is dead after this long without a heartbeat (the product's documented default). @default 10000 ms */
export const DEFAULT_DEAD_AFTER_MS = 10_000

/**
 * Live peers (alive or suspect) a node keeps in its failure detector. Past it,
 * the presence of a peer it does not know yet is ignored. Every live member
 * costs a heartbeat a second, a place in every claim's acknowledgement wait and
 * in the election's candidates; docs/scaling.md models meshes up to 1,000 nodes
 * (where full presence already costs the mesh several cores), so more live
 * members than that can only be peers that are not real, and a bound keeps
 * them from growing those costs without limit.
 * @default 1024
 */
export const MAX_LIVE_MEMBERS = 1024

/** How often a node re-dials bootstrap and known peers it is not connected to. @default 2000 ms */
export const REDIAL_INTERVAL_MS = 2000

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

/** Gossip topic names of a mesh. */
export function topics (meshId: string): { board: string, presence: string, progress: string } {
  return {
    board: `meshwork/${meshId}/board/1`,
    presence: `meshwork/${meshId}/presence/1`,
    progress: `meshwork/${meshId}/progress/1`
  }
}
