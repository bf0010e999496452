/**
 * A joiner's first sync: Automerge sends a peer that lacks most of the board
 * the whole document in one sync message, and the board loads it (with its
 * own content) instead of applying it change by change, then checks every
 * change in it as it checks any received change, taking it whole or refusing
 * it whole.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Board, LOAD_SYNC_BYTES, nodeActorForPeer, type BoardUpdate } from '../src/crdt/board.ts'
import { signerFromPrivateKey, type ChangeSigner } from '../src/crdt/signing.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'

const MESH = 'mesh-load-sync-test'

async function peer (): Promise<{ id: string, actor: string, signer: ChangeSigner }> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  return { id, actor: nodeActorForPeer(id), signer: signerFromPrivateKey(id, key) }
}

/** `n` tasks with prompts that do not compress away, so the document is well above LOAD_SYNC_BYTES. */
function tasks (n: number, prefix = 't'): ReturnType<typeof simpleTask>[] {
  return Array.from({ length: n }, (_, i) => simpleTask(`${prefix}-${i}`, { prompt: `task ${i}: ${randomBytes(48).toString('hex')}` }))
}

/** Whether a sync message carries a whole document (chunk type 0) of LOAD_SYNC_BYTES or more. */
function carriesDocument (message: Uint8Array): boolean {
  const chunks = A.decodeSyncMessage(message).changes
  return chunks.some(c => c[8] === 0) && chunks.reduce((n, c) => n + c.length, 0) >= LOAD_SYNC_BYTES
}

/**
 * Runs the sync protocol from `source` (a board, or a raw document a hostile
 * peer made) into `joiner` until both are idle or the joiner refuses;
 * returns the refusal and whether a whole document was offered.
 */
function syncInto (joiner: Board, source: Board | A.Doc<unknown>): { refused: unknown, documentOffered: boolean } {
  let js = A.initSyncState()
  let ss = A.initSyncState()
  let documentOffered = false
  let raw = source instanceof Board ? null : source
  const gen = (s: A.SyncState): [A.SyncState, Uint8Array | null] => source instanceof Board ? source.generateSyncMessage(s) : A.generateSyncMessage(raw!, s)
  const recv = (s: A.SyncState, m: Uint8Array): A.SyncState => {
    if (source instanceof Board) return source.receiveSyncMessage(s, m)
    const [doc, next] = A.receiveSyncMessage(raw!, s, m)
    raw = doc
    return next
  }
  for (let round = 0; round < 10; round++) {
    const [j1, toSource] = joiner.generateSyncMessage(js)
    js = j1
    if (toSource !== null) ss = recv(ss, toSource)
    const [s1, toJoiner] = gen(ss)
    ss = s1
    if (toJoiner === null && toSource === null) break
    if (toJoiner === null) continue
    documentOffered ||= carriesDocument(toJoiner)
    try {
      js = joiner.receiveSyncMessage(js, toJoiner)
    } catch (err) {
      return { refused: err, documentOffered }
    }
  }
  return { refused: null, documentOffered }
}

/**
 * Builds a fresh scenario and syncs it until the source offers a whole
 * document. Automerge does not always send one: in about one run of this file
 * in twelve it sent changes instead (the change hashes are random here: random
 * keys and prompts; why it chose so was not traced). Both paths must refuse
 * what these tests refuse, but only the document path is under test. Five
 * fresh tries in a row without a document fail the test.
 */
async function withDocumentOffered<T extends { documentOffered: boolean }> (attempt: () => Promise<T>): Promise<T> {
  let r = await attempt()
  for (let i = 1; i < 5 && !r.documentOffered; i++) r = await attempt()
  expect(r.documentOffered, 'the source never offered a whole document in 5 fresh tries: the load path was not exercised').toBe(true)
  return r
}

describe('a sync message carrying the whole board', () => {
  it('is loaded with the joiner\'s own changes: every task arrives, one update names them all, and the board saves them', async () => {
    const { p, j, source, joiner, updates, refused } = await withDocumentOffered(async () => {
      const [p, j] = [await peer(), await peer()]
      const source = Board.create(MESH, p.actor, p.signer)
      source.checkOwnChanges = true
      for (let i = 0; i < 3; i++) source.change('plan', addTasks(tasks(100, `p${i}`)))
      source.change('tasks:claim', d => { lifecycle.claim(d, 'p0-1' as TaskId, asPeerId(p.id), 0, 1000) })
      const joiner = Board.create(MESH, j.actor, j.signer)
      joiner.checkOwnChanges = true
      // the joiner registered before its first sync, as a node does
      joiner.change('node:join', d => { d.nodes[j.id] = { name: 'j' as never, slots: 1, startedAt: 1, leftAt: null } })
      const updates: BoardUpdate[] = []
      joiner.subscribe(u => { updates.push(u) })
      return { p, j, source, joiner, updates, ...syncInto(joiner, source) }
    })
    expect(refused).toBeNull()
    // its copy read from the document's bytes (document-reader.ts), its own registration read in after
    expect(joiner.copyMadeBy).toBe('read')
    expect(joiner.snapshot().tasks.size).toBe(300)
    expect(joiner.task('p0-1')?.state).toBe('claimed')
    expect(joiner.snapshot().nodes.get(asPeerId(j.id))?.name).toBe('j')
    expect(joiner.hasHeads(source.heads())).toBe(true)
    expect(source.hasHeads(joiner.heads())).toBe(true)
    const named = new Set(updates.flatMap(u => u.tasks))
    expect(named.size).toBe(300)
    expect(updates.every(u => !u.local)).toBe(true)
    // what a node appends to its log after the update holds the whole board
    const reloaded = Board.load(MESH, j.actor, joiner.saveIncremental(), j.signer)
    expect(reloaded.snapshot().tasks.size).toBe(300)
    // and the joiner goes on writing signed changes that the source takes
    const claim = joiner.change('tasks:claim', d => { lifecycle.claim(d, 'p2-5' as TaskId, asPeerId(j.id), 0, 2000) })
    expect(claim).not.toBeNull()
    source.applyChanges([claim as Uint8Array])
    expect(source.task('p2-5')?.claims[j.id]).toEqual({ epoch: 0, at: 2000 })
  })

  it('hands out tasks that later writes inside them leave as they were (its copy, read lean, shares nothing with them)', async () => {
    const { p, source, joiner, refused } = await withDocumentOffered(async () => {
      const [p, j] = [await peer(), await peer()]
      const source = Board.create(MESH, p.actor, p.signer)
      for (let i = 0; i < 3; i++) source.change('plan', addTasks(tasks(100, `p${i}`)))
      const joiner = Board.create(MESH, j.actor, j.signer)
      return { p, source, joiner, ...syncInto(joiner, source) }
    })
    expect(refused).toBeNull()
    expect(joiner.copyMadeBy).toBe('read')
    const held = joiner.task('p1-3')
    const heldSnapshot = joiner.snapshot().tasks.get('p1-3' as TaskId)
    expect(held).toBeDefined()
    const was = structuredClone(held)
    // a claim writes inside the task's claims map, which the copy changes where it stands
    const claim = source.change('tasks:claim', d => { lifecycle.claim(d, 'p1-3' as TaskId, asPeerId(p.id), 0, 5000) })
    joiner.applyChanges([claim as Uint8Array])
    expect(joiner.task('p1-3')?.claims[p.id]).toEqual({ epoch: 0, at: 5000 })
    expect(held).toEqual(was)
    expect(heldSnapshot).toEqual(was)
    expect(held?.claims).toEqual({})
  })

  it('is saved as the bytes it was loaded from, and what the board writes after it is saved on its own', async () => {
    const { j, joiner, refused } = await withDocumentOffered(async () => {
      const [p, j] = [await peer(), await peer()]
      const source = Board.create(MESH, p.actor, p.signer)
      for (let i = 0; i < 3; i++) source.change('plan', addTasks(tasks(100, `p${i}`)))
      const joiner = Board.create(MESH, j.actor, j.signer)
      joiner.change('node:join', d => { d.nodes[j.id] = { name: 'j' as never, slots: 1, startedAt: 1, leftAt: null } })
      return { j, joiner, ...syncInto(joiner, source) }
    })
    expect(refused).toBeNull()
    const heads = joiner.heads()
    expect(joiner.needsSnapshot).toBe(true)
    // the snapshot the store writes: the document as it came (no compaction of it again), with the joiner's own
    const snapshot = joiner.save()
    expect(joiner.needsSnapshot).toBe(false)
    const reloaded = Board.load(MESH, j.actor, snapshot, j.signer)
    expect(reloaded.heads()).toEqual(heads)
    expect(reloaded.snapshot().tasks.size).toBe(300)
    expect(reloaded.snapshot().nodes.has(asPeerId(j.id))).toBe(true)
    // two documents one after the other: longer than the one Automerge compacts them to
    expect(snapshot.length).toBeGreaterThan(reloaded.save().length)
    // the next log record holds the one change made since, not the whole board again
    joiner.change('tasks:claim', d => { lifecycle.claim(d, 'p1-7' as TaskId, asPeerId(j.id), 0, 3000) })
    const record = joiner.saveIncremental()
    expect(record.length).toBeGreaterThan(0)
    expect(record.length).toBeLessThan(2048)
    expect(joiner.saveIncremental().length).toBe(0)
    const restarted = Board.load(MESH, j.actor, Buffer.concat([snapshot, record]), j.signer)
    expect(restarted.heads()).toEqual(joiner.heads())
    expect(restarted.task('p1-7')?.claims[j.id]).toEqual({ epoch: 0, at: 3000 })
    // once the board changed, a save compacts the document as usual
    expect(Board.load(MESH, j.actor, joiner.save(), j.signer).heads()).toEqual(joiner.heads())
  })

  it('is not loaded again when a second session, started before the first delivered, brings the same document', async () => {
    // both ends of a new connection start a session: the joiner asks twice before either answer arrives
    const { joiner, source, second } = await withDocumentOffered(async () => {
      const [p, j] = [await peer(), await peer()]
      const source = Board.create(MESH, p.actor, p.signer)
      source.change('plan', addTasks(tasks(300)))
      const joiner = Board.create(MESH, j.actor, j.signer)
      const answers: Uint8Array[] = []
      const states: A.SyncState[] = []
      for (let session = 0; session < 2; session++) {
        const [js, ask] = joiner.generateSyncMessage(A.initSyncState())
        const [ss, answer] = source.generateSyncMessage(source.receiveSyncMessage(A.initSyncState(), ask as Uint8Array))
        void ss
        states.push(js)
        answers.push(answer as Uint8Array)
      }
      const documentOffered = answers.every(carriesDocument)
      if (documentOffered) joiner.receiveSyncMessage(states[0] as A.SyncState, answers[0] as Uint8Array)
      return { joiner, source, second: { state: states[1] as A.SyncState, answer: answers[1] as Uint8Array }, documentOffered }
    })
    expect(joiner.snapshot().tasks.size).toBe(300)
    expect(joiner.needsSnapshot).toBe(true)
    joiner.save()
    const updates: BoardUpdate[] = []
    joiner.subscribe(u => { updates.push(u) })
    joiner.receiveSyncMessage(second.state, second.answer)
    // nothing new: no update, and nothing to write again
    expect(updates).toEqual([])
    expect(joiner.needsSnapshot).toBe(false)
    expect(joiner.heads()).toEqual(source.heads())
  })

  it('is refused whole when it holds a change under a peer\'s signing actor that the peer did not sign', async () => {
    const { joiner, heads, refused } = await withDocumentOffered(async () => {
      const [victim, j] = [await peer(), await peer()]
      // a hostile board writing under the victim's signing actor without its key
      const forger = Board.create(MESH, victim.actor, null)
      forger.change('plan', addTasks(tasks(200)))
      const joiner = Board.create(MESH, j.actor, j.signer)
      const heads = joiner.heads()
      return { joiner, heads, ...syncInto(joiner, forger) }
    })
    expect((refused as Error | null)?.name).toBe('BoardForgedChangeError')
    expect(joiner.snapshot().tasks.size).toBe(0)
    expect(joiner.heads()).toEqual(heads)
  })

  it('is refused as another mesh\'s board when it comes from a peer of another mesh, and the board is unchanged', async () => {
    const { joiner, heads, refused } = await withDocumentOffered(async () => {
      const [o, j] = [await peer(), await peer()]
      // an honest board, signed by its own node, but on another mesh's genesis (another swarm key)
      const other = Board.create('mesh-load-sync-other', o.actor, o.signer)
      other.change('plan', addTasks(tasks(200)))
      const joiner = Board.create(MESH, j.actor, j.signer)
      const heads = joiner.heads()
      return { joiner, heads, ...syncInto(joiner, other) }
    })
    expect((refused as Error | null)?.name).toBe('BoardChangeRejectedError')
    expect((refused as Error).message).toMatch(/board of another mesh \(its genesis [0-9a-f]{12} is not this mesh's/)
    expect(joiner.snapshot().tasks.size).toBe(0)
    expect(joiner.heads()).toEqual(heads)
  })

  it('a board of another mesh too small to be loaded whole is refused for the same reason when applied', async () => {
    const [o, j] = [await peer(), await peer()]
    const other = Board.create('mesh-load-sync-other', o.actor, o.signer)
    other.change('plan', addTasks([simpleTask('x-1')]))
    const joiner = Board.create(MESH, j.actor, j.signer)
    const heads = joiner.heads()
    const { refused, documentOffered } = syncInto(joiner, other)
    // the applied path, not the load: what makes the reason the same on both is under test here
    expect(documentOffered).toBe(false)
    expect((refused as Error | null)?.name).toBe('BoardChangeRejectedError')
    expect((refused as Error).message).toMatch(/board of another mesh/)
    expect(joiner.snapshot().tasks.size).toBe(0)
    expect(joiner.heads()).toEqual(heads)
  })

  it('is refused whole when a change in it writes the document root', async () => {
    const { joiner, refused } = await withDocumentOffered(async () => {
      const [p, j] = [await peer(), await peer()]
      const honest = Board.create(MESH, p.actor, p.signer)
      honest.change('plan', addTasks(tasks(200)))
      // an older peer's unsigned actor, replacing main at the root
      let evil = A.load<Record<string, unknown>>(honest.save(), { actor: 'ee'.repeat(16) })
      evil = A.change(evil, d => { d.main = { head: null, leader: 'evil', term: 99 } })
      const joiner = Board.create(MESH, j.actor, j.signer)
      return { joiner, ...syncInto(joiner, evil) }
    })
    expect((refused as Error | null)?.name).toBe('BoardChangeRejectedError')
    expect((refused as Error).message).toMatch(/writes the document root/)
    expect(joiner.snapshot().tasks.size).toBe(0)
    expect(joiner.snapshot().main.leader).toBeNull()
  })

  it('is refused whole when a change in it writes what its author\'s role does not allow (a claim in another node\'s name)', async () => {
    const { joiner, refused } = await withDocumentOffered(async () => {
      const [p, other, j] = [await peer(), await peer(), await peer()]
      // signed by p, but without the writer's own check: p claims in the other node's name
      const writer = Board.create(MESH, p.actor, p.signer)
      writer.change('plan', addTasks(tasks(200)))
      writer.change('tasks:claim', d => { lifecycle.claim(d, 't-3' as TaskId, asPeerId(other.id), 0, 1000) })
      const joiner = Board.create(MESH, j.actor, j.signer)
      return { joiner, ...syncInto(joiner, writer) }
    })
    expect((refused as Error | null)?.name).toBe('BoardAuthorRefusedError')
    expect(joiner.snapshot().tasks.size).toBe(0)
  })
})
