import { readFile } from 'node:fs/promises'
import { readSwarmKey, swarmKeyFromHex, type SwarmKey } from '../node/swarm-key.ts'
import { decodeJoinToken } from '../node/join-token.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { UsageError } from '../util/errors.ts'
import { opt, type Options } from './command.ts'

/** Options every command that talks to a mesh accepts. */
export const CONNECTION_OPTIONS = {
  'swarm-key': opt.string({ arg: 'FILE', env: 'MESHWORK_SWARM_KEY', description: 'The mesh\'s pre-shared key file (from `meshwork init`).' }),
  bootstrap: opt.list({ arg: 'MULTIADDR', env: 'MESHWORK_BOOTSTRAP', description: 'Address of a mesh node to join through.' }),
  join: opt.string({ arg: 'TOKEN', env: 'MESHWORK_JOIN', description: 'Join token printed by a running node (carries the key and addresses; replaces the two above).' }),
  'join-file': opt.string({ arg: 'FILE', env: 'MESHWORK_JOIN_FILE', description: 'Read the join token from FILE (keep it mode 0600), so it is not on the command line.' }),
  'insecure-no-swarm-key': opt.boolean({ description: 'Run an open mesh with a publicly known key. Anyone who can reach the node can join. Never on a shared network.' })
}

/** How long a client command waits for a mesh node to answer. @default 15 s */
export const DEFAULT_CLIENT_TIMEOUT_MS = 15_000

/** Options of client commands (status, submit, ...). */
export const CLIENT_OPTIONS = {
  ...CONNECTION_OPTIONS,
  identity: opt.string({ arg: 'FILE', env: 'MESHWORK_IDENTITY', description: 'This client\'s key, created on first use (mode 0600); its peer id (`meshwork whoami`) is what --allow lists name and what decisions record. Default: <user config dir>/meshwork/client.key.' }),
  timeout: opt.duration({ arg: 'DURATION', default: DEFAULT_CLIENT_TIMEOUT_MS, description: 'Give up when no mesh peer answers within this time (a refused connection or a wrong key fails at once).' })
}

export type ConnectionOptions = Options<typeof CONNECTION_OPTIONS>
export type ClientOptions = Options<typeof CLIENT_OPTIONS>

/** Hex of the key used by `--insecure-no-swarm-key`: public, so it protects nothing. */
const INSECURE_KEY_HEX = '6d657368776f726b2d696e7365637572652d6f70656e2d6d6573682d6b657921'

export interface Connection {
  key: SwarmKey
  bootstrap: string[]
  insecure: boolean
}

/** Resolves --join / --swarm-key / --bootstrap (and their env vars) into a key and addresses. */
export async function resolveConnection (opts: ConnectionOptions, needBootstrap: boolean): Promise<Connection> {
  let join = opts.join
  const joinFile = opts['join-file']
  if (join !== undefined && joinFile !== undefined) throw new UsageError('give --join TOKEN or --join-file FILE, not both.')
  if (joinFile !== undefined) join = await readJoinFile(joinFile)
  let key: SwarmKey | undefined
  let bootstrap = [...opts.bootstrap]
  const insecure = opts['insecure-no-swarm-key']
  if (join !== undefined) {
    const info = decodeJoinToken(join)
    key = info.key
    bootstrap = [...info.bootstrap, ...bootstrap]
  }
  const keyFile = opts['swarm-key']
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

/** Reads a join token from a file: missing, unreadable or empty is a usage error. */
async function readJoinFile (file: string): Promise<string> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read --join-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}. Write the "join" value printed by a running \`meshwork node\` (or found in its DATA/node.json) to that file.`)
  }
  const token = text.trim()
  if (token === '') throw new UsageError(`--join-file ${file} is empty. Write the "join" value printed by a running \`meshwork node\` to it.`)
  return token
}
