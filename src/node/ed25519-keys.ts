import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { privateKeyFromRaw, publicKeyFromRaw } from '@libp2p/crypto/keys'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import type { PatchStatus } from './pnet-fix.ts'
import { setBounded } from '../util/bounded.ts'
import { ed25519PrivateKey, ed25519PublicKey } from '../util/ed25519.ts'

/**
 * @libp2p/crypto's Ed25519 keys (the version pinned in package.json, 5.1.23)
 * build a Node `KeyObject` from JWK for every signature they make or check.
 * Gossipsub signs every message it publishes and checks every one it
 * receives, so on a busy node building keys cost about as much as the
 * signatures themselves (profiled: 3 % of a node's time in `createPublicKey`,
 * `createPrivateKey` and their helpers). The patch keeps one `KeyObject` per
 * key (by its raw bytes) and signs and checks with Node as the library does:
 * Ed25519 is deterministic, so the bytes are the same, and `ed25519KeysStatus`
 * checks that they are.
 */
/** Keys kept (peers a node hears from, and its own): past this the oldest go. */
const KEPT = 4096

const publicKeys = new Map<string, KeyObject>()
const privateKeys = new Map<string, KeyObject>()

function kept (cache: Map<string, KeyObject>, raw: Uint8Array, make: (raw: Uint8Array) => KeyObject): KeyObject {
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64')
  let k = cache.get(id)
  if (k === undefined) {
    k = make(raw)
    setBounded(cache, id, k, KEPT)
  }
  return k
}

type Bytes = Uint8Array | { subarray: () => Uint8Array }
const flat = (b: Bytes): Uint8Array => b instanceof Uint8Array ? b : b.subarray()

interface KeyProto { verify?: unknown, sign?: unknown, __meshworkPatched?: boolean }

function patch (): PatchStatus {
  const fail = (detail: string): PatchStatus => ({ name: 'ed25519-keys', state: 'failed', detail })
  let priv: PrivateKey
  let pub: PublicKey
  try {
    priv = newKey()
    pub = publicKeyFromRaw(priv.publicKey.raw)
  } catch (err) {
    return fail(`could not make an Ed25519 key: ${String(err)}`)
  }
  const privProto = Object.getPrototypeOf(priv) as KeyProto
  const pubProto = Object.getPrototypeOf(pub) as KeyProto
  if (privProto.__meshworkPatched === true) return { name: 'ed25519-keys', state: 'applied', detail: 'one KeyObject per Ed25519 key' }
  if (typeof privProto.sign !== 'function' || typeof pubProto.verify !== 'function') return fail('Ed25519 keys have no sign or verify method')
  const message = Buffer.from('meshwork ed25519 key check')
  const theirs = priv.sign(message) as Uint8Array
  if (!(theirs instanceof Uint8Array) || pub.verify(message, theirs) !== true) return fail('the library\'s own signature did not check out synchronously')
  const origSign = privProto.sign as (this: PrivateKey, m: Bytes, o?: { signal?: AbortSignal }) => unknown
  const origVerify = pubProto.verify as (this: PublicKey, d: Bytes, s: Uint8Array, o?: { signal?: AbortSignal }) => unknown
  privProto.sign = function (this: PrivateKey, m: Bytes, o?: { signal?: AbortSignal }) {
    // the library's own checks and errors for anything unusual
    if (this.raw.byteLength !== 64) return origSign.call(this, m, o)
    o?.signal?.throwIfAborted()
    const key = kept(privateKeys, this.raw, ed25519PrivateKey)
    return sign(null, flat(m), key)
  }
  pubProto.verify = function (this: PublicKey, d: Bytes, s: Uint8Array, o?: { signal?: AbortSignal }) {
    if (this.raw.byteLength !== 32 || !(s instanceof Uint8Array) || s.byteLength !== 64) return origVerify.call(this, d, s, o)
    o?.signal?.throwIfAborted()
    const key = kept(publicKeys, this.raw, ed25519PublicKey)
    return verify(null, flat(d), key, s)
  }
  privProto.__meshworkPatched = true
  const ours = priv.sign(message) as Uint8Array
  const tampered = Buffer.from(message)
  tampered[0] = (tampered[0] ?? 0) ^ 1
  if (!Buffer.from(ours).equals(Buffer.from(theirs)) || pub.verify(message, ours) !== true || pub.verify(tampered, ours) !== false) {
    privProto.sign = origSign
    pubProto.verify = origVerify
    privProto.__meshworkPatched = false
    return fail('signatures made with the cached keys differ from the library\'s')
  }
  return { name: 'ed25519-keys', state: 'applied', detail: 'one KeyObject per Ed25519 key' }
}

/** A new Ed25519 key of the library's kind (made with Node: the library's `generateKeyPair` is async). */
function newKey (): PrivateKey {
  const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' })
  return privateKeyFromRaw(Buffer.concat([Buffer.from(jwk.d as string, 'base64url'), Buffer.from(jwk.x as string, 'base64url')]))
}

const status = patch()

/** Whether Ed25519 keys keep their `KeyObject` (see above). */
export function ed25519KeysStatus (): PatchStatus {
  return status
}
