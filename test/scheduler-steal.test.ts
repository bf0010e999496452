/**
 * A node steals a ready task its preferred owner leaves waiting, after the
 * steal wait counted from when it first saw that owner, not from when the task
 * became ready: a task that waited long for a slot anywhere must not be taken
 * from an owner the moment it could claim it (the steal and the owner's claim
 * collided). Real nodes, in process: the owner is a node with free slots and
 * no scheduler, so it never claims, and the thief's wait is all there is.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createMesh, waitAllAlive, type TestMesh } from './helpers/mesh.ts'
import { attachScheduler, stopSchedulers, RunLog } from './helpers/sched.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import { rendezvousScore } from '../src/scheduler/claims.ts'
import { waitFor } from '../src/util/wait.ts'
import type { Scheduler } from '../src/scheduler/scheduler.ts'

let mesh: TestMesh | undefined
let scheds: Scheduler[] = []
afterEach(async () => {
  await stopSchedulers(scheds)
  scheds = []
  await mesh?.stop()
  mesh = undefined
})

const STEAL_AFTER_MS = 3000

describe('stealing a task from its preferred owner', () => {
  it('waits the steal time from when the owner was first seen, though the task has been ready for a minute', async () => {
    mesh = await createMesh(2)
    const [owner, thief] = mesh.nodes as [typeof mesh.nodes[0], typeof mesh.nodes[0]]
    owner.setSlots(2)
    await waitAllAlive(mesh.nodes, 15_000)
    const log = new RunLog()
    scheds = [attachScheduler(thief, log, 1, { stealAfterMs: STEAL_AFTER_MS })]
    await waitFor(() => thief.membership.get(owner.peerId)?.slots === 2, { timeoutMs: 15_000, message: 'the thief never heard the owner\'s two slots' })
    // a task the owner wins by rendezvous in the thief's view (both have room)
    let id = ''
    for (let i = 0; id === ''; i++) if (rendezvousScore(`t${i}`, owner.peerId) > rendezvousScore(`t${i}`, thief.peerId)) id = `t${i}`
    const writtenAt = Date.now()
    thief.changeBoard('plan', d => {
      addTasks([simpleTask(id)])(d)
      const t = d.tasks[id]
      if (t === undefined) throw new Error('no task')
      // ready for a minute already: the old rule stole it at once
      t.readyAt = writtenAt - 60_000
      t.createdAt = writtenAt - 60_000
    })
    await waitFor(() => log.runs.has(id), { timeoutMs: 30_000, message: `the thief never stole ${id}` })
    const claim = thief.board.task(id)?.claims[thief.peerId]
    expect(claim, 'the thief\'s claim').toBeDefined()
    // the thief saw the task no sooner than it wrote it: its claim came the steal time later at the earliest
    expect((claim?.at ?? 0) - writtenAt).toBeGreaterThanOrEqual(STEAL_AFTER_MS)
  })
})
