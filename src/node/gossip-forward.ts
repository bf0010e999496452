import type { GossipSub } from '@libp2p/gossipsub'
import type { PatchStatus } from './pnet-fix.ts'

/**
 * Peers (peer id strings) a gossip message should not be forwarded to, given
 * its topic, author (the raw `from` of the message: the author's multihash
 * bytes) and the topic's mesh peers (those a forward goes to; undefined: not
 * known), or null for none.
 */
export type ForwardFilter = (topic: string, author: Uint8Array | undefined, meshPeers: ReadonlySet<string> | undefined) => ReadonlySet<string> | null

interface RawForwarded { topic: string, from?: Uint8Array | null }
type ForwardMessage = (msgIdStr: string, rawMsg: RawForwarded, propagationSource?: string, excludePeers?: Set<string>) => void

/**
 * Lets `filter` leave peers out when `pubsub` forwards a message it received
 * (its own messages are published, not forwarded, and go to every peer as
 * before). Gossipsub's `forwardMessage(msgId, raw, source, excludePeers)`
 * already leaves out the peers in `excludePeers` (with asynchronous
 * validation, the peers a copy came from); the filter's peers are added to
 * them. Written for @libp2p/gossipsub 17.1.1 (package.json pins it), whose
 * `forwardMessage` is an internal method: the returned status says whether
 * the method was found (when not, messages are forwarded as the library
 * does, to every mesh peer but the source).
 */
export function filterForwards (pubsub: GossipSub, filter: ForwardFilter): PatchStatus {
  const target = pubsub as unknown as { forwardMessage?: ForwardMessage, mesh?: Map<string, Set<string>>, __meshworkForwardFilter?: boolean }
  const forward = target.forwardMessage
  if (typeof forward !== 'function' || forward.length !== 4) {
    return { name: 'gossip-forward', state: 'failed', detail: 'gossipsub has no forwardMessage(msgId, raw, source, excludePeers) method' }
  }
  if (target.__meshworkForwardFilter === true) return { name: 'gossip-forward', state: 'failed', detail: 'a forward filter is installed already' }
  target.__meshworkForwardFilter = true
  target.forwardMessage = function (this: unknown, msgIdStr, rawMsg, propagationSource, excludePeers) {
    // the topic's mesh is whom gossipsub forwards to (meshwork configures no direct peers)
    const skip = filter(rawMsg.topic, rawMsg.from ?? undefined, target.mesh instanceof Map ? target.mesh.get(rawMsg.topic) : undefined)
    if (skip === null || skip.size === 0) { forward.call(this, msgIdStr, rawMsg, propagationSource, excludePeers); return }
    const exclude = new Set(skip)
    if (excludePeers !== undefined) for (const p of excludePeers) exclude.add(p)
    forward.call(this, msgIdStr, rawMsg, propagationSource, exclude)
  }
  return { name: 'gossip-forward', state: 'applied', detail: 'gossip is not forwarded to peers that hear its author directly' }
}
