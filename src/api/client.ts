import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../node/mesh-node.ts'
import { MEMBERS_PROTOCOL } from '../node/constants.ts'
import type { SwarmKey } from '../node/swarm-key.ts'
import { MeshUnreachableError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'

export interface ClientInit {
  key: SwarmKey
  bootstrap: string[]
  timeoutMs: number
  logger?: Logger
}

/** A light peer connected to a mesh node, with the board synced from it. */
export interface Client {
  node: MeshNode
  /** The mesh node this client reads through. */
  peer: string
  close: () => Promise<void>
}

/**
 * Joins the mesh as a light peer (never takes work, never appears among the
 * nodes), waits for a mesh node to answer and syncs the board from it. Gives up
 * after `timeoutMs` with a `MeshUnreachableError` naming the addresses tried; a
 * wrong swarm key looks exactly like that from outside.
 */
export async function connectClient (init: ClientInit): Promise<Client> {
  const node = new MeshNode({
    role: 'client',
    swarmKey: init.key,
    listen: [],
    bootstrap: init.bootstrap,
    ...(init.logger !== undefined ? { logger: init.logger } : {})
  })
  await node.start()
  const deadline = Date.now() + init.timeoutMs
  try {
    for (;;) {
      for (const peerId of node.connectedPeers()) {
        const peer = await node.host.peerStore.get(peerId).catch(() => null)
        if (peer?.protocols.includes(MEMBERS_PROTOCOL) !== true) continue
        if (await node.requestSync(peerId.toString())) {
          node.followBoard()
          return { node, peer: peerId.toString(), close: async () => { await node.stop() } }
        }
      }
      if (Date.now() >= deadline) {
        throw new MeshUnreachableError(`no mesh node answered within ${Math.round(init.timeoutMs / 1000)} s at ${init.bootstrap.join(', ')}. Check that a node is running there, that the address is reachable from here, and that you use the mesh's swarm key (a wrong key looks the same from outside).`)
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  } catch (err) {
    await node.stop()
    throw err
  }
}

/** A mesh node a client may read through instead: its peer id and where it listens. */
export interface PeerCandidate {
  peerId: string
  addrs: readonly string[]
}

/** Bound of one attempt to read through another node (dial and board sync). @default 4 s */
export const SWITCH_PEER_TIMEOUT_MS = 4000

/**
 * Moves the client to the first candidate that answers (a dial, then a board
 * sync), for when the node it read through stopped answering. Returns the new
 * peer id, or null when none answered; `client.peer` changes only on success.
 */
export async function switchPeer (client: Client, candidates: readonly PeerCandidate[], timeoutMs = SWITCH_PEER_TIMEOUT_MS): Promise<string | null> {
  for (const c of candidates) {
    if (c.peerId === client.peer) continue
    const addrs = c.addrs.flatMap(a => { try { return [multiaddr(a)] } catch { return [] } })
    if (addrs.length === 0) continue
    try {
      await client.node.host.dial(addrs, { signal: AbortSignal.timeout(timeoutMs) })
      if (await client.node.requestSync(c.peerId)) {
        client.peer = c.peerId
        return c.peerId
      }
    } catch {
      // this one is gone too: try the next
    }
  }
  return null
}
