import { MeshNode } from '../node/mesh-node.ts'
import { MEMBERS_PROTOCOL } from '../protocol/members.ts'
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
        if (!(await node.peerProtocols(peerId)).includes(MEMBERS_PROTOCOL)) continue
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
