import { describe, it, expect } from 'vitest'
import { randomBytes } from 'node:crypto'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { noiseCrypto } from '../src/node/noise-crypto.ts'

describe('noise crypto with cached key objects', () => {
  it('seals and opens frames interchangeably with Noise\'s default crypto, at every size', () => {
    const k = randomBytes(32)
    const ad = randomBytes(8)
    for (const size of [0, 1, 100, 511, 512, 1199, 1200, 4096, 65_519]) {
      const nonce = randomBytes(12)
      const pt = randomBytes(size)
      const mine = noiseCrypto.chaCha20Poly1305Encrypt(pt, nonce, ad, k).subarray()
      const theirs = defaultCrypto.chaCha20Poly1305Encrypt(pt, nonce, ad, k).subarray()
      expect(Buffer.from(mine).equals(Buffer.from(theirs))).toBe(true)
      expect(Buffer.from(noiseCrypto.chaCha20Poly1305Decrypt(theirs, nonce, ad, k).subarray()).equals(pt)).toBe(true)
    }
  })

  it('refuses a tampered frame', () => {
    const k = randomBytes(32)
    const nonce = randomBytes(12)
    const sealed = Buffer.from(noiseCrypto.chaCha20Poly1305Encrypt(randomBytes(2000), nonce, new Uint8Array(0), k).subarray())
    sealed[10] = (sealed[10] ?? 0) ^ 1
    expect(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, new Uint8Array(0), k)).toThrow()
  })
})
