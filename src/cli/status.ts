import type { StatusReport } from '../api/status.ts'
import { requestStatus } from '../api/status-request.ts'
import { silentLogger } from '../util/logger.ts'
import { defaultClientIdentityFile, loadClientIdentity } from '../node/identity.ts'
import { CLIENT_OPTIONS, resolveConnection, type ClientOptions } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { renderStatus } from './render.ts'

/**
 * One status report and the node it came through: asked of a bootstrap node in
 * one request (`/meshwork/status/1`), or, when no node answering serves that
 * (nodes of an earlier release), read through a light mesh client (board sync
 * and members view) in the time left. The light client's modules (Automerge,
 * gossip) are loaded only then.
 */
export async function statusOnce (opts: ClientOptions): Promise<{ report: StatusReport, peer: string }> {
  const conn = await resolveConnection(opts, true)
  const privateKey = await loadClientIdentity(opts.identity ?? defaultClientIdentityFile())
  const answer = await requestStatus({ key: conn.key, bootstrap: conn.bootstrap, timeoutMs: opts.timeout, logger: silentLogger, privateKey })
  if (answer.kind === 'report') return answer
  const { clientFromOptions, readStatus } = await import('./mesh-client.ts')
  const client = await clientFromOptions({ ...opts, timeout: Math.max(answer.remainingMs, 1000) })
  try {
    return { report: await readStatus(client), peer: client.peer }
  } finally {
    await client.close()
  }
}

export const statusCommand = defineCommand({
  name: 'status',
  summary: summaryOf('status'),
  usage: 'meshwork status [--json] [--watch] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: 'Asks the node it connects to for the mesh as that node sees it, as a light peer (never takes work, never listed among the nodes), and leaves when done.',
  options: {
    json: opt.boolean({ description: 'Print one JSON object: meshId, main, nodes, tasks, conflicts, approvals (the fields are listed in README.md, "status --json").' }),
    watch: opt.boolean({ description: 'Refresh every --interval until interrupted.' }),
    interval: opt.duration({ arg: 'DURATION', default: 1000, min: 100, description: 'Refresh period of --watch.' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts) => {
    const { json, watch, interval } = opts
    if (!watch) {
      const { report, peer } = await statusOnce(opts)
      process.stdout.write((json ? JSON.stringify(report, null, 2) : renderStatus(report, peer)) + '\n')
      return 0
    }
    const { clientFromOptions, watchStatus } = await import('./mesh-client.ts')
    const client = await clientFromOptions(opts)
    try {
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
})
