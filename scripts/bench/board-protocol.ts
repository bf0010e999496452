/**
 * The IPC protocol between `scripts/bench-board.ts` (the parent) and
 * `scripts/bench/board-worker.ts` (one or more MeshNodes per child process).
 */

/**
 * What a child process runs, passed as JSON in argv[2]: one node (a
 * `WorkerConfig`) or several (`{ group: [...] }`), each a full libp2p node on
 * its own TCP port, sharing the process's event loop. Commands and events name
 * the node by its index in the group (`node`, 0 when absent).
 */
export type ProcessConfig = WorkerConfig | { group: WorkerConfig[] }

/** Configuration of one node. */
export interface WorkerConfig {
  swarmKeyHex: string
  dataDir: string
  name: string
  bootstrap: string[]
  heartbeatMs: number
  suspectAfterMs?: number
  deadAfterMs?: number
  /** Send an `update` event for every remote board change that touches tasks. */
  reportUpdates: boolean
  /** Send one `hasAll` event once the board holds at least this many tasks (joiner). */
  expectTasks?: number
  /** Count gossipsub RPCs sent, by kind and topic (diagnostics; see `rpcSent` in the status). */
  traceRpc?: boolean
  /**
   * Diagnostic only (`--diag-no-ping-abort`): stop libp2p's connection monitor from
   * aborting a connection when one ping times out. Not meshwork's configuration.
   */
  diagNoPingAbort?: boolean
}

/** One step of a modelled task lifecycle (what the scheduler will write). */
export type LifecycleStep = 'create' | 'claim' | 'running' | 'done' | 'merging' | 'merged'
export const LIFECYCLE_STEPS: readonly LifecycleStep[] = ['create', 'claim', 'running', 'done', 'merging', 'merged']

export type Command = (
  | { cmd: 'write', reqId: number, id: string }
  | { cmd: 'bulk', reqId: number, prefix: string, count: number, batch: number, promptChars: number }
  | { cmd: 'step', reqId: number, id: string, step: LifecycleStep }
  | { cmd: 'status', reqId: number }
  | { cmd: 'save', reqId: number }
  | { cmd: 'stop', reqId: number }
) & { node?: number }

export interface StatusReply {
  peerId: string
  alive: number
  memberStates: Record<string, number>
  tasks: number
  heads: number
  connections: number
  /** Connections of this node that closed since it started (any reason). */
  connectionsClosed: number
  boardMeshPeers: number
  presenceMeshPeers: number
  rss: number
  /** Largest event-loop lag the other nodes reported in their last heartbeats. */
  maxPeerLagMs: number
  stats: unknown
  /** Gossipsub RPCs sent since start, when `traceRpc` is set: bytes and counts by kind. */
  rpcSent: Record<string, number> | null
  /** debug/warn/error log events by name (the worker counts them instead of printing them). */
  logCounts: Record<string, number>
  /** The last error text logged with each counted event. */
  lastErrors: Record<string, string>
}

export type WorkerEvent = WorkerEventBody & { node?: number }

type WorkerEventBody =
  | { ev: 'boot', at: number }
  | { ev: 'starting', at: number }
  | { ev: 'ready', peerId: string, addrs: string[], at: number }
  | { ev: 'failed', error: string }
  | { ev: 'update', taskIds: string[], states: Array<string | null>, at: number }
  | { ev: 'peer', peerId: string, from: string | null, to: string, at: number }
  | { ev: 'hasAll', tasks: number, at: number }
  | { ev: 'reply', reqId: number, at: number, ok: true, data?: unknown }
  | { ev: 'reply', reqId: number, at: number, ok: false, error: string }

/** Reply data of a write-like command: when the change was made and its bytes. */
export interface WroteReply {
  /** Date.now() just before the change was made. */
  at: number
  /** Byte length of each Automerge change made (the gossip payload is 1 byte more). */
  changeBytes: number[]
}

/** Reply data of `save`. */
export interface SaveReply {
  /** Length of `Automerge.save()` of the whole board (compacted). */
  saveBytes: number
  /** board.am + board.log on disk after a flush. */
  diskBytes: number
  tasks: number
  changes: number
}
