import * as A from '@automerge/automerge'
import { createHash, sign, verify, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { actorBelongsTo, isSigningActor } from './authors.ts'
import { setBounded } from '../util/bounded.ts'
import { ed25519PrivateKey, ed25519PublicKey } from '../util/ed25519.ts'
import { CHANGE_CHUNK, CHUNK_MAGIC, hasMagic, readUleb } from './chunks.ts'

/*
 * Signed board changes (docs/architecture.md, "Who wrote a change"). A change
 * carries its author's Ed25519 signature in its own message, so the proof
 * travels with the change on every path: gossip, a sync message (even a
 * compressed document chunk), board.am on disk, a relay by any peer. The
 * signature covers the change as it was before the signature line was added
 * (Automerge's encoding of it with the original message), so the signed bytes
 * hold the actor, sequence number, dependencies and every operation.
 */

/** The line a signed change's message ends with: `\n` + this + `<peer id> <signature, base64url>`. */
const SIG_LINE = '\nmeshwork-sig/1 '
/** Prefix of the signed bytes, so a signature over a change is never one over anything else. */
const SIG_DOMAIN = Buffer.from('meshwork/change/1\n')

/** Who signs this process's board changes: a peer id and its Ed25519 private key. */
export interface ChangeSigner {
  readonly peerId: string
  sign: (data: Uint8Array) => Uint8Array
}

/** A signer for a libp2p Ed25519 key (node identity or client identity). */
export function signerFromPrivateKey (peerId: string, key: PrivateKey): ChangeSigner {
  if (key.type !== 'Ed25519') throw new Error(`board changes are signed with Ed25519 keys, not ${key.type}`)
  const obj = ed25519PrivateKey(key.raw)
  return { peerId, sign: data => sign(null, data, obj) }
}

/**
 * The bytes an author signs for `change`: its encoding with the message it had
 * before the signature line. With the change's own bytes (`raw`), they are cut
 * from those (`withMessage`) instead of encoded again from every operation.
 */
function signedBytes (change: A.DecodedChange, message: string | null, raw?: Uint8Array): Uint8Array {
  const cut = raw === undefined ? null : withMessage(raw, message)
  if (cut !== null) return Buffer.concat([SIG_DOMAIN, cut])
  const { hash: _hash, ...rest } = change
  return Buffer.concat([SIG_DOMAIN, A.encodeChange({ ...rest, message })])
}

/** The offset after the LEB128 number (signed or not) at `at`, or null past the end. */
function skipLeb (b: Uint8Array, at: number): number | null {
  for (let i = at; i < b.length && i < at + 10; i++) if (((b[i] as number) & 0x80) === 0) return i + 1
  return null
}

function uleb (n: number): Buffer {
  const out: number[] = []
  do {
    const low = n % 128
    n = Math.floor(n / 128)
    out.push(n > 0 ? low | 0x80 : low)
  } while (n > 0)
  return Buffer.from(out)
}

/**
 * `raw`, one uncompressed Automerge change chunk, with `message` in place of
 * its message (null and '' are both encoded empty): the bytes `A.encodeChange`
 * makes of the same change with that message, without decoding and encoding
 * its operations (a plan of 100 tasks has thousands; a joiner checks every
 * change of the board). The message is one of the header fields before the
 * operation columns (deps, actor, seq, start op, time, message); the chunk's
 * length and checksum are recomputed. Null when `raw` is not laid out so
 * (the caller encodes).
 */
export function withMessage (raw: Uint8Array, message: string | null): Uint8Array | null {
  if (raw.length < 10 || !hasMagic(raw, 0) || raw[8] !== CHANGE_CHUNK) return null
  const length = readUleb(raw, 9)
  if (length === null || length.next + length.value !== raw.length) return null
  const bodyAt = length.next
  const deps = readUleb(raw, bodyAt)
  if (deps === null) return null
  const actor = readUleb(raw, deps.next + 32 * deps.value)
  if (actor === null) return null
  let at: number | null = actor.next + actor.value
  for (let field = 0; field < 3 && at !== null; field++) at = skipLeb(raw, at) // seq, start op, time
  if (at === null) return null
  const old = readUleb(raw, at)
  if (old === null || old.next + old.value > raw.length) return null
  const text = Buffer.from(message ?? '', 'utf8')
  const body = Buffer.concat([raw.subarray(bodyAt, at), uleb(text.length), text, raw.subarray(old.next + old.value)])
  const typeAndLength = Buffer.concat([Buffer.from([CHANGE_CHUNK]), uleb(body.length)])
  const checksum = createHash('sha256').update(typeAndLength).update(body).digest().subarray(0, 4)
  return Buffer.concat([CHUNK_MAGIC, checksum, typeAndLength, body])
}

/**
 * `change` (just made, unsigned) with its author's signature added to its
 * message: new bytes, a new hash. With the change's own bytes (`raw`, as
 * Automerge made them) both the signed bytes and the result are cut from
 * those (`withMessage`) instead of encoded twice from every operation: a plan
 * of 1,000 tasks has 30,000, and encoding them was a fifth of its write.
 */
export function signChange (change: A.DecodedChange, signer: ChangeSigner, raw?: Uint8Array): Uint8Array {
  const sig = Buffer.from(signer.sign(signedBytes(change, change.message, raw))).toString('base64url')
  const message = `${change.message ?? ''}${SIG_LINE}${signer.peerId} ${sig}`
  const cut = raw === undefined ? null : withMessage(raw, message)
  if (cut !== null) return cut
  const { hash: _hash, ...rest } = change
  return A.encodeChange({ ...rest, message })
}

const publicKeys = new Map<string, KeyObject | null>()

function publicKeyOf (peerId: string): KeyObject | null {
  let k = publicKeys.get(peerId)
  if (k !== undefined) return k
  try {
    const pub = peerIdFromString(peerId).publicKey
    k = pub?.type === 'Ed25519' ? ed25519PublicKey(pub.raw) : null
  } catch {
    k = null
  }
  setBounded(publicKeys, peerId, k, 4096)
  return k
}

/**
 * Who signed `change`: the peer id whose signature it carries, when that
 * signature is valid and the change's actor is one that peer writes with;
 * else null, with why in `reason`. `raw`: the change's own bytes, when the
 * caller has them (the check is cheaper with them; the verdict is the same).
 */
export function changeSigner (change: A.DecodedChange, raw?: Uint8Array): { peer: string } | { peer: null, reason: string } {
  const msg = change.message ?? ''
  const at = msg.lastIndexOf(SIG_LINE)
  if (at < 0) return { peer: null, reason: 'unsigned' }
  const [peer, sig] = msg.slice(at + SIG_LINE.length).split(' ')
  if (peer === undefined || sig === undefined) return { peer: null, reason: 'malformed signature' }
  if (!actorBelongsTo(change.actor, peer)) return { peer: null, reason: `signed by ${peer}, whose actor it is not` }
  const key = publicKeyOf(peer)
  if (key === null) return { peer: null, reason: 'signer is not an Ed25519 peer id' }
  const original = msg.slice(0, at)
  // a change made without a message signs a null one
  const ok = (original === '' ? [null, ''] : [original]).some(m => {
    try {
      return verify(null, signedBytes(change, m, raw), key, Buffer.from(sig, 'base64url'))
    } catch {
      return false
    }
  })
  return ok ? { peer } : { peer: null, reason: 'bad signature' }
}

/**
 * Why a received change may not be applied for who wrote it, or null. A change
 * under a signing actor (what every peer of this version writes with) must
 * carry a valid signature of that actor's peer: nobody else can write under it,
 * so nobody can take another peer's next sequence number (squatting) or write
 * in its name. Changes under the older, unsigned actors are judged by the board
 * (`Board`: an older peer's history).
 */
export function signatureProblem (change: A.DecodedChange, raw?: Uint8Array): string | null {
  if (!isSigningActor(change.actor)) return null
  const s = changeSigner(change, raw)
  return s.peer !== null ? null : `${s.reason} change under signing actor ${change.actor.slice(0, 12)} (seq ${change.seq})`
}
