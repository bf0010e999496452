import { describe, it, expect } from 'vitest'
import { parsePlan, PlanError } from '../src/scheduler/plan.ts'
import { DEFAULT_MAX_ATTEMPTS, type NewTask } from '../src/crdt/ops.ts'

/** Runs `fn`, expects a PlanError and returns it. */
function planError (fn: () => unknown): PlanError {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught, 'expected parsePlan to throw').toBeInstanceOf(Error)
  expect((caught as Error).name).toBe('PlanError')
  expect(caught).toBeInstanceOf(PlanError)
  const e = caught as PlanError
  expect(Array.isArray(e.problems)).toBe(true)
  expect(e.problems.length).toBeGreaterThan(0)
  // the message lists every problem
  for (const p of e.problems) expect(e.message).toContain(p)
  return e
}

/** Whether exactly one problem matches every pattern given. */
function problemMatching (problems: string[], ...patterns: RegExp[]): string {
  const hits = problems.filter(p => patterns.every(re => re.test(p)))
  expect(hits, `one problem matching ${patterns.map(String).join(' & ')} in:\n${problems.join('\n')}`).toHaveLength(1)
  return hits[0] as string
}

const NONE: ReadonlySet<string> = new Set()

const YAML_PLAN = `
# a comment, to be sure this is read as YAML
tasks:
  - id: schema
    title: Add the users table
    prompt: |
      Create a migration that adds users.
      Second line of the prompt.
    deps: []
    files: ["src/db/**"]
    priority: 5
    timeout: 20m
    maxAttempts: 2
  - id: api
    prompt: |
      Add the /users endpoint on top of the users table.
      More detail here.
    deps: [schema]
  - id: docs.v2
    prompt: "   Write the docs   "
    deps: [schema, api]
    timeout: 1.5h
    sim:
      duration: 500ms
      write:
        docs/users.md: "# Users"
      append:
        CHANGELOG.md: "- users"
      fail: 1
  - id: lint_1
    prompt: Run the linter
    timeout: 90s
    sim: {}
  - id: t-num
    prompt: numeric durations are seconds
    timeout: 45
    sim:
      duration: 2.5
`

const JSON_PLAN = JSON.stringify({
  tasks: [
    {
      id: 'schema',
      title: 'Add the users table',
      prompt: 'Create a migration that adds users.\nSecond line of the prompt.\n',
      deps: [],
      files: ['src/db/**'],
      priority: 5,
      timeout: '20m',
      maxAttempts: 2
    },
    {
      id: 'api',
      prompt: 'Add the /users endpoint on top of the users table.\nMore detail here.\n',
      deps: ['schema']
    },
    {
      id: 'docs.v2',
      prompt: '   Write the docs   ',
      deps: ['schema', 'api'],
      timeout: '1.5h',
      sim: { duration: '500ms', write: { 'docs/users.md': '# Users' }, append: { 'CHANGELOG.md': '- users' }, fail: 1 }
    },
    { id: 'lint_1', prompt: 'Run the linter', timeout: '90s', sim: {} },
    { id: 't-num', prompt: 'numeric durations are seconds', timeout: 45, sim: { duration: 2.5 } }
  ]
}, null, 2)

// the plan's ids, as plain text: parsePlan returns them as task ids
const EXPECTED: Array<Omit<NewTask, 'id' | 'deps'> & { id: string, deps: string[] }> = [
  {
    id: 'schema',
    title: 'Add the users table',
    prompt: 'Create a migration that adds users.\nSecond line of the prompt.\n',
    deps: [],
    files: ['src/db/**'],
    priority: 5,
    timeoutMs: 1_200_000,
    maxAttempts: 2,
    sim: null
  },
  {
    id: 'api',
    title: 'Add the /users endpoint on top of the users table.',
    prompt: 'Add the /users endpoint on top of the users table.\nMore detail here.\n',
    deps: ['schema'],
    files: [],
    priority: 0,
    timeoutMs: null,
    maxAttempts: DEFAULT_MAX_ATTEMPTS,
    sim: null
  },
  {
    id: 'docs.v2',
    title: 'Write the docs',
    prompt: '   Write the docs   ',
    deps: ['schema', 'api'],
    files: [],
    priority: 0,
    timeoutMs: 5_400_000,
    maxAttempts: 3,
    sim: { durationMs: 500, write: { 'docs/users.md': '# Users' }, append: { 'CHANGELOG.md': '- users' }, fail: 1 }
  },
  {
    id: 'lint_1',
    title: 'Run the linter',
    prompt: 'Run the linter',
    deps: [],
    files: [],
    priority: 0,
    timeoutMs: 90_000,
    maxAttempts: 3,
    sim: { durationMs: 1000, write: {}, append: {}, fail: 0 }
  },
  {
    id: 't-num',
    title: 'numeric durations are seconds',
    prompt: 'numeric durations are seconds',
    deps: [],
    files: [],
    priority: 0,
    timeoutMs: 45_000,
    maxAttempts: 3,
    sim: { durationMs: 2500, write: {}, append: {}, fail: 0 }
  }
]

describe('parsePlan: valid plans', () => {
  it('parses a YAML plan with defaults filled in', () => {
    const tasks = parsePlan(YAML_PLAN, NONE, 'plan.yaml')
    expect(tasks).toEqual(EXPECTED)
    expect(DEFAULT_MAX_ATTEMPTS).toBe(3)
  })

  it('parses the same plan written as JSON to the same tasks', () => {
    const fromJson = parsePlan(JSON_PLAN, NONE, 'plan.json')
    const fromYaml = parsePlan(YAML_PLAN, NONE, 'plan.yaml')
    expect(fromJson).toEqual(fromYaml)
    expect(fromJson).toEqual(EXPECTED)
  })

  it('parses the SPEC example plan', () => {
    const text = [
      'tasks:',
      '  - id: schema              # [a-z0-9][a-z0-9._-]{0,63}, unique in the mesh',
      '    title: Add the users table',
      '    prompt: |',
      '      Create a migration that ...',
      '    deps: []                # ids in this plan or already on the board',
      '    files: ["src/db/**"]    # optional scope',
      '    priority: 0             # optional; higher first among ready tasks',
      '    timeout: 20m            # optional; agent wall time',
      '    maxAttempts: 2          # optional (default 3)',
      '  - id: api',
      '    prompt: Add the /users endpoint on top of the users table.',
      '    deps: [schema]'
    ].join('\n')
    const tasks = parsePlan(text, NONE)
    expect(tasks.map(t => t.id)).toEqual(['schema', 'api'])
    expect(tasks[0]?.timeoutMs).toBe(1_200_000)
    expect(tasks[0]?.maxAttempts).toBe(2)
    expect(tasks[0]?.files).toEqual(['src/db/**'])
    expect(tasks[1]?.maxAttempts).toBe(3)
    expect(tasks[1]?.title).toBe('Add the /users endpoint on top of the users table.')
    expect(tasks[1]?.deps).toEqual(['schema'])
  })

  it('accepts a dependency on a task already on the board', () => {
    const text = 'tasks:\n  - id: api\n    prompt: build on schema\n    deps: [schema]\n'
    const tasks = parsePlan(text, new Set(['schema']))
    expect(tasks).toHaveLength(1)
    expect(tasks[0]?.deps).toEqual(['schema'])
    // without the board task, the same plan is refused
    const e = planError(() => parsePlan(text, NONE))
    problemMatching(e.problems, /unknown dependency/, /"schema"/)
  })

  it('titles default to the first line of the prompt, at most 80 characters', () => {
    const long = 'x'.repeat(200)
    const tasks = parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: `${long}\nsecond` }] }), NONE)
    expect(tasks[0]?.title).toBe('x'.repeat(80))
  })

  it('accepts 64-character ids and ids with dots, dashes and underscores', () => {
    const id = 'a' + 'b'.repeat(63)
    const tasks = parsePlan(JSON.stringify({ tasks: [{ id, prompt: 'p' }, { id: '0.x_y-z', prompt: 'q', deps: [id] }] }), NONE)
    expect(tasks.map(t => t.id)).toEqual([id, '0.x_y-z'])
  })
})

describe('parsePlan: invalid plans', () => {
  it('reports every problem of a plan at once', () => {
    const text = `
tasks:
  - id: ok
    prompt: fine
    deps: [nope]
  - id: a
    prompt: first of the cycle
    deps: [b]
  - id: b
    prompt: second of the cycle
    deps: [c]
  - id: c
    prompt: third of the cycle
    deps: [a]
  - id: selfish
    prompt: depends on itself
    deps: [selfish]
  - id: dup
    prompt: first dup
  - id: dup
    prompt: second dup
  - id: Bad_ID!
    prompt: bad id
  - id: empty
    prompt: "   "
  - id: slow
    prompt: bad duration
    timeout: soon
  - id: taken
    prompt: already on the board
  - id: extra
    prompt: has an unknown field
    colour: blue
`
    const e = planError(() => parsePlan(text, new Set(['taken', 'other']), 'bad.yaml'))
    const p = e.problems
    expect(e.message).toContain('bad.yaml')
    problemMatching(p, /unknown dependency/, /"nope"/)
    // the 3-cycle as a full closed path, in some rotation
    const rotations = ['a -> b -> c -> a', 'b -> c -> a -> b', 'c -> a -> b -> c']
    const cycle = problemMatching(p, /cycle/, /a -> b|b -> c|c -> a/)
    expect(rotations.some(r => cycle.includes(r)), cycle).toBe(true)
    // the self-dependency, reported on its own
    problemMatching(p, /selfish/)
    problemMatching(p, /dup/, /duplicate/)
    problemMatching(p, /Bad_ID!/, /malformed id/)
    problemMatching(p, /"empty"/, /empty prompt/)
    problemMatching(p, /"slow"/, /soon/)
    problemMatching(p, /"taken"/, /already on the board/)
    problemMatching(p, /colour/)
    expect(p).toHaveLength(9)
  })

  it('reports semantic problems even when there are no shape problems', () => {
    const text = JSON.stringify({
      tasks: [
        { id: 'x', prompt: '', deps: ['y', 'ghost'] },
        { id: 'y', prompt: 'p', deps: ['x'], timeout: '10 minutes' }
      ]
    })
    const e = planError(() => parsePlan(text, NONE))
    problemMatching(e.problems, /"x"/, /empty prompt/)
    problemMatching(e.problems, /ghost/, /unknown dependency/)
    problemMatching(e.problems, /"y"/, /10 minutes/)
    const cycle = problemMatching(e.problems, /cycle/)
    expect(cycle.includes('x -> y -> x') || cycle.includes('y -> x -> y'), cycle).toBe(true)
    expect(e.problems).toHaveLength(4)
  })

  it('reports every disjoint cycle and every self-dependency, not just the first', () => {
    const text = JSON.stringify({
      tasks: [
        { id: 'a', prompt: 'p', deps: ['b'] }, { id: 'b', prompt: 'p', deps: ['c'] }, { id: 'c', prompt: 'p', deps: ['a'] },
        { id: 's1', prompt: 'p', deps: ['s1'] }, { id: 's2', prompt: 'p', deps: ['a', 's2'] },
        { id: 'x', prompt: 'p', deps: ['y'] }, { id: 'y', prompt: 'p', deps: ['x'] },
        { id: 'fine', prompt: 'p', deps: ['a', 'x'] }
      ]
    })
    const e = planError(() => parsePlan(text, NONE))
    problemMatching(e.problems, /"s1"/)
    problemMatching(e.problems, /"s2"/)
    const abc = problemMatching(e.problems, /cycle/, /a -> b|b -> c|c -> a/)
    expect(['a -> b -> c -> a', 'b -> c -> a -> b', 'c -> a -> b -> c'].some(r => abc.includes(r)), abc).toBe(true)
    const xy = problemMatching(e.problems, /cycle/, /x -> y|y -> x/)
    expect(xy.includes('x -> y -> x') || xy.includes('y -> x -> y'), xy).toBe(true)
    expect(e.problems).toHaveLength(4)
  })

  it('shape problems do not hide the other problems', () => {
    const text = JSON.stringify({
      other: true,
      tasks: [
        { id: 'typed', prompt: 'p', priority: 'high' },
        { id: 'b', prompt: '', deps: ['typed'] },
        { id: 'b', prompt: 'p', sim: { duration: '1s', speed: 2 } }
      ]
    })
    const e = planError(() => parsePlan(text, NONE))
    problemMatching(e.problems, /other/)
    problemMatching(e.problems, /"typed"/, /priority/)
    problemMatching(e.problems, /speed/)
    problemMatching(e.problems, /"b"/, /empty prompt/)
    problemMatching(e.problems, /"b"/, /duplicate/)
    // a task with a shape problem still counts as a known dependency
    expect(e.problems.filter(p => /unknown dependency/.test(p))).toEqual([])
    expect(e.problems).toHaveLength(5)
  })

  it('a field of the wrong shape does not hide the same task\'s other problems, nor a duplicate id a cycle', () => {
    const text = JSON.stringify({
      tasks: [
        { id: 'g2', title: 'tab\there', prompt: 'p', priority: 'high', timeout: '5x', deps: ['nowhere'], colour: 'red' },
        { id: 'g3', prompt: 7, deps: ['g2'] },
        { id: 'a', prompt: 'p', deps: ['c'] },
        { id: 'c', prompt: 'p', deps: ['a'] },
        { id: 'c', prompt: 'p' }
      ]
    })
    const e = planError(() => parsePlan(text, NONE))
    problemMatching(e.problems, /"g2"/, /priority/)
    problemMatching(e.problems, /"g2"/, /bad timeout "5x"/)
    problemMatching(e.problems, /"g2"/, /control characters in the title/)
    problemMatching(e.problems, /"g2"/, /unknown dependency "nowhere"/)
    problemMatching(e.problems, /"g2"/, /colour/)
    // a prompt of the wrong shape is reported once, as such (not as empty too)
    problemMatching(e.problems, /"g3"/, /prompt/)
    expect(e.problems.filter(p => /"g3"/.test(p))).toHaveLength(1)
    problemMatching(e.problems, /"c"/, /duplicate/)
    const cycle = problemMatching(e.problems, /cycle/, /a -> c|c -> a/)
    expect(cycle.includes('a -> c -> a') || cycle.includes('c -> a -> c'), cycle).toBe(true)
    expect(e.problems, e.problems.join('\n')).toHaveLength(8)
  })

  it('rejects malformed YAML', () => {
    const e = planError(() => parsePlan('tasks:\n  - id: a\n    prompt: [unclosed\n', NONE, 'broken.yaml'))
    expect(e.problems).toHaveLength(1)
    expect(e.problems[0]).toMatch(/cannot parse/)
    expect(e.message).toContain('broken.yaml')
  })

  it('rejects malformed JSON', () => {
    const e = planError(() => parsePlan('{"tasks": [{"id": "a", "prompt": "p"}', NONE))
    expect(e.problems[0]).toMatch(/cannot parse/)
  })

  it('rejects an empty tasks list', () => {
    const e = planError(() => parsePlan('tasks: []\n', NONE))
    expect(e.problems).toHaveLength(1)
    expect(e.problems[0]).toMatch(/at least one task/)
    planError(() => parsePlan('{"tasks": []}', NONE))
  })

  it('rejects documents that are not plans', () => {
    for (const text of ['', 'just a string', '[1, 2]', 'tasks: 3', 'other: []']) {
      const e = planError(() => parsePlan(text, NONE))
      expect(e.problems.length, text).toBeGreaterThan(0)
    }
  })

  it('rejects wrong field types and names the task', () => {
    const e = planError(() => parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', priority: 'high', maxAttempts: 0, deps: 'b' }] }), NONE))
    expect(e.problems.length).toBeGreaterThanOrEqual(3)
    for (const field of ['priority', 'maxAttempts', 'deps']) problemMatching(e.problems, /task "a"/, new RegExp(field))
  })

  it('rejects sim paths that escape the repository', () => {
    for (const bad of ['../x', '/etc/passwd', 'a/../../x', 'docs/../..', '']) {
      const e = planError(() => parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', sim: { write: { [bad]: 'x' } } }] }), NONE))
      problemMatching(e.problems, /sim file/, /relative path inside the repository/)
      const e2 = planError(() => parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', sim: { append: { [bad]: 'x' } } }] }), NONE))
      problemMatching(e2.problems, /sim file/)
    }
    // YAML form, both bad paths in one task: both reported
    const e = planError(() => parsePlan('tasks:\n  - id: a\n    prompt: p\n    sim:\n      write:\n        ../x: evil\n        /etc/passwd: evil\n', NONE))
    problemMatching(e.problems, /"\.\.\/x"/)
    problemMatching(e.problems, /"\/etc\/passwd"/)
    // paths inside the repository are fine
    const ok = parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', sim: { write: { 'src/x..y.ts': '1', 'a/b/c.txt': '2' } } }] }), NONE)
    expect(Object.keys(ok[0]?.sim?.write ?? {})).toEqual(['src/x..y.ts', 'a/b/c.txt'])
  })

  it('sim.until must be an absolute path, and is kept when it is', () => {
    const e = planError(() => parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', sim: { until: 'release' } }] }), NONE))
    problemMatching(e.problems, /sim\.until "release" must be an absolute path/)
    const ok = parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p', sim: { until: '/tmp/release' } }] }), NONE)
    expect(ok[0]?.sim?.until).toBe('/tmp/release')
  })

  it('rejects bad sim durations and non-positive timeouts', () => {
    const e = planError(() => parsePlan(JSON.stringify({
      tasks: [
        { id: 'a', prompt: 'p', sim: { duration: 'later' } },
        { id: 'b', prompt: 'p', timeout: '0s' },
        { id: 'c', prompt: 'p', timeout: '-5m' }
      ]
    }), NONE))
    problemMatching(e.problems, /"a"/, /later/)
    problemMatching(e.problems, /"b"/, /timeout/)
    problemMatching(e.problems, /"c"/, /timeout/)
  })

  it('rejects a dependency listed twice', () => {
    const e = planError(() => parsePlan(JSON.stringify({ tasks: [{ id: 'a', prompt: 'p' }, { id: 'b', prompt: 'p', deps: ['a', 'a'] }] }), NONE))
    problemMatching(e.problems, /"b"/, /twice/)
  })

  it('rejects ids that are too long or start with a separator', () => {
    for (const id of ['a'.repeat(65), '-a', '.a', '_a', 'A', 'a b', 'a/b']) {
      const e = planError(() => parsePlan(JSON.stringify({ tasks: [{ id, prompt: 'p' }] }), NONE))
      problemMatching(e.problems, /malformed id/)
    }
  })
})

describe('parsePlan without a board', () => {
  it("'unchecked' reports the file's own problems but leaves dependencies and taken ids to the check with the board", () => {
    const text = 'tasks:\n  - id: a\n    prompt: x\n    deps: [on-board]\n  - id: b\n    prompt: y\n    deps: [a]\n'
    expect(parsePlan(text, 'unchecked').map(t => t.id)).toEqual(['a', 'b'])
    expect(() => parsePlan(text, new Set())).toThrow(/unknown dependency "on-board"/)
    expect(() => parsePlan('tasks:\n  - id: a\n    prompt: x\n    deps: [a]\n', 'unchecked')).toThrow(/depends on itself/)
  })

  it('a file with problems says which dependencies outside it are left to the check with the board (not counted as problems)', () => {
    const e = planError(() => parsePlan('tasks:\n  - id: a\n    prompt: x\n    deps: [nonexist, b]\n  - id: b\n    prompt: ""\n', 'unchecked'))
    expect(e.problems).toEqual(['task "b": empty prompt'])
    expect(e.message).toContain('Not checked yet: "nonexist", not in this plan, must be on the board')
    expect(e.message).not.toContain('"b", not in this plan')
  })
})
