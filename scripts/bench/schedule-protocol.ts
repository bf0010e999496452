/**
 * The IPC protocol between `scripts/bench-schedule.ts` (the parent) and
 * `scripts/bench/schedule-worker.ts` (one MeshNode + Scheduler per child process).
 * Every timestamp is the sender's `Date.now()`: all processes share one host clock.
 */

/** Configuration of one worker, passed as JSON in argv[2]. */
export interface ScheduleWorkerConfig {
  swarmKeyHex: string
  dataDir: string
  name: string
  bootstrap: string[]
  slots: number
  heartbeatMs: number
  /** Runs the stand-in merger (done -> merged at once once every dep is merged; no git). */
  merger: boolean
}

/** One task of the generated DAG as the parent submits it. */
export interface BenchTask {
  id: string
  deps: string[]
  durationMs: number
  layer: number
}

export type ScheduleCommand =
  | { cmd: 'status', reqId: number }
  | { cmd: 'submit', reqId: number, tasks: BenchTask[] }
  | { cmd: 'progress', reqId: number }
  | { cmd: 'dump', reqId: number }
  | { cmd: 'stats', reqId: number }
  | { cmd: 'stop', reqId: number }

/** Reply of `status`. */
export interface StatusReply {
  peerId: string
  alive: string[]
  tasks: number
}

/** Reply of `progress`: task counts by state in this worker's board. */
export interface ProgressReply {
  states: Record<string, number>
  running: string[]
}

/** Reply of `stats`: how starved the worker's event loop was since the plan arrived, and its CPU time. */
export interface StatsReply {
  lagP50Ms: number
  lagP99Ms: number
  lagMaxMs: number
  cpuMs: number
  /** Messages this node handled since the plan arrived: presence heartbeats/acks received, board changes made and received. */
  presenceIn: number
  changesOut: number
  changesIn: number
  /**
   * For this node's claim changes: ms from the claim to each live peer's
   * acknowledgement (its heartbeat heads contain the claim and this board has
   * those heads), and to the last of them (what the settle step waits for).
   */
  ackMs: number[]
  allAckedMs: number[]
}

/** One task as it stands on the board at the end of a run (reply of `dump`). */
export interface TaskDump {
  id: string
  deps: string[]
  state: string
  epoch: number
  attempts: number
  node: string | null
  createdAt: number
  startedAt: number | null
  doneAt: number | null
  mergedAt: number | null
}

/** A scheduler or node log event forwarded to the parent (only the events the analysis uses). */
export interface LogLine {
  event: string
  level: string
  time: number
  fields: Record<string, unknown>
}

export type ScheduleWorkerEvent =
  | { ev: 'ready', peerId: string, addrs: string[], at: number }
  | { ev: 'failed', error: string }
  /** The scheduler started an agent run (Scheduler `onRunStart`). */
  | { ev: 'run', taskId: string, epoch: number, node: string, at: number }
  /** Task state changes this worker's board went through (local and remote changes). */
  | { ev: 'states', at: number, changes: Array<{ id: string, from: string | null, to: string, epoch: number, node: string | null }> }
  | { ev: 'log', line: LogLine }
  | { ev: 'reply', reqId: number, at: number, ok: true, data?: unknown }
  | { ev: 'reply', reqId: number, at: number, ok: false, error: string }
