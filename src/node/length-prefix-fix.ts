import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { PatchStatus } from './pnet-fix.ts'

/**
 * Spares `@libp2p/utils`' `LengthPrefixedDecoder` a new `RangeError` for every
 * chunk it reads. Its `decode` takes frames off its buffer until the length
 * decoder throws a `RangeError` (too few bytes for a length), so each chunk a
 * connection reads ends with the buffer empty and an exception made: a stack
 * trace captured deep in the stream's event handlers. Noise reads every
 * connection's bytes through it, so on an idle node this was the largest
 * single cost of receiving a heartbeat after the socket writes and the
 * signature check (a profile of a node of a 12-node mesh: 5 % of its CPU).
 *
 * The patch wraps each decoder's length decoder, once, so that on an empty
 * buffer it throws one `RangeError` made in advance: the library's loop ends
 * as before (it catches any `RangeError` and waits for more bytes), without
 * capturing a stack each time. A buffer that holds some bytes goes to the
 * length decoder as before.
 *
 * Applied once, on import, to the version package-lock.json pins
 * (@libp2p/utils 7.4.1); it replaces the private field `lengthDecoder` of each
 * decoder on its first `decode`, so `lengthPrefixPatchStatus()` says whether
 * it took, and a decoder without that field is left to the library's own
 * behaviour.
 */
type LengthDecoder = ((data: Uint8ArrayList | Uint8Array) => number) & { __meshworkGuarded?: boolean }

interface PatchedDecoder {
  lengthDecoder: LengthDecoder
  decode: (buf: Uint8ArrayList | Uint8Array) => Generator<Uint8ArrayList, void, unknown>
}

interface PatchedProto extends PatchedDecoder { __meshworkPatched?: boolean }

/** Thrown by a guarded length decoder on an empty buffer: made once, so no stack is captured per chunk. */
const NO_LENGTH_YET = new RangeError('no length prefix in an empty buffer')

const APPLIED: PatchStatus = { name: 'length-prefix-fix', state: 'applied', detail: 'an empty buffer ends a decode without a new exception' }
let status: PatchStatus = { name: 'length-prefix-fix', state: 'failed', detail: 'not attempted' }

/** `inner`, throwing `NO_LENGTH_YET` on an empty buffer instead of calling it. */
function guardLengthDecoder (inner: LengthDecoder): LengthDecoder {
  if (inner.__meshworkGuarded === true) return inner
  const guarded: LengthDecoder = (data) => {
    if (data.byteLength === 0) throw NO_LENGTH_YET
    return inner(data)
  }
  guarded.__meshworkGuarded = true
  return guarded
}

function patch (): PatchStatus {
  const proto = LengthPrefixedDecoder.prototype as unknown as PatchedProto
  if (proto.__meshworkPatched === true) return APPLIED
  if (typeof proto.decode !== 'function') return { name: 'length-prefix-fix', state: 'failed', detail: 'LengthPrefixedDecoder has no decode method' }
  const decode = proto.decode
  proto.decode = function (this: PatchedDecoder, buf) {
    const inner = this.lengthDecoder
    if (typeof inner !== 'function') {
      if (status.state === 'applied') status = { name: 'length-prefix-fix', state: 'failed', detail: 'LengthPrefixedDecoder has no lengthDecoder field' }
    } else if (inner.__meshworkGuarded !== true) {
      this.lengthDecoder = guardLengthDecoder(inner)
    }
    return decode.call(this, buf)
  }
  proto.__meshworkPatched = true
  return APPLIED
}

status = patch()

/** Whether the length-prefix patch is in effect. */
export function lengthPrefixPatchStatus (): PatchStatus {
  return status
}
