import './pnet-fix.ts'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { bootstrap } from '@libp2p/bootstrap'
import { preSharedKey } from '@libp2p/pnet'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { ConnectionGater, PrivateKey } from '@libp2p/interface'
import type { Identify } from '@libp2p/identify'
import type { SwarmKey } from './swarm-key.ts'
import { MAX_GOSSIP_BYTES } from './constants.ts'

/** The libp2p node meshwork runs on, with the services it needs. */
export type Host = Libp2p<{ pubsub: GossipSub, identify: Identify }>

export interface HostInit {
  privateKey: PrivateKey
  swarmKey: SwarmKey
  listen: string[]
  bootstrap: string[]
  /** Lets tests cut links (partitions) through the connection gater. */
  connectionGater?: ConnectionGater
}

/**
 * Creates (but does not start) the libp2p host: TCP, Noise, Yamux, the pnet
 * protector with the swarm key, identify, bootstrap discovery and gossipsub
 * with strict signing.
 *
 * Settings for many nodes on one host (loopback tests, NAT'd clouds):
 * - gossipsub's IP-colocation penalty is off: every peer already proved it holds
 *   the swarm key, so sybil defence by IP buys nothing, and with it more than ten
 *   nodes behind one address get no mesh at all;
 * - libp2p's inbound connection rate limit (5/s per host by default) is raised,
 *   or simultaneous loopback dials are refused.
 */
export async function createHost (init: HostInit): Promise<Host> {
  return await createLibp2p({
    privateKey: init.privateKey,
    start: false,
    addresses: { listen: init.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKey({ psk: init.swarmKey.psk }),
    peerDiscovery: init.bootstrap.length > 0 ? [bootstrap({ list: init.bootstrap, timeout: 100 })] : [],
    ...(init.connectionGater !== undefined ? { connectionGater: init.connectionGater } : {}),
    connectionManager: {
      maxConnections: 400,
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 200,
      dialTimeout: 10_000
    },
    // liveness is the presence failure detector's job (it widens its timeouts under load); libp2p's own
    // ping monitor, with its default few-second adaptive timeout, aborted healthy connections on a
    // saturated host and split large local meshes. It still closes links silent for half a minute (a VM
    // that vanished without a TCP reset), so redials can find the peer again.
    connectionMonitor: { pingInterval: 10_000, pingTimeout: { minTimeout: 30_000, maxTimeout: 60_000 } },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        allowPublishToZeroTopicPeers: true,
        ignoreDuplicatePublishError: true,
        emitSelf: false,
        fallbackToFloodsub: false,
        // the receiver's hard limit sits above the sender's cap, so an honest message never trips it
        maxInboundDataLength: MAX_GOSSIP_BYTES * 4,
        scoreParams: {
          IPColocationFactorWeight: 0
        }
      })
    }
  })
}
