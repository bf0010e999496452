/**
 * `/meshwork/status/1`: a light client asks a node for the status report as
 * that node sees the mesh (its board and its membership view), the object
 * `meshwork status --json` prints. The node answers with one length-prefixed
 * JSON message (no tag) and closes. One round trip instead of a board sync and
 * a members request: `status` needs neither Automerge nor gossip for it.
 *
 * Not among the wire families nodes compare (`WIRE_PROTOCOLS`): only clients
 * dial it, and a client whose node does not serve it (a node of an earlier
 * release) reads the status the way it did before (board sync, members view).
 *
 * Objects are loose: a field a newer node adds reaches the printed report.
 */
import { z } from 'zod'
import { parseJson } from './frame.ts'
import { healthSchema } from './presence.ts'
import { TASK_STATES, conflictHunkSchema, pushReportSchema, quorumReportSchema, tokensSchema } from '../crdt/schema.ts'
import { APPROVAL_STATES } from '../crdt/approval-schema.ts'
import type { StatusReport } from '../api/status.ts'

export const STATUS_PROTOCOL = '/meshwork/status/1'

/** Longest list a status report may carry (nodes, tasks, conflicts, approvals). */
const MAX_ITEMS = 100_000

const nullableString = z.string().nullable()
const nullableNumber = z.number().nullable()

const statusNodeSchema = z.looseObject({
  peerId: z.string().min(1).max(128),
  name: z.string(),
  // `draining` as a state: from versions before the `draining` field (read as alive and draining)
  state: z.enum(['alive', 'suspect', 'dead', 'left', 'draining']),
  draining: z.boolean().optional(),
  slots: z.number().int().nonnegative(),
  running: z.array(z.string()),
  lastSeenMs: nullableNumber,
  health: healthSchema,
  forgotten: z.boolean().optional(),
  version: nullableString
}).transform(n => ({ ...n, state: n.state === 'draining' ? 'alive' : n.state, draining: n.state === 'draining' || n.draining === true }))

const statusTaskSchema = z.looseObject({
  id: z.string(),
  title: z.string(),
  state: z.enum(TASK_STATES),
  deps: z.array(z.string()),
  attempts: z.number().int().nonnegative(),
  node: nullableString,
  branch: z.string(),
  head: nullableString,
  mergeCommit: nullableString,
  costUsd: z.number(),
  tokens: tokensSchema,
  createdAt: z.number(),
  startedAt: nullableNumber,
  doneAt: nullableNumber,
  mergedAt: nullableNumber,
  error: nullableString,
  summary: nullableString,
  progress: z.object({ kind: z.string(), text: z.string(), at: z.number() }).nullable(),
  plan: nullableString,
  held: z.enum(['budget']).nullable()
})

const statusConflictSchema = z.looseObject({
  id: z.string(),
  taskId: z.string(),
  files: z.array(z.string()),
  hunks: z.array(conflictHunkSchema),
  oursFrom: z.record(z.string(), z.string()).optional(),
  state: z.enum(['open', 'resolved']),
  decision: z.object({ action: z.string(), by: z.string(), at: z.number(), note: z.string() }).nullable(),
  error: nullableString
})

const statusApprovalSchema = z.looseObject({
  id: z.string(),
  taskId: z.string(),
  node: z.string(),
  tool: z.string(),
  input: z.record(z.string(), z.unknown()),
  state: z.enum(APPROVAL_STATES),
  at: z.number(),
  by: nullableString,
  decidedAt: nullableNumber,
  note: z.string()
})

const countsSchema = z.record(z.string(), z.number().int().nonnegative())

/** The report of `meshwork status --json`, as a node sends it (see `StatusReport` in src/api/status.ts). */
export const statusReportSchema = z.looseObject({
  meshId: z.string(),
  main: z.looseObject({
    head: nullableString,
    leader: nullableString,
    term: z.number().int().nonnegative(),
    push: pushReportSchema.nullable(),
    quorum: quorumReportSchema.nullable().optional()
  }),
  nodes: z.array(statusNodeSchema).max(MAX_ITEMS),
  tasks: z.array(statusTaskSchema).max(MAX_ITEMS),
  conflicts: z.array(statusConflictSchema).max(MAX_ITEMS),
  budget: z.looseObject({
    usd: nullableNumber,
    spentUsd: z.number(),
    setBy: nullableString,
    setAt: nullableNumber,
    held: z.array(z.string()),
    plans: z.array(z.looseObject({ plan: z.string(), usd: nullableNumber, spentUsd: z.number(), held: z.array(z.string()) }))
  }),
  approvals: z.array(statusApprovalSchema).max(MAX_ITEMS),
  refused: countsSchema,
  refusedForgotten: z.object({ authors: z.number().int().nonnegative(), changes: z.number().int().nonnegative() }).optional()
}) satisfies z.ZodType<StatusReport, unknown>

/** Thrown when a node's status answer does not match the schema. */
export class BadStatusReportError extends Error {
  override name = 'BadStatusReportError'
}

/** Parses a status answer; throws `BadStatusReportError` naming what is wrong. */
export function decodeStatusReport (bytes: Uint8Array, from: string): StatusReport {
  const r = parseJson(statusReportSchema, bytes)
  if (!r.ok) throw new BadStatusReportError(`the status report from ${from} is malformed: ${r.reason.slice(0, 500)}`)
  return r.value
}
