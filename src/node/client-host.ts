import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { PrivateKey } from '@libp2p/interface'
import { preSharedKeyGuarded } from './pnet.ts'
import { checkLibraryPatches } from './patches.ts'
import type { SwarmKey } from './swarm-key.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { DIAL_TIMEOUT_MS } from './constants.ts'

export interface ClientHostInit {
  privateKey: PrivateKey
  swarmKey: SwarmKey
  /** Where a library patch that did not apply is reported. */
  logger?: Logger
}

/**
 * Creates and starts the smallest libp2p host that can talk to a mesh node:
 * TCP, the pnet protector with the swarm key, Noise and Yamux, as in
 * `createHost` (./host.ts), and nothing else: it listens nowhere, runs no
 * identify, gossip, discovery or connection monitor. For a client that asks a
 * node one question and exits (`meshwork status`): without gossipsub, identify
 * and Automerge a `status` loads 680 modules instead of 805, and its first
 * stream needs no identify round first.
 */
export async function createClientHost (init: ClientHostInit): Promise<Libp2p> {
  const noiseCrypto = checkLibraryPatches(init.logger ?? silentLogger)
  return await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKeyGuarded({ psk: init.swarmKey.psk }),
    connectionManager: { dialTimeout: DIAL_TIMEOUT_MS, addressDialTimeout: DIAL_TIMEOUT_MS },
    connectionMonitor: { enabled: false }
  })
}
