/**
 * `/meshwork/members/1`: a light client asks a node for its view of the mesh.
 * The node answers with one length-prefixed JSON message (no tag) and closes.
 */
import { z } from 'zod'
import { parseJson } from './frame.ts'
import { healthSchema } from './presence.ts'
import { asPeerId } from '../crdt/schema.ts'
import type { Member } from '../node/membership.ts'

export const MEMBERS_PROTOCOL = '/meshwork/members/1'

/** Longest list a members view may carry. */
const MAX_MEMBERS = 4096

export const memberSchema = z.object({
  peerId: z.string().min(1).max(128).transform(asPeerId),
  name: z.string().max(128),
  slots: z.number().int().nonnegative(),
  running: z.array(z.string()),
  heads: z.array(z.string()),
  addrs: z.array(z.string()),
  load: z.number(),
  lagMs: z.number(),
  backoffUntil: z.number().nullable(),
  health: healthSchema.optional(),
  state: z.enum(['alive', 'suspect', 'dead', 'left']),
  eligible: z.boolean(),
  /** Absent from nodes of versions before it was reported, and for peers not heard from. */
  version: z.string().max(64).optional(),
  aliveSince: z.number().nullable(),
  lastSeenAt: z.number().nullable(),
  silentMs: z.number()
}) satisfies z.ZodType<Member>

export const membersViewSchema = z.object({
  self: z.string().min(1).max(128),
  members: z.array(memberSchema).max(MAX_MEMBERS),
  /** The latest agent progress event of each task this node has heard about. */
  progress: z.record(z.string(), z.object({
    kind: z.string(),
    text: z.string(),
    at: z.number(),
    peerId: z.string()
  })).optional(),
  /** Board changes this node refused for their author (peer id, else actor tag) → count. */
  refused: z.record(z.string().max(128), z.number().int().nonnegative()).optional(),
  /** Authors dropped from `refused` to keep it bounded (least recently refused first), and their refused changes. */
  refusedForgotten: z.object({ authors: z.number().int().nonnegative(), changes: z.number().int().nonnegative() }).optional()
})

/** What a node reports about the mesh's membership over `/meshwork/members/1`. */
export type MembersView = z.infer<typeof membersViewSchema>

/** Thrown when a node's members answer does not match the schema. */
export class BadMembersViewError extends Error {
  override name = 'BadMembersViewError'
}

/** Parses a members answer; throws `BadMembersViewError` naming what is wrong. */
export function decodeMembersView (bytes: Uint8Array, from: string): MembersView {
  const r = parseJson(membersViewSchema, bytes)
  if (!r.ok) throw new BadMembersViewError(`the members view from ${from} is malformed: ${r.reason.slice(0, 500)}`)
  return r.value
}
