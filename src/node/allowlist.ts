import { readFile } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ConnectionGater, PeerId } from '@libp2p/interface'
import { actorForPeer, peerTagOfActor } from '../crdt/board.ts'
import { UsageError } from '../util/errors.ts'
import { addBounded } from '../util/bounded.ts'
import { MAX_DENIED_REMEMBERED } from './constants.ts'

/** An `--allow` file that cannot be read or names something that is not a peer id. */
export class AllowlistError extends UsageError {
  override name = 'AllowlistError'
}

/**
 * Parses an allowlist: one peer id a line, `#` starts a comment (whole line or
 * after the id), blank lines ignored. Every bad line is reported at once, with
 * its number and what it held.
 */
export function parseAllowlist (text: string, source = 'allowlist'): string[] {
  const peers: string[] = []
  const problems: string[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim()
    if (line === '') return
    try {
      if (/\s/.test(line)) throw new Error('more than one word')
      peers.push(peerIdFromString(line).toString())
    } catch {
      problems.push(`line ${i + 1}: "${line.length > 80 ? line.slice(0, 80) + '…' : line}" is not a peer id`)
    }
  })
  if (problems.length > 0) {
    throw new AllowlistError(`${source}: ${problems.join('; ')}. Each line holds one peer id (a node's from \`meshwork node --print-peer-id --data DIR\`, a client's from \`meshwork whoami\`); # starts a comment.`)
  }
  return peers
}

/** Reads and parses an `--allow` file. */
export async function readAllowlist (file: string): Promise<string[]> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new AllowlistError(`cannot read --allow ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}). Write one peer id a line there (\`meshwork init --allowlist FILE\` writes a starter file).`)
  }
  return parseAllowlist(text, file)
}

/**
 * The peers a node with `--allow` admits: connections (both ways, checked on
 * the remote's peer id once the encrypted handshake proved it) and board
 * changes (by their author's actor). Replaced whole on reload (SIGHUP); the
 * node itself is always admitted.
 */
export class Allowlist {
  #peers = new Set<string>()
  #tags = new Set<string>()
  readonly #self = new Set<string>()

  constructor (peers: Iterable<string>) {
    this.replace(peers)
  }

  /** Admits the node's own peer id whatever the file says (a node never refuses its own changes). */
  addSelf (peerId: string): void {
    this.#self.add(peerId)
    this.#tags.add(actorForPeer(peerId))
  }

  /** Replaces the listed peers (a reload): a peer refused again after it is dropped is logged again. */
  replace (peers: Iterable<string>): void {
    this.#peers = new Set(peers)
    this.#tags = new Set([...this.#peers, ...this.#self].map(p => actorForPeer(p)))
    this.#denied.clear()
  }

  get size (): number {
    return this.#peers.size
  }

  /** Whether `peerId` may connect and gossip. */
  has (peerId: string): boolean {
    return this.#peers.has(peerId) || this.#self.has(peerId)
  }

  /** Whether a board change by `actor` comes from an admitted peer (a node's actor or one of a client's session actors). */
  actorAllowed (actor: string): boolean {
    return this.#tags.has(peerTagOfActor(actor))
  }

  /** Called the first time a peer is refused a connection (for the log). */
  onDenied: (peerId: string, direction: 'inbound' | 'outbound') => void = () => {}
  /** Refused peers remembered (so each is logged once), at most `maxDenied`, the oldest forgotten first. */
  readonly #denied = new Set<string>()
  #deniedForgotten = 0
  /** How many refused peers are remembered at most. @default MAX_DENIED_REMEMBERED */
  maxDenied = MAX_DENIED_REMEMBERED

  /** Refused peers remembered now (each was logged once). */
  get deniedRemembered (): number {
    return this.#denied.size
  }

  /** Refused peers forgotten to stay within `maxDenied` (a forgotten one refused again is logged again). */
  get deniedForgotten (): number {
    return this.#deniedForgotten
  }

  /** Connection gater checks that refuse every peer not on the list. */
  gater (): Pick<ConnectionGater, 'denyInboundEncryptedConnection' | 'denyOutboundEncryptedConnection'> {
    const deny = (peer: PeerId, direction: 'inbound' | 'outbound'): boolean => {
      const id = peer.toString()
      if (this.has(id)) return false
      if (!this.#denied.has(id)) {
        this.#deniedForgotten += addBounded(this.#denied, id, this.maxDenied)
        this.onDenied(id, direction)
      }
      return true
    }
    return {
      denyInboundEncryptedConnection: (peer: PeerId) => deny(peer, 'inbound'),
      denyOutboundEncryptedConnection: (peer: PeerId) => deny(peer, 'outbound')
    }
  }
}

/**
 * One gater from several: a connection is denied when any of them denies it.
 * (Tests cut links with their own gater; `--allow` adds another.)
 */
export function combineGaters (...gaters: Array<ConnectionGater | undefined>): ConnectionGater | undefined {
  const list = gaters.filter((g): g is ConnectionGater => g !== undefined)
  if (list.length <= 1) return list[0]
  // only the deny* checks combine this way (true: refuse); the filter hooks mean the opposite
  const keys = [...new Set(list.flatMap(g => Object.keys(g)))].filter(k => k.startsWith('deny')) as Array<keyof ConnectionGater>
  const out: Record<string, (...args: unknown[]) => Promise<boolean>> = {}
  for (const k of keys) {
    out[k] = async (...args: unknown[]) => {
      for (const g of list) {
        const fn = g[k] as ((...a: unknown[]) => boolean | Promise<boolean>) | undefined
        if (fn !== undefined && await fn.apply(g, args)) return true
      }
      return false
    }
  }
  return out as ConnectionGater
}
