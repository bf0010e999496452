import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import type { PatchStatus } from './pnet-fix.ts'

/**
 * Makes `@chainsafe/libp2p-yamux` 8 send window updates the way go-yamux and
 * rust-yamux do: once the remote has used up half of the receive window, not
 * after every data frame. The JS muxer answered each received frame with a
 * window update frame, so every gossip message (a frame of a few hundred bytes)
 * cost a second frame back: another Noise seal, pnet pass and socket write on
 * the receiver and the same again to read it on the sender, about a fifth of an
 * idle node's CPU in a 20-node mesh. Updates that open or acknowledge a stream
 * (SYN/ACK flags) and the pause/resume logic go through unchanged.
 *
 * Applied once, on import, to the version pinned in package.json
 * (@chainsafe/libp2p-yamux 8.0.1). It reads private fields of the stream
 * (`state`, `recvWindow`, `recvWindowCapacity`): `yamuxPatchStatus()` says
 * whether it took, and a stream without them falls back to the library's own
 * behaviour (an update per frame) and marks the patch failed, so the next
 * host created warns.
 */
interface PatchedStream {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
  sendWindowUpdate: () => void
}

interface PatchedProto extends PatchedStream { __meshworkPatched?: boolean }

const APPLIED: PatchStatus = { name: 'yamux-fix', state: 'applied', detail: 'window updates are sent once half the window is used' }
let status: PatchStatus = { name: 'yamux-fix', state: 'failed', detail: 'not attempted' }

function patch (): PatchStatus {
  const proto = YamuxStream.prototype as unknown as PatchedProto
  if (proto.__meshworkPatched === true) return APPLIED
  if (typeof proto.sendWindowUpdate !== 'function') return { name: 'yamux-fix', state: 'failed', detail: 'YamuxStream has no sendWindowUpdate method' }
  if (StreamState.Established === undefined || StreamState.SYNSent === undefined) return { name: 'yamux-fix', state: 'failed', detail: 'StreamState has no Established or SYNSent' }
  const sendWindowUpdate = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: PatchedStream): void {
    if (typeof this.recvWindow !== 'number' || typeof this.recvWindowCapacity !== 'number' || this.state === undefined) {
      // the private fields are gone (another release): keep the library's behaviour and say so
      if (status.state === 'applied') status = { name: 'yamux-fix', state: 'failed', detail: 'YamuxStream has no recvWindow, recvWindowCapacity or state field' }
      sendWindowUpdate.call(this)
      return
    }
    // in these states an update carries no flags (the stream is open both ways): defer it until the
    // remote has less than half of the window left
    const plain = this.state === StreamState.Established || this.state === StreamState.SYNSent
    if (plain && this.recvWindowCapacity * 2 > this.recvWindow) return
    sendWindowUpdate.call(this)
  }
  proto.__meshworkPatched = true
  return APPLIED
}

status = patch()

/** Whether the yamux window-update patch is in effect. */
export function yamuxPatchStatus (): PatchStatus {
  return status
}
