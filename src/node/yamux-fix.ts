import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

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
 * Applied once, on import.
 */
interface PatchedStream {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
  sendWindowUpdate: () => void
}

interface PatchedProto extends PatchedStream { __meshworkPatched?: boolean }

function patch (): void {
  const proto = YamuxStream.prototype as unknown as PatchedProto
  if (proto.__meshworkPatched === true || typeof proto.sendWindowUpdate !== 'function') return
  const sendWindowUpdate = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: PatchedStream): void {
    // in these states an update carries no flags (the stream is open both ways): defer it until the
    // remote has less than half of the window left
    const plain = this.state === StreamState.Established || this.state === StreamState.SYNSent
    if (plain && this.recvWindowCapacity * 2 > this.recvWindow) return
    sendWindowUpdate.call(this)
  }
  proto.__meshworkPatched = true
}

patch()
