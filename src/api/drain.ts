import { confirmWrite, type Client } from './client.ts'
import { asPeerId, type BoardSnapshot, type NodeRecord } from '../crdt/schema.ts'
import { UsageError } from '../util/errors.ts'
import { waitFor } from '../util/wait.ts'

/** The board record of the node named `target` (its --name or peer id), still in the mesh. */
export function findNode (snap: BoardSnapshot, target: string): { peerId: string, rec: NodeRecord } {
  const byId = snap.nodes.get(asPeerId(target))
  if (byId !== undefined) return { peerId: target, rec: byId }
  const named = [...snap.nodes].filter(([, r]) => r.name === target)
  const present = named.filter(([, r]) => r.leftAt === null || r.leftAt < r.startedAt)
  const pick = present.length > 0 ? present : named
  if (pick.length === 1) return { peerId: pick[0]![0], rec: pick[0]![1] }
  if (pick.length > 1) throw new UsageError(`more than one node is named "${target}" (${pick.map(([p]) => p).join(', ')}); give the peer id instead.`)
  const names = [...snap.nodes.values()].map(r => r.name).filter(n => n !== '')
  throw new UsageError(`no node "${target}" on the board${names.length > 0 ? ` (nodes: ${names.join(', ')})` : ''}. Give a node's --name or peer id as \`meshwork status\` lists them.`)
}

/** True once a node has left after the drain request it carries. */
export function drained (rec: NodeRecord): boolean {
  return rec.drainAt != null && rec.leftAt !== null && rec.leftAt >= rec.drainAt
}

/** Asks node `target` to drain: stop claiming, finish or hand back its runs, wait for its branches to merge, leave. */
export async function requestDrain (client: Client, target: string): Promise<{ peerId: string, name: string, already: boolean }> {
  const { peerId, rec } = findNode(client.node.board.snapshot(), target)
  if (rec.leftAt !== null && rec.leftAt >= rec.startedAt) return { peerId, name: rec.name, already: true }
  if (rec.drainAt != null && rec.drainAt >= rec.startedAt) return { peerId, name: rec.name, already: false }
  client.node.changeBoard(`node:drain ${peerId}`, d => {
    const r = d.nodes[peerId]
    if (r !== undefined) r.drainAt = Date.now()
  })
  try {
    await confirmWrite(client, 'the drain request')
  } catch (err) {
    // read through the node being drained, the confirmation can fail because the drain worked: a node
    // with nothing to finish leaves at once and closes the connection. Its leave reaches this client by
    // gossip from the other nodes it is connected to.
    if (peerId !== client.peer || !await drainedWithin(client, peerId, client.timeoutMs)) throw err
  }
  return { peerId, name: rec.name, already: false }
}

/** Whether the board shows node `peerId` drained (left after its drain request) within `ms`. */
async function drainedWithin (client: Client, peerId: string, ms: number): Promise<boolean> {
  const left = (): boolean => { const rec = client.node.board.snapshot().nodes.get(asPeerId(peerId)); return rec !== undefined && drained(rec) }
  return await waitFor(left, { timeoutMs: ms, intervalMs: 100, message: 'drained' }).then(() => true, () => false)
}
