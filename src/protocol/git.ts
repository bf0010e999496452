/**
 * `/meshwork/git/2`: a branch (or a commit) moves from one node's repository to
 * another's as a git pack. Every frame is length-prefixed and tagged (see
 * `frame.ts`):
 *
 *   requester → server
 *     REQUEST 0x01  JSON `{ want, haves }`: `want` is a ref under `refs/heads/`
 *                   or a full oid; `haves` are up to `MAX_HAVES` commit oids the
 *                   requester already has.
 *     ACK     0x05  JSON `{ bytes }`: pack bytes received so far; sent whenever
 *                   `ACK_BYTES` more have arrived (flow control).
 *   server → requester
 *     HEADER  0x02  JSON `{ oid, ref, upToDate }`. With `upToDate` the requester
 *                   already has `oid` and nothing follows; otherwise a pack
 *                   follows (its size is not known in advance).
 *     DATA    0x03  a piece of the pack (256 KiB by default, at most 1 MiB). The
 *                   server keeps at most `WINDOW_BYTES` unacknowledged (or one
 *                   piece, if a piece is larger).
 *     END     0x04  JSON `{ bytes, sha256 }` of the whole pack; then the server
 *                   closes its side.
 *     ERROR   0x00  JSON `{ code, message }`: the server gives up, in place of
 *                   the HEADER or after some DATA; then it closes its side.
 */
import { z } from 'zod'

export const GIT_PROTOCOL = '/meshwork/git/2'

/** Frame tags on `/meshwork/git/2`. */
export const GitFrame = {
  ERROR: 0x00,
  REQUEST: 0x01,
  HEADER: 0x02,
  DATA: 0x03,
  END: 0x04,
  ACK: 0x05
} as const

/** Largest pack piece in one DATA frame a requester accepts. */
export const MAX_CHUNK_BYTES = 1024 * 1024
/** Most haves a request may carry. */
export const MAX_HAVES = 256
/** Largest `want` string. */
export const MAX_WANT_LENGTH = 1024
/** Pack bytes a server sends ahead of the requester's ACKs: a few default frames. */
export const WINDOW_BYTES = 1536 * 1024
/**
 * The requester ACKs whenever this many bytes arrived since its last ACK.
 * `ACK_BYTES + MAX_CHUNK_BYTES <= WINDOW_BYTES` keeps the window from
 * deadlocking: a server waits for an ACK only while more than
 * `WINDOW_BYTES - piece >= ACK_BYTES` bytes are unacknowledged, and a requester
 * that has read everything has less than `ACK_BYTES` unacknowledged.
 */
export const ACK_BYTES = 512 * 1024
/** Largest REQUEST or ACK frame a server accepts. */
export const MAX_REQUEST_FRAME_BYTES = 64 * 1024

/** A full git object id (SHA-1 or SHA-256). */
export const oidSchema = z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/)
const countSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

export const gitRequestSchema = z.object({
  want: z.string().min(1).max(MAX_WANT_LENGTH),
  haves: z.array(oidSchema).max(MAX_HAVES).optional()
})
export type GitRequest = z.infer<typeof gitRequestSchema>

export const gitAckSchema = z.object({ bytes: countSchema })
export type GitAck = z.infer<typeof gitAckSchema>

export const gitHeaderSchema = z.object({ oid: oidSchema, ref: z.string().optional(), upToDate: z.boolean().optional() })
export type GitHeader = z.infer<typeof gitHeaderSchema>

export const gitEndSchema = z.object({ bytes: countSchema, sha256: z.string() })
export type GitEnd = z.infer<typeof gitEndSchema>

export const gitErrorSchema = z.object({ code: z.string(), message: z.string() })
export type GitErrorFrame = z.infer<typeof gitErrorSchema>
