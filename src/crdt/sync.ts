import * as A from '@automerge/automerge'
import type { Stream } from '@libp2p/interface'
import type { Board } from './board.ts'
import { MAX_STREAM_FRAME_BYTES, STREAM_IDLE_MS } from '../node/constants.ts'
import { FramedStream, closeStream } from '../protocol/frame.ts'
import { SyncFrame } from '../protocol/sync.ts'
import { toError } from '../util/errors.ts'

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
 * stream. A turn on which nothing arrives for `idleMs` throws a
 * `StreamIdleError` (the stream is aborted).
 */
export async function runSyncSession (board: Board, stream: Stream, initiator: boolean, signal?: AbortSignal, idleMs = STREAM_IDLE_MS): Promise<SyncResult> {
  try {
    return await session(board, stream, initiator, signal, idleMs)
  } catch (err) {
    // a stream given up on is reset, not left open for the peer to use
    stream.abort(toError(err))
    throw err
  }
}

async function session (board: Board, stream: Stream, initiator: boolean, signal: AbortSignal | undefined, idleMs: number): Promise<SyncResult> {
  const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES, idleTimeoutMs: idleMs })
  let state = A.initSyncState()
  const result: SyncResult = { rounds: 0, sent: 0, received: 0, bytesIn: 0, bytesOut: 0 }
  const opts = signal !== undefined ? { signal } : {}
  const send = async (tag: number, body?: Uint8Array): Promise<void> => {
    result.bytesOut += 1 + (body?.length ?? 0)
    await lp.write(tag, body, opts)
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
          await send(SyncFrame.DONE)
          break
        }
        await send(SyncFrame.IDLE)
      } else {
        result.sent++
        await send(SyncFrame.SYNC, msg)
      }
      turn = false
    } else {
      const { tag, body } = await lp.read(opts)
      result.bytesIn += 1 + body.length
      if (tag === SyncFrame.DONE) break
      if (tag === SyncFrame.SYNC) {
        result.received++
        state = board.receiveSyncMessage(state, body)
        lastReceivedIdle = false
      } else if (tag === SyncFrame.IDLE) {
        lastReceivedIdle = true
      } else {
        throw new Error(`unknown sync frame tag ${tag}`)
      }
      turn = true
    }
  }
  // a peer that never closes its side has the stream aborted after idleMs
  await closeStream(stream, idleMs)
  return result
}
