import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { privateKeyFromRaw } from '@libp2p/crypto/keys'
import type { PatchStatus } from './pnet-fix.ts'

/**
 * Makes `@libp2p/crypto`'s Ed25519 keys sign and verify with a cached Node
 * `KeyObject`. The library (5.1.23, pinned in package.json) imports the key
 * from JWK (two base64url encodings and a key import) at every `sign` and
 * `verify`, and gossipsub signs every message a node publishes and verifies
 * every one it receives with them; the key of a peer is the same at every
 * message. The signing and the check are the library's own calls
 * (`crypto.sign(null, …)` and `crypto.verify(null, …)` on a key imported from
 * the same JWK), so the signatures are byte for byte the same and so are the
 * verdicts; only the import is done once per key.
 *
 * Applied once, on import, to the prototypes of the library's Ed25519 key
 * classes (reached through keys it makes: the classes are not exported).
 * Inputs the library would refuse (a key or signature of the wrong length)
 * go to the library's own method, which throws as before. `ed25519KeysStatus()`
 * says whether the patch took and gives the same bytes as the library.
 */

interface Ed25519Public { raw: Uint8Array, verify: VerifyFn }
interface Ed25519Private { raw: Uint8Array, sign: SignFn }
type Bytes = Uint8Array | { subarray: () => Uint8Array }
type VerifyFn = (data: Bytes, sig: Uint8Array, options?: { signal?: AbortSignal }) => boolean | Promise<boolean>
type SignFn = (data: Bytes, options?: { signal?: AbortSignal }) => Uint8Array | Promise<Uint8Array>

/** Public keys seen lately, by their raw bytes (a received message carries its author's key: a new object each time). */
const publicKeys = new Map<string, KeyObject>()
/** Bound on `publicKeys`: peers' keys, cleared whole when full (then rebuilt as messages come). @default 4096 */
const MAX_PUBLIC_KEYS = 4096
/** Private keys by their key object (a node signs with one key for its life). */
const privateKeys = new WeakMap<object, { raw: Uint8Array, key: KeyObject }>()

function publicKeyObject (raw: Uint8Array): KeyObject {
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1')
  let key = publicKeys.get(id)
  if (key === undefined) {
    key = createPublicKey({ format: 'jwk', key: { crv: 'Ed25519', x: Buffer.from(raw).toString('base64url'), kty: 'OKP' } })
    if (publicKeys.size >= MAX_PUBLIC_KEYS) publicKeys.clear()
    publicKeys.set(id, key)
  }
  return key
}

function privateKeyObject (holder: object, raw: Uint8Array): KeyObject {
  const cached = privateKeys.get(holder)
  if (cached !== undefined && cached.raw === raw) return cached.key
  // the library's layout: 32 bytes of private key, then the 32 of the public key
  const key = createPrivateKey({
    format: 'jwk',
    key: { crv: 'Ed25519', d: Buffer.from(raw.subarray(0, 32)).toString('base64url'), x: Buffer.from(raw.subarray(32)).toString('base64url'), kty: 'OKP' }
  })
  privateKeys.set(holder, { raw, key })
  return key
}

const bytesOf = (data: Bytes): Uint8Array => data instanceof Uint8Array ? data : data.subarray()

let status: PatchStatus = { name: 'ed25519-keys', state: 'failed', detail: 'not attempted' }

const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

/** A fixed Ed25519 key of the library's class (its 32 bytes of seed, then its public key, as the library keeps them). */
function sampleKey (): Ed25519Private & { publicKey: Ed25519Public } {
  const seed = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff))
  const jwk = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' }).export({ format: 'jwk' })
  const raw = Buffer.concat([seed, Buffer.from(jwk.x ?? '', 'base64url')])
  return privateKeyFromRaw(raw) as unknown as Ed25519Private & { publicKey: Ed25519Public }
}

function patch (): PatchStatus {
  const fail = (detail: string): PatchStatus => ({ name: 'ed25519-keys', state: 'failed', detail })
  let key: Ed25519Private & { publicKey: Ed25519Public }
  try {
    key = sampleKey()
  } catch (err) {
    return fail(`could not make an Ed25519 key: ${String(err)}`)
  }
  const pubProto = Object.getPrototypeOf(key.publicKey) as Ed25519Public & { __meshworkPatched?: boolean }
  const privProto = Object.getPrototypeOf(key) as Ed25519Private & { __meshworkPatched?: boolean }
  if (pubProto.__meshworkPatched === true) return { name: 'ed25519-keys', state: 'applied', detail: APPLIED }
  if (typeof pubProto.verify !== 'function' || typeof privProto.sign !== 'function') return fail('the Ed25519 key classes have no verify or sign method')
  const verifyOriginal = pubProto.verify
  const signOriginal = privProto.sign
  const verifyCached: VerifyFn = function (this: Ed25519Public, data, sig, options) {
    if (!(this.raw instanceof Uint8Array) || this.raw.byteLength !== 32 || !(sig instanceof Uint8Array) || sig.byteLength !== 64) return verifyOriginal.call(this, data, sig, options)
    options?.signal?.throwIfAborted()
    return verify(null, bytesOf(data), publicKeyObject(this.raw), sig)
  }
  const signCached: SignFn = function (this: Ed25519Private, data, options) {
    if (!(this.raw instanceof Uint8Array) || this.raw.byteLength !== 64) return signOriginal.call(this, data, options)
    options?.signal?.throwIfAborted()
    const sig = sign(null, bytesOf(data), privateKeyObject(this, this.raw))
    options?.signal?.throwIfAborted()
    return sig
  }
  // the same bytes and verdicts as the library's own methods, or the library stays as it is
  try {
    const msg = Buffer.from('meshwork ed25519-keys check')
    const ours = signCached.call(key, msg)
    const theirs = signOriginal.call(key, msg)
    if (!(ours instanceof Uint8Array) || !(theirs instanceof Uint8Array)) return fail('the library signs asynchronously')
    if (!Buffer.from(ours).equals(Buffer.from(theirs))) return fail('a signature differs from the library\'s')
    const bad = Uint8Array.from(ours)
    bad[0] = (bad[0] ?? 0) ^ 1
    const verdicts = [verifyCached.call(key.publicKey, msg, ours), verifyOriginal.call(key.publicKey, msg, ours), verifyCached.call(key.publicKey, msg, bad), verifyOriginal.call(key.publicKey, msg, bad)]
    if (verdicts.join() !== 'true,true,false,false') return fail(`verdicts differ from the library's: ${verdicts.join()}`)
  } catch (err) {
    return fail(`a test signature failed: ${String(err)}`)
  }
  pubProto.verify = verifyCached
  privProto.sign = signCached
  pubProto.__meshworkPatched = true
  privProto.__meshworkPatched = true
  return { name: 'ed25519-keys', state: 'applied', detail: APPLIED }
}

const APPLIED = 'Ed25519 signs and verifies with a key object cached per key'

status = patch()

/** Whether the Ed25519 key patch is in effect (it is checked, on import, to give the library's bytes and verdicts). */
export function ed25519KeysStatus (): PatchStatus {
  return status
}
