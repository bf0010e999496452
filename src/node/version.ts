import { readFileSync } from 'node:fs'
import { SYNC_PROTOCOL } from '../protocol/sync.ts'
import { MEMBERS_PROTOCOL } from '../protocol/members.ts'
import { GIT_PROTOCOL } from '../protocol/git.ts'

/** This meshwork's version (package.json; the same file sits two levels up from src/ and dist/ files). */
export const MESHWORK_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** What a node tells its peers it is (libp2p identify's agent version). */
export function agentVersion (version = MESHWORK_VERSION): string {
  return `meshwork/${version}`
}

/**
 * The versioned meshwork protocols this node serves: a peer must share one
 * version of each family it speaks. A release that changes a wire protocol
 * lists both ids here (and dials the newest the peer supports), so nodes of
 * the previous release still work with it during a rolling upgrade.
 */
export const WIRE_PROTOCOLS: readonly string[] = [SYNC_PROTOCOL, MEMBERS_PROTOCOL, GIT_PROTOCOL]

/** `/meshwork/sync/1` -> `['/meshwork/sync', '1']`. */
function split (p: string): [string, string] | null {
  const m = /^(\/meshwork\/[a-z-]+)\/([^/]+)$/.exec(p)
  return m === null ? null : [m[1] as string, m[2] as string]
}

/** `family -> versions` of the meshwork protocols among `protocols` (`/meshwork/git/2` -> `/meshwork/git` -> `['2']`). */
function families (protocols: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const p of protocols) {
    const s = split(p)
    if (s !== null) out.set(s[0], [...(out.get(s[0]) ?? []), s[1]])
  }
  return out
}

/**
 * Why a peer announcing `protocols` cannot work with this node, or null when
 * it can (or is not a meshwork peer this node can judge). A peer that speaks a
 * meshwork protocol only in versions this node does not speak (say
 * `/meshwork/git/3` where we speak `/meshwork/git/2`) is incompatible. A node
 * may speak several versions of one protocol (a release that changes a wire
 * protocol keeps serving the previous id, so a rolling upgrade works): one
 * version in common is enough.
 */
export function incompatibility (protocols: readonly string[], mine: readonly string[] = WIRE_PROTOCOLS): string | null {
  const theirs = families(protocols)
  const problems: string[] = []
  for (const [family, ours] of families(mine)) {
    const versions = theirs.get(family)
    if (versions !== undefined && !versions.some(v => ours.includes(v))) problems.push(`${family}/${versions.join(',')} (this node: ${family}/${ours.join(',')})`)
  }
  return problems.length > 0 ? problems.join('; ') : null
}
