import { describe, it, expect } from 'vitest'
import { buildStatus } from '../src/api/status.ts'
import type { TaskId } from '../src/crdt/schema.ts'
import { appendProgress, criticalPath, fit, formatDuration, formatTokens, inbox, MAX_PROGRESS_LINES, newInboxKeys, nodeRows, observedRunMs, remainingWorkMs, taskRows, totals, tuiData, type ProgressLine } from '../src/tui/model.ts'
import { handleKey, initialUiState, keyHelp, type KeyContext, type UiState } from '../src/tui/keys.ts'
import { fitLine, lineText, row, seg, windowAround } from '../src/tui/lines.ts'
import { plainSignature, renderPlain } from '../src/tui/plain.ts'
import { fixtureData, membersView, NOW, PEER_A, snapshot, task, conflict } from './helpers/tui.ts'
import { headerLines } from '../src/tui/views/header.ts'

describe('tui model', () => {
  it('finds the critical path of the remaining work: the running task (rest of its estimate) then its dependent', () => {
    const cp = criticalPath(fixtureData())
    expect(cp.ids).toEqual(['api', 'docs'])
    expect(cp.ms).toBe(6000 + 10_000)
  })

  it('critical path picks the longer of two branches and is empty when nothing is left', () => {
    const tasks = [
      task('root', { state: 'merged' }),
      task('short', { deps: ['root' as TaskId], sim: { durationMs: 1000, write: {}, append: {}, fail: 0 } }),
      task('long1', { deps: ['root' as TaskId], sim: { durationMs: 5000, write: {}, append: {}, fail: 0 } }),
      task('long2', { deps: ['long1' as TaskId], sim: { durationMs: 5000, write: {}, append: {}, fail: 0 } })
    ]
    const snap = snapshot(tasks)
    const data = tuiData(buildStatus(snap, membersView()), snap, membersView(), new Map(), PEER_A, NOW)
    expect(criticalPath(data)).toEqual({ ids: ['long1', 'long2'], ms: 10_000 })
    const done = snapshot(tasks.map(t => ({ ...t, state: 'merged' as const })))
    expect(criticalPath(tuiData(buildStatus(done, null), done, null, new Map(), PEER_A, NOW))).toEqual({ ids: [], ms: 0 })
  })

  it('estimates work from the plan, else from the runs observed so far', () => {
    const data = fixtureData()
    // schema 10 s, right 10 s, flaky 1 s
    expect(observedRunMs(data.status.tasks)).toBe(7000)
    const noPlan = { ...data.status.tasks.find(t => t.id === 'docs')!, state: 'ready' as const }
    expect(remainingWorkMs(noPlan, { prompt: '', files: [], priority: 0, estimateMs: 60_000, estimated: false }, 7000, NOW)).toBe(7000)
    expect(remainingWorkMs(noPlan, { prompt: '', files: [], priority: 0, estimateMs: 2500, estimated: true }, 7000, NOW)).toBe(2500)
    expect(remainingWorkMs({ ...noPlan, state: 'merged' }, undefined, 7000, NOW)).toBe(0)
  })

  it('totals: tasks by state, cost, tokens, and an ETA no shorter than the critical path', () => {
    const t = totals(fixtureData())
    expect(t.total).toBe(5)
    expect(t.byState).toEqual([['running', 1], ['pending', 1], ['merged', 1], ['conflict', 1], ['failed', 1]])
    expect(t.costUsd).toBeCloseTo(0.17)
    expect(t.tokens).toBe(1500)
    expect(t.remaining).toBe(2)
    expect(t.waiting).toBe(2)
    // 16 s of work on 3 live slots is 5.3 s, but the chain api -> docs takes 16 s
    expect(t.etaMs).toBe(16_000)
  })

  it('the ETA spreads independent work over the live slots', () => {
    const tasks = ['a', 'b', 'c', 'd', 'e', 'f'].map(id => task(id, { sim: { durationMs: 9000, write: {}, append: {}, fail: 0 } }))
    const snap = snapshot(tasks)
    const t = totals(tuiData(buildStatus(snap, membersView()), snap, membersView(), new Map(), PEER_A, NOW))
    expect(t.etaMs).toBe(6 * 9000 / 3)
    const none = totals(tuiData(buildStatus(snap, null), snap, null, new Map(), PEER_A, NOW))
    expect(none.etaMs).toBeNull()
  })

  it('the inbox lists open conflicts, then failed tasks; a spent budget is its own kind; decided conflicts leave it', () => {
    const data = fixtureData({ extraTasks: [task('costly', { state: 'failed', error: 'per-run budget of $1 exceeded (spent $1.0200)' })] })
    const items = inbox(data.status)
    expect(items.map(i => [i.key, i.kind])).toEqual([['conflict:right-1', 'conflict'], ['failed:costly', 'budget'], ['failed:flaky', 'failed']])
    expect(items[0]!.summary).toBe('conflicts with main in config/server.json')
    expect(items[2]!.summary).toBe('sim: attempt 3 fails as configured (fail: 3)')
    const decided = fixtureData({ conflicts: [conflict('right-1', 'right', { decision: { action: 'theirs', by: 'me@host', at: NOW, note: '' } })] })
    expect(inbox(decided.status).map(i => i.key)).toEqual(['failed:flaky'])
    expect(newInboxKeys(new Set(['failed:flaky']), items)).toEqual(['conflict:right-1', 'failed:costly'])
    expect(newInboxKeys(new Set(items.map(i => i.key)), items)).toEqual([])
  })

  it('a decided conflict leaves the inbox, and its task\'s row says who decided what', () => {
    const decision = { action: 'theirs' as const, by: PEER_A, at: NOW, note: '' }
    const data = fixtureData({
      extraTasks: [task('settled', { state: 'merged' })],
      conflicts: [conflict('right-1', 'right', { decision }), conflict('settled-1', 'settled', { state: 'resolved', decision: { ...decision, action: 'ours' as const, by: 'peer-of-a-client-00000001' } })]
    })
    const rows = taskRows(data, { showMerged: true })
    expect(rows.find(r => r.id === 'right')?.note).toBe('decided "theirs" by alpha: the merge leader carries it out')
    expect(rows.find(r => r.id === 'settled')?.note).toBe('conflict settled-1 settled "ours" by …00000001')
    // undecided: the row keeps the conflict's error (the inbox asks the question)
    expect(taskRows(fixtureData()).find(r => r.id === 'right')?.note).toBe('merge conflict in config/server.json')
  })

  it('a decision that failed puts the conflict back in the inbox with the reason; a refused push of main shows in the header', () => {
    const data = fixtureData({ conflicts: [conflict('right-1', 'right', { error: '"agent" failed: conflict markers are left in config/server.json' })] })
    expect(inbox(data.status)[0]!.summary).toBe('conflicts with main in config/server.json; "agent" failed: conflict markers are left in config/server.json')
    const ui = initialUiState()
    const header = (d: typeof data): string => lineText(headerLines(d, totals(d), inbox(d.status), ui, 160)[0]!)
    expect(header(data)).not.toMatch(/push/)
    const rejected = { ...data, status: { ...data.status, main: { ...data.status.main, push: { remote: '/srv/app.git', head: 'abc', ok: false, at: NOW, error: 'refs/heads/main [rejected] (fetch first)', by: PEER_A } } } }
    expect(header(rejected)).toMatch(/push to \/srv\/app\.git rejected/)
  })

  it('task rows come in dependency order with depth, node names, elapsed time and the latest agent line', () => {
    const rows = taskRows(fixtureData())
    expect(rows.map(r => [r.id, r.depth, r.critical])).toEqual([['schema', 0, false], ['api', 1, true], ['docs', 2, true], ['flaky', 0, false], ['right', 0, false]])
    const api = rows.find(r => r.id === 'api')!
    expect(api.node).toBe('alpha')
    expect(api.elapsedMs).toBe(4000)
    expect(api.note).toBe('Edit api/users.js')
    expect(rows.find(r => r.id === 'schema')!.elapsedMs).toBe(10_000)
    expect(rows.find(r => r.id === 'flaky')!.note).toBe('sim: attempt 3 fails as configured (fail: 3)')
    expect(rows.find(r => r.id === 'docs')!.elapsedMs).toBeNull()
  })

  it('node rows carry slots in use, load and the rate-limit back-off left', () => {
    const rows = nodeRows(fixtureData())
    expect(rows.map(r => [r.name, r.state, r.used, r.slots])).toEqual([['alpha', 'alive', 1, 2], ['beta', 'alive', 0, 1]])
    expect(rows[1]!.backoffMs).toBe(90_000)
    expect(rows[1]!.load).toBe(1.5)
    expect(rows[0]!.backoffMs).toBe(0)
  })

  it('progress lines are appended once each, in order, bounded', () => {
    const log = new Map<string, ProgressLine[]>()
    expect(appendProgress(log, 't', { kind: 'info', text: 'a', at: 1 })).toBe(true)
    expect(appendProgress(log, 't', { kind: 'info', text: 'a', at: 1 })).toBe(false)
    expect(appendProgress(log, 't', { kind: 'info', text: 'old', at: 0 })).toBe(false)
    expect(appendProgress(log, 't', { kind: 'tool', text: 'b', at: 1 })).toBe(true)
    for (let i = 0; i < MAX_PROGRESS_LINES + 10; i++) appendProgress(log, 't', { kind: 'text', text: `l${i}`, at: 10 + i })
    expect(log.get('t')!.length).toBe(MAX_PROGRESS_LINES)
    expect(log.get('t')!.at(-1)!.text).toBe(`l${MAX_PROGRESS_LINES + 9}`)
  })

  it('formats durations, tokens and cuts', () => {
    expect(formatDuration(950)).toBe('950ms')
    expect(formatDuration(12_400)).toBe('12s')
    expect(formatDuration(185_000)).toBe('3m05s')
    expect(formatDuration(3_720_000)).toBe('1h02m')
    expect(formatTokens(812)).toBe('812')
    expect(formatTokens(12_345)).toBe('12.3k')
    expect(formatTokens(4_500_000)).toBe('4.5M')
    expect(fit('abcdef', 4)).toBe('abc…')
    expect(fit('abc', 4)).toBe('abc')
  })
})

describe('tui lines', () => {
  it('fits a styled line to a width, marking the cut, and pads when asked', () => {
    const l = [seg('abc', { color: 'red' }), seg('defgh')]
    expect(lineText(fitLine(l, 5))).toBe('abcd…')
    expect(lineText(fitLine(l, 10, true))).toBe('abcdefgh  ')
    expect(fitLine(l, 5)[0]!.color).toBe('red')
    expect(lineText(row([{ text: 'abcdef', width: 4 }, { text: '7', width: 3, align: 'right' }]))).toBe('abc…   7')
  })

  it('keeps the selection inside the window', () => {
    const items = Array.from({ length: 20 }, (_, i) => i)
    expect(windowAround(items, 0, 5)).toEqual({ items: [0, 1, 2, 3, 4], start: 0 })
    expect(windowAround(items, 10, 5).items).toContain(10)
    expect(windowAround(items, 19, 5)).toEqual({ items: [15, 16, 17, 18, 19], start: 15 })
  })
})

describe('tui keys', () => {
  const data = fixtureData()
  const ctx: KeyContext = { taskIds: taskRows(data).map(r => r.id), taskStates: new Map(data.status.tasks.map(t => [t.id, t.state])), inbox: inbox(data.status) }
  const press = (state: UiState, ...keys: string[]): ReturnType<typeof handleKey> => {
    let r: ReturnType<typeof handleKey> = { state }
    for (const k of keys) {
      const next = handleKey(r.state, ctx, k === 'ENTER' || k === 'ESC' || k === 'DOWN' ? '' : k, k === 'ENTER' ? { return: true } : k === 'ESC' ? { escape: true } : k === 'DOWN' ? { downArrow: true } : {})
      r = next
      if (next.effect !== undefined) return next
    }
    return r
  }

  it('every resolve action key asks first, then y sends exactly that decision', () => {
    for (const [k, action] of [['o', 'ours'], ['t', 'theirs'], ['r', 'rerun'], ['a', 'agent'], ['x', 'abandon']] as const) {
      const asked = press(initialUiState(), '3', k)
      expect(asked.effect).toBeUndefined()
      expect(asked.state.pending?.question).toContain(`"${action}"`)
      const sent = handleKey(asked.state, ctx, 'y', {})
      expect(sent.effect).toEqual({ kind: 'resolve', conflictId: 'right-1', action })
      expect(sent.state.pending).toBeNull()
    }
  })

  it('n or Escape drops the question; other keys while asking do nothing', () => {
    const asked = press(initialUiState(), '3', 't')
    const other = handleKey(asked.state, ctx, 'o', {})
    expect(other.effect).toBeUndefined()
    expect(other.state.pending).toEqual(asked.state.pending)
    for (const [input, key] of [['n', {}], ['', { escape: true }]] as const) {
      const r = handleKey(asked.state, ctx, input, key)
      expect(r.effect).toBeUndefined()
      expect(r.state.pending).toBeNull()
      expect(r.state.message?.text).toBe('not sent')
    }
  })

  it('cancel and retry act on the selected task, only where its state allows', () => {
    // the first row is schema (merged): cannot be cancelled or retried
    expect(press(initialUiState(), 'c').state.message?.tone).toBe('error')
    expect(press(initialUiState(), 'r').state.message?.text).toMatch(/only failed or cancelled/)
    // api (running) can be cancelled
    expect(press(initialUiState(), 'DOWN', 'c', 'y').effect).toEqual({ kind: 'cancel', taskId: 'api' })
    // flaky (failed) is retried from the inbox with r
    expect(press(initialUiState(), '3', 'DOWN', 'r', 'y').effect).toEqual({ kind: 'retry', taskId: 'flaky' })
  })

  it('Enter opens the selected task\'s output; q quits; the keys shown follow the selection', () => {
    const r = press(initialUiState(), 'DOWN', 'ENTER')
    expect(r.state.view).toBe('output')
    expect(r.state.taskId).toBe('api')
    expect(press(initialUiState(), 'q').quit).toBe(true)
    const inboxState = press(initialUiState(), '3').state
    expect(keyHelp(inboxState, ctx).map(p => p[0])).toEqual(expect.arrayContaining(['o', 't', 'r', 'a', 'x']))
    const failedState = press(initialUiState(), '3', 'DOWN').state
    expect(keyHelp(failedState, ctx).map(p => p[1])).toEqual(expect.arrayContaining(['retry', 'cancel']))
    expect(keyHelp(failedState, ctx).map(p => p[1])).not.toContain('theirs')
  })
})

describe('tui plain output', () => {
  it('prints the status and the inbox, and changes its signature only when something a reader cares about changed', () => {
    const data = fixtureData()
    const text = renderPlain(data.status, PEER_A)
    expect(text).toContain('TASKS 5')
    expect(text).toContain('INBOX 2 waiting on a human')
    expect(text).toContain('CONFLICT right-1 (task right): conflicts with main in config/server.json')
    expect(text).toContain('FAILED flaky: sim: attempt 3 fails as configured (fail: 3)')
    const later = { ...data.status, nodes: data.status.nodes.map(n => ({ ...n, lastSeenMs: (n.lastSeenMs ?? 0) + 900 })) }
    expect(plainSignature(later)).toBe(plainSignature(data.status))
    const moved = { ...data.status, tasks: data.status.tasks.map(t => t.id === 'docs' ? { ...t, state: 'ready' as const } : t) }
    expect(plainSignature(moved)).not.toBe(plainSignature(data.status))
  })
})
