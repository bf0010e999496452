/**
 * The JavaScript change decoder (src/crdt/change-decode.ts) reads what
 * Automerge's `decodeChange` reads, on every kind of change a board holds and
 * on the value types Automerge has; what it does not read, it declines.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Board, nodeActorForPeer, sessionActorForPeer, type BoardDoc } from '../src/crdt/board.ts'
import { signerFromPrivateKey } from '../src/crdt/signing.ts'
import { decodeChangeFast } from '../src/crdt/change-decode.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, asPlan, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type ConflictId, type TaskId } from '../src/crdt/schema.ts'

const MESH = 'mesh-change-decode-test'

function expectSame (bytes: Uint8Array, what: string): void {
  const expected = A.decodeChange(bytes)
  const got = decodeChangeFast(bytes, expected.hash as string)
  expect(got, `${what}: declined`).not.toBeNull()
  expect(got, what).toEqual(expected)
}

describe('decodeChangeFast', () => {
  it('decodes every change of a task\'s life, a conflict and the leader\'s writes as Automerge does', async () => {
    const key = await generateKeyPair('Ed25519')
    const id = peerIdFromPrivateKey(key).toString()
    const peer = asPeerId(id)
    const board = Board.create(MESH, nodeActorForPeer(id), signerFromPrivateKey(id, key))
    const client = Board.create(MESH, sessionActorForPeer(id), signerFromPrivateKey(id, key))
    const t = 'task-1' as TaskId
    const steps: Array<[string, (d: BoardDoc) => void]> = [
      ['plan', addTasks(asPlan([
        simpleTask('task-1', { prompt: 'ünïcödé ✓ '.repeat(30), files: ['a.ts', 'b.ts'], timeoutMs: 60_000 }),
        simpleTask('task-2', { deps: ['task-1'], sim: { durationMs: 5, write: { 'x.txt': 'hi' }, append: {}, fail: 0 } })
      ], 12.5))],
      ['node', d => { d.nodes[id] = { name: 'n' as never, slots: 2, startedAt: 1, leftAt: null } }],
      ['claim', d => { lifecycle.claim(d, t, peer, 0, 1000) }],
      ['start', d => { lifecycle.start(d, t, peer, 1, 2000) }],
      ['usage', d => { lifecycle.addUsage(d, t, { costUsd: 0.4213, tokens: { input: 18_412, output: 6_734, cacheRead: 241_907, cacheWrite: 31_220 } }) }],
      ['done', d => { lifecycle.complete(d, t, { peer, head: 'a'.repeat(40), summary: 'did it', now: 3000 }) }],
      ['leader', d => { lifecycle.electLeader(d, peer, 1) }],
      ['merging', d => { lifecycle.startMerge(d, t) }],
      ['conflict', d => { lifecycle.openConflict(d, t, { id: 'c-1' as ConflictId, files: ['a.ts'], hunks: [], oursFrom: 'b'.repeat(40) } as never) }],
      ['merged', d => { lifecycle.merge(d, t, 'c'.repeat(40), 4000) }],
      ['negative and large numbers', d => { d.main.term = 2 ** 40; (d.tasks[t] as { priority: number }).priority = -7 }],
      ['delete', d => { delete (d.tasks[t] as unknown as Record<string, unknown>).claims }]
    ]
    for (const [what, fn] of steps) {
      const bytes = board.change(what, fn)
      expect(bytes, what).not.toBeNull()
      expectSame(bytes as Uint8Array, what)
    }
    client.applyChanges([A.getAllChanges(A.load(board.save())).at(-1) as Uint8Array])
    expectSame(client.change('cancel by a client', d => { d.main.budget = { usd: 3, at: 1, by: id as never } }) as Uint8Array, 'client')
  })

  it('decodes the value types Automerge has, lists, text and counters; declines marks, other chunks and damaged bytes', () => {
    let doc = A.from<Record<string, unknown>>({}, { actor: 'abcd'.repeat(8) })
    const made: Uint8Array[] = []
    const step = (fn: (d: Record<string, unknown>) => void): void => {
      doc = A.change(doc, fn)
      made.push(A.getLastLocalChange(doc) as Uint8Array)
    }
    step(d => { d.n = null; d.t = true; d.f = false; d.i = -123456789; d.u = 2 ** 50; d.x = 1.5; d.s = 'str'; d.b = new Uint8Array([1, 2, 3]); d.when = new Date(1234567) })
    step(d => { d.c = new A.Counter(5); d.list = [1, 'two', { three: 3 }] })
    step(d => { (d.c as A.Counter).increment(-2); (d.list as unknown[]).splice(1, 1); (d.list as unknown[]).unshift('zero') })
    step(d => { d.text = 'hello'; A.splice(d, ['text'], 1, 2, 'EL') })
    step(d => { delete d.s; d.s = new A.ImmutableString('scalar') })
    for (const [i, bytes] of made.entries()) expectSame(bytes, `change ${i}`)

    // a mark: not read here (the caller decodes with Automerge)
    doc = A.change(doc, d => { d.rich = 'some text' })
    doc = A.change(doc, d => { A.mark(d, ['rich'], { start: 0, end: 4, expand: 'both' }, 'bold', true) })
    const marked = A.getLastLocalChange(doc) as Uint8Array
    expect(decodeChangeFast(marked, A.decodeChange(marked).hash as string)).toBeNull()
    // a document chunk, a cut change
    expect(decodeChangeFast(A.save(doc), 'x')).toBeNull()
    const first = made[0] as Uint8Array
    expect(decodeChangeFast(first.subarray(0, first.length - 3), 'x')).toBeNull()
  })
})
