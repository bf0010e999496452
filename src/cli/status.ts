import { connectClient, type Client } from '../api/client.ts'
import { buildStatus, type StatusReport } from '../api/status.ts'
import { silentLogger } from '../util/logger.ts'
import { CLIENT_OPTIONS, durationOpt, resolveConnection } from './connection.ts'
import { flag, type Command, type ParsedOptions } from './command.ts'
import { renderStatus } from './render.ts'
import { UsageError } from '../util/errors.ts'

/** Connects a light client with the standard client options. */
export async function clientFromOptions (opts: ParsedOptions): Promise<Client> {
  const conn = await resolveConnection(opts, true)
  return await connectClient({ key: conn.key, bootstrap: conn.bootstrap, timeoutMs: durationOpt(opts, 'timeout', 15_000), logger: silentLogger })
}

/** Tries to read the node's membership view before `readStatus` gives up. @default 3 */
const MEMBERS_ATTEMPTS = 3

/**
 * The status report as seen through the client's mesh node. Without that
 * node's membership view every node would read as dead, so a view that cannot
 * be had after a few tries is an error, not an empty list.
 */
export async function readStatus (client: Client): Promise<StatusReport> {
  let last: unknown = null
  for (let i = 0; i < MEMBERS_ATTEMPTS; i++) {
    try {
      const view = await client.node.fetchMembers(client.peer)
      return buildStatus(client.node.board.snapshot(), view)
    } catch (err) {
      last = err
      await new Promise(resolve => setTimeout(resolve, 200 * (i + 1)))
    }
  }
  throw new Error(`${client.peer} did not answer for its membership view (${last instanceof Error ? last.message : String(last)}); run the command again or through another node`)
}

/**
 * Reads the status every `intervalMs` and hands each report to `onReport`
 * until SIGINT or SIGTERM; a read that fails is reported on stderr and the
 * watch goes on.
 */
export async function watchStatus (client: Client, intervalMs: number, onReport: (s: StatusReport) => void): Promise<void> {
  let stop = false
  const onSig = (): void => { stop = true }
  process.once('SIGINT', onSig)
  process.once('SIGTERM', onSig)
  try {
    while (!stop) {
      try {
        onReport(await readStatus(client))
      } catch (err) {
        process.stderr.write(`${new Date().toISOString()} ${(err as Error).message}\n`)
      }
      const until = Date.now() + intervalMs
      while (!stop && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
    }
  } finally {
    process.off('SIGINT', onSig)
    process.off('SIGTERM', onSig)
  }
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'Show the mesh as seen through the node it connects to: nodes, tasks, main, conflicts.',
  usage: 'meshwork status [--json] [--watch] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: 'Joins as a light peer (never takes work, never listed among the nodes) and leaves when done.',
  options: {
    json: { type: 'boolean', description: 'Print one JSON object (fields may be added, never renamed).' },
    watch: { type: 'boolean', description: 'Refresh every second until interrupted.' },
    interval: { type: 'string', arg: 'DURATION', default: '1s', description: 'Refresh period of --watch.' },
    ...CLIENT_OPTIONS
  },
  run: async (opts) => {
    const json = flag(opts, 'json')
    const watch = flag(opts, 'watch')
    const interval = durationOpt(opts, 'interval', 1000)
    if (interval < 100) throw new UsageError(`--interval must be at least 100ms, got ${String(opts.interval)}.`)
    const client = await clientFromOptions(opts)
    try {
      if (!watch) {
        const s = await readStatus(client)
        process.stdout.write((json ? JSON.stringify(s, null, 2) : renderStatus(s, client.peer)) + '\n')
        return 0
      }
      const tty = process.stdout.isTTY === true
      await watchStatus(client, interval, s => {
        if (json) process.stdout.write(JSON.stringify(s) + '\n')
        else if (tty) process.stdout.write('\x1b[H\x1b[2J' + renderStatus(s, client.peer) + `\n\n(refreshing every ${interval / 1000} s; Ctrl-C to quit)\n`)
        else process.stdout.write(`--- ${new Date().toISOString()}\n${renderStatus(s, client.peer)}\n`)
      })
      return 0
    } finally {
      await client.close()
    }
  }
}
