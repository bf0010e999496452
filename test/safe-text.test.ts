/** Control characters written by peers and agents never reach the terminal: status, the plain TUI and the TUI. */
import { describe, it, expect, afterEach } from 'vitest'
import React from 'react'
import { render, cleanup } from 'ink-testing-library'
import { safeText, REPLACEMENT } from '../src/util/text.ts'
import { renderStatus } from '../src/cli/render.ts'
import { renderPlain } from '../src/tui/plain.ts'
import { App, type TuiActions, type TuiSource } from '../src/tui/app.ts'
import type { TuiData } from '../src/tui/model.ts'
import { waitFor } from '../src/util/wait.ts'
import { conflict, fixtureData, task, PEER_A } from './helpers/tui.ts'

afterEach(() => { cleanup() })

const OSC_TITLE = '\u001b]0;pwned\u0007'
const CLEAR = '\u001b[2J\u001b[H'
const C1_CSI = '\u009b31m'

/** Fixture data with escapes in a node name, a task error, a conflict file name and an agent's output. */
function poisoned (): TuiData {
  const data = fixtureData({
    extraTasks: [task('evil', { state: 'failed', attempts: 1, error: `${CLEAR}boom${OSC_TITLE}\nsecond line\u0000` })],
    conflicts: [conflict('right-1', 'right', { files: [`config/${C1_CSI}server.json`] })],
    progress: new Map([['api', [{ kind: 'info', text: `agent says ${CLEAR}hi${OSC_TITLE}`, at: 0 }]]])
  })
  data.status.nodes[0]!.name = `alpha${OSC_TITLE}`
  return data
}

/** Whether `s` holds anything that drives a terminal beyond colours (ink's SGR `ESC [ n m` is allowed where noted). */
function drivesTerminal (s: string, allowSgr: boolean): boolean {
  const rest = allowSgr ? s.replace(/\u001b\[[0-9;]*m/g, '') : s
  return /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(rest)
}

describe('safeText', () => {
  it('replaces every control character one for one; tabs and newlines become spaces unless kept', () => {
    expect(safeText('a\u001b[31mb')).toBe(`a${REPLACEMENT}[31mb`)
    expect(safeText(`x${OSC_TITLE}y`)).toBe(`x${REPLACEMENT}]0;pwned${REPLACEMENT}y`)
    expect(safeText('a\u009bb\u007fc\u0000d')).toBe(`a${REPLACEMENT}b${REPLACEMENT}c${REPLACEMENT}d`)
    expect(safeText('a\tb\nc')).toBe('a b c')
    expect(safeText('a\tb\nc\rd', { newlines: true })).toBe(`a\tb\nc${REPLACEMENT}d`)
    expect(safeText('ünïcödé → ok')).toBe('ünïcödé → ok')
    const s = 'x\u001b\u0007\u009by'
    expect(safeText(s).length).toBe(s.length)
  })
})

describe('printing what peers wrote', () => {
  it('status and the plain TUI print no control character from names, errors or file names', () => {
    const data = poisoned()
    const text = renderStatus(data.status, PEER_A)
    expect(drivesTerminal(text, false), JSON.stringify(text)).toBe(false)
    expect(text).toContain(`alpha${REPLACEMENT}]0;pwned${REPLACEMENT}`)
    expect(text).toContain(`config/${REPLACEMENT}31mserver.json`)
    const plain = renderPlain(data.status, PEER_A)
    expect(drivesTerminal(plain, false), JSON.stringify(plain)).toBe(false)
    expect(plain).toMatch(/FAILED evil: .*boom/)
  })

  it('the TUI draws no control character from task errors, node names or agent output (only its own colours)', async () => {
    const data = poisoned()
    const source: TuiSource = { current: () => data, subscribe: () => () => {} }
    const actions: TuiActions = { resolve: async () => {}, cancel: async () => 'running', retry: async () => {} }
    const r = render(React.createElement(App, { source, actions, width: 120, height: 40 }))
    const frame = await waitFor(() => { const f = r.lastFrame() ?? ''; return f.includes('evil') ? f : null }, { timeoutMs: 5000, message: () => r.lastFrame() ?? '' })
    expect(drivesTerminal(frame, true), JSON.stringify(frame)).toBe(false)
    expect(frame).toContain(REPLACEMENT)
  })
})
