import xsalsa20 from 'xsalsa20'

/**
 * Works around a bug in `xsalsa20` 1.2.0, the cipher under `@libp2p/pnet`: all
 * instances share one WebAssembly memory, but each keeps its own view of it.
 * When one instance grows the memory (any single write above ~64 KiB through a
 * protected connection), every other view is detached, and each stale instance
 * then grows the memory again by its whole working size on its next update.
 * With a few busy connections the memory runs into its maximum and the process
 * dies with `WebAssembly.Memory.grow(): Maximum memory size exceeded`.
 *
 * The patch refreshes a detached view before each update with `realloc(0)`,
 * which grows by zero pages: the memory only ever grows by what is needed.
 * Applied once, on import, to the version pinned in package.json
 * (xsalsa20 1.2.0, used by @libp2p/pnet 3.0.27, whose latest release still
 * neither processes large writes in chunks nor calls `finalize()`); it touches
 * private fields (`_xor`, `_memory`, `realloc`), so `pnetPatchStatus()` says
 * whether it took, and host creation refuses to go on when it did not.
 */
interface WasmXor {
  _memory: Uint8Array
  realloc: (size: number) => void
  update: (input: Uint8Array, output: Uint8Array) => void
  __meshworkPatched?: boolean
}

/** Whether a library patch is in effect: `not-needed` when the code it fixes is not in use. */
export interface PatchStatus {
  name: string
  state: 'applied' | 'not-needed' | 'failed'
  detail: string
}

let status: PatchStatus = { name: 'pnet-fix', state: 'failed', detail: 'not attempted' }

function patch (): PatchStatus {
  const fail = (detail: string): PatchStatus => ({ name: 'pnet-fix', state: 'failed', detail })
  let probe: { _xor?: unknown, update?: unknown, finalize?: () => void }
  try {
    probe = xsalsa20(new Uint8Array(24), new Uint8Array(32)) as unknown as typeof probe
  } catch (err) {
    return fail(`xsalsa20() threw: ${String(err)}`)
  }
  const xor = probe._xor as Partial<WasmXor> | undefined
  // the pure-JS fallback (no WebAssembly) has no shared memory and needs nothing
  if (xor === undefined && typeof probe.update === 'function') return { name: 'pnet-fix', state: 'not-needed', detail: 'xsalsa20 runs without WebAssembly' }
  if (xor === undefined || xor === null) return fail('xsalsa20 instances have no `_xor` field')
  const proto = Object.getPrototypeOf(xor) as WasmXor
  probe.finalize?.()
  if (proto.__meshworkPatched === true) return { name: 'pnet-fix', state: 'applied', detail: 'xsalsa20 views are refreshed before each update' }
  if (!(xor._memory instanceof Uint8Array)) return fail('the WebAssembly xor has no `_memory` view')
  if (typeof proto.realloc !== 'function' || typeof proto.update !== 'function') return fail('the WebAssembly xor has no `realloc` or `update` method')
  const update = proto.update
  proto.update = function (this: WasmXor, input: Uint8Array, output: Uint8Array): void {
    if (this._memory.byteLength === 0) this.realloc(0)
    update.call(this, input, output)
  }
  proto.__meshworkPatched = true
  return { name: 'pnet-fix', state: 'applied', detail: 'xsalsa20 views are refreshed before each update' }
}

status = patch()

/** Whether the xsalsa20 fix is in effect. */
export function pnetPatchStatus (): PatchStatus {
  return status
}
