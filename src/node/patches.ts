/**
 * meshwork changes five libraries it depends on (each pinned to the exact
 * version in package.json the change was written for): `pnet-fix.ts`
 * (xsalsa20's shared WebAssembly memory), `yamux-fix.ts` (window updates),
 * `noise-crypto.ts` (Noise's cipher), `ed25519-keys.ts` (@libp2p/crypto's
 * Ed25519 keys) and `length-prefix-fix.ts` (@libp2p/utils' frame decoder). A release that renames what they touch
 * would make them silently do nothing; every host creation checks them here.
 */
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { pnetPatchStatus, type PatchStatus } from './pnet-fix.ts'
import { yamuxPatchStatus } from './yamux-fix.ts'
import { noiseCrypto, noiseCryptoStatus } from './noise-crypto.ts'
import { ed25519KeysStatus } from './ed25519-keys.ts'
import { lengthPrefixPatchStatus } from './length-prefix-fix.ts'
import type { Logger } from '../util/logger.ts'

export type { PatchStatus }

/** A library patch meshwork cannot run without did not apply. */
export class LibraryPatchError extends Error {
  override name = 'LibraryPatchError'
}

/** The state of each library patch. */
export function libraryPatches (): PatchStatus[] {
  return [pnetPatchStatus(), yamuxPatchStatus(), noiseCryptoStatus(), ed25519KeysStatus(), lengthPrefixPatchStatus()]
}

/**
 * Checks every patch before a host is made. Without the xsalsa20 fix a busy
 * node dies later with "Maximum memory size exceeded", so that one fails the
 * start (`LibraryPatchError`); the others only cost CPU and fall back to the
 * library's own behaviour with a warning. Returns the Noise crypto to use.
 */
export function checkLibraryPatches (logger: Logger): ICryptoInterface {
  const reinstall = 'reinstall the exact versions in package.json (npm ci)'
  const pnet = pnetPatchStatus()
  if (pnet.state === 'failed') {
    throw new LibraryPatchError(`the xsalsa20 memory fix (src/node/pnet-fix.ts) did not apply: ${pnet.detail}; ${reinstall}, or port the fix to the installed xsalsa20`)
  }
  const yamux = yamuxPatchStatus()
  if (yamux.state === 'failed') logger.warn('patch:not-applied', { patch: yamux.name, detail: yamux.detail, note: `yamux sends a window update per frame (more CPU); ${reinstall}` })
  const frames = lengthPrefixPatchStatus()
  if (frames.state === 'failed') logger.warn('patch:not-applied', { patch: frames.name, detail: frames.detail, note: `every chunk read makes an exception (more CPU); ${reinstall}` })
  const keys = ed25519KeysStatus()
  if (keys.state === 'failed') logger.warn('patch:not-applied', { patch: keys.name, detail: keys.detail, note: `every gossip message builds its signing keys anew (more CPU); ${reinstall}` })
  const noise = noiseCryptoStatus()
  if (noise.state === 'failed') {
    logger.warn('patch:not-applied', { patch: noise.name, detail: noise.detail, note: `using Noise's default crypto (slower for large frames); ${reinstall}` })
    return defaultCrypto
  }
  return noiseCrypto
}
