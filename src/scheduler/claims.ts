import { createHash } from 'node:crypto'
import { asPeerId, type Claim, type PeerIdString, type Task, type TaskId } from '../crdt/schema.ts'

/**
 * Claim resolution without a coordinator (pure functions). A claim is a write
 * to `tasks[id].claims[peer] = { epoch, at }`: one key per claimant, so
 * concurrent claims are all visible once gossip has delivered them. After a
 * settle window every claimant computes the same winner from the same claims.
 */

/** Compares claims: earlier `at` first, then the lower peer id. */
function before (a: [string, Claim], b: [string, Claim]): boolean {
  return a[1].at < b[1].at || (a[1].at === b[1].at && a[0] < b[0])
}

/** The winning claimant among the claims of the task's current epoch, or null. */
export function claimWinner (task: Pick<Task, 'claims' | 'epoch'>): PeerIdString | null {
  let best: [string, Claim] | null = null
  for (const entry of Object.entries(task.claims)) {
    if (entry[1].epoch !== task.epoch) continue
    if (best === null || before(entry, best)) best = entry
  }
  return best === null ? null : asPeerId(best[0])
}

/**
 * Whether `me`'s claim of `epoch` can no longer win whatever arrives later:
 * the task runs on another node in that epoch, or another node's claim of the
 * epoch comes first (claims are only added; an earlier one keeps beating this
 * one, and should it be withdrawn, the task is claimed afresh).
 */
export function lostAlready (t: Pick<Task, 'claims' | 'epoch' | 'state' | 'node'> | undefined, epoch: number, me: PeerIdString): boolean {
  if (t === undefined || t.epoch !== epoch) return false
  if (t.state === 'running') return t.node !== me
  if (t.state !== 'claimed' || t.claims[me]?.epoch !== epoch) return false
  const winner = claimWinner(t)
  return winner !== null && winner !== me
}

/** The winning claim itself (who and when), or null. */
export function winningClaim (task: Pick<Task, 'claims' | 'epoch'>): { peer: PeerIdString, at: number } | null {
  const w = claimWinner(task)
  if (w === null) return null
  return { peer: w, at: (task.claims[w] as Claim).at }
}

/** Rendezvous (highest random weight) score of a peer for a task. */
export function rendezvousScore (taskId: string, peerId: string): number {
  return createHash('sha256').update(taskId).update('\0').update(peerId).digest().readUInt32BE(0)
}

/** A node's spare capacity as the scheduler sees it. */
export interface Capacity {
  peerId: string
  free: number
}

/**
 * How `assignOwners` shares out tasks ranked alike: `rank` (claimOrder's rank,
 * `claimRank`) and `runners`, every node that runs tasks whatever its load.
 */
export interface Ties<T> {
  rank: (t: T) => string
  runners: readonly string[]
  /**
   * The merge leader, when it runs tasks: the head of the queue goes to it
   * when it has room. A task run on the leader needs no hand-off of its branch
   * (0.4-1.3 s on a loaded host) and its `done` no gossip round to the leader,
   * and the leader sees the tasks its merge makes ready at once: on a chain of
   * dependent tasks (the head of the queue is the longest path left) each of
   * these would add to the makespan.
   */
  leader?: string | null
}

/**
 * Preferred owner of each ready task: tasks in claim order each go to the node
 * with free capacity that scores highest for it (rendezvous hashing with
 * capacity). Every node computes this from its own view; views that differ only
 * cause contention that the settle window resolves.
 *
 * With `ties`, a run of tasks ranked alike (equal to the claim order) goes
 * first to their rendezvous owners among all `runners`, busy or not, each as
 * far as its room goes; what is left of the run then goes by capacity as
 * above. Views differ one way above all: a run handing its branch off is still
 * `running` on the board, so nodes whose slots free at about the same time
 * each see only themselves with room, and by capacity alone each would own the
 * head of the queue, the same tasks for all. By the rendezvous over all
 * runners each owns its own share instead. Nodes that see the same room still
 * compute the same owners. Only the head of the queue is shared so (four times
 * the room seen, at least 32 tasks): scoring every runner for a 10,000-task
 * queue at each pass would be waste, and the room runs out long before.
 *
 * With `ties.leader` and room on it, the first task of all goes to the merge
 * leader before any of this (see `Ties.leader`).
 */
export function assignOwners<T extends Pick<Task, 'id'>> (orderedTasks: readonly T[], capacity: readonly Capacity[], ties?: Ties<T>): Map<TaskId, string> {
  const free = new Map(capacity.filter(c => c.free > 0).map(c => [c.peerId, c.free]))
  const out = new Map<TaskId, string>()
  const give = (t: T, peer: string): void => {
    out.set(t.id as TaskId, peer)
    const left = (free.get(peer) ?? 1) - 1
    if (left > 0) free.set(peer, left)
    else free.delete(peer)
  }
  /** By capacity: to the peer with room that scores highest for `t`; false when no peer has room. */
  const byCapacity = (t: T): boolean => {
    const best = rendezvousOwner(t.id, [...free.keys()])
    if (best !== null) give(t, best)
    return best !== null
  }
  const first = orderedTasks[0]
  if (first !== undefined && ties?.leader != null && free.has(ties.leader)) give(first, ties.leader)
  let room = 0
  for (const n of free.values()) room += n
  const runners = ties?.runners ?? []
  const head = runners.length < 2 ? 0 : Math.min(orderedTasks.length, Math.max(32, 4 * room))
  for (const run of ties === undefined || head === 0 ? [] : runsOfRank(orderedTasks.slice(0, head), ties.rank)) {
    if (run.length > 1) {
      for (const t of run) {
        if (out.has(t.id as TaskId)) continue
        const owner = rendezvousOwner(t.id, runners)
        if (owner !== null && free.has(owner)) give(t, owner)
      }
    }
    for (const t of run) if (!out.has(t.id as TaskId) && !byCapacity(t)) return out
  }
  for (let k = head; k < orderedTasks.length; k++) {
    const t = orderedTasks[k] as T
    if (!out.has(t.id as TaskId) && !byCapacity(t)) break
  }
  return out
}

/**
 * The order a node goes through the ready tasks in: claim order, except that
 * within each run of tasks ranked alike the ones it owns (`owned`) come first.
 * It takes its own share of a rank before it steals a task of the same rank;
 * a task ranked higher stays first, its own or a steal.
 */
export function ownFirst<T> (ordered: readonly T[], rank: (t: T) => string, owned: (t: T) => boolean): T[] {
  const out: T[] = []
  for (const run of runsOfRank(ordered, rank)) {
    for (const t of run) if (owned(t)) out.push(t)
    for (const t of run) if (!owned(t)) out.push(t)
  }
  return out
}

/** `ordered` cut into runs of tasks that `rank` ranks alike, in order. */
function * runsOfRank<T> (ordered: readonly T[], rank: (t: T) => string): Generator<T[]> {
  for (let i = 0; i < ordered.length;) {
    const key = rank(ordered[i] as T)
    let j = i + 1
    while (j < ordered.length && rank(ordered[j] as T) === key) j++
    yield ordered.slice(i, j)
    i = j
  }
}

/** The peer of `peers` that scores highest for `taskId` (ties: the lower id); null for none. */
export function rendezvousOwner (taskId: string, peers: readonly string[]): string | null {
  let best: string | null = null
  let bestScore = -1
  for (const peer of peers) {
    const s = rendezvousScore(taskId, peer)
    if (s > bestScore || (s === bestScore && best !== null && peer < best)) {
      best = peer
      bestScore = s
    }
  }
  return best
}

/**
 * Doubling back-off after the `failures`-th failure in a row: `baseMs`,
 * twice that, four times, ... capped at `maxMs`. The default is the wait
 * before a failed task may be claimed again (1 s, 2 s, 4 s, ... 60 s).
 */
export function retryBackoffMs (failures: number, baseMs = 1000, maxMs = 60_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1))
}
