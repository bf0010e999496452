import { Board, type BoardWrite } from '../../src/crdt/board.ts'
import { actorForPeer } from '../../src/crdt/authors.ts'
import type { PeerIdString } from '../../src/crdt/schema.ts'
import type { Member } from '../../src/node/membership.ts'
import { ZERO_TOKENS, type Agent } from '../../src/agent/types.ts'

/** An agent whose runs last until they are stopped (a scheduler's slot held at will). */
export const heldAgent: Agent = {
  kind: 'held',
  run: async ({ signal }) => await new Promise((resolve) => {
    signal.addEventListener('abort', () => { resolve({ outcome: 'aborted', error: 'stopped', costUsd: 0, tokens: ZERO_TOKENS }) }, { once: true })
  })
}

/**
 * What a scheduler needs of its node, over a real board and one peer whose
 * membership entry the test controls (`peer`): for tests that choose which
 * changes and heartbeats arrive when. The test carries changes between this
 * board and the peer's.
 */
export class FakeSchedulerNode extends EventTarget {
  readonly peerId: PeerIdString
  readonly name = 'me'
  readonly startedAt = 0
  readonly diskFull = false
  readonly board: Board
  peer: Member

  constructor (mesh: string, me: PeerIdString, peer: PeerIdString) {
    super()
    this.peerId = me
    this.board = Board.create(mesh, actorForPeer(me))
    this.peer = {
      peerId: peer, name: 'peer', slots: 0, running: [], heads: [], addrs: [], load: 0, lagMs: 0, backoffUntil: null,
      state: 'alive', eligible: true, aliveSince: 0, lastSeenAt: Date.now(), silentMs: 0
    }
  }

  readonly membership = {
    heartbeatMs: 1000,
    get: (p: string) => p === this.peer.peerId ? this.peer : undefined,
    alive: () => [this.peer],
    members: () => [this.peer]
  }

  changeBoard (message: string, fn: Parameters<Board['change']>[1]): boolean {
    return this.board.change(message, fn) !== null
  }

  writeBoard (message: string, fn: Parameters<Board['change']>[1]): BoardWrite {
    return this.board.write(message, fn)
  }

  changeBoardHash (message: string, fn: Parameters<Board['change']>[1]): string | null {
    const bytes = this.board.change(message, fn)
    return bytes === null ? null : Board.hashOf(bytes)
  }

  setPresenceExtras (): void {}
}
