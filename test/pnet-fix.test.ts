import { describe, it, expect } from 'vitest'
import { randomBytes } from 'node:crypto'
import xsalsa20 from 'xsalsa20'
import '../src/node/pnet-fix.ts'

describe('xsalsa20 shared-memory fix (under the swarm key)', () => {
  it('many interleaved instances survive one large write and still encrypt correctly', () => {
    const key = randomBytes(32)
    const nonces = Array.from({ length: 6 }, () => randomBytes(24))
    const enc = nonces.map(n => xsalsa20(n, key))
    const dec = nonces.map(n => xsalsa20(n, key))
    const big = randomBytes(900 * 1024)
    expect(Buffer.from(dec[0]!.update(enc[0]!.update(big))).equals(big)).toBe(true)
    // without the fix this loop dies with "WebAssembly.Memory.grow(): Maximum memory size exceeded"
    for (let i = 0; i < 20_000; i++) {
      const k = i % nonces.length
      const msg = randomBytes(1024 + (i % 7) * 300)
      const round = dec[k]!.update(enc[k]!.update(msg))
      if (!Buffer.from(round).equals(msg)) throw new Error(`round trip ${i} on stream ${k} differs`)
    }
    const again = randomBytes(2 * 1024 * 1024)
    expect(Buffer.from(dec[3]!.update(enc[3]!.update(again))).equals(again)).toBe(true)
  })
})
