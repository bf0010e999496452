/**
 * The narrow views of a node that the parts built on it take (after
 * js-libp2p's components): each declares exactly what it uses, so a part can
 * be reasoned about, and tested, without the whole node. `MeshNode` satisfies
 * all of them.
 */
import type { TypedEventTarget } from '@libp2p/interface'
import type { Board, BoardWrite } from '../crdt/board.ts'
import type { PeerIdString } from '../crdt/schema.ts'
import type { Membership } from './membership.ts'
import type { PresenceExtras } from './heartbeats.ts'
import type { MeshNodeEvents } from './types.ts'
import type { ProgressEvent } from '../protocol/presence.ts'
import type { GitStreams } from '../git/transfer.ts'

/** One board change: a function that edits the draft document. */
export type BoardChange = Parameters<Board['change']>[1]

/** The draft document a `BoardChange` edits. */
export type BoardDraft = Parameters<BoardChange>[0]

/** Reads the replicated board and makes changes to it (persisted, then gossiped). */
export interface BoardWriter {
  readonly peerId: PeerIdString
  readonly board: Board
  /** Makes one change; false when `fn` changed nothing (or the change was withheld: see `writeBoard`). */
  changeBoard: (message: string, fn: BoardChange) => boolean
  /** Makes one change and says what came of it: written, unchanged, or withheld because peers would refuse it (with the reason). */
  writeBoard: (message: string, fn: BoardChange) => BoardWrite
}

/** What the scheduler uses of its node. */
export interface SchedulerNode extends BoardWriter, Pick<TypedEventTarget<MeshNodeEvents>, 'addEventListener' | 'removeEventListener'> {
  readonly name: string
  /** Wall-clock ms when the node started. */
  readonly startedAt: number
  readonly membership: Pick<Membership, 'get' | 'alive' | 'members' | 'heartbeatMs'>
  /** Like `changeBoard`, returning the change's hash (null when nothing changed). */
  changeBoardHash: (message: string, fn: BoardChange) => string | null
  /** Whether this node's disk (or quota) is full: board writes fail and are retried; the scheduler claims nothing meanwhile. */
  readonly diskFull: boolean
  /** What the scheduler adds to each heartbeat (the tasks it runs, its back-off). */
  setPresenceExtras: (extras: () => PresenceExtras) => void
}

/** What the merge leader (and the main follower every node runs) uses of its node. */
export interface LeaderNode extends BoardWriter, GitStreams, Partial<Pick<TypedEventTarget<MeshNodeEvents>, 'addEventListener' | 'removeEventListener'>> {
  /** May this node become merge leader now (false with --no-leader, and while it stands down: `setLeaderHold`). */
  readonly eligible: boolean
  /** Whether this node may ever lead (false with --no-leader). */
  readonly leaderEligible: boolean
  /** Stands down from leading for a reason (a full disk), or stands again (null); peers see it in its heartbeats. */
  setLeaderHold: (reason: string | null) => void
  readonly startedAt: number
  readonly membership: Pick<Membership, 'members' | 'alive' | 'get' | 'deadAfterMs' | 'leaseMs'>
  publishProgress: (taskId: string, kind: ProgressEvent['kind'], text: string) => void
}

/** What a task's execution (worktrees, commits) uses of its node. */
export interface ExecutionNode {
  readonly board: Board
}
