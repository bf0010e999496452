import React from 'react'
import { Box, Text, useApp, useInput, useStdout } from 'ink'
import type { ResolveAction } from '../api/tasks.ts'
import { toError } from '../util/errors.ts'
import { handleKey, helpLines, initialUiState, keyHelp, selectedInbox, selectedTask, type Effect, type KeyContext, type KeyInfo, type UiState } from './keys.ts'
import { fitLine, seg, type Line } from './lines.ts'
import { inbox, newInboxKeys, taskRows, totals, type TuiData } from './model.ts'
import { headerLines } from './views/header.ts'
import { inboxLines } from './views/inbox.ts'
import { nodeLines } from './views/nodes.ts'
import { outputLines } from './views/output.ts'
import { taskLines } from './views/tasks.ts'
import { safeText } from '../util/text.ts'

const h = React.createElement

/** Where the app reads its data: the latest frame data and change notifications (already throttled). */
export interface TuiSource {
  /** The latest data, or null before the first sync. Must return the same object until it changes. */
  current: () => TuiData | null
  /** Calls `listener` after each change; returns the unsubscribe function. */
  subscribe: (listener: () => void) => () => void
}

/** What the keys do: the same calls as `meshwork resolve`, `cancel` and `retry` (src/api/tasks.ts). */
export interface TuiActions {
  resolve: (conflictId: string, action: ResolveAction) => Promise<void>
  /** Resolves with the state the task had. */
  cancel: (taskId: string) => Promise<string>
  retry: (taskId: string) => Promise<void>
  /** Answers a permission request (`meshwork approve`); absent: the TUI cannot answer them. */
  approve?: (approvalId: string, allow: boolean) => Promise<void>
}

export interface AppProps {
  source: TuiSource
  actions: TuiActions
  /** Rings the terminal bell; absent with --no-bell. Called when a new item reaches the inbox. */
  bell?: () => void
  /** Screen size overrides (tests); the terminal's size otherwise. */
  width?: number
  height?: number
}

/** The smallest screen the layout is made for. */
export const MIN_WIDTH = 80
export const MIN_HEIGHT = 24

/** Lines above the view (header, totals, tabs). */
const HEADER_LINES = 3
/** Lines for the keys at most (below them: nothing; above them: the question or last outcome). */
const MAX_KEY_LINES = 2

/** Runs a confirmed effect through the actions and describes the outcome. */
export async function runEffect (actions: TuiActions, effect: Effect): Promise<{ text: string, tone: 'ok' | 'error' }> {
  try {
    switch (effect.kind) {
      case 'resolve':
        await actions.resolve(effect.conflictId, effect.action)
        return { text: `${effect.conflictId}: decision "${effect.action}" recorded; the merge leader carries it out`, tone: 'ok' }
      case 'cancel': {
        const was = await actions.cancel(effect.taskId)
        return { text: was === 'cancelled' ? `${effect.taskId} was already cancelled` : `${effect.taskId} cancelled (was ${was})`, tone: 'ok' }
      }
      case 'retry':
        await actions.retry(effect.taskId)
        return { text: `${effect.taskId} queued again`, tone: 'ok' }
      case 'approve':
        if (actions.approve === undefined) return { text: 'this TUI cannot answer permission requests; use `meshwork approve`', tone: 'error' }
        await actions.approve(effect.approvalId, effect.allow)
        return { text: `${effect.approvalId}: ${effect.allow ? 'allowed' : 'denied'}; the run goes on`, tone: 'ok' }
      default: {
        const never: never = effect
        throw new Error(`unknown effect ${JSON.stringify(never)}`)
      }
    }
  } catch (err) {
    return { text: toError(err).message, tone: 'error' }
  }
}

/** The keys line(s): `key meaning` pairs, wrapped onto as few lines as fit, at most `lines`. */
export function keyLines (pairs: ReadonlyArray<[string, string]>, width: number, lines: number): Line[] {
  const out: Line[] = [[]]
  let used = 0
  for (const [k, what] of pairs) {
    const len = k.length + what.length + 3
    if (used > 0 && used + len > width) {
      if (out.length === lines) break
      out.push([])
      used = 0
    }
    out[out.length - 1]!.push(seg(k, { bold: true, color: 'cyan' }), seg(` ${what}  `))
    used += len
  }
  return out
}

function lineElement (line: Line, width: number, key: number): React.ReactElement {
  const parts = fitLine(line, width)
  return h(Text, { key, wrap: 'truncate-end' }, parts.length === 0
    ? ' '
    : parts.map((s, i) => h(Text, {
      key: i,
      ...(s.color !== undefined ? { color: s.color } : {}),
      ...(s.bold === true ? { bold: true } : {}),
      ...(s.dim === true ? { dimColor: true } : {}),
      ...(s.inverse === true ? { inverse: true } : {})
    }, safeText(s.text))))
}

/** The lines of one frame: exactly `height` lines of at most `width` columns. */
export function frameLines (data: TuiData | null, ui: UiState, ctx: KeyContext, width: number, height: number): Line[] {
  if (data === null) {
    const out: Line[] = [[seg('meshwork tui', { bold: true }), seg(' connecting to the mesh…')]]
    while (out.length < height) out.push([])
    return out
  }
  const items = ctx.inbox
  const t = totals(data)
  const keys = keyLines(keyHelp(ui, ctx), width, MAX_KEY_LINES)
  const bodyHeight = Math.max(1, height - HEADER_LINES - 1 - keys.length)
  let body: Line[]
  if (ui.help) {
    const rows = helpLines()
    const w = Math.max(...rows.map(r => r[0].length)) + 2
    body = [[seg('Keys', { bold: true })], ...rows.map(([k, what]): Line => [seg(k.padEnd(w), { bold: true, color: 'cyan' }), seg(what)])]
    while (body.length < bodyHeight) body.push([])
    body = body.slice(0, bodyHeight)
  } else switch (ui.view) {
    case 'tasks': body = taskLines(data, selectedTask(ui, ctx), width, bodyHeight, { showMerged: ui.showMerged, filter: ui.filter, filtering: ui.filtering }); break
    case 'nodes': body = nodeLines(data, width, bodyHeight); break
    case 'inbox': body = inboxLines(data, items, selectedInbox(ui, ctx)?.key ?? null, ui.scroll, width, bodyHeight); break
    case 'output': body = outputLines(data, selectedTask(ui, ctx), ui.scroll, width, bodyHeight); break
    default: {
      const never: never = ui.view
      throw new Error(`unknown view ${String(never)}`)
    }
  }
  const ask: Line = ui.pending !== null
    ? [seg(` ${ui.pending.question} [y/n] `, { color: 'yellow', inverse: true, bold: true }), seg(` ${ui.pending.detail}`, { color: 'yellow' })]
    : ui.message !== null
      ? [seg(ui.message.text, { color: ui.message.tone === 'error' ? 'red' : ui.message.tone === 'ok' ? 'green' : 'white' })]
      : []
  const selected = selectedTask(ui, ctx)
  const frame = [...headerLines(data, t, items, { ...ui, taskId: selected }, width), ...body, ask, ...keys]
  return frame.slice(0, height)
}

/**
 * One input event as single key presses: a terminal may deliver several typed
 * characters in one read ("1j\r"); special keys (arrows, Escape) come alone.
 */
export function splitKeys (input: string, key: KeyInfo): Array<[string, KeyInfo]> {
  const chars = [...input]
  if (chars.length <= 1 || key.ctrl === true || key.escape === true) return [[input, key]]
  return chars.map((c): [string, KeyInfo] => c === '\r' || c === '\n' ? ['', { return: true }] : c === '\t' ? ['', { tab: true }] : [c, {}])
}

/** The key context of a frame: task order and states, the inbox. */
export function keyContext (data: TuiData | null, rows?: { showMerged: boolean, filter: string }): KeyContext {
  if (data === null) return { taskIds: [], taskStates: new Map(), inbox: [] }
  return { taskIds: taskRows(data, rows).map(r => r.id), taskStates: new Map(data.status.tasks.map(t => [t.id, t.state])), inbox: inbox(data.status) }
}

/**
 * The TUI: header with the inbox count and totals, one of four views (task DAG,
 * nodes, inbox, one task's output), the pending question or last outcome, and
 * the keys of the current view. Every action asks y/n first.
 */
export function App (props: AppProps): React.ReactElement {
  const { exit } = useApp()
  const stdout = useStdout().stdout as NodeJS.WriteStream
  const data = React.useSyncExternalStore(props.source.subscribe, props.source.current)
  const [ui, setUi] = React.useState<UiState>(initialUiState)
  const [size, setSize] = React.useState({ columns: stdout.columns, rows: stdout.rows })
  const seen = React.useRef<Set<string> | null>(null)
  const ctx = React.useMemo(() => keyContext(data, { showMerged: ui.showMerged, filter: ui.filter }), [data, ui.showMerged, ui.filter])

  React.useEffect(() => {
    const onResize = (): void => { setSize({ columns: stdout.columns, rows: stdout.rows }) }
    stdout.on('resize', onResize)
    return () => { stdout.off('resize', onResize) }
  }, [stdout])

  // the bell rings once per item that was not waiting in the previous frame (never for what was there at start)
  React.useEffect(() => {
    if (data === null) return
    const fresh = seen.current === null ? [] : newInboxKeys(seen.current, ctx.inbox)
    seen.current = new Set(ctx.inbox.map(i => i.key))
    if (fresh.length > 0) props.bell?.()
  }, [ctx, data, props.bell])

  // the latest state, read synchronously: several keys can arrive before React renders again
  const uiRef = React.useRef(ui)
  uiRef.current = ui
  useInput((input, key) => {
    for (const [ch, k] of splitKeys(input, key)) {
      const r = handleKey(uiRef.current, ctx, ch, k)
      uiRef.current = r.state
      setUi(r.state)
      if (r.quit === true) { exit(); return }
      if (r.effect !== undefined) {
        void runEffect(props.actions, r.effect).then(message => { setUi(s => ({ ...s, message })) })
      }
    }
  })

  const width = Math.max(20, props.width ?? size.columns ?? MIN_WIDTH)
  const height = Math.max(8, props.height ?? size.rows ?? MIN_HEIGHT)
  const lines = frameLines(data, ui, ctx, width, height)
  return h(Box, { flexDirection: 'column', width, height }, ...lines.map((l, i) => lineElement(l, width, i)))
}
