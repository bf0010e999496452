import './yamux-fix.ts'
import './length-prefix-fix.ts'
import { createLibp2p, type Libp2p } from 'libp2p'
import { MESHWORK_VERSION, agentVersion } from './version.ts'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { bootstrap } from '@libp2p/bootstrap'
import { preSharedKeyGuarded } from './pnet.ts'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { ConnectionGater, PrivateKey } from '@libp2p/interface'
import type { Identify } from '@libp2p/identify'
import type { SwarmKey } from './swarm-key.ts'
import { checkLibraryPatches } from './patches.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { DIAL_TIMEOUT_MS, GOSSIP_IDONTWANT_MIN_BYTES, GOSSIP_MESH, MAX_GOSSIP_BYTES } from './constants.ts'

/**
 * How often libp2p's connection monitor pings each connection (a new stream,
 * multistream-select and 32 bytes each way). Every 10 s cost an idle node of a
 * 4-node mesh 0.1-0.2 % of a core; dead peers are the failure detector's.
 * @default 30000 ms
 */
export const PING_INTERVAL_MS = 30_000

/** The libp2p node meshwork runs on, with the services it needs. */
export type Host = Libp2p<{ pubsub: GossipSub, identify: Identify }>

export interface HostInit {
  privateKey: PrivateKey
  swarmKey: SwarmKey
  listen: string[]
  bootstrap: string[]
  /** Lets tests cut links (partitions) through the connection gater. */
  connectionGater?: ConnectionGater | undefined
  /** Where a library patch that did not apply is reported. */
  logger?: Logger
  /** The version announced to peers through identify. @default this meshwork's */
  version?: string
  /** Counts every copy of a gossip message that arrives, duplicates included (the node's `stats.gossipCopies`). */
  received?: { copies: number }
}

/**
 * Creates (but does not start) the libp2p host: TCP, Noise, Yamux, the pnet
 * protector with the swarm key (hanging up at once on a wrong key, see ./pnet.ts), identify, bootstrap discovery and gossipsub
 * with strict signing.
 *
 * Settings for many nodes on one host (loopback tests, NAT'd clouds):
 * - gossipsub's IP-colocation penalty is off: every peer already proved it holds
 *   the swarm key, so sybil defence by IP buys nothing, and with it more than ten
 *   nodes behind one address get no mesh at all;
 * - libp2p's inbound connection rate limit (5/s per host by default) is raised,
 *   or simultaneous loopback dials are refused;
 * - dial and inbound upgrade timeouts are longer (DIAL_TIMEOUT_MS): a handshake
 *   between two lagging event loops takes seconds, and aborting it near the end
 *   only makes both sides do it again.
 *
 * Settings for gossip cost (every node hears every heartbeat of every peer, so
 * per-message work is multiplied by nodes x mesh degree):
 * - `fastMsgIdFn`: gossipsub verifies a message's signature before it looks the
 *   message up in its seen cache, so without a fast id every duplicate copy
 *   (each message arrives from several mesh peers) costs an Ed25519 verify;
 * - IDONTWANT only for large messages: for a heartbeat or a task change of a
 *   few hundred bytes, the IDONTWANT sent to every mesh peer costs as many
 *   frames as the duplicates it prevents;
 * - a smaller mesh degree (GOSSIP_MESH): each node receives every message about
 *   once per mesh peer, so the degree multiplies the whole mesh's gossip work.
 *   Meshes of tens of nodes are covered in a few hops at degree 4, and flood
 *   publishing (kept) delivers a node's own messages to all its peers at once.
 *   The node then keeps gossipsub from forwarding a heartbeat to peers that
 *   say they heard it from its author (./gossip-forward.ts, ./presence-relay.ts).
 */
export async function createHost (init: HostInit): Promise<Host> {
  const noiseCrypto = checkLibraryPatches(init.logger ?? silentLogger)
  return await createLibp2p({
    privateKey: init.privateKey,
    start: false,
    nodeInfo: { name: 'meshwork', version: init.version ?? MESHWORK_VERSION, userAgent: agentVersion(init.version) },
    addresses: { listen: init.listen },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKeyGuarded({ psk: init.swarmKey.psk }),
    peerDiscovery: init.bootstrap.length > 0 ? [bootstrap({ list: init.bootstrap, timeout: 100 })] : [],
    ...(init.connectionGater !== undefined ? { connectionGater: init.connectionGater } : {}),
    connectionManager: {
      maxConnections: 400,
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 200,
      dialTimeout: DIAL_TIMEOUT_MS,
      addressDialTimeout: DIAL_TIMEOUT_MS,
      inboundUpgradeTimeout: DIAL_TIMEOUT_MS
    },
    // liveness is the presence failure detector's job (it widens its timeouts under load), and a node
    // hangs up on a peer it declares dead (mesh-node.ts), so the redial starts on a fresh connection;
    // libp2p's own ping monitor, with its default few-second adaptive timeout, aborted healthy
    // connections on a saturated host and split large local meshes. It still closes a link that went
    // silent while its peer stays alive through others (a path that dropped without a TCP reset), within
    // a minute or so: a ping every PING_INTERVAL_MS (a stream per connection each time) is enough for that.
    connectionMonitor: { pingInterval: PING_INTERVAL_MS, pingTimeout: { minTimeout: 30_000, maxTimeout: 60_000 } },
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
        fastMsgIdFn: init.received === undefined ? fastMsgIdFn : countedFastMsgId(init.received),
        ...GOSSIP_MESH,
        idontwantMinDataSize: GOSSIP_IDONTWANT_MIN_BYTES,
        scoreParams: {
          IPColocationFactorWeight: 0
        }
      })
    }
  })
}

/**
 * The id gossipsub derives for a StrictSign message (author + sequence number),
 * computed from the raw fields so that duplicates are recognised before their
 * signature is checked. A forged copy cannot poison the cache: gossipsub records
 * a fast id only after the message it came with passed validation.
 */
export function fastMsgId (msg: { from?: Uint8Array, seqno?: Uint8Array }): string {
  const from = msg.from
  const seqno = msg.seqno
  // StrictSign rejects these, so no fast id of theirs is ever recorded
  if (from === undefined || seqno === undefined) return 'unsigned'
  return Buffer.from(from.buffer, from.byteOffset, from.byteLength).toString('base64') +
    Buffer.from(seqno.buffer, seqno.byteOffset, seqno.byteLength).toString('base64')
}

const fastMsgIdFn = fastMsgId

/** `fastMsgId`, counting its calls: gossipsub asks for the fast id of every copy that arrives, once. */
function countedFastMsgId (received: { copies: number }): typeof fastMsgId {
  return msg => {
    received.copies++
    return fastMsgId(msg)
  }
}
