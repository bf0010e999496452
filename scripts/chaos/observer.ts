/**
 * The chaos run's eyes and its raw board writer: an in-process light client
 * (the product's own `connectClient`) that follows the board through one live
 * node and moves to another when the run is about to take that one down; and
 * the poison writer, which writes a task record with an id git refuses
 * straight into the board, skipping the plan checks `submit` does.
 */
import { connectClient, switchPeer, type Client } from '../../src/api/client.ts'
import { addTasks, simpleTask } from '../../src/crdt/ops.ts'
import type { BoardSnapshot } from '../../src/crdt/schema.ts'
import type { MembersView } from '../../src/protocol/members.ts'
import type { SwarmKey } from '../../src/node/swarm-key.ts'
import type { PrivateKey } from '@libp2p/interface'
import { silentLogger } from '../../src/util/logger.ts'
import type { ChaosNode } from './nodes.ts'

export class Observer {
  #client: Client
  #lastSync = 0

  private constructor (client: Client) {
    this.#client = client
  }

  /** Connects as the run's client (`privateKey`: the identity every node's --allow file names). */
  static async connect (key: SwarmKey, nodes: readonly ChaosNode[], privateKey: PrivateKey, timeoutMs: number): Promise<Observer> {
    const bootstrap = nodes.filter(n => n.running).flatMap(n => n.addrs)
    return new Observer(await connectClient({ key, bootstrap, timeoutMs, privateKey, logger: silentLogger }))
  }

  get peer (): string { return this.#client.peer }

  /** The board as the client has it (synced from its node at most every second, gossip between). */
  async board (): Promise<BoardSnapshot> {
    if (Date.now() - this.#lastSync > 1000) {
      this.#lastSync = Date.now()
      await withTimeout(this.#client.node.requestSync(this.#client.peer), 5000).catch(() => false)
    }
    return this.#client.node.board.snapshot()
  }

  /** The membership view of the node the client reads through (null when it does not answer in time). */
  async members (): Promise<MembersView | null> {
    return await withTimeout(this.#client.node.fetchMembers(this.#client.peer), 5000).catch(() => null)
  }

  /** Reads through one of `live` other than `avoid` (a peer id, or several) when it reads through one of those or its node is gone. */
  async moveOff (avoid: string | null | ReadonlySet<string>, live: readonly ChaosNode[]): Promise<void> {
    const avoided = (p: string): boolean => typeof avoid === 'string' || avoid === null ? p === avoid : avoid.has(p)
    const candidates = live.filter(n => n.running && !avoided(n.peerId))
    const current = candidates.find(n => n.peerId === this.#client.peer)
    if (current !== undefined) return
    const moved = await switchPeer(this.#client, candidates.map(n => ({ peerId: n.peerId, addrs: n.addrs })), 10_000)
    if (moved === null) throw new Error(`the observer could not move to any of ${candidates.map(n => n.name).join(', ')}`)
  }

  /**
   * The raw board writer: a task record with `id` (one git refuses as a
   * branch name) written straight into the board and synced to the node.
   */
  async writePoison (id: string, file: string): Promise<void> {
    this.#client.node.changeBoard(`chaos: poison task ${id}`, addTasks([simpleTask(id, { sim: { durationMs: 10, write: { [file]: 'poison\n' }, append: {}, fail: 0 } })]))
    if (!await withTimeout(this.#client.node.requestSync(this.#client.peer), 15_000)) throw new Error(`${this.#client.peer} did not confirm the poison change`)
  }

  async close (): Promise<void> {
    await withTimeout(this.#client.close(), 10_000).catch(() => {})
  }
}

async function withTimeout<T> (p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no answer within ${ms} ms`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}
