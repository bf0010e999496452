import { JoinTokenError } from '../util/errors.ts'
import { swarmKeyFromHex, type SwarmKey } from './swarm-key.ts'

/** What a join token carries: everything a new node needs to enter a mesh. */
export interface JoinInfo {
  key: SwarmKey
  bootstrap: string[]
}

const PREFIX = 'mw1:'

/** Encodes the swarm key and dialable addresses into one copy-pasteable string. */
export function encodeJoinToken (key: SwarmKey, bootstrap: string[]): string {
  const body = JSON.stringify({ k: key.hex, a: bootstrap })
  return PREFIX + Buffer.from(body).toString('base64url')
}

/** Decodes a token printed by `meshwork node`; throws `JoinTokenError` on anything else. */
export function decodeJoinToken (token: string): JoinInfo {
  const bad = (why: string): never => {
    throw new JoinTokenError(`invalid join token (${why}). Copy the "join" value printed by a running \`meshwork node\` or found in its DATA/node.json.`)
  }
  const t = token.trim()
  if (!t.startsWith(PREFIX)) bad(`it must start with "${PREFIX}"`)
  let body: unknown
  try {
    body = JSON.parse(Buffer.from(t.slice(PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    return bad('it is not base64url JSON')
  }
  if (typeof body !== 'object' || body === null) return bad('it is not a JSON object')
  const o = body as { k?: unknown, a?: unknown }
  if (typeof o.k !== 'string') return bad('no key')
  if (!Array.isArray(o.a) || !o.a.every(a => typeof a === 'string')) return bad('no address list')
  let key: SwarmKey
  try {
    key = swarmKeyFromHex(o.k)
  } catch {
    return bad('the key is not 64 hex digits')
  }
  return { key, bootstrap: o.a as string[] }
}
