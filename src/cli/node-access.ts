import { resolve } from 'node:path'
import { Allowlist, readAllowlist } from '../node/allowlist.ts'
import { loadOrCreateIdentity, peerIdOf } from '../node/identity.ts'
import type { MeshNode } from '../node/mesh-node.ts'
import type { Logger } from '../util/logger.ts'
import { toError, UsageError } from '../util/errors.ts'
import { defaultDataDir } from './data-dir.ts'

/*
 * Who a `meshwork node` lets in: `--allow FILE` (reloaded on SIGHUP) and
 * `--print-peer-id`, which tells an operator the id to put in other nodes' lists.
 */

/**
 * `meshwork node --print-peer-id`: the peer id of the node whose data dir is
 * `--data` (or the default one of `--repo`), creating its identity key when
 * missing, so an allowlist can be written before the node first starts.
 */
export async function printNodePeerId (data: string | undefined, repo: string | undefined): Promise<number> {
  if (data === undefined && repo === undefined) {
    throw new UsageError('--print-peer-id needs --data DIR (the node\'s data dir), or --repo DIR to use that repository\'s default data dir.')
  }
  const dir = resolve(data ?? await defaultDataDir(repo as string))
  process.stdout.write(peerIdOf(await loadOrCreateIdentity(dir)) + '\n')
  return 0
}

/** Loads `--allow FILE` (a usage error when unreadable or malformed), or undefined without the flag. */
export async function loadAllowOption (file: string | undefined, log: Logger): Promise<Allowlist | undefined> {
  if (file === undefined) return undefined
  const peers = await readAllowlist(file)
  log.info('allow:loaded', { file: resolve(file), peers: peers.length, note: 'only these peers (and this node) may connect and change the board' })
  return new Allowlist(peers)
}

/**
 * Reloads the allowlist on SIGHUP: the new list replaces the old one whole and
 * connected peers it no longer names are hung up on. A file that cannot be
 * read or parsed keeps the old list (logged). Returns the function that stops
 * listening.
 */
export function reloadAllowOnHangup (file: string, allow: Allowlist, node: MeshNode, log: Logger): () => void {
  let running = false
  const onHup = (): void => {
    if (running) return
    running = true
    void (async () => {
      try {
        const peers = await readAllowlist(file)
        allow.replace(peers)
        const dropped = await node.dropUnlisted()
        log.info('allow:reloaded', { file: resolve(file), peers: peers.length, disconnected: dropped })
      } catch (err) {
        log.warn('allow:reload-failed', { file: resolve(file), error: toError(err).message, note: 'the previous list stays in force' })
      } finally {
        running = false
      }
    })()
  }
  process.on('SIGHUP', onHup)
  return () => { process.off('SIGHUP', onHup) }
}
