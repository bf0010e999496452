import { readSwarmKey, swarmKeyFromHex, type SwarmKey } from '../node/swarm-key.ts'
import { decodeJoinToken } from '../node/join-token.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { UsageError } from '../util/errors.ts'
import { list, str, flag, type OptionSpecs, type ParsedOptions } from './command.ts'
import { parseDuration } from '../util/wait.ts'

/** Options every command that talks to a mesh accepts. */
export const CONNECTION_OPTIONS: OptionSpecs = {
  'swarm-key': { type: 'string', arg: 'FILE', env: 'MESHWORK_SWARM_KEY', description: 'The mesh\'s pre-shared key file (from `meshwork init`).' },
  bootstrap: { type: 'string', arg: 'MULTIADDR', multiple: true, env: 'MESHWORK_BOOTSTRAP', description: 'Address of a mesh node to join through.' },
  join: { type: 'string', arg: 'TOKEN', env: 'MESHWORK_JOIN', description: 'Join token printed by a running node (carries the key and addresses; replaces the two above).' },
  'insecure-no-swarm-key': { type: 'boolean', description: 'Run an open mesh with a publicly known key. Anyone who can reach the node can join. Never on a shared network.' }
}

/** Options of client commands (status, submit, ...). */
export const CLIENT_OPTIONS: OptionSpecs = {
  ...CONNECTION_OPTIONS,
  timeout: { type: 'string', arg: 'DURATION', default: '15s', description: 'Give up when no mesh peer answers within this time.' }
}

/** Hex of the key used by `--insecure-no-swarm-key`: public, so it protects nothing. */
const INSECURE_KEY_HEX = '6d657368776f726b2d696e7365637572652d6f70656e2d6d6573682d6b657921'

export interface Connection {
  key: SwarmKey
  bootstrap: string[]
  insecure: boolean
}

/** Resolves --join / --swarm-key / --bootstrap (and their env vars) into a key and addresses. */
export async function resolveConnection (opts: ParsedOptions, needBootstrap: boolean): Promise<Connection> {
  const join = str(opts, 'join')
  let key: SwarmKey | undefined
  let bootstrap = list(opts, 'bootstrap')
  const insecure = flag(opts, 'insecure-no-swarm-key')
  if (join !== undefined) {
    const info = decodeJoinToken(join)
    key = info.key
    bootstrap = [...info.bootstrap, ...bootstrap]
  }
  const keyFile = str(opts, 'swarm-key')
  if (key === undefined && keyFile !== undefined) key = await readSwarmKey(keyFile)
  if (key === undefined && insecure) key = swarmKeyFromHex(INSECURE_KEY_HEX)
  if (key === undefined) {
    throw new UsageError('no swarm key: pass --swarm-key FILE (or MESHWORK_SWARM_KEY), or --join TOKEN (printed by a running node). Create a new mesh with `meshwork init`.')
  }
  for (const a of bootstrap) {
    try {
      const ma = multiaddr(a)
      if (!ma.getComponents().some(c => c.name === 'p2p')) throw new Error('no /p2p/<peer id>')
    } catch (err) {
      throw new UsageError(`bad bootstrap address "${a}": ${(err as Error).message}. Use a full address such as /ip4/10.0.0.5/tcp/4001/p2p/12D3KooW..., as printed by \`meshwork node\`.`)
    }
  }
  if (needBootstrap && bootstrap.length === 0) {
    throw new UsageError('no mesh address: pass --bootstrap MULTIADDR (or MESHWORK_BOOTSTRAP) or --join TOKEN, as printed by a running `meshwork node`.')
  }
  return { key, bootstrap, insecure }
}

/** Reads a duration option such as `--timeout 15s`. */
export function durationOpt (opts: ParsedOptions, name: string, fallbackMs: number): number {
  const v = str(opts, name)
  if (v === undefined) return fallbackMs
  const ms = parseDuration(v)
  if (ms === null) throw new UsageError(`--${name} must be a duration such as 500ms, 15s, 2m or 1h, got "${v}".`)
  return ms
}
