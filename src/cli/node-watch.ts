import type { MeshNode } from '../node/mesh-node.ts'
import type { Logger } from '../util/logger.ts'
import { UsageError } from '../util/errors.ts'
import { incompatibility, agentVersion as agentVersion_ } from '../node/version.ts'
import { MEMBERS_PROTOCOL } from '../protocol/members.ts'

/*
 * What a running `meshwork node` watches besides its work: peers of another
 * meshwork version, a mesh that does not answer, and peer names for its logs.
 */

/** How long a node with bootstrap peers may hear from none before it warns. @default 15 s */
export const NO_PEER_WARN_MS = 15_000

/** How often a node given bootstrap peers looks whether it has any connection (`watchForPeers`). @default 5 s */
const NO_PEER_CHECK_MS = 5000

/**
 * Watches the peers this node identifies. A bootstrap peer that speaks meshwork
 * only in protocol versions this node does not (an older or newer meshwork that
 * cannot work with this one), while no compatible node is connected, means this
 * node cannot join: `failed` rejects with a usage error in one line. Other
 * incompatible peers are logged once each.
 */
export function watchVersions (node: MeshNode, bootstrap: string[], log: Logger): { failed: Promise<never> } {
  const bootIds = new Set(bootstrap.map(a => /\/p2p\/([^/]+)$/.exec(a)?.[1]).filter((x): x is string => x !== undefined))
  const compatible = new Set<string>()
  const warned = new Set<string>()
  let fail: (err: Error) => void = () => {}
  const failed = new Promise<never>((_resolve, reject) => { fail = reject })
  failed.catch(() => {})
  node.host.addEventListener('peer:identify', evt => {
    const { peerId, protocols, agentVersion } = evt.detail
    const id = peerId.toString()
    if (!protocols.some(p => p.startsWith('/meshwork/'))) return
    const why = incompatibility(protocols)
    if (why === null) { if (protocols.includes(MEMBERS_PROTOCOL)) compatible.add(id); return }
    const theirs = agentVersion ?? 'an unknown meshwork version'
    if (bootIds.has(id) && compatible.size === 0) {
      fail(new UsageError(`this node runs ${agentVersion_()} and the mesh node ${id} runs ${theirs}, which speaks ${why}: they cannot work together. Install the mesh's meshwork version on this machine (or upgrade the mesh one node at a time) and start again.`))
    } else if (!warned.has(id)) {
      warned.add(id)
      log.warn('peer:incompatible', { peer: id, version: theirs, protocols: why })
    }
  })
  return { failed }
}

/** A logger that writes `<field>Name` beside every peer-id field whose node name is known. */
export function withPeerNames (log: Logger, name: (peerId: string) => string | undefined): Logger {
  const add = (fields?: Record<string, unknown>): Record<string, unknown> | undefined => {
    if (fields === undefined) return fields
    let out: Record<string, unknown> | undefined
    for (const k of PEER_FIELDS) {
      const v = fields[k]
      if (typeof v !== 'string' || !v.startsWith('12D3Koo') || fields[`${k}Name`] !== undefined) continue
      const n = name(v)
      if (n === undefined || n === '') continue
      out ??= {}
      out[`${k}Name`] = n
    }
    if (out === undefined) return fields
    // the name right after the id it belongs to
    const merged: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(fields)) {
      merged[k] = v
      if (out[`${k}Name`] !== undefined) merged[`${k}Name`] = out[`${k}Name`]
    }
    return merged
  }
  const wrap = (l: Logger): Logger => ({
    ...l,
    debug: (event, fields) => { l.debug(event, add(fields)) },
    info: (event, fields) => { l.info(event, add(fields)) },
    warn: (event, fields) => { l.warn(event, add(fields)) },
    error: (event, fields) => { l.error(event, add(fields)) },
    child: (ns: string) => wrap(l.child(ns))
  })
  return wrap(log)
}

/**
 * Warns while a node that was given bootstrap peers has no connection to any
 * peer: a wrong swarm key, an unreachable address or a stopped node look the
 * same from here, and without the warning it would wait in silence. Looks
 * every `NO_PEER_CHECK_MS` (the warning is a matter of seconds either way; a
 * look every second woke every node for it).
 */
export function watchForPeers (node: MeshNode, log: Logger, bootstrap: string[]): NodeJS.Timeout {
  let lonelySince = Date.now()
  let warned = 0
  const timer = setInterval(() => {
    if (node.connectedPeers().length > 0) { lonelySince = Date.now(); warned = 0; return }
    const silent = Date.now() - lonelySince
    if (silent < NO_PEER_WARN_MS || Date.now() - warned < 60_000) return
    warned = Date.now()
    log.warn('mesh:no-peers', {
      silentS: Math.round(silent / 1000),
      bootstrap: bootstrap.join(', '),
      note: 'no peer answers. Likely causes: this node has another mesh\'s swarm key (the mesh id printed at start differs from the other nodes\'), the bootstrap address is wrong or unreachable from here, or no node runs there'
    })
  }, NO_PEER_CHECK_MS)
  timer.unref()
  return timer
}

/** Log fields that hold a peer id: the logs add the node's name beside them where it is known. */
const PEER_FIELDS = ['peer', 'from', 'to', 'leader', 'holder', 'node', 'by', 'winner', 'target']
