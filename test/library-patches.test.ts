import { describe, it, expect, afterEach } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream, LengthPrefixedDecoder } from '@libp2p/utils'
import { uint16BEDecode, uint16BEEncode } from '../node_modules/@chainsafe/libp2p-noise/dist/src/encoder.js'
import { YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { createHost, type Host } from '../src/node/host.ts'
import { checkLibraryPatches, libraryPatches } from '../src/node/patches.ts'
import { yamuxPatchStatus } from '../src/node/yamux-fix.ts'
import { noiseCrypto } from '../src/node/noise-crypto.ts'
import * as ed25519 from '../node_modules/@libp2p/crypto/dist/src/keys/ed25519/index.js'
import { generateSwarmKey } from '../src/node/swarm-key.ts'
import type { Logger } from '../src/util/logger.ts'
import { LOOPBACK } from './helpers/mesh.ts'

const hosts: Host[] = []
afterEach(async () => {
  await Promise.all(hosts.splice(0).map(async h => { await h.stop() }))
})

function recordingLogger (): { logger: Logger, warnings: Array<[string, unknown]> } {
  const warnings: Array<[string, unknown]> = []
  const none = (): void => {}
  const logger = { debug: none, info: none, error: none, warn: (event: string, fields?: unknown) => { warnings.push([event, fields]) } } as unknown as Logger
  return { logger, warnings }
}

describe('library patches (pinned versions)', () => {
  it('each patch applies to the installed libraries', () => {
    // fails when a release renames what a patch touches: pin the version back or port the patch
    expect(libraryPatches().map(p => [p.name, p.state, p.detail])).toEqual([
      ['pnet-fix', 'applied', expect.any(String)],
      ['yamux-fix', 'applied', expect.any(String)],
      ['noise-crypto', 'applied', expect.any(String)],
      ['ed25519-keys', 'applied', expect.any(String)],
      ['length-prefix-fix', 'applied', expect.any(String)]
    ])
    const { logger, warnings } = recordingLogger()
    expect(checkLibraryPatches(logger)).toBe(noiseCrypto)
    expect(warnings).toEqual([])
  })

  it('the frame decoder, guarded, takes frames split anywhere as the library does, and ends on an empty buffer without a new exception', () => {
    const frames = [new Uint8Array(300).fill(1), new Uint8Array([2]), new Uint8Array(70_000 % 65_535).fill(3)]
    const wire = Buffer.concat(frames.flatMap(f => [uint16BEEncode(f.byteLength), f]))
    for (const size of [1, 2, 3, 7, 301, wire.byteLength]) {
      const decoder = new LengthPrefixedDecoder({ lengthDecoder: uint16BEDecode as never, encodingLength: () => 2 })
      const out: Buffer[] = []
      for (let i = 0; i < wire.byteLength; i += size) for (const f of decoder.decode(wire.subarray(i, i + size))) out.push(Buffer.from(f.subarray()))
      expect(out, `chunks of ${size} bytes`).toEqual(frames.map(f => Buffer.from(f)))
      expect((decoder as unknown as { lengthDecoder: { __meshworkGuarded?: boolean } }).lengthDecoder.__meshworkGuarded).toBe(true)
    }
    // the default (varint) length decoder too
    const varint = new LengthPrefixedDecoder()
    expect([...varint.decode(Uint8Array.from([3, 9, 8, 7, 1]))].map(f => [...f.subarray()])).toEqual([[9, 8, 7]])
    expect([...varint.decode(Uint8Array.from([5]))].map(f => [...f.subarray()])).toEqual([[5]])
    // an empty buffer throws the one RangeError made in advance: the same object every time, no stack captured per chunk
    const guarded = (new LengthPrefixedDecoder() as unknown as { lengthDecoder: (d: Uint8Array) => number, decode: (b: Uint8Array) => Iterable<unknown> })
    ;[...guarded.decode(Uint8Array.from([1, 1]))]
    const thrown = [0, 1].map(() => { try { guarded.lengthDecoder(new Uint8Array(0)); return null } catch (e) { return e } })
    expect(thrown[0]).toBeInstanceOf(RangeError)
    expect(thrown[1]).toBe(thrown[0])
  })

  it('Ed25519 keys sign and check as the library does with a KeyObject kept per key', async () => {
    const a = await generateKeyPair('Ed25519')
    const b = await generateKeyPair('Ed25519')
    const message = new Uint8Array(300).fill(9)
    const sig = await a.sign(message)
    // Ed25519 signatures are deterministic: the same as the library's own (its JWK path, called directly)
    expect(Buffer.from(sig)).toEqual(Buffer.from(ed25519.hashAndSign(a.raw, message) as Uint8Array))
    expect(await a.publicKey.verify(message, sig)).toBe(true)
    // a kept key is the right key: another key's signature, a changed message and a changed signature all fail
    expect(await b.publicKey.verify(message, sig)).toBe(false)
    expect(await a.publicKey.verify(message.map((x, i) => i === 7 ? x ^ 1 : x), sig)).toBe(false)
    expect(await a.publicKey.verify(message, sig.map((x, i) => i === 3 ? x ^ 1 : x))).toBe(false)
    expect(Buffer.from(await b.sign(message))).toEqual(Buffer.from(ed25519.hashAndSign(b.raw, message) as Uint8Array))
    // a list of pieces (how gossipsub hands over what it signs) is signed as its bytes
    const list = { subarray: () => message }
    expect(await a.publicKey.verify(list as unknown as Uint8Array, sig)).toBe(true)
    // what the library refuses it still refuses
    expect(() => a.publicKey.verify(message, sig.subarray(0, 10))).toThrow(/64 bytes/)
  })

  it('the yamux patch finds the stream fields it reads on real streams carrying more than a window', async () => {
    const key = generateSwarmKey()
    const { logger, warnings } = recordingLogger()
    const a = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: key, listen: [LOOPBACK], bootstrap: [], logger })
    const b = await createHost({ privateKey: await generateKeyPair('Ed25519'), swarmKey: key, listen: [LOOPBACK], bootstrap: [], logger })
    hosts.push(a, b)
    await a.start()
    await b.start()
    const piece = 64 * 1024
    const pieces = 32 // 2 MiB: eight times yamux's initial 256 KiB window, so window updates must flow
    let received = 0
    let served: unknown = null
    await b.handle('/meshwork-test/bulk/1', (stream) => {
      served = stream
      void (async () => {
        const lp = lpStream(stream, { maxDataLength: piece * 2 })
        for (let i = 0; i < pieces; i++) received += (await lp.read()).byteLength
        await lp.write(new Uint8Array([1]))
        await stream.close()
      })()
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, '/meshwork-test/bulk/1', { signal: AbortSignal.timeout(20_000) })
    const lp = lpStream(stream, { maxDataLength: piece * 2 })
    for (let i = 0; i < pieces; i++) await lp.write(new Uint8Array(piece).fill(i & 0xff), { signal: AbortSignal.timeout(20_000) })
    const ack = await lp.read({ signal: AbortSignal.timeout(20_000) })
    expect(ack.subarray()[0]).toBe(1)
    expect(received).toBe(piece * pieces)
    // the streams libp2p hands out are yamux's own, with the private fields the patch reads
    expect(stream).toBeInstanceOf(YamuxStream)
    expect(served).toBeInstanceOf(YamuxStream)
    const s = served as unknown as { recvWindow: unknown, recvWindowCapacity: unknown, state: unknown }
    expect(typeof s.recvWindow).toBe('number')
    expect(typeof s.recvWindowCapacity).toBe('number')
    expect(s.state).not.toBeUndefined()
    expect(yamuxPatchStatus().state).toBe('applied')
    expect(warnings).toEqual([])
  })
})
