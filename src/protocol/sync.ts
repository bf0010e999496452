/**
 * `/meshwork/sync/1`: anti-entropy of the board. Each side takes turns sending
 * one frame (see `frame.ts`); the body of a SYNC frame is an Automerge sync
 * message, checked by the board before it is applied.
 */

export const SYNC_PROTOCOL = '/meshwork/sync/1'

/** Frame tags on `/meshwork/sync/1`. */
export const SyncFrame = {
  /** Nothing to send this turn. */
  IDLE: 0,
  /** An Automerge sync message follows. */
  SYNC: 1,
  /** Both sides are up to date; the session ends. */
  DONE: 2
} as const
