/**
 * Board snapshots and TUI data built in code for the TUI tests: a small plan
 * with a dependency chain, a running task with progress, a conflict with
 * hunks, a failed task, and two nodes (one backing off from a rate limit).
 */
import { buildStatus } from '../../src/api/status.ts'
import { asPeerId, type BoardSnapshot, type Conflict, type ConflictId, type NodeRecord, type PeerIdString, type Task, type TaskId } from '../../src/crdt/schema.ts'
import type { MembersView } from '../../src/protocol/members.ts'
import type { Member } from '../../src/node/membership.ts'
import { tuiData, type ProgressLine, type TuiData } from '../../src/tui/model.ts'

/** A fixed clock for the fixtures. */
export const NOW = 1_750_000_000_000

export const PEER_A = asPeerId('12D3KooWAlphaAlphaAlphaAlphaAlphaAlphaAlphaAlpha1111')
export const PEER_B = asPeerId('12D3KooWBetaBetaBetaBetaBetaBetaBetaBetaBetaBeta22222')

/** A task record with every field filled; `over` wins. */
export function task (id: string, over: Partial<Task> = {}): Task {
  return {
    id: id as TaskId,
    title: `Title of ${id}`,
    prompt: `Prompt of ${id}\nsecond line`,
    deps: [],
    files: [],
    priority: 0,
    timeoutMs: null,
    maxAttempts: 3,
    sim: { durationMs: 10_000, write: {}, append: {}, fail: 0 },
    state: 'pending',
    epoch: 0,
    attempts: 0,
    failures: 0,
    node: null,
    branch: `meshwork/${id}`,
    head: null,
    mergeCommit: null,
    costUsd: 0,
    tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
    createdAt: NOW - 100_000,
    startedAt: null,
    doneAt: null,
    mergedAt: null,
    error: null,
    readyAt: null,
    notBefore: null,
    infraFailures: {},
    holders: [],
    claims: {},
    summary: null,
    ...over
  }
}

/** A conflict record; `over` wins. */
export function conflict (id: string, taskId: string, over: Partial<Conflict> = {}): Conflict {
  return { id: id as ConflictId, taskId: taskId as TaskId, files: ['config/server.json'], hunks: [], state: 'open', decision: null, error: null, ...over }
}

/** A board snapshot of `tasks`, `conflicts` and the two fixture nodes. */
export function snapshot (tasks: Task[], conflicts: Conflict[] = []): BoardSnapshot {
  const nodes = new Map<PeerIdString, NodeRecord>([
    [PEER_A as PeerIdString, { name: 'alpha', slots: 2, startedAt: NOW - 200_000, leftAt: null }],
    [PEER_B as PeerIdString, { name: 'beta', slots: 1, startedAt: NOW - 200_000, leftAt: null }]
  ])
  return {
    meshId: 'aaaabbbbccccdddd',
    tasks: new Map(tasks.map(t => [t.id, t])),
    nodes,
    conflicts: new Map(conflicts.map(c => [c.id, c])),
    main: { head: '0123456789abcdef0123456789abcdef01234567', leader: PEER_A, term: 2 },
    invalid: []
  }
}

function member (peerId: PeerIdString, name: string, slots: number, running: string[], over: Partial<Member> = {}): Member {
  return { peerId, name, slots, running, heads: [], addrs: [], load: 0.25, lagMs: 0, backoffUntil: null, state: 'alive', eligible: true, aliveSince: NOW - 200_000, lastSeenAt: NOW - 400, silentMs: 400, ...over }
}

/** The membership view of the fixture mesh: alpha runs `running`, beta backs off for 90 s. */
export function membersView (running: string[] = []): MembersView {
  return {
    self: PEER_A,
    members: [member(PEER_A, 'alpha', 2, running, { silentMs: 0 }), member(PEER_B, 'beta', 1, [], { load: 1.5, backoffUntil: NOW + 90_000 })],
    progress: {}
  }
}

/** The standard fixture: schema merged, api running (with output), docs pending after api, right in conflict, flaky failed. */
export function fixtureData (opts: { hunks?: Conflict['hunks'], progress?: Map<string, ProgressLine[]>, extraTasks?: Task[], conflicts?: Conflict[] } = {}): TuiData {
  const tasks = [
    task('schema', { state: 'merged', attempts: 1, node: PEER_A, startedAt: NOW - 90_000, doneAt: NOW - 80_000, mergedAt: NOW - 79_000, costUsd: 0.12, tokens: { input: 1000, output: 500, cacheRead: 0, cacheWrite: 0 } }),
    task('api', { deps: ['schema' as TaskId], state: 'running', attempts: 1, node: PEER_A, startedAt: NOW - 4000, costUsd: 0.05 }),
    task('docs', { deps: ['api' as TaskId], state: 'pending' }),
    task('right', { state: 'conflict', attempts: 1, node: PEER_B, startedAt: NOW - 60_000, doneAt: NOW - 50_000, error: 'merge conflict in config/server.json' }),
    task('flaky', { state: 'failed', attempts: 3, failures: 3, node: PEER_B, startedAt: NOW - 30_000, doneAt: NOW - 29_000, error: 'sim: attempt 3 fails as configured (fail: 3)\nmore detail' }),
    ...(opts.extraTasks ?? [])
  ]
  const conflicts = opts.conflicts ?? [conflict('right-1', 'right', { hunks: opts.hunks ?? [] })]
  const snap = snapshot(tasks, conflicts)
  const view = membersView(['api'])
  const progress = opts.progress ?? new Map([['api', [{ kind: 'info', text: 'sim: working for 10000 ms', at: NOW - 3900 }, { kind: 'tool', text: 'Edit api/users.js', at: NOW - 1000 }]]])
  return tuiData(buildStatus(snap, view), snap, view, progress, PEER_A, NOW)
}

/** A hunk like the merge leader writes for two tasks setting the server port. */
export const PORT_HUNK = {
  file: 'config/server.json',
  line: 3,
  before: '{\n  "name": "app",\n',
  ours: '  "port": 9000,\n',
  theirs: '  "port": 8080,\n',
  after: '  "host": "0.0.0.0"\n}\n'
}
