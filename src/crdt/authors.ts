import * as A from '@automerge/automerge'
import { createHash, randomBytes } from 'node:crypto'

/*
 * Who wrote a board change. Every peer writes with an Automerge actor derived
 * from its peer id, so a change names its author: gossip checks the actor
 * against the message's signer, and a node with `--allow` admits changes only
 * from the actors of listed peers. Peers of this version write with *signing*
 * actors (the peer's tag followed by SIGNING_MARK) and sign every change
 * (signing.ts): a change under a signing actor without its peer's signature is
 * refused on every path. Older versions wrote unsigned changes under the bare
 * tag (32 hex digits; a client session: tag + 16); those are an older peer's
 * history and are judged by the board (board.ts).
 */

/** The tag of a peer: the first 32 hex digits of every actor it writes with; derived from its peer id. */
export function actorForPeer (peerId: string): string {
  return createHash('sha256').update('meshwork/actor/1:' + peerId).digest('hex').slice(0, 32)
}

/** Hex digits of the random part of a client session's actor. */
const SESSION_SUFFIX_HEX = 16

/** What follows the tag in a signing actor: its changes must carry the peer's signature. */
export const SIGNING_MARK = '5167ed01'

/** The actor a node writes with: its tag and SIGNING_MARK (a signing actor). */
export function nodeActorForPeer (peerId: string): string {
  return actorForPeer(peerId) + SIGNING_MARK
}

/**
 * The actor of one client session: the peer's signing actor followed by 8
 * random bytes. A client keeps its peer id across runs (`--identity`), but two
 * runs of it (a `status --watch` beside a `resolve`, or a run that reaches a
 * node the last run's changes have not reached yet) must never write the same
 * actor's same sequence number: peers would refuse the second change as a
 * duplicate and park everything that actor writes after it. The prefix still
 * ties every change to the peer that signed it.
 */
export function sessionActorForPeer (peerId: string): string {
  return nodeActorForPeer(peerId) + randomBytes(SESSION_SUFFIX_HEX / 2).toString('hex')
}

/** Whether changes under `actor` must carry its peer's signature (what this version writes with). */
export function isSigningActor (actor: string): boolean {
  return (actor.length === 32 + SIGNING_MARK.length || actor.length === 32 + SIGNING_MARK.length + SESSION_SUFFIX_HEX) &&
    actor.slice(32, 32 + SIGNING_MARK.length) === SIGNING_MARK
}

/** Whether `actor` is one `peerId` writes with: its node actor or one of its client sessions' actors. */
export function actorBelongsTo (actor: string, peerId: string): boolean {
  const own = actorForPeer(peerId)
  if (!actor.startsWith(own)) return false
  // an older version's node and session actors, and this version's signing ones
  return actor.length === own.length || actor.length === own.length + SESSION_SUFFIX_HEX || isSigningActor(actor)
}

/** The peer part of an actor (what `actorForPeer` derives), for allowlists. */
export function peerTagOfActor (actor: string): string {
  return actor.slice(0, 32)
}

/**
 * The changes `after` has beyond `before` whose author `admits` refuses and
 * that no admitted change among them builds on. A change of another author
 * that an admitted peer built on (its history from before the allowlist, say)
 * is vouched for by that peer and kept; one that arrives on its own is not.
 */
export function unvouchedChanges<T> (before: A.Doc<T>, after: A.Doc<T>, admits: (actor: string) => boolean): A.ChangeMetadata[] {
  const added = A.getChangesMetaSince(after, A.getHeads(before))
  if (added.every(c => admits(c.actor))) return []
  const byHash = new Map(added.map(c => [c.hash, c]))
  const vouched = new Set<string>()
  const stack = added.filter(c => admits(c.actor)).map(c => c.hash)
  while (stack.length > 0) {
    const h = stack.pop() as string
    if (vouched.has(h)) continue
    vouched.add(h)
    for (const d of byHash.get(h)?.deps ?? []) if (byHash.has(d) && !vouched.has(d)) stack.push(d)
  }
  return added.filter(c => !admits(c.actor) && !vouched.has(c.hash))
}

/** Whether `actor` is a client session's (a peer's actor plus a random part), not a node's. */
export function isSessionActor (actor: string): boolean {
  return actor.length === 32 + SESSION_SUFFIX_HEX || (isSigningActor(actor) && actor.length === 32 + SIGNING_MARK.length + SESSION_SUFFIX_HEX)
}

/** A peer id in its usual text form (Ed25519, base58btc): how board keys name peers (`nodes[P]`, `claims[P]`). */
const PEER_KEY = /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/

/** The keys of `main` a client may write: the mesh's budget (`meshwork budget --usd`). */
const CLIENT_MAIN_KEYS = new Set(['budget'])

/**
 * What `change` writes that its author's role does not allow, or null. Every
 * node checks this on every change it receives, gossiped or synced:
 * - an entry keyed by a peer id (a node's registration `nodes[P]`, a claim
 *   `tasks[*].claims[P]`) is made only by that peer: no claim in another
 *   node's name, no registration for it;
 * - a client never writes `main` (head, leader, term, push, quorum): main is
 *   the nodes' (the leader's) to move; except `main.budget`, the mesh's
 *   spending cap that `meshwork budget --usd` sets.
 * `mainId` is the object id of the board's `main` map.
 */
export function forbiddenWrite (change: A.DecodedChange, mainId: string | null): string | null {
  const tag = peerTagOfActor(change.actor)
  const client = isSessionActor(change.actor)
  for (const op of change.ops) {
    if (op.action === 'del') continue
    const key = typeof op.key === 'string' ? op.key : ''
    if (client && mainId !== null && op.obj === mainId && !CLIENT_MAIN_KEYS.has(key)) return `a client wrote main.${key}`
    if (PEER_KEY.test(key) && actorForPeer(key) !== tag) return `wrote an entry of another peer (${key})`
  }
  return null
}

/**
 * How `roleViolation` reads the document around one change: where the
 * change's objects sit, and what the change's author saw when it wrote it.
 */
export interface ChangeContext {
  /** The path of object `obj` in the document (`['tasks', 't1']`; `[]` for the root), or null when it is not reachable. */
  pathOf: (obj: string) => ReadonlyArray<string | number> | null
  /** The type of object `obj` (`map`, `list`, `text`, `table`), or null when it is not in the document. */
  typeOf?: (obj: string) => string | null
  /**
   * The value at `path` at the change's dependencies, i.e. in the document its
   * author changed (an object reads as its id); undefined when absent there.
   */
  seen: (path: readonly string[]) => unknown
}

/** Object paths by object id, shared across the changes a board checks (an object's path does not change). */
export type ObjectPaths = Map<string, ReadonlyArray<string | number>>

/** Entries `ObjectPaths` keeps before it is emptied (a path is cheap to look up again). */
const MAX_CACHED_PATHS = 50_000

/**
 * The context of `change` in `doc`, which must already hold it. Reads at the
 * change's dependencies are exact whatever arrived since: every node judges a
 * change on the same history, its author's, so every node comes to the same
 * verdict in any order of arrival, and an honest author (which checks its own
 * changes the same way before sending them) is never refused.
 */
export function changeContext<T> (doc: A.Doc<T>, change: A.DecodedChange, paths: ObjectPaths = new Map()): ChangeContext {
  const backend = A.getBackend(doc)
  const deps = change.deps
  return {
    pathOf: objectPaths(doc, paths),
    typeOf: obj => {
      if (obj === '_root') return 'map'
      try {
        return backend.objInfo(obj).type
      } catch {
        return null
      }
    },
    seen: path => {
      if (deps.length === 0) return undefined
      let obj = '_root'
      for (let i = 0; i < path.length; i++) {
        let got: ReturnType<typeof backend.getWithType>
        try {
          got = backend.getWithType(obj, path[i] as string, deps)
        } catch {
          return undefined
        }
        if (got === null || got === undefined) return undefined
        if (i === path.length - 1) return got[1]
        if (got[0] !== 'map' && got[0] !== 'list') return undefined
        obj = got[1] as string
      }
      return undefined
    }
  }
}

/** Where an object of `doc` is (its path), or null when it is in none; looked up in Automerge once and kept in `paths`. */
export function objectPaths<T> (doc: A.Doc<T>, paths: ObjectPaths = new Map()): (obj: string) => ReadonlyArray<string | number> | null {
  const backend = A.getBackend(doc)
  return obj => {
    if (obj === '_root') return []
    const known = paths.get(obj)
    if (known !== undefined) return known
    let path: ReadonlyArray<string | number> | undefined
    try {
      path = backend.objInfo(obj).path
    } catch {
      return null
    }
    if (path === undefined) return null
    if (paths.size >= MAX_CACHED_PATHS) paths.clear()
    paths.set(obj, path)
    return path
  }
}

/** The type of object each make action creates. */
const MAKE_ACTIONS: Readonly<Record<string, string>> = { makeMap: 'map', makeList: 'list', makeText: 'text', makeTable: 'table' }

/** A task's definition: written when the task is submitted, never after (a rewritten prompt would be an injection). */
const TASK_DEFINITION = new Set(['id', 'title', 'prompt', 'deps', 'files', 'priority', 'timeoutMs', 'maxAttempts', 'sim', 'branch', 'createdAt', 'plan'])
/** A run's own fields: only the node running the task writes them. */
const RUNNER_FIELDS = new Set(['summary', 'doneAt', 'startedAt', 'checkpoint'])
/** What runs cost: the node running the task, or the leader (an agent's conflict resolution). */
const USAGE_FIELDS = new Set(['costUsd', 'tokens'])
/** A task's merge: the leader's. */
const MERGE_FIELDS = new Set(['mergeCommit', 'mergedAt'])
/** Task states only the leader moves a task to. */
const LEADER_STATES = new Set(['merging', 'merged', 'conflict'])
/** Task states that end a run: its node, or the leader (a failed `--verify`, a merge that goes back to the queue). */
const RUN_END_STATES = new Set(['done', 'failed'])
/** A conflict's record as the leader opened it. */
const CONFLICT_DEFINITION = new Set(['id', 'taskId', 'files', 'hunks', 'oursFrom'])
/** A node's registration fields that only that node writes (a client may set `drainAt` and `forgottenAt`). */
const NODE_OWN_FIELDS = new Set(['name', 'slots', 'startedAt', 'leftAt', 'readsCompactTasks'])

interface Write {
  /** The op's id (`counter@actor`): the id of the object a make op creates. */
  id: string
  obj: string
  /** Where the op writes: the object's path and the key (`'*'` for a list element). */
  path: ReadonlyArray<string | number>
  action: string
  value: unknown
  /** The ops it overwrites: the value its author saw at that key (none: the key was empty). */
  pred: readonly string[]
}

/**
 * What `change` writes that its author's role does not allow, judged in the
 * document its author saw (`ctx`), or null. The roles (issue 12):
 * - the leader: a node elects only itself (`main.leader` is the author, with a
 *   higher `main.term`); `main.head`, `main.push` and `main.quorum` are written
 *   by the node `main.leader` names, or in the change that elects it; so are a
 *   task's merge (`merging`, `merged`, `conflict`, `mergeCommit`, `mergedAt`)
 *   and a conflict's record, error and outcome;
 * - the node running a task (its `node`; a change that starts a run names its
 *   author there): the run's end (`done`, `failed`, `head`, `summary`,
 *   `attempts`, `failures`, `doneAt`, `checkpoint`), its usage (or the leader);
 * - anybody: what gives a task back (`ready`, `pending`, `claimed`,
 *   `cancelled`, a new epoch, no claims), a new task, a decision on a
 *   conflict (or an answer to a permission request) signed with the author's
 *   own peer id in `by`, a client's cancel
 *   closing its task's conflicts;
 * - nobody: a task's or a conflict's definition after it was written, a new
 *   record in place of an existing one, fields inside another peer's entry (a
 *   claim, a registration, an infrastructure count), another author's decision.
 * `forbiddenWrite` holds the rules that need no context.
 */
export function roleViolation (change: A.DecodedChange, ctx: ChangeContext): string | null {
  const tag = peerTagOfActor(change.actor)
  const client = isSessionActor(change.actor)
  const isSelf = (peer: unknown): boolean => typeof peer === 'string' && actorForPeer(peer) === tag
  const madeHere = (obj: string): boolean => {
    const at = obj.indexOf('@')
    const counter = Number(obj.slice(0, at))
    return obj.slice(at + 1) === change.actor && counter >= change.startOp && counter < change.startOp + change.ops.length
  }
  const writes: Write[] = []
  // objects this change makes under a map key: their paths follow from the change itself (its author's
  // view), so the document is not asked for each of them (a plan of 10,000 tasks makes ~70,000).
  // `newTask`: the object is a task record this change makes under `tasks`, or inside one
  const made = new Map<string, { path: ReadonlyArray<string | number>, type: string, newTask: boolean }>()
  const parentTypes = new Map<string, string | null>()
  const cancels = new Set<string>()
  change.ops.forEach((op, i) => {
    const inside = made.get(op.obj)
    if (inside?.newTask === true) {
      // inside a task record this change makes: a submission, which the rules below let through whole
      // (every write under a new record is skipped), so no write is listed for it (a plan of 100 tasks
      // has thousands of these); what the rules read of such writes is kept: a cancelled state
      if (inside.path.length === 2 && op.key === 'state' && op.action !== 'del' && (op.value ?? null) === 'cancelled') cancels.add(String(inside.path[1]))
      const makes = MAKE_ACTIONS[op.action]
      if (makes !== undefined && typeof op.key === 'string' && ctx.typeOf !== undefined && inside.type === 'map') {
        made.set(`${change.startOp + i}@${change.actor}`, { path: [...inside.path, op.key], type: makes, newTask: true })
      }
      return
    }
    const base = op.obj === '_root' ? null : inside?.path ?? ctx.pathOf(op.obj)
    if (base === null) return
    const key = typeof op.key === 'string' ? op.key : '*'
    const id = `${change.startOp + i}@${change.actor}`
    writes.push({ id, obj: op.obj, path: [...base, key], action: op.action, value: op.action === 'del' ? undefined : op.value ?? null, pred: op.pred })
    const makes = MAKE_ACTIONS[op.action]
    // under a list the path holds an index, which the change does not know: those are looked up
    if (makes === undefined || typeof op.key !== 'string' || ctx.typeOf === undefined) return
    let parent = inside?.type
    if (parent === undefined) {
      if (!parentTypes.has(op.obj)) parentTypes.set(op.obj, ctx.typeOf(op.obj))
      parent = parentTypes.get(op.obj) ?? undefined
    }
    if (parent === 'map') made.set(id, { path: [...base, op.key], type: makes, newTask: op.action === 'makeMap' && base.length === 1 && base[0] === 'tasks' })
  })
  const at = (w: Write, ...prefix: string[]): boolean => prefix.every((p, i) => w.path[i] === p)
  // what the change says of itself
  const elects = writes.some(w => w.path.length === 2 && at(w, 'main', 'leader') && w.action === 'set' && isSelf(w.value))
  const runners = new Map<string, unknown>()
  const newRecords = new Set<string>()
  const newDecisions = new Map<string, boolean>()
  for (const w of writes) {
    const [section, id, field] = w.path
    if (w.path.length === 2 && (section === 'tasks' || section === 'conflicts') && w.action === 'makeMap') newRecords.add(`${section}/${String(id)}`)
    if (section === 'tasks' && w.path.length === 3 && field === 'node') runners.set(String(id), w.value)
    if (section === 'tasks' && w.path.length === 3 && field === 'state' && w.value === 'cancelled') cancels.add(String(id))
    if (section === 'conflicts' && w.path.length === 3 && field === 'decision' && w.action === 'makeMap') newDecisions.set(w.id, false)
  }
  let leaderSeen: { leader: unknown } | null = null
  const seenLeader = (): unknown => (leaderSeen ??= { leader: ctx.seen(['main', 'leader']) }).leader
  const leads = (): boolean => !client && (elects || isSelf(seenLeader()))
  const notLeader = (what: string): string => `${what} without leading (the leader it saw: ${String(seenLeader() ?? 'none')})`
  const running = new Map<string, boolean>()
  const runs = (task: string): boolean => {
    if (client) return false
    let yes = running.get(task)
    if (yes === undefined) {
      yes = isSelf(runners.has(task) ? runners.get(task) : ctx.seen(['tasks', task, 'node']))
      running.set(task, yes)
    }
    return yes
  }

  for (const w of writes) {
    const [section, id, field, sub] = w.path as [string, string | number | undefined, string | number | undefined, string | number | undefined]
    const key = String(id)
    if (section === 'main' && w.path.length >= 2) {
      if (key === 'budget') continue
      if (client) return `a client wrote main.${key}`
      if (key === 'leader') {
        if (w.path.length !== 2 || !isSelf(w.value)) return `elected another node as leader (${String(w.value)})`
        // a second leader of the same term would fence nothing
        if (!writes.some(x => x.path.length === 2 && at(x, 'main', 'term'))) return 'elected itself without raising main.term'
        continue
      }
      if (key === 'term') {
        if (!elects) return 'wrote main.term without electing itself'
        const before = ctx.seen(['main', 'term'])
        if (typeof w.value !== 'number' || (typeof before === 'number' && w.value <= before)) return `set main.term to ${String(w.value)}, not past ${String(before)}`
        continue
      }
      if (!leads()) return notLeader(`wrote main.${key}`)
      continue
    }
    if ((section === 'tasks' || section === 'conflicts') && w.path.length === 2 && w.pred.length > 0) {
      // a new record in place of one its author saw would write every field past the rules below
      return `replaced the record of ${section === 'tasks' ? 'task' : 'conflict'} ${key}`
    }
    if (section === 'tasks' && w.path.length >= 3) {
      // a submission: whoever may submit writes the whole record
      if (newRecords.has(`tasks/${key}`)) continue
      const f = String(field)
      if (TASK_DEFINITION.has(f)) return `rewrote ${f} of task ${key}`
      if (f === 'node') {
        if (w.path.length === 3 && (client || !isSelf(w.value))) return `named another node (${String(w.value)}) as the runner of task ${key}`
        continue
      }
      if (f === 'state' && w.path.length === 3) {
        const s = String(w.value)
        if (s === 'running' && !runs(key)) return `started task ${key} in another node's name`
        if (RUN_END_STATES.has(s) && !runs(key) && !leads()) return `ended task ${key}'s run (${s}) without running it or leading`
        if (LEADER_STATES.has(s) && !leads()) return notLeader(`moved task ${key} to ${s}`)
        continue
      }
      if (f === 'head' && w.path.length === 3) {
        if (w.value === null ? !runs(key) && !leads() : !runs(key)) return `wrote the head of task ${key} without running it`
        continue
      }
      if (RUNNER_FIELDS.has(f) && !runs(key)) return `wrote ${f} of task ${key} without running it`
      if ((f === 'attempts' || f === 'failures') && w.path.length === 3 && w.value !== 0 && !runs(key)) return `wrote ${f} of task ${key} without running it`
      if (USAGE_FIELDS.has(f) && !runs(key) && !leads()) return `wrote ${f} of task ${key} without running it or leading`
      if (MERGE_FIELDS.has(f) && !leads()) return notLeader(`wrote ${f} of task ${key}`)
      if (f === 'holders') {
        if (w.path.length === 3 && !runs(key) && !leads()) return `replaced the holders of task ${key}`
        // the runner may name the leader it handed its branch to (the leader where it wrote: see scheduler/run.ts)
        const handedToLeader = w.action !== 'del' && runs(key) && typeof w.value === 'string' && w.value === seenLeader()
        if (w.path.length > 3 && !isSelf(w.value) && !handedToLeader && (w.action !== 'del' || (!runs(key) && !leads()))) return `named another peer (${String(w.value)}) as a holder of task ${key}`
      }
      // an answer to a permission request is signed like a decision: with its author's own peer id
      if (f === 'approvals' && w.path.length === 5 && w.path[4] === 'by' && w.value !== null && !isSelf(w.value)) return `answered a permission request of task ${key} as ${String(w.value)}`
      // a claim or an infrastructure count of a peer: its fields too are that peer's
      if ((f === 'claims' || f === 'infraFailures') && w.path.length > 4 && !isSelf(sub)) return `wrote inside another peer's entry (${String(sub)}) of task ${key}`
      continue
    }
    if (section === 'conflicts' && w.path.length >= 2) {
      if (w.path.length === 2) {
        if (!leads()) return notLeader(`opened conflict ${key}`)
        continue
      }
      if (newRecords.has(`conflicts/${key}`)) continue
      const f = String(field)
      if (CONFLICT_DEFINITION.has(f)) return `rewrote ${f} of conflict ${key}`
      if (f === 'state' && w.path.length === 3) {
        const closesOwnCancel = client && w.value === 'resolved' && cancels.has(String(ctx.seen(['conflicts', key, 'taskId'])))
        if (!closesOwnCancel && !leads()) return notLeader(`resolved conflict ${key}`)
        continue
      }
      // a decision clears the error of the last one; saying why one failed is the leader's
      if (f === 'error' && w.path.length === 3 && w.value !== null && !leads()) return notLeader(`wrote the error of conflict ${key}`)
      if (f === 'decision') {
        if (w.path.length === 3) {
          if (w.action !== 'makeMap' && !leads()) return notLeader(`cleared the decision on conflict ${key}`)
          continue
        }
        if (!madeHere(w.obj)) return `changed a decision on conflict ${key} that another change made`
        if (sub === 'by') {
          if (!isSelf(w.value)) return `signed a decision on conflict ${key} as ${String(w.value)}`
          if (newDecisions.has(w.obj)) newDecisions.set(w.obj, true)
        }
      }
      continue
    }
    if (section === 'nodes' && w.path.length >= 3 && NODE_OWN_FIELDS.has(String(field)) && !isSelf(key)) return `wrote ${String(field)} of another node's registration (${key})`
  }
  for (const [, signed] of newDecisions) if (!signed) return 'made a decision on a conflict without signing it (by)'
  return null
}
