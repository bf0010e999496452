import type { PrivateKey } from '@libp2p/interface'
import { connectClient, type Client, type ClientInit } from '../api/client.ts'
import { buildStatus, type StatusReport } from '../api/status.ts'
import { silentLogger } from '../util/logger.ts'
import { defaultClientIdentityFile, loadClientIdentity } from '../node/identity.ts'
import { resolveConnection, type ClientOptions } from './connection.ts'

/** What a client connects with, from the standard client options: the swarm key, the addresses, the timeout, its identity. */
export async function clientInit (opts: ClientOptions): Promise<ClientInit & { privateKey: PrivateKey }> {
  const conn = await resolveConnection(opts, true)
  const privateKey = await loadClientIdentity(opts.identity ?? defaultClientIdentityFile())
  return { key: conn.key, bootstrap: conn.bootstrap, timeoutMs: opts.timeout, logger: silentLogger, privateKey }
}

/** Connects a light client with the standard client options. */
export async function clientFromOptions (opts: ClientOptions): Promise<Client> {
  return await connectClient(await clientInit(opts))
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
