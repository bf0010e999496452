/**
 * The presence and progress gossip topics: one heartbeat per node per period
 * (liveness, load, heads, addresses), and agent progress events.
 */
import { z } from 'zod'
import { decodeJson, encodeJson } from './frame.ts'
import { asPeerId } from '../crdt/schema.ts'

/** Largest lists a presence message may carry (bounded so one peer cannot bloat another's memory). */
const MAX_LIST = 256

/** Most authors a presence message may report as heard directly (the live members a node keeps, MAX_LIVE_MEMBERS). */
const MAX_DIRECT = 1024

/** One presence heartbeat, published every second on the presence topic. */
/** Whether a node can run agents: paused (credentials refused, disk full, …) with the reason and when it tries again. */
export const healthSchema = z.object({
  state: z.enum(['ok', 'paused']),
  reason: z.string().max(500).nullable(),
  until: z.number().nullable(),
  /** What paused it (`usage-limit`, `credentials`, ...), when paused. */
  cause: z.string().max(32).optional(),
  /** A fingerprint of the credentials a usage limit was hit with (a hash, never the secret): peers using the same pause too. */
  credential: z.string().max(80).optional()
})

/** The longest heartbeat period a node may announce (`every`); every version refuses a presence message with a longer one. @default 60 s */
export const MAX_PRESENCE_EVERY_MS = 60_000

export const presenceSchema = z.object({
  v: z.literal(1),
  peerId: z.string().min(1).max(128).transform(asPeerId),
  name: z.string().max(128),
  slots: z.number().int().nonnegative().max(1024),
  running: z.array(z.string().max(64)).max(MAX_LIST),
  heads: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(64),
  addrs: z.array(z.string().max(512)).max(16),
  /** The sender's recent event-loop lag: receivers give a slow peer more time. */
  lagMs: z.number().nonnegative(),
  /** 1-minute load average divided by cores. */
  load: z.number().nonnegative(),
  rssBytes: z.number().nonnegative(),
  /** Epoch ms until which the sender backs off from starting agents (rate limits), or null. */
  backoffUntil: z.number().nullable(),
  /** Whether the sender can run agents: paused (credentials refused, disk full, …) with the reason and when it tries again. */
  health: healthSchema.optional(),
  startedAt: z.number(),
  seq: z.number().int().nonnegative(),
  /** Sender's wall clock at publish time: receivers estimate gossip delay from it. */
  sentAt: z.number().optional(),
  /** false for nodes started with --no-leader. */
  eligible: z.boolean().optional(),
  /**
   * The authors whose heartbeats the sender heard straight from them lately: an
   * 8-character tag each (src/node/presence-relay.ts), joined. Forwarders leave
   * those copies out; absent (versions before it) means every copy is wanted.
   */
  direct: z.string().max(8 * MAX_DIRECT).regex(/^(?:[A-Za-z0-9_-]{8})*$/).optional(),
  /**
   * Milliseconds until the sender's next regular heartbeat, when longer than
   * the usual period (a calm node: nothing open on its board, nothing running
   * on it; or a large mesh); receivers wait that much longer before they
   * suspect it. Absent: the usual period.
   */
  every: z.number().int().positive().max(MAX_PRESENCE_EVERY_MS).optional(),
  /** The sender's meshwork version (absent from versions before it was announced). */
  version: z.string().max(64).optional(),
  /**
   * true: the sender takes a claim's acknowledgements over `/meshwork/ack/1`
   * (src/node/claim-acks.ts) instead of brought-forward heartbeats. Absent:
   * it reads only heartbeats (versions before it).
   */
  acks: z.literal(true).optional(),
  /** true in the last message of a graceful stop. */
  leaving: z.boolean()
})
export type Presence = z.infer<typeof presenceSchema>

/** Decodes and validates a presence message; null when malformed. */
export function decodePresence (data: Uint8Array): Presence | null {
  return decodeJson(presenceSchema, data)
}

export function encodePresence (p: Presence): Uint8Array {
  return encodeJson(p)
}

/** An agent progress event, gossiped on the progress topic (ephemeral: never on the board). */
export const progressSchema = z.object({
  v: z.literal(1),
  peerId: z.string().min(1).max(128),
  taskId: z.string().max(64),
  kind: z.enum(['text', 'tool', 'turn', 'info']),
  text: z.string().max(1000),
  at: z.number()
})
export type ProgressEvent = z.infer<typeof progressSchema>

/** Largest progress message a receiver accepts. */
export const MAX_PROGRESS_BYTES = 4096

/** Decodes and validates a progress message; null when malformed. */
export function decodeProgress (data: Uint8Array): ProgressEvent | null {
  return decodeJson(progressSchema, data)
}

export function encodeProgress (p: ProgressEvent): Uint8Array {
  return encodeJson(p)
}
