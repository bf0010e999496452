/**
 * Signed board changes (src/crdt/signing.ts) on boards alone, no network: what
 * a receiving board takes and refuses, the writer's own check before a change
 * exists, and a key rotation's carry change.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Board, BoardForgedChangeError, type TaskRecord, actorForPeer, nodeActorForPeer, sessionActorForPeer, carryActor, str } from '../src/crdt/board.ts'
import { changeSigner, signerFromPrivateKey, withMessage, type ChangeSigner } from '../src/crdt/signing.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'

async function peer (): Promise<{ id: string, signer: ChangeSigner }> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  return { id, signer: signerFromPrivateKey(id, key) }
}

const MESH = 'mesh-signing-test'

describe('signed board changes', () => {
  it('every change a signing board makes carries its peer\'s signature; a receiver takes it from anyone who relays it', async () => {
    const p = await peer()
    const writer = Board.create(MESH, nodeActorForPeer(p.id), p.signer)
    const bytes = writer.change('plan', addTasks([simpleTask('t1')])) as Uint8Array
    const decoded = A.decodeChange(bytes)
    expect(decoded.actor).toBe(nodeActorForPeer(p.id))
    expect(changeSigner(decoded)).toEqual({ peer: p.id })
    expect(decoded.message).toMatch(/^plan\nmeshwork-sig\/1 /)
    // the writer's own next change follows on (seq 2), and both apply elsewhere
    const second = A.decodeChange(writer.change('plan', addTasks([simpleTask('t2')])) as Uint8Array)
    expect(second.seq).toBe(2)
    const reader = Board.create(MESH, nodeActorForPeer((await peer()).id))
    reader.applyChanges([bytes, A.encodeChange(second)])
    expect(reader.task('t2')).toBeDefined()
    // a client session signs too
    const session = Board.create(MESH, sessionActorForPeer(p.id), p.signer)
    expect(changeSigner(A.decodeChange(session.change('x', addTasks([simpleTask('s1')])) as Uint8Array))).toEqual({ peer: p.id })
  })

  it('refuses a change under a signing actor that its peer did not sign: unsigned, signed by another peer, or altered', async () => {
    const victim = await peer()
    const evil = await peer()
    const writer = Board.create(MESH, nodeActorForPeer(victim.id), victim.signer)
    const first = writer.change('plan', addTasks([simpleTask('v1')])) as Uint8Array
    const reader = Board.create(MESH, nodeActorForPeer((await peer()).id))
    reader.applyChanges([first])

    const forgers: Array<[string, Board]> = [
      ['unsigned', Board.load(MESH, nodeActorForPeer(victim.id), writer.save())],
      ['signed by another peer', Board.load(MESH, nodeActorForPeer(victim.id), writer.save(), evil.signer)]
    ]
    for (const [what, forger] of forgers) {
      const forged = forger.change('forged', addTasks([simpleTask('forged')])) as Uint8Array
      expect(A.decodeChange(forged).seq, what).toBe(2)
      expect(() => { reader.checkChange(forged) }, what).toThrow(BoardForgedChangeError)
      expect(() => { reader.applyChanges([forged]) }, what).toThrow(BoardForgedChangeError)
    }
    // the victim's real change (same seq) with its signature kept but its content altered
    const real = A.decodeChange(writer.change('plan', addTasks([simpleTask('v2')])) as Uint8Array)
    const { hash: _hash, ...body } = real
    const altered = A.encodeChange({ ...body, time: real.time + 1 })
    expect(() => { reader.applyChanges([altered]) }).toThrow(/bad signature/)
    // a sync message carrying a forgery is refused whole and rolled back
    const forger = Board.load(MESH, nodeActorForPeer(victim.id), writer.save())
    forger.change('forged', addTasks([simpleTask('forged')]))
    expect(() => { syncAll(forger, reader) }).toThrow(BoardForgedChangeError)
    expect(reader.task('forged')).toBeUndefined()
    // the real change still applies: nothing of the victim is parked
    reader.applyChanges([A.encodeChange(real)])
    expect(reader.task('v2')).toBeDefined()
    writer.change('plan', addTasks([simpleTask('v3')]))
    syncAll(writer, reader)
    expect(reader.task('v3')).toBeDefined()
    // a carry change (exempt from the role rules) is never taken by a board that has history of its own mesh
    const carried = A.load(Board.create('elsewhere', nodeActorForPeer(evil.id)).carryTo(MESH))
    const fakeCarry = A.getAllChanges(carried).find(c => A.decodeChange(c).actor === carryActor(MESH)) as Uint8Array
    expect(() => { reader.applyChanges([fakeCarry]) }).toThrow(BoardForgedChangeError)
  })

  it('the bytes a signature covers, cut from a change\'s own bytes, are what encoding the change again gives; an altered operation fails', async () => {
    const [p, q] = [await peer(), await peer()]
    const a = Board.create(MESH, nodeActorForPeer(p.id), p.signer)
    const b = Board.create(MESH, sessionActorForPeer(q.id), q.signer)
    const changes = [a.change('plan', addTasks([simpleTask('a1', { prompt: 'x'.repeat(500) })])) as Uint8Array]
    changes.push(b.change('plan ✓ ünï', addTasks([simpleTask('b1')])) as Uint8Array)
    a.applyChanges([changes[1] as Uint8Array])
    // two dependencies, a session actor's other actors, a message past one LEB128 byte
    changes.push(a.change('m'.repeat(300), d => { (d.tasks['b1'] as TaskRecord).priority = 3 }) as Uint8Array)
    expect(A.decodeChange(changes[2] as Uint8Array).deps).toHaveLength(2)
    for (const bytes of changes) {
      const { hash: _hash, ...rest } = A.decodeChange(bytes)
      for (const message of [null, '', 'plan', 'plan ✓ ünï', 'y'.repeat(200)]) {
        expect(Buffer.from(withMessage(bytes, message) as Uint8Array), String(message)).toEqual(Buffer.from(A.encodeChange({ ...rest, message })))
      }
      expect(changeSigner(A.decodeChange(bytes), bytes).peer).not.toBeNull()
    }
    // not one uncompressed change chunk: the caller encodes
    expect(withMessage(a.save(), 'x')).toBeNull()
    expect(withMessage((changes[0] as Uint8Array).subarray(0, 40), 'x')).toBeNull()
    // an operation's value altered, the signature kept: refused on the path that cuts the bytes
    const real = A.decodeChange(changes[0] as Uint8Array)
    const { hash: _h, ...body } = real
    const altered = A.encodeChange({ ...body, ops: body.ops.map(op => op.value === 'x'.repeat(500) ? { ...op, value: 'y'.repeat(500) } : op) })
    expect(A.decodeChange(altered).ops.some(op => op.value === 'y'.repeat(500))).toBe(true)
    expect(changeSigner(A.decodeChange(altered), altered)).toEqual({ peer: null, reason: 'bad signature' })
    const reader = Board.create(MESH, nodeActorForPeer((await peer()).id))
    expect(() => { reader.applyChanges([altered]) }).toThrow(/bad signature/)
  })

  it('signs a change by cutting its own bytes: what encoding the signed change again gives, byte for byte', async () => {
    // the signer splices the signature line into the bytes Automerge made (no encoding of every operation):
    // only sound while those bytes are the canonical encoding, which a verifier re-encoding the change would make
    const [p, q] = [await peer(), await peer()]
    const a = Board.create(MESH, nodeActorForPeer(p.id), p.signer)
    const b = Board.create(MESH, sessionActorForPeer(q.id), q.signer)
    const made: Uint8Array[] = []
    const write = (board: Board, message: string, fn: Parameters<Board['change']>[1]): void => {
      const bytes = board.change(message, fn)
      expect(bytes, message).not.toBeNull()
      made.push(bytes as Uint8Array)
      for (const other of [a, b]) if (other !== board) other.applyChanges([bytes as Uint8Array])
    }
    write(b, 'plan ✓ ünï', addTasks(Array.from({ length: 40 }, (_, i) => simpleTask(`p${i}`, { prompt: `${'x'.repeat(i * 20)} ${i}`, deps: i > 0 ? [`p${i - 1}`] : [] }))))
    write(a, '', d => { lifecycle.claim(d, 'p0' as TaskId, asPeerId(p.id), 0, 1) })
    write(a, 'm'.repeat(300), d => { lifecycle.start(d, 'p0' as TaskId, asPeerId(p.id), 1, 2) })
    write(a, 'task:success', d => { lifecycle.complete(d, 'p0' as TaskId, { peer: asPeerId(p.id), head: 'a'.repeat(40), summary: 'done ✓', now: 3 }) })
    for (const bytes of made) {
      const decoded = A.decodeChange(bytes)
      const { hash: _hash, ...rest } = decoded
      expect(Buffer.from(A.encodeChange(rest))).toEqual(Buffer.from(bytes))
      expect(changeSigner(decoded, bytes).peer).not.toBeNull()
      // and a verifier without the bytes (encoding the change again) agrees
      expect(changeSigner(decoded).peer).not.toBeNull()
    }
  })

  it('takes an older peer\'s unsigned history, but not an unsigned change in the name of a peer that signs', async () => {
    const p = await peer()
    // p's history from before it signed (an older version's actor), then its first signed change on top
    const old = Board.create(MESH, actorForPeer(p.id))
    const legacy = old.change('plan', addTasks([simpleTask('old')])) as Uint8Array
    const upgraded = Board.load(MESH, nodeActorForPeer(p.id), old.save(), p.signer)
    const signed = upgraded.change('plan', addTasks([simpleTask('new')])) as Uint8Array
    const fresh = Board.create(MESH, nodeActorForPeer((await peer()).id))
    syncAll(upgraded, fresh)
    expect(fresh.task('old')).toBeDefined()
    expect(fresh.task('new')).toBeDefined()
    // a forger writes under p's older actor after p signs: refused
    const forger = Board.load(MESH, actorForPeer(p.id), upgraded.save())
    const forged = forger.change('forged', d => { lifecycle.claim(d, 'old' as TaskId, asPeerId(p.id), 0, 1) }) as Uint8Array
    expect(() => { fresh.applyChanges([forged]) }).toThrow(/a peer that signs/)
    expect(fresh.task('old')?.claims[p.id]).toBeUndefined()
    // before any signed change of p is known, p's older actor is taken as history (an older version still writes so)
    const behind = Board.create(MESH, nodeActorForPeer((await peer()).id))
    behind.applyChanges([legacy])
    expect(behind.task('old')).toBeDefined()
    behind.applyChanges([signed])
    expect(behind.task('new')).toBeDefined()
  })

  it('the writer refuses its own change that peers would refuse, before it exists; its next change follows on', async () => {
    const p = await peer()
    const other = await peer()
    const writer = Board.create(MESH, nodeActorForPeer(p.id), p.signer)
    writer.checkOwnChanges = true
    const withheld: string[] = []
    writer.onWithheld = (message, reason) => { withheld.push(`${message}: ${reason}`) }
    const first = writer.change('plan', addTasks([simpleTask('t1')])) as Uint8Array
    const heads = writer.heads()
    expect(writer.change('claim', d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(other.id), 0, 1) })).toBeNull()
    expect(withheld).toEqual([expect.stringMatching(/^claim: wrote an entry of another peer/)])
    expect(writer.heads()).toEqual(heads)
    expect(writer.task('t1')?.claims[other.id]).toBeUndefined()
    const next = writer.change('plan', addTasks([simpleTask('t2')])) as Uint8Array
    expect(A.decodeChange(next).seq).toBe(2)
    const reader = Board.create(MESH, nodeActorForPeer(other.id))
    reader.applyChanges([first, next])
    expect(reader.task('t2')).toBeDefined()
  })

  it('a carry change moves the board onto another mesh\'s genesis with its content; peers there take it though it writes every peer\'s entries', async () => {
    const p = await peer()
    const q = await peer()
    const a = Board.create(MESH, nodeActorForPeer(p.id), p.signer)
    a.change('join', d => { d.nodes[p.id] = { name: str('a'), slots: 2, startedAt: 5, leftAt: null } })
    a.change('plan', addTasks([simpleTask('t1'), simpleTask('t2', { deps: ['t1'] })]))
    a.change('claim', d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(p.id), 0, 7) })
    a.change('main', d => { d.main.head = str('c'.repeat(40)); d.main.term = 3; d.main.leader = str(p.id) })
    const carried = a.carryTo('mesh-rotated')
    expect(Board.meshIdOf(a.save())).toBe(MESH)
    expect(Board.meshIdOf(carried)).toBe('mesh-rotated')
    const b = Board.load('mesh-rotated', nodeActorForPeer(p.id), carried, p.signer)
    expect(b.snapshot().main).toEqual(a.snapshot().main)
    expect([...b.snapshot().tasks.values()]).toEqual([...a.snapshot().tasks.values()])
    expect([...b.snapshot().nodes.entries()]).toEqual([...a.snapshot().nodes.entries()])
    expect(b.snapshot().invalid).toEqual([])
    // the old mesh refuses it (another genesis); a node of the new mesh with an empty board syncs it in
    expect(() => Board.load(MESH, nodeActorForPeer(p.id), carried)).toThrow(/another mesh/)
    const c = Board.create('mesh-rotated', nodeActorForPeer(q.id), q.signer)
    c.change('join', d => { d.nodes[q.id] = { name: str('q'), slots: 1, startedAt: 9, leftAt: null } })
    syncAll(b, c)
    expect(c.task('t1')?.claims[p.id]).toBeDefined()
    expect(c.snapshot().main.head).toBe('c'.repeat(40))
    // nobody else writes a carry change: a second one under the carry actor is refused
    const fake = Board.load('mesh-rotated', carryActor('mesh-rotated'), b.save())
    const fakeBytes = fake.change('carry', d => { d.main.head = str('d'.repeat(40)) }) as Uint8Array
    expect(() => { c.applyChanges([fakeBytes]) }).toThrow()
    expect(c.snapshot().main.head).toBe('c'.repeat(40))
  })
})

/** Runs the Automerge sync protocol between two boards in memory until both are idle. */
function syncAll (from: Board, to: Board): void {
  let s1 = A.initSyncState()
  let s2 = A.initSyncState()
  for (let i = 0; i < 20; i++) {
    const [n1, m1] = from.generateSyncMessage(s1)
    s1 = n1
    if (m1 !== null) s2 = to.receiveSyncMessage(s2, m1)
    const [n2, m2] = to.generateSyncMessage(s2)
    s2 = n2
    if (m2 !== null) s1 = from.receiveSyncMessage(s1, m2)
    if (m1 === null && m2 === null) return
  }
  throw new Error('sync did not settle')
}
