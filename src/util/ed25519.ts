import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'

/**
 * Node `KeyObject`s of raw Ed25519 keys (libp2p keeps keys as raw bytes): the
 * board's change signatures (src/crdt/signing.ts) and gossipsub's message
 * signatures (src/node/ed25519-keys.ts) both sign and check with them. Built
 * from DER, the fixed prefix of each form followed by the raw bytes.
 */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

/** The public key object of a 32-byte raw Ed25519 public key. */
export function ed25519PublicKey (raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: 'der', type: 'spki' })
}

/** The private key object of a raw Ed25519 private key (its first 32 bytes: libp2p appends the public key). */
export function ed25519PrivateKey (raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw.subarray(0, 32)]), format: 'der', type: 'pkcs8' })
}
