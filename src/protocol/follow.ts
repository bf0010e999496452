/**
 * `/meshwork/follow/1`: `submit --wait` follows its plan through one node
 * instead of holding a replica of the board. The client sends one
 * length-prefixed JSON message (no tag), `{"ids": [...]}`; the node answers
 * with a stream of JSON messages, `{"tasks": [...]}`, each carrying the tasks
 * of those ids whose line changed since the last message (the first: every
 * one on its board), a message with no task at least every
 * `FOLLOW_KEEPALIVE_MS` so a silent node is told from a quiet plan, until the
 * client closes the stream.
 *
 * Not among the wire families nodes compare (`WIRE_PROTOCOLS`): only clients
 * dial it, and a client whose node does not serve it (a node of an earlier
 * release) follows through a board replica as before.
 */
import { z } from 'zod'
import { parseJson } from './frame.ts'
import { TASK_STATES } from '../crdt/schema.ts'

export const FOLLOW_PROTOCOL = '/meshwork/follow/1'

/** Most task ids one client may follow on one stream (a plan's tasks). */
export const MAX_FOLLOWED_IDS = 100_000

/** A node sends a message at least this often, with no task when nothing changed. @default 5 s */
export const FOLLOW_KEEPALIVE_MS = 5000

export const followRequestSchema = z.object({
  ids: z.array(z.string().min(1).max(256)).min(1).max(MAX_FOLLOWED_IDS)
})

/**
 * One task as `submit --wait` shows it: what its line says, whether it waits
 * behind a dependency a human must act on (`blockedBy`, with what that
 * dependency's next step is), and whether a spent budget holds it.
 */
export const followEntrySchema = z.looseObject({
  id: z.string(),
  state: z.enum(TASK_STATES),
  attempts: z.number().int().nonnegative(),
  /** The peer id of the node it runs (ran) on. */
  node: z.string().nullable(),
  /** That node's name as the board has it, or the last 8 characters of its peer id; `-` for none. */
  nodeName: z.string(),
  error: z.string().nullable(),
  blockedBy: z.object({ id: z.string(), state: z.enum(TASK_STATES), step: z.string().nullable() }).nullable(),
  held: z.boolean()
})

export type FollowEntry = z.infer<typeof followEntrySchema>

export const followMessageSchema = z.looseObject({
  tasks: z.array(followEntrySchema).max(MAX_FOLLOWED_IDS)
})

/** Thrown when a node's follow message does not match the schema. */
export class BadFollowMessageError extends Error {
  override name = 'BadFollowMessageError'
}

/** Parses one follow message; throws `BadFollowMessageError` naming what is wrong. */
export function decodeFollowMessage (bytes: Uint8Array, from: string): FollowEntry[] {
  const r = parseJson(followMessageSchema, bytes)
  if (!r.ok) throw new BadFollowMessageError(`a follow message from ${from} is malformed: ${r.reason.slice(0, 500)}`)
  return r.value.tasks
}
