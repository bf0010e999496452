import { confirmWrite, type Client } from './client.ts'
import { findNode } from './drain.ts'
import { UsageError } from '../util/errors.ts'

/** Whether `rec` was forgotten since it last started. */
export function forgotten (rec: { startedAt: number, forgottenAt?: number | null | undefined }): boolean {
  return rec.forgottenAt != null && rec.forgottenAt >= rec.startedAt
}

/**
 * Takes node `target` (its --name or peer id) out of the majority the merge
 * leader needs, until it starts again. Refused for a node the connected peer
 * sees alive or suspect: that one is not gone (`drain` takes a live node out).
 */
export async function requestForget (client: Client, target: string): Promise<{ peerId: string, name: string, already: boolean }> {
  const { peerId, rec } = findNode(client.node.board.snapshot(), target)
  const label = `${rec.name !== '' ? rec.name + ' ' : ''}(${peerId})`
  if (rec.leftAt !== null && rec.leftAt >= rec.startedAt) return { peerId, name: rec.name, already: true }
  if (forgotten(rec)) return { peerId, name: rec.name, already: true }
  const view = await client.node.fetchMembers(client.peer)
  const seen = view?.members.find(m => m.peerId === peerId)
  if (seen !== undefined && (seen.state === 'alive' || seen.state === 'suspect')) {
    throw new UsageError(`${label} is ${seen.state} as ${client.peer} sees it: \`forget\` is for a node that is gone for good. To take a live node out, use \`meshwork drain ${target}\`.`)
  }
  client.node.changeBoard(`node:forget ${peerId}`, d => {
    const r = d.nodes[peerId]
    if (r !== undefined) r.forgottenAt = Date.now()
  })
  await confirmWrite(client, `forgetting ${label}`)
  return { peerId, name: rec.name, already: false }
}
