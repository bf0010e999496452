import { describe, it, expect } from 'vitest'
import { NodeHealth, HEALTH_OK, MAX_REASON_CHARS } from '../src/node/health.ts'

describe('node health', () => {
  it('pauses with a reason and an end, allows a trial run after it, and doubles the pause on repeats', () => {
    const h = new NodeHealth({ baseMs: 1000, maxMs: 3000 })
    const events: string[] = []
    h.addEventListener('change', e => { events.push((e as CustomEvent<{ state: string }>).detail.state) })
    expect(h.state).toEqual(HEALTH_OK)
    expect(h.mayRun(0)).toBe(true)
    expect(h.pauseWithBackoff('key refused', 'credentials', 10_000)).toBe(11_000)
    expect(h.state).toEqual({ state: 'paused', reason: 'key refused', until: 11_000, cause: 'credentials' })
    expect(h.mayRun(10_999)).toBe(false)
    expect(h.mayRun(11_000)).toBe(true)
    expect(h.pauseWithBackoff('key refused', 'credentials', 20_000)).toBe(22_000)
    expect(h.pauseWithBackoff('key refused', 'credentials', 30_000)).toBe(33_000) // capped at maxMs
    // another cause's clear does not end this pause
    h.clear('disk')
    expect(h.paused).toBe(true)
    h.clear('credentials')
    expect(h.state).toEqual(HEALTH_OK)
    // the streak starts over after a clear
    expect(h.pauseWithBackoff('key refused', 'credentials', 40_000)).toBe(41_000)
    expect(events).toEqual(['paused', 'paused', 'paused', 'ok', 'paused'])
  })

  it('a pause without an end holds until cleared (e.g. a full disk); a long reason is clipped for heartbeats', () => {
    const h = new NodeHealth()
    h.setPaused('x'.repeat(1000), null)
    expect(h.state.reason!.length).toBe(MAX_REASON_CHARS)
    h.setPaused('disk full', null, 'disk')
    expect(h.mayRun(Number.MAX_SAFE_INTEGER)).toBe(false)
    h.clear()
    expect(h.mayRun()).toBe(true)
  })
})

describe('a paused node in status and the TUI', () => {
  it('status text prints a health line; the TUI nodes view shows it paused with its reason', async () => {
    const { buildStatus } = await import('../src/api/status.ts')
    const { tuiData, nodeRows } = await import('../src/tui/model.ts')
    const { nodeLines } = await import('../src/tui/views/nodes.ts')
    const { lineText } = await import('../src/tui/lines.ts')
    const { renderStatus } = await import('../src/cli/render.ts')
    const { membersView, snapshot, NOW, PEER_A, PEER_B } = await import('./helpers/tui.ts')
    const view = membersView()
    const until = Date.now() + 60_000
    view.members.find(m => m.peerId === PEER_B)!.health = { state: 'paused', reason: 'claude could not use its credentials: HTTP 401', until }
    const snap = snapshot([], [])
    const status = buildStatus(snap, view)
    expect(status.nodes.find(n => n.peerId === PEER_B)!.health).toEqual({ state: 'paused', reason: 'claude could not use its credentials: HTTP 401', until })
    expect(status.nodes.find(n => n.peerId === PEER_A)!.health).toEqual(HEALTH_OK)
    const text = renderStatus(status, PEER_A)
    expect(text).toMatch(/^ {2}beta: PAUSED \(tries again in (59|60)s\): claude could not use its credentials: HTTP 401$/m)
    expect(text).not.toMatch(/alpha: PAUSED/)
    const data = tuiData(status, snap, view, new Map(), PEER_A, NOW)
    const rows = nodeRows(data)
    expect(rows.find(r => r.name === 'beta')!.paused).toBe('claude could not use its credentials: HTTP 401')
    expect(rows.find(r => r.name === 'alpha')!.paused).toBeNull()
    const lines = nodeLines(data, 140, 6).map(lineText)
    expect(lines[0]).toContain('beta paused')
    expect(lines[0]).toContain('claude could not use its credentials: HTTP 401')
    expect(lines.find(l => l.startsWith('beta'))).toMatch(/^beta\s+paused\s/)
  })
})

describe('a pause that ends by itself', () => {
  it('a usage limit\'s pause is over at its reset time, without a trial run', () => {
    const h = new NodeHealth()
    const until = Date.now() + 50
    h.setPaused('usage limit reached', until, 'usage-limit', true)
    expect(h.paused).toBe(true)
    expect(h.mayRun(until - 1)).toBe(false)
    expect(h.mayRun(until)).toBe(true)
    expect(h.state).toEqual(HEALTH_OK)
  })
})
