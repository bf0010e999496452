import { readFileSync } from 'node:fs'
import { SYNC_PROTOCOL } from '../protocol/sync.ts'
import { MEMBERS_PROTOCOL } from '../protocol/members.ts'
import { GIT_PROTOCOL } from '../git/transfer.ts'

/** This meshwork's version (package.json; the same file sits two levels up from src/ and dist/ files). */
export const MESHWORK_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** What a node tells its peers it is (libp2p identify's agent version). */
export function agentVersion (version = MESHWORK_VERSION): string {
  return `meshwork/${version}`
}

/** The versioned meshwork protocols a node must share with a peer to work with it. */
export const WIRE_PROTOCOLS: readonly string[] = [SYNC_PROTOCOL, MEMBERS_PROTOCOL, GIT_PROTOCOL]

/** `/meshwork/sync/1` -> `['/meshwork/sync', '1']`. */
function split (p: string): [string, string] | null {
  const m = /^(\/meshwork\/[a-z-]+)\/([^/]+)$/.exec(p)
  return m === null ? null : [m[1] as string, m[2] as string]
}

/**
 * Why a peer announcing `protocols` cannot work with this node, or null when
 * it can (or is not a meshwork peer this node can judge). A peer that speaks a
 * meshwork protocol only in other versions than ours (say `/meshwork/git/3`
 * where we speak `/meshwork/git/2`) is incompatible.
 */
export function incompatibility (protocols: readonly string[], mine: readonly string[] = WIRE_PROTOCOLS): string | null {
  const theirs = new Map<string, string[]>()
  for (const p of protocols) {
    const s = split(p)
    if (s !== null) theirs.set(s[0], [...(theirs.get(s[0]) ?? []), s[1]])
  }
  const problems: string[] = []
  for (const p of mine) {
    const s = split(p)
    if (s === null) continue
    const versions = theirs.get(s[0])
    if (versions !== undefined && !versions.includes(s[1])) problems.push(`${s[0]}/${versions.join(',')} (this node: ${p})`)
  }
  return problems.length > 0 ? problems.join('; ') : null
}
