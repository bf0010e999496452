/**
 * A done task whose branch's holders all look dead goes back to ready (to run
 * again) only `HOLDERS_GONE_GRACE_MS` after this node first saw it so, on the
 * janitor too, and not at all when a holder is heard again meanwhile: nodes
 * that learn of a finished task as a partition heals count its holder dead for
 * a moment (src/scheduler/scheduler.ts, `#recover`). One scheduler over a fake
 * node whose one peer's membership state the test sets.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { str } from '../src/crdt/board.ts'
import { addTasks, simpleTask } from '../src/crdt/ops.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'
import { HOLDERS_GONE_GRACE_MS, Scheduler } from '../src/scheduler/scheduler.ts'
import type { SchedulerNode } from '../src/node/components.ts'
import { createLogger } from '../src/util/logger.ts'
import { waitFor } from '../src/util/wait.ts'
import { FakeSchedulerNode, heldAgent } from './helpers/fake-sched-node.ts'

const MESH = 'mesh-holders-gone'
// this node sorts first: it is the janitor, which releases a dead node's other tasks at once
const ME = asPeerId('12D3KooWaaaaMe')
const PEER = asPeerId('12D3KooWzzzzPeer')
const T = 't' as TaskId

let sched: Scheduler | null = null
afterEach(async () => {
  await sched?.stop(0)
  sched = null
})

/** A fake node whose board has task `t` done by the peer, its branch held by the peer alone; its recover passes counted. */
function setUp (): { node: FakeSchedulerNode, events: Array<{ event: string, time: number }>, passes: () => number } {
  const node = new FakeSchedulerNode(MESH, ME, PEER)
  node.board.change('node:join', d => { d.nodes[PEER] = { name: str('peer'), slots: 1, startedAt: 0, leftAt: null } })
  node.board.change('plan', addTasks([simpleTask('t')]))
  node.board.change('run', d => {
    lifecycle.claim(d, T, PEER, 0, Date.now())
    lifecycle.start(d, T, PEER, 1, Date.now())
    lifecycle.complete(d, T, { peer: PEER, head: 'a'.repeat(40), summary: null, now: Date.now() })
  })
  let count = 0
  const alive = node.membership.alive
  node.membership.alive = () => { count++; return alive() }
  const events: Array<{ event: string, time: number }> = []
  const logger = createLogger('s', { level: 'info', format: 'json', write: line => { events.push(JSON.parse(line) as { event: string, time: number }) } })
  sched = new Scheduler({ node: node as unknown as SchedulerNode, agent: heldAgent, slots: 1, logger })
  return { node, events, passes: () => count }
}

const at = (events: Array<{ event: string, time: number }>, name: string): number | undefined => events.find(e => e.event === name)?.time

describe('a done task whose holders all look dead', () => {
  it('goes back to ready on the janitor only once it has looked so for the grace', async () => {
    const { node, events } = setUp()
    node.peer = { ...node.peer, state: 'dead' }
    sched!.start()
    await waitFor(() => at(events, 'task:released'), { timeoutMs: 30_000, message: () => `the task was never released: ${JSON.stringify(node.board.task('t'))}` })
    const gone = at(events, 'task:holders-gone') as number
    expect(gone, 'no task:holders-gone before the release').toBeTypeOf('number')
    expect((at(events, 'task:released') as number) - gone).toBeGreaterThanOrEqual(HOLDERS_GONE_GRACE_MS)
  })

  it('stays done when a holder is heard again within the grace', async () => {
    const { node, events, passes } = setUp()
    node.peer = { ...node.peer, state: 'dead' }
    sched!.start()
    const gone = await waitFor(() => at(events, 'task:holders-gone'), { timeoutMs: 30_000, message: 'the scheduler never saw the holder gone' })
    node.peer = { ...node.peer, state: 'alive' }
    // two recover passes after the grace would have ended: the second saw the holder alive, whatever the first did
    const seen = passes()
    await waitFor(() => Date.now() >= gone + HOLDERS_GONE_GRACE_MS + 100 && passes() >= seen + 2, { timeoutMs: 30_000, message: 'the scheduler made no recover pass after the grace' })
    expect(at(events, 'task:released')).toBeUndefined()
    expect(node.board.task('t')?.state).toBe('done')
  })
})
