/**
 * `/meshwork/git-handoff/1`: a node that finished a task hands its branch to
 * the merge leader before it marks the task done, so the leader holds the work
 * from the moment the board says `done` (a death of the node after `done`
 * costs no run) and merges it without waiting to collect it.
 *
 * The request asks the leader to fetch: the leader checks the board (the task
 * is this peer's run, of that epoch, on its task branch), then fetches the
 * commit from the requester over `/meshwork/git/2` exactly as it would
 * collect it (the same quarantine, connectivity check and limits), and
 * answers. One round trip more than a pushed pack, and no second receiving
 * side of the pack transfer to keep safe. Optional: a peer that does not
 * serve it (an older meshwork) is simply not handed anything, and collects
 * branches as before.
 *
 *   requester → leader
 *     REQUEST 0x01  JSON `{ task, epoch, ref, oid }`: the task, the run's epoch,
 *                   the branch (`refs/heads/meshwork/<task>`) and its commit.
 *   leader → requester
 *     RESULT  0x02  JSON `{ ok: true, oid }` once the commit is in the
 *                   leader's repository on that branch; or `{ ok: false,
 *                   code, message }` (`refused`, `busy`, `failed`); then the
 *                   leader closes its side.
 */
import { z } from 'zod'
import { oidSchema } from './git.ts'

export const GIT_HANDOFF_PROTOCOL = '/meshwork/git-handoff/1'

export const HandoffFrame = {
  REQUEST: 0x01,
  RESULT: 0x02
} as const

/** Largest REQUEST or RESULT frame. */
export const MAX_HANDOFF_FRAME_BYTES = 16 * 1024

export const handoffRequestSchema = z.object({
  task: z.string().min(1).max(256),
  epoch: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  ref: z.string().min(1).max(1024),
  oid: oidSchema
})
export type HandoffRequest = z.infer<typeof handoffRequestSchema>

export const handoffResultSchema = z.union([
  z.object({ ok: z.literal(true), oid: oidSchema }),
  z.object({ ok: z.literal(false), code: z.string().max(64), message: z.string().max(2000) })
])
export type HandoffResult = z.infer<typeof handoffResultSchema>
