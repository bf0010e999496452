/**
 * A joiner's copy of a large board read on a worker thread (copy-reader.ts)
 * while the main thread loads and checks the document: the board it gives is
 * the one the main thread reads itself, and a worker that fails or never
 * answers only costs the wait.
 */
import { describe, it, expect, afterAll } from 'vitest'
import * as A from '@automerge/automerge'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Board, nodeActorForPeer } from '../src/crdt/board.ts'
import { signerFromPrivateKey } from '../src/crdt/signing.ts'
import { addTasks, newTaskRecord, simpleTask } from '../src/crdt/ops.ts'
import { str } from '../src/crdt/board-types.ts'
import { COPY_ASIDE_BYTES, CopyReader, readCopy } from '../src/crdt/copy-reader.ts'
import { largestDocument } from '../src/crdt/mirror.ts'
import { waitFor } from '../src/util/wait.ts'

const MESH = 'mesh-copy-reader-test'
const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(d => rm(d, { recursive: true, force: true }))) })

async function signingBoard (): Promise<{ id: string, board: Board }> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  return { id, board: Board.create(MESH, nodeActorForPeer(id), signerFromPrivateKey(id, key)) }
}

/** A source board of `n` tasks with prompts that do not compress away, one task whose id is not its key, and one node. */
async function largeSource (n: number): Promise<Board> {
  const { id, board } = await signingBoard()
  board.change('plan', addTasks(Array.from({ length: n }, (_, i) => simpleTask(`t-${i}`, { prompt: `task ${i}: ${randomBytes(48).toString('hex')}` }))))
  board.change('node:join', d => { d.nodes[id] = { name: str('source'), slots: 2, startedAt: 1, leftAt: null } as never })
  // a record that fails its schema: every reader must leave it out and say so once
  board.change('plan', d => { (d.tasks as Record<string, unknown>)['wrong-key'] = newTaskRecord(simpleTask('t-1'), 1) })
  return board
}

/** The sync message from `source` that carries its whole document to a joiner that has only its genesis and `joiner`'s own changes. */
function wholeDocumentFor (source: Board, joiner: Board): Uint8Array {
  let js = A.initSyncState()
  let ss = A.initSyncState()
  for (let round = 0; round < 5; round++) {
    const [j1, toSource] = joiner.generateSyncMessage(js)
    js = j1
    if (toSource !== null) ss = source.receiveSyncMessage(ss, toSource)
    const [s1, toJoiner] = source.generateSyncMessage(ss)
    ss = s1
    if (toJoiner !== null && A.decodeSyncMessage(toJoiner).changes.some(c => c[8] === 0)) return toJoiner
  }
  throw new Error('the source never sent a whole document in 5 rounds')
}

describe('a joiner\'s copy read on a worker thread', () => {
  it('gives the board the main thread reads itself: the same tasks, nodes and invalid entries, each said once', async () => {
    const source = await largeSource(1200)
    const joiners: Array<{ board: Board, invalid: string[], started: () => number }> = []
    for (const aside of [true, false]) {
      const { id, board } = await signingBoard()
      if (!aside) board.startCopyReader = () => null
      const invalid: string[] = []
      board.onInvalid = label => { invalid.push(label) }
      // the joiner registered before its first sync, as a node does: a change beyond the document's heads
      board.change('node:join', d => { d.nodes[id] = { name: str('joiner'), slots: 1, startedAt: 2, leftAt: null } as never })
      const message = wholeDocumentFor(source, board)
      const chunk = largestDocument(A.decodeSyncMessage(message).changes) as Uint8Array
      expect(chunk.length).toBeGreaterThanOrEqual(COPY_ASIDE_BYTES)
      if (aside) {
        // the worker's read is held until it answered (here its start can take longer than the board's own work)
        const reader = CopyReader.start(chunk) as CopyReader
        await waitFor(() => reader.answered, { timeoutMs: 60_000, message: 'the copy reader never answered' })
        let started = 0
        board.startCopyReader = c => { started++; expect(c).toEqual(chunk); return reader }
        joiners.push({ board, invalid, started: () => started })
      }
      board.receiveSyncMessage(A.initSyncState(), message)
      if (!aside) joiners.push({ board, invalid, started: () => 0 })
    }
    const [aside, inThread] = joiners as [typeof joiners[0], typeof joiners[0]]
    expect(aside.started()).toBe(1)
    expect(aside.board.copyMadeBy).toBe('read aside')
    expect(inThread.board.copyMadeBy).toBe('read')
    const a = aside.board.snapshot()
    const b = inThread.board.snapshot()
    expect(a.tasks.size).toBe(1200)
    expect(a.tasks.has('wrong-key' as never)).toBe(false)
    expect([...a.tasks]).toEqual([...b.tasks])
    expect([...a.conflicts]).toEqual([...b.conflicts])
    // the joiner's own registration (read in after the worker's copy) and the source's
    expect(a.nodes.size).toBe(2)
    const byName = (nodes: typeof a.nodes): unknown[] => [...nodes.values()].sort((x, y) => x.name.localeCompare(y.name))
    expect(byName(a.nodes)).toEqual(byName(b.nodes))
    expect(byName(a.nodes).map(n => (n as { name: string }).name)).toEqual(['joiner', 'source'])
    expect(a.invalid).toEqual(['tasks/wrong-key'])
    expect(aside.invalid).toEqual(['tasks/wrong-key'])
    expect(inThread.invalid).toEqual(['tasks/wrong-key'])
    // and it goes on as any board: a later change to a task shows, the copy changed where it stands
    const claim = source.change('tasks:claim', d => { (d.tasks['t-7' as never] as { state: unknown }).state = str('claimed') })
    aside.board.applyChanges([claim as Uint8Array])
    expect(aside.board.task('t-7')?.state).toBe('claimed')
    expect(a.tasks.get('t-7' as never)?.state).toBe('ready')
  })

  it('reads a document chunk as the board does: lean, with its records parsed and the invalid ones named', async () => {
    const source = await largeSource(50)
    const chunk = largestDocument([source.save()])
    expect(chunk).not.toBeNull()
    const read = readCopy(chunk as Uint8Array)
    expect(read?.heads).toEqual(source.heads())
    expect(read?.entries.tasks.length).toBe(50)
    expect(read?.entries.nodes.length).toBe(1)
    expect(read?.invalid).toEqual([['tasks/wrong-key', 'id does not match its key']])
    expect(readCopy(Uint8Array.from([1, 2, 3]))).toBeNull()
  })

  it('takes nothing from a worker that cannot start or never answers, and waits no longer than it is told', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshwork-copy-reader-'))
    dirs.push(dir)
    const chunk = largestDocument([(await largeSource(10)).save()]) as Uint8Array
    // no such script: the worker fails at once
    const missing = CopyReader.start(chunk, join(dir, 'no-such-worker.mjs'))
    expect(missing).not.toBeNull()
    expect(missing?.take(60_000)).toBeNull()
    // a worker that says it started and then never answers: the wait ends at its bound
    const silent = join(dir, 'silent-worker.mjs')
    const mark = join(dir, 'started')
    await writeFile(silent, `import { workerData } from 'node:worker_threads'\nimport { writeFileSync } from 'node:fs'\nAtomics.store(workerData.state, 0, 1)\nwriteFileSync(${JSON.stringify(mark)}, '')\nsetInterval(() => {}, 1000)\n`)
    const reader = CopyReader.start(chunk, silent) as CopyReader
    await waitFor(() => existsSync(mark), { timeoutMs: 30_000, message: 'the silent worker never started' })
    const started = performance.now()
    expect(reader.take(300)).toBeNull()
    const waited = performance.now() - started
    expect(waited).toBeGreaterThanOrEqual(290)
    expect(waited).toBeLessThan(20_000)
  })
})
