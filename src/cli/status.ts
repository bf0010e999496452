import { connectClient, type Client } from '../api/client.ts'
import { buildStatus, type StatusReport } from '../api/status.ts'
import { silentLogger } from '../util/logger.ts'
import { CLIENT_OPTIONS, durationOpt, resolveConnection } from './connection.ts'
import { flag, type Command, type ParsedOptions } from './command.ts'
import { renderStatus } from './render.ts'

/** Connects a light client with the standard client options. */
export async function clientFromOptions (opts: ParsedOptions): Promise<Client> {
  const conn = await resolveConnection(opts, true)
  return await connectClient({ key: conn.key, bootstrap: conn.bootstrap, timeoutMs: durationOpt(opts, 'timeout', 15_000), logger: silentLogger })
}

/** The status report as seen through the client's mesh node. */
export async function readStatus (client: Client): Promise<StatusReport> {
  const view = await client.node.fetchMembers(client.peer).catch(() => null)
  return buildStatus(client.node.board.snapshot(), view)
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'Show the mesh as seen through the node it connects to: nodes, tasks, main, conflicts.',
  usage: 'meshwork status [--json] [--watch] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: 'Joins as a light peer (never takes work, never listed among the nodes) and leaves when done.',
  options: {
    json: { type: 'boolean', description: 'Print one JSON object (the format is in SPEC.md).' },
    watch: { type: 'boolean', description: 'Refresh every second until interrupted.' },
    interval: { type: 'string', arg: 'DURATION', default: '1s', description: 'Refresh period of --watch.' },
    ...CLIENT_OPTIONS
  },
  run: async (opts) => {
    const json = flag(opts, 'json')
    const watch = flag(opts, 'watch')
    const interval = durationOpt(opts, 'interval', 1000)
    const client = await clientFromOptions(opts)
    try {
      if (!watch) {
        const s = await readStatus(client)
        process.stdout.write((json ? JSON.stringify(s, null, 2) : renderStatus(s, client.peer)) + '\n')
        return 0
      }
      const tty = process.stdout.isTTY === true
      let stop = false
      const onSig = (): void => { stop = true }
      process.once('SIGINT', onSig)
      process.once('SIGTERM', onSig)
      while (!stop) {
        const s = await readStatus(client)
        if (json) process.stdout.write(JSON.stringify(s) + '\n')
        else if (tty) process.stdout.write('\x1b[H\x1b[2J' + renderStatus(s, client.peer) + `\n\n(refreshing every ${interval / 1000} s; Ctrl-C to quit)\n`)
        else process.stdout.write(`--- ${new Date().toISOString()}\n${renderStatus(s, client.peer)}\n`)
        const until = Date.now() + interval
        while (!stop && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
      }
      return 0
    } finally {
      await client.close()
    }
  }
}
