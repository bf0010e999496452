import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './status.ts'
import type { BoardSnapshot } from '../crdt/schema.ts'

/** Identifies the shape of `meshwork export` output, for scripts and a future import. */
export const EXPORT_FORMAT = 'meshwork-export/1'

/** The board as one plain JSON object: every task (prompts included), conflict, node record and main. */
export function exportBoard (snap: BoardSnapshot, now = Date.now()): Record<string, unknown> {
  return {
    format: EXPORT_FORMAT,
    exportedAt: now,
    meshId: snap.meshId,
    main: snap.main,
    tasks: [...snap.tasks.values()].sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id)),
    conflicts: [...snap.conflicts.values()],
    nodes: [...snap.nodes].map(([peerId, rec]) => ({ ...rec, peerId })),
    ...(snap.invalid.length > 0 ? { invalid: snap.invalid } : {})
  }
}

export const exportCommand = defineCommand({
  name: 'export',
  summary: summaryOf('export'),
  usage: 'meshwork export (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR) > board.json',
  details: 'Joins as a light peer, syncs the board from the node it reaches and prints it on stdout.',
  options: { ...CLIENT_OPTIONS },
  run: async (opts) => {
    const client = await clientFromOptions(opts)
    try {
      process.stdout.write(JSON.stringify(exportBoard(client.node.board.snapshot()), null, 2) + '\n')
      return 0
    } finally {
      await client.close()
    }
  }
})
