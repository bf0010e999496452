/**
 * The board gossip topic: each message is one frame (see `frame.ts`) whose tag
 * says what follows. A change too large for gossip is announced by its heads
 * instead; receivers that lack them pull over the sync protocol.
 */
import { z } from 'zod'
import { decodeFrame, decodeJson, encodeFrame, encodeJson } from './frame.ts'

/** Tags of board gossip messages. */
export const BoardGossipTag = {
  /** An Automerge change, as saved by `Board.change`. */
  CHANGE: 1,
  /** JSON array of the sender's heads (a change was too large to gossip). */
  HEADS: 2
} as const

/** Most heads a HEADS message may carry. */
export const MAX_GOSSIP_HEADS = 64

/** An Automerge change hash: 64 lowercase hex digits. */
export const headSchema = z.string().regex(/^[0-9a-f]{64}$/)

export const headsSchema = z.array(headSchema).max(MAX_GOSSIP_HEADS)

export type BoardGossip =
  | { kind: 'change', change: Uint8Array }
  | { kind: 'heads', heads: string[] }

export function encodeBoardChange (change: Uint8Array): Uint8Array {
  return encodeFrame(BoardGossipTag.CHANGE, change)
}

export function encodeBoardHeads (heads: string[]): Uint8Array {
  return encodeFrame(BoardGossipTag.HEADS, encodeJson(heads))
}

/**
 * Decodes one board gossip message; the change itself is checked by the board.
 * Refusals name their reason, as counted in the node's `gossipRejected`.
 */
export function decodeBoardGossip (data: Uint8Array): BoardGossip | { kind: 'invalid', reason: 'unknown-tag' | 'bad-heads' } {
  const frame = decodeFrame(data)
  if (frame?.tag === BoardGossipTag.CHANGE) return { kind: 'change', change: frame.body }
  if (frame?.tag === BoardGossipTag.HEADS) {
    const heads = decodeJson(headsSchema, frame.body)
    return heads === null ? { kind: 'invalid', reason: 'bad-heads' } : { kind: 'heads', heads }
  }
  return { kind: 'invalid', reason: 'unknown-tag' }
}
