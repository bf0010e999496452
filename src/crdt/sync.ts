import * as A from '@automerge/automerge'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import type { Board } from './board.ts'
import { MAX_STREAM_FRAME_BYTES } from '../node/constants.ts'

/** Frame kinds on `/meshwork/sync/1`: a one-byte tag, then the Automerge sync message. */
const FRAME_IDLE = 0 // nothing to send this turn
const FRAME_SYNC = 1 // an Automerge sync message follows
const FRAME_DONE = 2 // both sides are up to date

/** Upper bound of turns in one session; a session never needs many when both sides behave. */
export const MAX_SYNC_ROUNDS = 200

export interface SyncResult {
  rounds: number
  sent: number
  received: number
  bytesIn: number
  bytesOut: number
}

/**
 * Runs one anti-entropy session over a stream: the Automerge sync protocol,
 * turn by turn, until neither side has anything more to send. Both ends run this
 * same function; `initiator` speaks first. Every change received is checked by
 * the board before it is applied; a bad one throws and the caller drops the
 * stream.
 */
export async function runSyncSession (board: Board, stream: Stream, initiator: boolean, signal?: AbortSignal): Promise<SyncResult> {
  const lp = lpStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES })
  let state = A.initSyncState()
  const result: SyncResult = { rounds: 0, sent: 0, received: 0, bytesIn: 0, bytesOut: 0 }
  const opts = signal !== undefined ? { signal } : {}
  const send = async (tag: number, body?: Uint8Array): Promise<void> => {
    const frame = new Uint8Array(1 + (body?.length ?? 0))
    frame[0] = tag
    if (body !== undefined) frame.set(body, 1)
    result.bytesOut += frame.length
    await lp.write(frame, opts)
  }
  let lastReceivedIdle = false
  let turn = initiator
  for (;;) {
    if (result.rounds++ > MAX_SYNC_ROUNDS) throw new Error(`sync did not settle within ${MAX_SYNC_ROUNDS} rounds`)
    if (turn) {
      const [next, msg] = board.generateSyncMessage(state)
      state = next
      if (msg === null) {
        if (lastReceivedIdle) {
          await send(FRAME_DONE)
          break
        }
        await send(FRAME_IDLE)
      } else {
        result.sent++
        await send(FRAME_SYNC, msg)
      }
      turn = false
    } else {
      const frame = (await lp.read(opts)).subarray()
      result.bytesIn += frame.length
      const tag = frame[0]
      if (tag === FRAME_DONE) break
      if (tag === FRAME_SYNC) {
        result.received++
        state = board.receiveSyncMessage(state, frame.subarray(1))
        lastReceivedIdle = false
      } else if (tag === FRAME_IDLE) {
        lastReceivedIdle = true
      } else {
        throw new Error(`unknown sync frame tag ${String(tag)}`)
      }
      turn = true
    }
  }
  await stream.close(opts).catch(() => {})
  return result
}
