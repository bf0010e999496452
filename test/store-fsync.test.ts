/** Board appends are fsynced before they resolve, and a burst shares one fsync. */
import { describe, it, expect, afterEach } from 'vitest'
import { open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './helpers/mesh.ts'
import { BoardStore } from '../src/crdt/store.ts'
import { actorForPeer } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'

let dir = ''
let restore: (() => void) | null = null
afterEach(async () => {
  restore?.()
  restore = null
  await rm(dir, { recursive: true, force: true })
})

describe('board store fsync', () => {
  it('each append resolves only after an fsync that covers it; 50 appends in a burst take far fewer fsyncs', async () => {
    dir = await tempDir('meshwork-fsync-')
    // count fsyncs through the FileHandle prototype the store's handles share
    const probe = await open(join(dir, 'probe'), 'w')
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }
    await probe.close()
    const original = proto.datasync
    let syncs = 0
    proto.datasync = async function (this: unknown) { syncs++; await original.call(this) }
    restore = () => { proto.datasync = original }

    const store = new BoardStore(dir)
    const { board } = await store.load('mesh-fsync', actorForPeer('p'))
    const before = syncs
    const resolvedAfter: number[] = []
    const appends: Array<Promise<void>> = []
    for (let i = 0; i < 50; i++) {
      board.change(`t${i}`, addTasks([simpleTask(`t${i}`)]))
      appends.push(store.append(board).then(() => { resolvedAfter.push(syncs) }))
    }
    await Promise.all(appends)
    const used = syncs - before
    expect(used).toBeGreaterThanOrEqual(1)
    expect(used).toBeLessThanOrEqual(3)
    // nothing resolved before the first fsync
    expect(Math.min(...resolvedAfter)).toBeGreaterThan(before)
    await store.close()
    const again = new BoardStore(dir)
    const loaded = await again.load('mesh-fsync', actorForPeer('p'))
    expect(loaded.board.snapshot().tasks.size).toBe(50)
    await again.close()
  })
})
