/**
 * Poison input at the edge and on the board: task ids git refuses as branch
 * names, titles with control characters, oids that are not oids. The plan
 * validator rejects them (exit 2 through the CLI); a board that receives them
 * from a peer anyway quarantines the record.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './helpers/mesh.ts'
import { runCli, describeResult } from './helpers/cli.ts'
import { git } from '../src/git/git.ts'
import { isValidTaskId, isOid, TASK_ID_PATTERN } from '../src/crdt/schema.ts'
import { parsePlan, PlanError } from '../src/scheduler/plan.ts'
import { Board, actorForPeer, str } from '../src/crdt/board.ts'
import { addTasks, newTaskRecord, simpleTask } from '../src/crdt/ops.ts'

const TRICKY_IDS = [
  'a', 'a1', '0', 'a.b', 'a-b', 'a_b', 'a.b.c', 'x.lock', 'a.lock', 'lock', 'a.locks', 'a.lockx', 'x.lock.y', 'a..b', 'a...b', 'a.',
  'a-', 'a_', 'a.-', 'a.._', '1.2.3', 'v1.0', 'a.b.', 'ab..', '.a', '-a', '_a', 'a/b', 'A', 'a b', 'a@{1}', 'a@b', 'a~1', 'a^',
  'a:b', 'a?', 'a*', 'a[b', 'a\\b', 'a\x7f', 'a\tb', 'a\nb', '@', 'a'.repeat(64), 'a'.repeat(65), 'a'.repeat(59) + '.lock', '.lock', 'lock.a'
]

let dir: string
beforeAll(async () => { dir = await tempDir('meshwork-poison-') })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('task ids are valid git branch name parts', () => {
  it('isValidTaskId agrees with git check-ref-format --branch on meshwork/<id> over tricky ids', async () => {
    for (const id of TRICKY_IDS) {
      const res = await git(['check-ref-format', '--branch', `meshwork/${id}`], { cwd: dir, allowFail: true })
      const gitOk = res.code === 0
      if (isValidTaskId(id)) expect(gitOk, `${JSON.stringify(id)} is accepted but git refuses it`).toBe(true)
      // within the id alphabet and length the two rules are the same rule
      if (TASK_ID_PATTERN.test(id)) expect(isValidTaskId(id), JSON.stringify(id)).toBe(gitOk)
    }
    for (const id of ['x.lock', 'a..b', 'a.', 'a.lock']) expect(isValidTaskId(id), id).toBe(false)
    for (const id of ['a.locks', 'lock', 'v1.0', 'a-', 'a_']) expect(isValidTaskId(id), id).toBe(true)
  })

  it('the plan validator lists ids git refuses and titles with control characters with the other problems', () => {
    const text = JSON.stringify({
      tasks: [
        { id: 'x.lock', prompt: 'p' },
        { id: 'a..b', prompt: 'p' },
        { id: 'a.', prompt: 'p' },
        { id: 'ok', title: 'bad\u0000title', prompt: 'p' },
        { id: 'esc', title: 'red \u001b[31m', prompt: 'p' },
        { id: 'nul-prompt', prompt: 'p\u0000q' },
        { id: 'empty', prompt: '' }
      ]
    })
    let caught: unknown
    try { parsePlan(text, new Set()) } catch (err) { caught = err }
    expect(caught).toBeInstanceOf(PlanError)
    const problems = (caught as PlanError).problems
    for (const id of ['x.lock', 'a..b', 'a.']) expect(problems.filter(p => p.includes(`"${id}"`) && /malformed id: not a valid git branch name part/.test(p)), problems.join('\n')).toHaveLength(1)
    expect(problems.filter(p => p.includes('"ok"') && /control characters in the title/.test(p))).toHaveLength(1)
    expect(problems.filter(p => p.includes('"esc"') && /control characters in the title/.test(p))).toHaveLength(1)
    expect(problems.filter(p => p.includes('"nul-prompt"') && /NUL/.test(p))).toHaveLength(1)
    expect(problems.filter(p => /empty prompt/.test(p))).toHaveLength(1)
    expect(problems).toHaveLength(7)
  })

  it('a title taken from the prompt loses its control characters instead of failing the plan', () => {
    const [t] = parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'do\tthis \u001b[2J now\nsecond line' }] }), new Set())
    expect(t!.title).toBe('do this  [2J now')
  })

  it('submit exits 2 naming every poison id and title, before looking for a mesh', async () => {
    const plan = join(dir, 'poison.yaml')
    await writeFile(plan, 'tasks:\n  - id: x.lock\n    prompt: p\n  - id: a..b\n    prompt: p\n  - id: fine\n    title: "bell\\u0007"\n    prompt: p\n')
    const r = await runCli(['submit', plan, '--swarm-key', join(dir, 'swarm.key'), '--bootstrap', '/ip4/127.0.0.1/tcp/9/p2p/12D3KooWLRPJAA5o6RB1pnZqDvsdgqm6bjTDbRKNdHKHNsMk6AQp', '--timeout', '60s'], { timeoutMs: 30_000 })
    expect(r.code, describeResult(['submit', 'poison.yaml'], r)).toBe(2)
    expect(r.stderr).toMatch(/task "x\.lock": malformed id: not a valid git branch name part/)
    expect(r.stderr).toMatch(/task "a\.\.b": malformed id: not a valid git branch name part/)
    expect(r.stderr).toMatch(/task "fine": control characters in the title/)
    expect(r.stderr).toMatch(/3 problems/)
    expect(r.stderr).toMatch(/nothing was submitted/)
  })
})

describe('the board quarantines poison records a peer writes anyway', () => {
  const MESH = 'mesh-poison-0000'
  it('ids git refuses, control characters in titles, NUL in prompts, bad oids: left out and reported, the rest kept', () => {
    const board = Board.create(MESH, actorForPeer('a'))
    const reports: string[] = []
    board.onInvalid = key => { reports.push(key) }
    board.change('ok', addTasks([simpleTask('fine')]))
    const peer = Board.create(MESH, actorForPeer('evil'))
    const raw = (id: string) => newTaskRecord(simpleTask(id), 0)
    const c = peer.change('poison', d => {
      d.tasks['x.lock'] = raw('x.lock')
      d.tasks['a..b'] = raw('a..b')
      d.tasks['a.'] = raw('a.')
      d.tasks.title = { ...raw('title'), title: str('bad\u0000') }
      d.tasks.esc = { ...raw('esc'), title: str('\u001b]0;pwned\u0007') }
      d.tasks.prompt = { ...raw('prompt'), prompt: str('a\u0000b') }
      d.tasks.head = { ...raw('head'), state: str('done'), head: str('--upload-pack=touch /tmp/x') }
      d.tasks.short = { ...raw('short'), state: str('done'), head: str('abc123') }
      d.tasks.merge = { ...raw('merge'), state: str('merged'), mergeCommit: str('HEAD~1') }
      d.tasks.good = { ...raw('good'), state: str('done'), head: str('a'.repeat(40)) }
      d.tasks.good256 = { ...raw('good256'), state: str('done'), head: str('b'.repeat(64)) }
    })
    board.applyChanges([c as Uint8Array])
    expect([...board.snapshot().tasks.keys()].sort()).toEqual(['fine', 'good', 'good256'])
    const bad = ['tasks/x.lock', 'tasks/a..b', 'tasks/a.', 'tasks/title', 'tasks/esc', 'tasks/prompt', 'tasks/head', 'tasks/short', 'tasks/merge'].sort()
    expect([...board.snapshot().invalid].sort()).toEqual(bad)
    expect([...reports].sort()).toEqual(bad)
  })

  it('a main head that is not an oid is quarantined: main keeps its last valid value', () => {
    const board = Board.create(MESH, actorForPeer('a'))
    const reports: string[] = []
    board.onInvalid = key => { reports.push(key) }
    const good = 'c'.repeat(40)
    board.change('main', d => { d.main.head = str(good); d.main.term = 1 })
    const peer = Board.load(MESH, actorForPeer('evil'), board.save())
    // written by a peer that elects itself (only the leader moves main)
    board.applyChanges([peer.change('bad main', d => { d.main.leader = str('evil'); d.main.term = 2; d.main.head = str('-oops') }) as Uint8Array])
    expect(board.snapshot().main.head).toBe(good)
    expect(board.snapshot().invalid).toContain('main')
    expect(reports).toEqual(['main'])
    // a valid head later is taken again
    board.applyChanges([peer.change('fixed', d => { d.main.head = str('d'.repeat(64)) }) as Uint8Array])
    expect(board.snapshot().main.head).toBe('d'.repeat(64))
    expect(board.snapshot().invalid).not.toContain('main')
  })

  it('isOid accepts 40 and 64 lowercase hex characters only', () => {
    expect(isOid('0'.repeat(40))).toBe(true)
    expect(isOid('f'.repeat(64))).toBe(true)
    for (const s of ['', 'abc', '0'.repeat(39), '0'.repeat(41), '0'.repeat(63), 'g'.repeat(40), 'A'.repeat(40), '-'.repeat(40), `${'0'.repeat(40)}\n`]) expect(isOid(s), JSON.stringify(s)).toBe(false)
  })
})
