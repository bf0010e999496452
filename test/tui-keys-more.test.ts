import { describe, it, expect } from 'vitest'
import { buildStatus } from '../src/api/status.ts'
import type { TaskId } from '../src/crdt/schema.ts'
import { blockedTasks, inbox, oursFrom, taskRows, totals, tuiData } from '../src/tui/model.ts'
import { hunkLines } from '../src/tui/views/inbox.ts'
import { handleKey, helpLines, initialUiState, keyHelp, type KeyContext, type KeyInfo, type UiState } from '../src/tui/keys.ts'
import { frameLines, keyContext } from '../src/tui/app.ts'
import { lineText } from '../src/tui/lines.ts'
import { headerLines } from '../src/tui/views/header.ts'
import { nodeLines } from '../src/tui/views/nodes.ts'
import { conflict, fixtureData, membersView, NOW, PEER_A, snapshot, task } from './helpers/tui.ts'

const sim = (ms: number): { durationMs: number, write: Record<string, string>, append: Record<string, string>, fail: number } => ({ durationMs: ms, write: {}, append: {}, fail: 0 })

function press (state: UiState, ctx: KeyContext, ...keys: Array<string | KeyInfo>): UiState {
  let s = state
  for (const k of keys) s = handleKey(s, ctx, typeof k === 'string' ? k : '', typeof k === 'string' ? {} : k).state
  return s
}

describe('tui: help, filter, fold, first/last', () => {
  const data = fixtureData()

  it('? opens a help screen listing every key; any key closes it', () => {
    const ctx = keyContext(data)
    const open = press(initialUiState(), ctx, '?')
    expect(open.help).toBe(true)
    const screen = frameLines(data, open, ctx, 100, 30).map(lineText).join('\n')
    for (const [k] of helpLines()) expect(screen).toContain(k)
    expect(screen).toContain('x   ')
    expect(keyHelp(open, ctx)).toEqual([['any key', 'close help'], ['q', 'quit']])
    expect(press(open, ctx, 'j').help).toBe(false)
    expect(keyHelp(initialUiState(), ctx).map(p => p[0])).toContain('?')
  })

  it('G / End select the last task, g / Home the first', () => {
    const ctx = keyContext(data)
    const ids = ctx.taskIds
    expect(press(initialUiState(), ctx, 'G').taskId).toBe(ids[ids.length - 1])
    expect(press(initialUiState(), ctx, { end: true }).taskId).toBe(ids[ids.length - 1])
    expect(press(initialUiState(), ctx, 'G', 'g').taskId).toBe(ids[0])
    expect(press(initialUiState(), ctx, 'G', { home: true }).taskId).toBe(ids[0])
  })

  it('/ filters the task list by id or title; Esc clears it; typed letters do not act as keys meanwhile', () => {
    const typing = press(initialUiState(), keyContext(data), '/', 'd', 'o')
    expect(typing.filtering).toBe(true)
    expect(typing.filter).toBe('do')
    expect(typing.view).toBe('tasks')
    const kept = press(typing, keyContext(data), { return: true })
    expect(kept.filtering).toBe(false)
    const ctx = keyContext(data, kept)
    expect(ctx.taskIds).toEqual(['docs'])
    const screen = frameLines(data, kept, ctx, 100, 24).map(lineText).join('\n')
    expect(screen).toContain('filter /do')
    expect(screen).not.toMatch(/\n[ *]+schema /)
    // q typed into the filter does not quit; backspace removes it
    const q = handleKey(press(initialUiState(), ctx, '/'), ctx, 'q', {})
    expect(q.quit).toBeUndefined()
    expect(q.state.filter).toBe('q')
    expect(press(q.state, ctx, { backspace: true }).filter).toBe('')
    expect(press(typing, ctx, { escape: true })).toMatchObject({ filter: '', filtering: false })
  })

  it('m folds merged rows away and says how many; m again shows them', () => {
    const folded = press(initialUiState(), keyContext(data), 'm')
    expect(folded.showMerged).toBe(false)
    const ctx = keyContext(data, folded)
    expect(ctx.taskIds).not.toContain('schema')
    const screen = frameLines(data, folded, ctx, 100, 24).map(lineText).join('\n')
    expect(screen).toContain('1 merged folded away (m shows them)')
    expect(press(folded, ctx, 'm').showMerged).toBe(true)
    expect(keyContext(data, press(folded, ctx, 'm')).taskIds).toContain('schema')
  })
})

describe('tui: ETA and the DAG', () => {
  it('the ETA leaves out a task blocked behind a failed one, and says it waits on you', () => {
    const tasks = [
      task('broken', { state: 'failed', attempts: 1, error: 'boom' }),
      task('after', { deps: ['broken' as TaskId], sim: sim(600_000) }),
      task('later', { deps: ['after' as TaskId], sim: sim(600_000) })
    ]
    const snap = snapshot(tasks)
    const data = tuiData(buildStatus(snap, membersView()), snap, membersView(), new Map(), PEER_A, NOW)
    expect([...blockedTasks(data.status.tasks)].sort()).toEqual(['after', 'later'])
    const t = totals(data)
    expect(t.remaining).toBe(0)
    expect(t.etaMs).toBeNull()
    expect(t.blocked).toBe(2)
    expect(lineText(headerLines(data, t, [], initialUiState(), 120)[1]!)).toMatch(/^waiting on 1 decision \(\+2 blocked until you act\)/)
  })

  it('a task with two dependencies is drawn once, marked as a join, naming both', () => {
    const tasks = [
      task('schema', { state: 'merged' }),
      task('red', { deps: ['schema' as TaskId] }),
      task('blue', { deps: ['schema' as TaskId] }),
      task('page', { deps: ['red' as TaskId, 'blue' as TaskId] })
    ]
    const snap = snapshot(tasks)
    const data = tuiData(buildStatus(snap, membersView()), snap, membersView(), new Map(), PEER_A, NOW)
    const rows = taskRows(data)
    expect(rows.filter(r => r.id === 'page')).toHaveLength(1)
    const page = rows.find(r => r.id === 'page')!
    expect(page.join).toBe(true)
    expect(page.note).toBe('joins red + blue')
    // after both of its dependencies
    expect(rows.map(r => r.id).indexOf('page')).toBeGreaterThan(Math.max(rows.map(r => r.id).indexOf('red'), rows.map(r => r.id).indexOf('blue')))
    const screen = frameLines(data, initialUiState(), keyContext(data), 100, 24).map(lineText).join('\n')
    expect(screen).toMatch(/⋈ page .*joins red \+ blue/)
  })

  it('a lost link shows in the header and the nodes view as not live', () => {
    const base = fixtureData()
    const data = { ...base, link: { lostSince: NOW - 4000, lostPeer: 'alpha', note: 'trying beta', lastOkAt: NOW - 4000 } }
    const head = headerLines(data, totals(data), [], initialUiState(), 160).map(lineText).join('\n')
    expect(head).toContain('LOST CONNECTION to alpha')
    expect(head).toContain('trying beta')
    expect(head).toContain('not live')
    expect(head).not.toContain('leader alpha')
    const nodes = nodeLines(data, 120, 10).map(lineText).join('\n')
    expect(nodes).toContain('liveness unknown')
    expect(nodes).not.toMatch(/ alive /)
    expect(nodes).not.toMatch(/ now /)
  })

  it('in a conflict, main\'s side names the task the merge leader recorded for that file; plain "ours: main" when it recorded none', () => {
    const tasks = [
      task('red', { state: 'merged', startedAt: NOW - 50_000, mergedAt: NOW - 20_000 }),
      task('other', { state: 'merged', startedAt: NOW - 50_000, mergedAt: NOW - 15_000 }),
      task('blue', { state: 'conflict', startedAt: NOW - 45_000, doneAt: NOW - 30_000 })
    ]
    const h = { file: 'color.txt', line: 1, before: '', ours: 'red\n', theirs: 'blue\n', after: '' }
    const snap = snapshot(tasks, [conflict('blue-1', 'blue', { files: ['color.txt', 'other.txt'], hunks: [h], oursFrom: { 'color.txt': 'red' as TaskId } })])
    const data = tuiData(buildStatus(snap, membersView()), snap, membersView(), new Map(), PEER_A, NOW)
    const item = inbox(data.status)[0]!
    expect(oursFrom(item, 'color.txt')).toBe('red')
    // a file the record names no task for: no guess (not "other", merged meanwhile too)
    expect(oursFrom(item, 'other.txt')).toBeNull()
    expect(oursFrom(item, 'toString')).toBeNull()
    expect(hunkLines(h, 'blue', 120, 'red').map(lineText).join('\n')).toMatch(/ours: main, from red +│ theirs: task blue/)
    expect(hunkLines(h, 'blue', 80, 'red').map(lineText).join('\n')).toContain('<<<<<<< ours: main, from red')
    expect(frameLines(data, { ...initialUiState(), view: 'inbox' }, keyContext(data), 120, 30).map(lineText).join('\n')).toMatch(/ours: main, from red +│ theirs: task blue/)
    // an older record without the field: plain "ours: main"
    const old = snapshot(tasks, [conflict('blue-1', 'blue', { files: ['color.txt'], hunks: [h] })])
    const oldData = tuiData(buildStatus(old, membersView()), old, membersView(), new Map(), PEER_A, NOW)
    expect(oursFrom(inbox(oldData.status)[0]!, 'color.txt')).toBeNull()
    const screen = frameLines(oldData, { ...initialUiState(), view: 'inbox' }, keyContext(oldData), 120, 30).map(lineText).join('\n')
    expect(screen).toMatch(/ours: main +│ theirs: task blue/)
    expect(screen).not.toContain('from red')
  })
})
