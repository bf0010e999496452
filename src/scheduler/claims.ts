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
 * Preferred owner of each ready task: tasks in claim order each go to the node
 * with free capacity that scores highest for it (rendezvous hashing with
 * capacity). Every node computes this from its own view; views that differ only
 * cause contention that the settle window resolves.
 */
export function assignOwners (orderedTasks: ReadonlyArray<Pick<Task, 'id'>>, capacity: readonly Capacity[]): Map<TaskId, string> {
  const free = new Map(capacity.filter(c => c.free > 0).map(c => [c.peerId, c.free]))
  const out = new Map<TaskId, string>()
  for (const t of orderedTasks) {
    let best: string | null = null
    let bestScore = -1
    for (const [peer, n] of free) {
      if (n <= 0) continue
      const s = rendezvousScore(t.id, peer)
      if (s > bestScore || (s === bestScore && best !== null && peer < best)) {
        best = peer
        bestScore = s
      }
    }
    if (best === null) break
    out.set(t.id as TaskId, best)
    free.set(best, (free.get(best) ?? 1) - 1)
  }
  return out
}

/**
 * The order in which this node looks at the ready tasks (`ordered` with the
 * ties this node's rendezvous wins first: `spreadTies`) and the preferred
 * owner of each (`assignOwners` over that same order). Owners must come from
 * the spread order: nodes whose slots free at about the same time each see
 * only themselves with room, and owners given in the queue's own order would
 * hand each of them the queue's head, the same tasks for all, whatever the
 * spread put first.
 */
export function preferredOwners<T extends Pick<Task, 'id'>> (ordered: readonly T[], rank: (t: T) => string, me: string, runners: readonly string[], capacity: readonly Capacity[], limit: number): { order: T[], owners: Map<TaskId, string> } {
  const order = spreadTies(ordered, rank, me, runners, limit)
  return { order, owners: assignOwners(order, capacity) }
}

/**
 * Doubling back-off after the `failures`-th failure in a row: `baseMs`,
 * twice that, four times, ... capped at `maxMs`. The default is the wait
 * before a failed task may be claimed again (1 s, 2 s, 4 s, ... 60 s).
 */
export function retryBackoffMs (failures: number, baseMs = 1000, maxMs = 60_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1))
}

/**
 * `ordered` (claim order) with each run of tasks that `rank` ranks alike
 * reordered so that those the whole mesh's rendezvous gives to `me` (the
 * highest score among `peers`, `me` included) come first, the rest after in
 * their order. Nodes whose slots free at about the same time each see only
 * themselves with room (a run still handing its branch off is `running` on
 * the board), so their owner maps agree on nothing and every one of them
 * would go for the head of the same queue; with this they mostly go for
 * different tasks, at no cost to the order, as tasks ranked alike are equal
 * to it. Only the first `limit` tasks are reordered (a node takes a few per
 * pass; scoring a 10,000-task queue each time would be waste).
 */
export function spreadTies<T extends Pick<Task, 'id'>> (ordered: readonly T[], rank: (t: T) => string, me: string, peers: readonly string[], limit: number): T[] {
  const head = ordered.slice(0, limit)
  const out: T[] = []
  const others = peers.filter(p => p !== me)
  const mine = (t: T): boolean => {
    const own = rendezvousScore(t.id, me)
    return others.every(p => { const s = rendezvousScore(t.id, p); return s < own || (s === own && me < p) })
  }
  for (let i = 0; i < head.length;) {
    let j = i + 1
    const key = rank(head[i] as T)
    while (j < head.length && rank(head[j] as T) === key) j++
    const run = head.slice(i, j)
    if (run.length === 1 || others.length === 0) out.push(...run)
    else {
      const own = run.map(mine)
      out.push(...run.filter((_, k) => own[k]), ...run.filter((_, k) => !own[k]))
    }
    i = j
  }
  return [...out, ...ordered.slice(limit)]
}
