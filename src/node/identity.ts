import { mkdir, readFile, writeFile, chmod, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

/** File name of the node's Ed25519 identity key inside its data dir. */
export const IDENTITY_FILE = 'identity.key'

/**
 * Loads the node's Ed25519 key from `dataDir`, creating it (mode 0600) on first
 * start, so a restarted node keeps its peer id.
 */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const file = join(dataDir, IDENTITY_FILE)
  try {
    const bytes = await readFile(file)
    const mode = (await stat(file)).mode & 0o777
    if (mode !== 0o600) await chmod(file, 0o600)
    return privateKeyFromProtobuf(bytes)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot load the node identity ${file}: ${(err as Error).message}. Restore it from a backup, or move it away to start as a new peer.`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  return key
}
