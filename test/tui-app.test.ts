import { describe, it, expect, afterEach, vi } from 'vitest'
import React from 'react'
import { render, cleanup } from 'ink-testing-library'
import { stripVTControlCharacters } from 'node:util'
import { App, keyLines, runEffect, splitKeys, type TuiActions, type TuiSource } from '../src/tui/app.ts'
import { inbox as inboxOf, type TuiData } from '../src/tui/model.ts'
import { hunkLines, inboxLines, SIDE_BY_SIDE_MIN_WIDTH } from '../src/tui/views/inbox.ts'
import { outputLines } from '../src/tui/views/output.ts'
import { lineText } from '../src/tui/lines.ts'
import { waitFor } from '../src/util/wait.ts'
import { conflict, fixtureData, task, PORT_HUNK } from './helpers/tui.ts'

/** A source whose data the test replaces. */
function fakeSource (first: TuiData | null): TuiSource & { push: (d: TuiData) => void } {
  let current = first
  const listeners = new Set<() => void>()
  return {
    current: () => current,
    subscribe: (l) => { listeners.add(l); return () => { listeners.delete(l) } },
    push: (d) => { current = d; for (const l of listeners) l() }
  }
}

function fakeActions (): TuiActions & { resolve: ReturnType<typeof vi.fn>, cancel: ReturnType<typeof vi.fn>, retry: ReturnType<typeof vi.fn> } {
  return {
    resolve: vi.fn(async () => {}),
    cancel: vi.fn(async () => 'running'),
    retry: vi.fn(async () => {})
  }
}

interface Mounted {
  frame: () => string
  lines: () => string[]
  press: (key: string) => void
  waitFor: (what: string | RegExp, message?: string) => Promise<string>
}

function mount (props: { source: TuiSource, actions?: TuiActions, bell?: () => void, width: number, height: number }): Mounted {
  const r = render(React.createElement(App, { actions: fakeActions(), ...props }))
  const frame = (): string => stripVTControlCharacters(r.lastFrame() ?? '')
  return {
    frame,
    lines: () => frame().split('\n'),
    press: (key) => { r.stdin.write(key) },
    waitFor: async (what, message) => await waitFor((): string | null => {
      const f = frame()
      return (typeof what === 'string' ? f.includes(what) : what.test(f)) ? f : null
    }, { timeoutMs: 5000, intervalMs: 10, message: () => `${message ?? `screen never showed ${String(what)}`}; last frame:\n${frame()}` })
  }
}

afterEach(() => { cleanup() })

const ESC = '\u001B'
const DOWN = `${ESC}[B`

describe('tui views (ink, fake terminal)', () => {
  it('at 80x24 the task DAG fills exactly the screen and no line is wider than it; the inbox count is in the header', async () => {
    const m = mount({ source: fakeSource(fixtureData()), width: 80, height: 24 })
    await m.waitFor('TASK')
    const lines = m.lines()
    expect(lines.length).toBe(24)
    for (const l of lines) expect(l.length, `too wide: "${l}"`).toBeLessThanOrEqual(80)
    expect(lines[0]).toContain('INBOX 2 waiting on you')
    expect(lines[1]).toMatch(/^ETA 16s {2}\$0\.17 {2}1\.5k tok {2}tasks 5/)
    // dependency order, indentation and the critical path marker
    const ids = lines.filter(l => / (schema|api|docs|flaky|right) /.test(l))
    expect(ids[0]).toMatch(/^ {2}schema +merged +alpha +#1 +10s +\$0\.12 +1\.5k/)
    expect(ids[1]).toMatch(/^\* {3}api +running +alpha +#1 +4s +\$0\.05 +0 Edit api\/users\.js/)
    expect(ids[2]).toMatch(/^\* {5}docs +pending/)
    expect(m.frame()).toContain('c cancel')
    expect(m.frame()).toContain('q quit')
  })

  it('the nodes view shows slots in use, load and the rate-limit back-off', async () => {
    const m = mount({ source: fakeSource(fixtureData()), width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('2')
    const f = await m.waitFor('BACKOFF')
    expect(f).toMatch(/alpha +alive +1\/2 +0\.25 +- +now +api/)
    expect(f).toMatch(/beta +alive +0\/1 +1\.50 +1m30s/)
    expect(f).toContain('1 backing off from a rate limit')
  })

  it('the output view follows one task\'s agent output', async () => {
    const m = mount({ source: fakeSource(fixtureData()), width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press(DOWN)
    await m.waitFor('Output: api')
    m.press('\r')
    const f = await m.waitFor('agent output')
    expect(f).toMatch(/api running on alpha {2}attempt 1 {2}4s/)
    expect(f).toMatch(/\d\d:\d\d:\d\d info sim: working for 10000 ms/)
    expect(f).toMatch(/\d\d:\d\d:\d\d tool Edit api\/users\.js/)
    expect(f).toContain('prompt Prompt of api')
  })

  it('the inbox shows a conflict\'s prompt, files and both sides of each hunk, side by side at 120 columns', async () => {
    const m = mount({ source: fakeSource(fixtureData({ hunks: [PORT_HUNK] })), width: 120, height: 40 })
    await m.waitFor('TASK')
    m.press('3')
    const f = await m.waitFor('config/server.json:3')
    const lines = f.split('\n')
    expect(lines.find(l => l.startsWith('> CONFLICT right-1'))).toContain('conflicts with main in config/server.json')
    expect(f).toContain('prompt  Prompt of right')
    const header = lines.find(l => l.includes('ours: main'))!
    expect(header).toContain('│ theirs: task right')
    const sides = lines.find(l => l.includes('"port": 9000'))!
    expect(sides).toMatch(/^- {3}"port": 9000, +│ \+ {3}"port": 8080,$/)
    // context before and after
    expect(lines.indexOf(lines.find(l => l.includes('"name": "app"'))!)).toBeLessThan(lines.indexOf(header))
    expect(lines.indexOf(lines.find(l => l.includes('"host": "0.0.0.0"'))!)).toBeGreaterThan(lines.indexOf(sides))
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(120)
  })

  it('at 80 columns the two sides are stacked with conflict markers', async () => {
    const m = mount({ source: fakeSource(fixtureData({ hunks: [PORT_HUNK] })), width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('3')
    const f = await m.waitFor('<<<<<<< ours: main')
    const lines = f.split('\n')
    const at = (s: string): number => lines.findIndex(l => l.includes(s))
    expect(at('<<<<<<< ours: main')).toBeLessThan(at('"port": 9000'))
    expect(at('"port": 9000')).toBeLessThan(at('======='))
    expect(at('=======')).toBeLessThan(at('"port": 8080'))
    expect(at('"port": 8080')).toBeLessThan(at('>>>>>>> theirs: task right'))
    expect(lines.some(l => l.includes('9000') && l.includes('8080'))).toBe(false)
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(80)
  })

  it('a conflict recorded without hunks shows its files', async () => {
    const m = mount({ source: fakeSource(fixtureData({ hunks: [] })), width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('3')
    const f = await m.waitFor('recorded no hunks')
    expect(f).toContain('files   config/server.json')
  })

  it('hunk layout switches at the documented width', () => {
    const side = hunkLines(PORT_HUNK, 'right', SIDE_BY_SIDE_MIN_WIDTH).map(lineText)
    const stacked = hunkLines(PORT_HUNK, 'right', SIDE_BY_SIDE_MIN_WIDTH - 1).map(lineText)
    expect(side.some(l => l.includes('9000') && l.includes('8080'))).toBe(true)
    expect(stacked.some(l => l.includes('9000') && l.includes('8080'))).toBe(false)
    expect(side.every(l => l.length <= SIDE_BY_SIDE_MIN_WIDTH)).toBe(true)
  })

  it('shows a connecting screen before the first data', async () => {
    const m = mount({ source: fakeSource(null), width: 80, height: 24 })
    await m.waitFor('connecting to the mesh')
    expect(m.lines().length).toBe(24)
  })
})

describe('tui keys (ink, fake terminal)', () => {
  it('t then y records "theirs" on the selected conflict through the resolve action, and says so', async () => {
    const actions = fakeActions()
    const m = mount({ source: fakeSource(fixtureData()), actions, width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('3')
    await m.waitFor('> CONFLICT right-1')
    m.press('t')
    const asking = await m.waitFor('Resolve right-1 with "theirs"? [y/n]')
    expect(asking).toContain('take the task\'s side of every')
    expect(actions.resolve).not.toHaveBeenCalled()
    m.press('y')
    await m.waitFor('right-1: decision "theirs" recorded')
    expect(actions.resolve).toHaveBeenCalledTimes(1)
    expect(actions.resolve).toHaveBeenCalledWith('right-1', 'theirs')
    expect(actions.cancel).not.toHaveBeenCalled()
  })

  it('n drops the question and nothing is sent', async () => {
    const actions = fakeActions()
    const m = mount({ source: fakeSource(fixtureData()), actions, width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('3')
    await m.waitFor('> CONFLICT right-1')
    m.press('o')
    await m.waitFor('with "ours"')
    m.press('n')
    await m.waitFor('not sent')
    expect(m.frame()).not.toContain('[y/n]')
    m.press('y')
    // a y after the question is gone sends nothing either
    await m.waitFor('o ours')
    expect(actions.resolve).not.toHaveBeenCalled()
  })

  it('each resolve key reaches the resolve action with its action', async () => {
    for (const [k, action] of [['o', 'ours'], ['r', 'rerun'], ['a', 'agent'], ['x', 'abandon']] as const) {
      const actions = fakeActions()
      const m = mount({ source: fakeSource(fixtureData()), actions, width: 80, height: 24 })
      await m.waitFor('TASK')
      m.press('3')
      await m.waitFor('> CONFLICT right-1')
      m.press(k)
      await m.waitFor(`with "${action}"`)
      m.press('y')
      await waitFor(() => actions.resolve.mock.calls.length > 0, { timeoutMs: 5000, message: `resolve not called for ${k}` })
      expect(actions.resolve).toHaveBeenCalledWith('right-1', action)
      cleanup()
    }
  })

  it('c then y cancels the selected task; r then y retries a failed one from the inbox', async () => {
    const actions = fakeActions()
    const m = mount({ source: fakeSource(fixtureData()), actions, width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press(DOWN)
    await m.waitFor('Output: api')
    m.press('c')
    expect(await m.waitFor('Cancel api? [y/n]')).toContain('it is running; its node stops the agent')
    m.press('y')
    await m.waitFor('api cancelled (was running)')
    expect(actions.cancel).toHaveBeenCalledWith('api')
    m.press('3')
    await m.waitFor('> CONFLICT right-1')
    m.press(DOWN)
    await m.waitFor('> FAILED   flaky')
    m.press('r')
    await m.waitFor('Retry flaky? [y/n]')
    m.press('y')
    await m.waitFor('flaky queued again')
    expect(actions.retry).toHaveBeenCalledWith('flaky')
    expect(actions.resolve).not.toHaveBeenCalled()
  })

  it('an action that fails shows its error', async () => {
    const actions = fakeActions()
    actions.resolve.mockRejectedValueOnce(new Error('conflict "right-1" is already resolved (theirs).'))
    const m = mount({ source: fakeSource(fixtureData()), actions, width: 80, height: 24 })
    await m.waitFor('TASK')
    m.press('3')
    await m.waitFor('> CONFLICT right-1')
    m.press('a')
    await m.waitFor('with "agent"')
    m.press('y')
    await m.waitFor('is already resolved (theirs)')
  })

  it('rings the bell once for a new inbox item, never for what waited at start', async () => {
    const bell = vi.fn()
    const source = fakeSource(fixtureData())
    const m = mount({ source, bell, width: 80, height: 24 })
    await m.waitFor('INBOX 2')
    expect(bell).not.toHaveBeenCalled()
    source.push(fixtureData({ conflicts: [conflict('right-1', 'right'), conflict('other-1', 'schema')] }))
    await m.waitFor('INBOX 3')
    await waitFor(() => bell.mock.calls.length === 1, { timeoutMs: 5000, message: 'bell did not ring' })
    source.push(fixtureData({ conflicts: [conflict('right-1', 'right'), conflict('other-1', 'schema')] }))
    await m.waitFor('INBOX 3')
    expect(bell).toHaveBeenCalledTimes(1)
  })

  it('splits keys typed in one read; keeps escape sequences whole', () => {
    expect(splitKeys('1j\r', {})).toEqual([['1', {}], ['j', {}], ['', { return: true }]])
    expect(splitKeys('t', {})).toEqual([['t', {}]])
    expect(splitKeys('', { downArrow: true })).toEqual([['', { downArrow: true }]])
  })

  it('wraps the keys onto a second line when the first is full', () => {
    const pairs: Array<[string, string]> = Array.from({ length: 12 }, (_, i) => [`k${i}`, 'meaning'])
    const lines = keyLines(pairs, 80, 2).map(lineText)
    expect(lines.length).toBe(2)
    for (const l of lines) expect(l.trimEnd().length).toBeLessThanOrEqual(80)
  })

  it('runEffect reports what each action did', async () => {
    const actions = fakeActions()
    expect(await runEffect(actions, { kind: 'cancel', taskId: 'x' })).toEqual({ text: 'x cancelled (was running)', tone: 'ok' })
    actions.retry.mockRejectedValueOnce(new Error('task "x" is running; only failed or cancelled tasks can be retried.'))
    expect(await runEffect(actions, { kind: 'retry', taskId: 'x' })).toEqual({ text: 'task "x" is running; only failed or cancelled tasks can be retried.', tone: 'error' })
  })
})

describe('tui scrolling (pure views)', () => {
  it('the output view follows the tail and PgUp scrolls back to earlier lines', () => {
    const lines = Array.from({ length: 50 }, (_, i) => ({ kind: 'text', text: `line ${i}`, at: 1_750_000_000_000 + i }))
    const data = fixtureData({ progress: new Map([['api', lines]]) })
    const tailView = outputLines(data, 'api', 0, 80, 12).map(lineText)
    expect(tailView.length).toBe(12)
    expect(tailView.at(-1)).toMatch(/line 49$/)
    expect(tailView.some(l => l.includes('earlier lines (PgUp)'))).toBe(true)
    const back = outputLines(data, 'api', 10, 80, 12).map(lineText)
    expect(back.at(-1)).toMatch(/line 39$/)
    expect(back.some(l => l.includes('10 lines below (PgDn)'))).toBe(true)
    // scrolling past the start stops at the first line
    const top = outputLines(data, 'api', 1000, 80, 12).map(lineText)
    expect(top.some(l => / line 0$/.test(l))).toBe(true)
  })

  it('the inbox detail scrolls down through many hunks and says how much is left', () => {
    const hunks = Array.from({ length: 6 }, (_, i) => ({ ...PORT_HUNK, line: 10 * i + 1, ours: `ours ${i}\n`, theirs: `theirs ${i}\n` }))
    const data = fixtureData({ hunks })
    const items = inboxOf(data.status)
    const first = inboxLines(data, items, null, 0, 80, 19).map(lineText)
    expect(first.length).toBe(19)
    expect(first.some(l => l.includes('ours 0'))).toBe(true)
    expect(first.some(l => l.includes('ours 5'))).toBe(false)
    expect(first.at(-1)).toMatch(/more lines \(PgDn\)/)
    const later = inboxLines(data, items, null, 1000, 80, 19).map(lineText)
    expect(later.some(l => l.includes('theirs 5'))).toBe(true)
  })

  it('the inbox detail shows what the agent said it did (the board summary), else its last line; a budget stop is a BUDGET item', async () => {
    const data = fixtureData({
      extraTasks: [
        task('port', { state: 'conflict', attempts: 1, summary: 'Moved the server to port 8080.\nUpdated the docs.' }),
        task('pricey', { state: 'failed', attempts: 1, error: 'claude stopped: per-run budget of $0.5 exceeded (spent $0.5500, exit code 0); not retried' })
      ],
      conflicts: [conflict('port-1', 'port', { hunks: [PORT_HUNK] }), conflict('right-1', 'right')]
    })
    const items = inboxOf(data.status)
    expect(data.status.tasks.find(t => t.id === 'port')!.summary).toBe('Moved the server to port 8080.\nUpdated the docs.')
    const portView = inboxLines(data, items, 'conflict:port-1', 0, 100, 30).map(lineText)
    expect(portView.some(l => /^summary Moved the server to port 8080\.$/.test(l))).toBe(true)
    expect(portView.some(l => /^ +Updated the docs\.$/.test(l))).toBe(true)
    // no summary on the board (the conflict of "right" has none): the latest line heard stands in, labelled as such
    const rightView = inboxLines(data, items, 'conflict:right-1', 0, 100, 30).map(lineText)
    expect(rightView.some(l => l.startsWith('summary '))).toBe(false)
    const budget = items.find(i => i.taskId === 'pricey')!
    expect(budget.kind).toBe('budget')
    expect(inboxLines(data, items, budget.key, 0, 100, 30).map(lineText).some(l => l.includes('BUDGET'))).toBe(true)
  })
})
