/** The public types of a mesh node: its role, its options, its counters and its events. */
import type { ConnectionGater, PrivateKey } from '@libp2p/interface'
import type { SwarmKey } from './swarm-key.ts'
import type { Transition } from './membership.ts'
import type { Presence, ProgressEvent } from '../protocol/presence.ts'
import type { BoardUpdate } from '../crdt/board.ts'
import type { Logger } from '../util/logger.ts'
import type { Allowlist } from './allowlist.ts'

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
  /** A client's libp2p identity (`--identity`); nodes keep theirs in the data dir. @default a new key per run */
  privateKey?: PrivateKey
  connectionGater?: ConnectionGater
  /** `--allow`: admit connections, gossip and board changes only from these peers (and this node). @default everyone with the swarm key */
  allow?: Allowlist
  /** May this node become merge leader? @default true for nodes */
  eligible?: boolean
  /** Test and benchmark knob: hold every inbound gossip message this long before handling it. */
  gossipDelayMs?: number
  /** Test knob: how long a sync or members stream may go without a frame. @default STREAM_IDLE_MS */
  streamIdleMs?: number
  /**
   * Test knob: false makes the node take claim acknowledgements only from
   * heartbeats and not announce `/meshwork/ack/1`, as versions before it did
   * (src/node/claim-acks.ts). @default true
   */
  directAcks?: boolean
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
  /** Board changes refused for their author (see `ReplicationStats.refusedAuthors`): peer id, else actor tag. */
  refusedAuthors: Record<string, number>
  /** Authors dropped from `refusedAuthors` to keep it bounded, and their changes (see `ReplicationStats.refusedForgotten`). */
  refusedForgotten: { keys: number, total: number }
  /** Inbound streams refused or dropped by a per-peer bound, by `protocol:reason` (see `ReplicationStats.streamsRefused`). */
  streamsRefused: Record<string, number>
  /** Copies of gossip messages that arrived, duplicates included (all topics). */
  gossipCopies: { copies: number }
  /** Copies of heartbeats not forwarded to a peer that hears their author directly (src/node/presence-relay.ts). */
  presenceForwardsSkipped: number
  /** The same for board changes and progress (`MeshNode`). */
  forwardsSkipped: number
  /** Claim acknowledgements sent to and received from claimants directly (src/node/claim-acks.ts), and sends that failed. */
  claimAcks: { sent: number, received: number, failed: number }
}

export interface MeshNodeEvents {
  'board:update': CustomEvent<BoardUpdate>
  'peer:state': CustomEvent<Transition>
  'presence': CustomEvent<Presence>
  /** A peer acknowledged this node's claims directly (src/node/claim-acks.ts): its heads on disk. */
  'ack': CustomEvent<{ peerId: string, heads: string[] }>
  'progress': CustomEvent<ProgressEvent>
}

