/**
 * The worker side of a benchmark's IPC: every worker is a Node process
 * started with `child_process.fork(file, [JSON.stringify(config)])` that
 * reads its config from argv, reports events to the parent and builds its
 * MeshNode the same way (127.0.0.1, the benchmark's swarm key).
 */
import { swarmKeyFromHex } from '../../../src/node/swarm-key.ts'
import type { MeshNodeInit } from '../../../src/node/mesh-node.ts'

/** The config this worker was forked with; exits 2 when it was not forked (it talks over IPC). */
export function workerConfig<T> (name: string): T {
  if (process.send === undefined) {
    process.stderr.write(`${name} must be started with child_process.fork (it talks over IPC)\n`)
    process.exit(2)
  }
  return JSON.parse(process.argv[2] ?? '{}') as T
}

/** Sends one event to the parent, while it is still connected. */
export function sendToParent<E> (e: E): void {
  if (process.connected) process.send?.(e)
}

/** What every benchmark worker's node is started with. */
export interface BenchNodeConfig { swarmKeyHex: string, dataDir: string, bootstrap: string[] }

/** A node on 127.0.0.1 (any port) in the benchmark's mesh; `extra` adds or overrides init fields. */
export function benchNodeInit (config: BenchNodeConfig, name: string, extra: Partial<MeshNodeInit> = {}): MeshNodeInit {
  return {
    role: 'node',
    swarmKey: swarmKeyFromHex(config.swarmKeyHex),
    dataDir: config.dataDir,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: config.bootstrap,
    name,
    ...extra
  }
}
