import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { SwarmKeyError } from '../util/errors.ts'

/**
 * A mesh's pre-shared key in the libp2p pnet file format:
 * `/key/swarm/psk/1.0.0/\n/base16/\n<64 hex digits>\n`.
 */
export interface SwarmKey {
  /** The 32 key bytes as 64 lowercase hex digits. */
  hex: string
  /** The pnet file bytes, as `@libp2p/pnet` expects them. */
  psk: Uint8Array
  /** A short public id of the mesh derived from the key (names gossip topics). */
  meshId: string
}

const HEADER = '/key/swarm/psk/1.0.0/'

/** Builds a `SwarmKey` from 64 hex digits. */
export function swarmKeyFromHex (hex: string): SwarmKey {
  const clean = hex.trim().toLowerCase()
  if (!/^[0-9a-f]{64}$/.test(clean)) throw new SwarmKeyError('a swarm key must be 64 hex digits')
  const text = `${HEADER}\n/base16/\n${clean}`
  const meshId = createHash('sha256').update('meshwork/mesh-id/1:' + clean).digest('hex').slice(0, 16)
  return { hex: clean, psk: new TextEncoder().encode(text), meshId }
}

/** A new random swarm key. */
export function generateSwarmKey (): SwarmKey {
  return swarmKeyFromHex(randomBytes(32).toString('hex'))
}

/** Parses the pnet file format; throws `SwarmKeyError` naming what is wrong. */
export function parseSwarmKey (text: string, source = 'swarm key'): SwarmKey {
  const lines = text.split(/\r?\n/).map(l => l.trim()).filter(l => l !== '')
  if (lines[0] !== HEADER || lines[1] !== '/base16/' || lines[2] === undefined) {
    throw new SwarmKeyError(`${source} is not a libp2p pnet swarm key: expected "${HEADER}", "/base16/" and 64 hex digits on three lines. Create one with \`meshwork init\`.`)
  }
  try {
    return swarmKeyFromHex(lines[2])
  } catch {
    throw new SwarmKeyError(`${source}: the key line must be 64 hex digits. Create a new key with \`meshwork init\`.`)
  }
}

/** Reads and parses a swarm key file. */
export async function readSwarmKey (file: string): Promise<SwarmKey> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new SwarmKeyError(`cannot read the swarm key file ${file} (${code ?? String(err)}). Pass --swarm-key FILE or --join TOKEN, or create a mesh with \`meshwork init\`.`)
  }
  return parseSwarmKey(text, file)
}

/** Writes the key file with mode 0600; refuses to overwrite an existing file. */
export async function writeSwarmKey (file: string, key: SwarmKey): Promise<void> {
  try {
    await writeFile(file, new TextDecoder().decode(key.psk) + '\n', { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new SwarmKeyError(`${file} already exists; meshwork init never overwrites a swarm key. Choose another path with --out FILE, or delete the old key if no mesh uses it.`)
    }
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES' || code === 'EROFS') {
      throw new SwarmKeyError(`cannot write the swarm key to ${file} (${code === 'ENOENT' ? 'its directory does not exist' : code}); create the directory or choose another path with --out FILE.`)
    }
    throw err
  }
}
