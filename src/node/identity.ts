import { mkdir, readFile, writeFile, chmod, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { UsageError } from '../util/errors.ts'

/** File name of the node's Ed25519 identity key inside its data dir. */
export const IDENTITY_FILE = 'identity.key'

/**
 * Loads the node's Ed25519 key from `dataDir`, creating it (mode 0600) on first
 * start, so a restarted node keeps its peer id.
 */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  return await loadOrCreateKeyFile(join(dataDir, IDENTITY_FILE), 'the node identity')
}

/**
 * Loads an Ed25519 key (libp2p protobuf form) from `file`, creating it (mode
 * 0600, its directory 0700) when missing. A key file with a looser mode is
 * tightened to 0600. An unreadable or damaged file is an error that says so:
 * a new key would be a new peer id, which allowlists and decisions name.
 */
export async function loadOrCreateKeyFile (file: string, what: string): Promise<PrivateKey> {
  try {
    const bytes = await readFile(file)
    const mode = (await stat(file)).mode & 0o777
    if (mode !== 0o600) await chmod(file, 0o600)
    return privateKeyFromProtobuf(bytes)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot load ${what} ${file}: ${(err as Error).message}. Restore it from a backup, or move it away to start as a new peer.`)
    }
  }
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  const key = await generateKeyPair('Ed25519')
  try {
    await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    // another process made it first: use that one, so both have one peer id
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return await loadOrCreateKeyFile(file, what)
    throw err
  }
  return key
}

/** File name of a client's key inside `<user config dir>/meshwork`. */
export const CLIENT_IDENTITY_FILE = 'client.key'

/**
 * Where a client keeps its key when `--identity` (env `MESHWORK_IDENTITY`) is
 * not given: `$XDG_CONFIG_HOME/meshwork/client.key`, else
 * `~/.config/meshwork/client.key`.
 */
export function defaultClientIdentityFile (env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME
  const base = xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.config')
  return join(base, 'meshwork', CLIENT_IDENTITY_FILE)
}

/**
 * The key a client (status, submit, resolve, ...) connects with, created on
 * first use: its peer id is what allowlists name and what a decision records
 * as `by`. A file that cannot be read or written is a usage error naming it.
 */
export async function loadClientIdentity (file: string = defaultClientIdentityFile()): Promise<PrivateKey> {
  try {
    return await loadOrCreateKeyFile(file, 'the client identity')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code !== undefined ? `cannot create the client identity ${file} (${code})` : (err as Error).message.replace(/\. Restore it.*$/, '')
    throw new UsageError(`${why}. Point --identity FILE (env MESHWORK_IDENTITY) at another path, or restore the key from a backup (a new key is a new peer id: allowlists must name it).`)
  }
}

/** The peer id of a key, as text. */
export function peerIdOf (key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString()
}
