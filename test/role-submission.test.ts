/**
 * The role rules on a change that submits tasks: every write inside a task
 * record the change itself makes is a submission and passes (the rules skip
 * those writes without listing them), while everything else the same change
 * writes is judged as ever.
 */
import { describe, it, expect } from 'vitest'
import * as A from '@automerge/automerge'
import { Board, actorForPeer, sessionActorForPeer, str, type BoardDoc } from '../src/crdt/board.ts'
import { changeContext, roleViolation } from '../src/crdt/authors.ts'
import * as lifecycle from '../src/crdt/lifecycle.ts'
import { addTasks, newTaskRecord, simpleTask } from '../src/crdt/ops.ts'
import { asPeerId, type TaskId } from '../src/crdt/schema.ts'

const NODE = '12D3KooWNV38ASnTHYdoiGx2myLEypuBC9TmpdGkVgj59btUAAmd'
const OTHER = '12D3KooWSUUFxCjaHFsTLo8dNSa1DzaHu5WsDTnVWPR5k49rznDE'

/** roleViolation of the change `fn` makes as `actor` on a board holding task t1 (run by OTHER). */
function verdict (actor: string, fn: (d: BoardDoc) => void): string | null {
  const base = Board.create('m', actorForPeer(OTHER))
  base.change('t', addTasks([simpleTask('t1')]))
  base.change('claim', d => { lifecycle.claim(d, 't1' as TaskId, asPeerId(OTHER), 0, 1) })
  base.change('start', d => { lifecycle.start(d, 't1' as TaskId, asPeerId(OTHER), 1, 2) })
  const author = Board.load('m', actor, base.save())
  const bytes = author.change('x', fn)
  if (bytes === null) throw new Error('the change changed nothing')
  const doc = A.load<BoardDoc>(author.save())
  const change = A.decodeChange(bytes)
  return roleViolation(change, changeContext(doc, change))
}

const plan = (n: number, prefix: string): ReturnType<typeof simpleTask>[] =>
  Array.from({ length: n }, (_, i) => simpleTask(`${prefix}-${i}`, { deps: ['t1'], files: ['src/**'], sim: { durationMs: 1, write: { a: 'b' }, append: {}, fail: 0 } }))

describe('roleViolation on a change that submits tasks', () => {
  it('lets every write inside the new records through, from a node and from a client', () => {
    expect(verdict(actorForPeer(NODE), addTasks(plan(20, 'n')))).toBeNull()
    expect(verdict(sessionActorForPeer(NODE), addTasks(plan(20, 'c')))).toBeNull()
  })

  it('still judges what the same change writes outside its new records', () => {
    const submitAnd = (extra: (d: BoardDoc) => void) => (d: BoardDoc): void => { addTasks(plan(5, 'p'))(d); extra(d) }
    expect(verdict(actorForPeer(NODE), submitAnd(d => { (d.tasks.t1 as { prompt: unknown }).prompt = str('injected') }))).toMatch(/rewrote prompt of task t1/)
    expect(verdict(actorForPeer(NODE), submitAnd(d => { (d.tasks.t1 as { state: unknown }).state = str('done') }))).toMatch(/ended task t1's run/)
    expect(verdict(actorForPeer(NODE), submitAnd(d => { d.main.head = str('f'.repeat(40)) }))).toMatch(/without leading/)
    expect(verdict(sessionActorForPeer(NODE), submitAnd(d => { d.main.leader = str(NODE) }))).toMatch(/a client wrote main\.leader/)
  })

  it('refuses a new record made in place of an existing one, with everything written inside it', () => {
    expect(verdict(actorForPeer(NODE), d => { d.tasks.t1 = newTaskRecord(simpleTask('t1', { prompt: 'injected' }), 5) })).toMatch(/replaced the record of task t1/)
  })
})
