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
 * Applied once, on import.
 */
interface WasmXor {
  _memory: Uint8Array
  realloc: (size: number) => void
  update: (input: Uint8Array, output: Uint8Array) => void
  __meshworkPatched?: boolean
}

function patch (): void {
  const probe = xsalsa20(new Uint8Array(24), new Uint8Array(32)) as unknown as { _xor?: WasmXor, finalize?: () => void }
  const proto = probe._xor === undefined ? undefined : Object.getPrototypeOf(probe._xor) as WasmXor
  probe.finalize?.()
  // the pure-JS fallback (no WebAssembly) has no shared memory and needs nothing
  if (proto === undefined || typeof proto.realloc !== 'function' || proto.__meshworkPatched === true) return
  const update = proto.update
  proto.update = function (this: WasmXor, input: Uint8Array, output: Uint8Array): void {
    if (this._memory.byteLength === 0) this.realloc(0)
    update.call(this, input, output)
  }
  proto.__meshworkPatched = true
}

patch()
