/**
 * Largest gossip message meshwork publishes (enforced at the sender). Bigger
 * payloads go over a direct stream; receivers drop anything larger.
 * @default 256 KiB
 */
export const MAX_GOSSIP_BYTES = 256 * 1024

/** Presence heartbeat period. @default 1000 ms */
export const HEARTBEAT_INTERVAL_MS = 1000

/** A peer is suspect after this long without a heartbeat (SPEC). @default 3000 ms */
export const DEFAULT_SUSPECT_AFTER_MS = 3000

/** A peer is dead after this long without a heartbeat (SPEC). @default 10000 ms */
export const DEFAULT_DEAD_AFTER_MS = 10_000

/** How often a node re-dials bootstrap and known peers it is not connected to. @default 2000 ms */
export const REDIAL_INTERVAL_MS = 2000

/** Default listen address of a node (SPEC). */
export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/4001'

/** Stream protocol for Automerge anti-entropy sync of the board. */
export const SYNC_PROTOCOL = '/meshwork/sync/1'

/** Stream protocol a light client uses to read a node's membership view. */
export const MEMBERS_PROTOCOL = '/meshwork/members/1'

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
