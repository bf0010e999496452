import type { ResolveAction } from '../api/tasks.ts'
import type { InboxItem } from './model.ts'

/**
 * Key handling of the TUI as a pure state machine: a key and the current UI
 * state give the next state and, at most, one effect (a `resolve`, `cancel` or
 * `retry` to send). Every effect goes through a y/n confirmation first.
 */

/** The screens, in tab order. */
export const VIEWS = ['tasks', 'nodes', 'inbox', 'output'] as const
export type ViewName = typeof VIEWS[number]

/** What a confirmed key does: exactly one call of src/api/tasks.ts. */
export type Effect =
  | { kind: 'resolve', conflictId: string, action: ResolveAction }
  | { kind: 'cancel', taskId: string }
  | { kind: 'retry', taskId: string }
  | { kind: 'approve', approvalId: string, allow: boolean }

/** The part of ink's `Key` the TUI reads. */
export interface KeyInfo {
  upArrow?: boolean
  downArrow?: boolean
  pageUp?: boolean
  pageDown?: boolean
  return?: boolean
  escape?: boolean
  tab?: boolean
  shift?: boolean
  ctrl?: boolean
  home?: boolean
  end?: boolean
  backspace?: boolean
  delete?: boolean
}

/** UI state that survives between frames. */
export interface UiState {
  view: ViewName
  /** Selected task, by id (rows move as states change). */
  taskId: string | null
  /** Selected inbox item, by key. */
  inboxKey: string | null
  /** Lines scrolled up from the bottom (output) or down from the top (inbox detail). */
  scroll: number
  /** An effect waiting for y/n: a short question (shown first, with y/n) and what it means. */
  pending: { effect: Effect, question: string, detail: string } | null
  /** The last outcome or hint shown above the keys. */
  message: { text: string, tone: 'info' | 'ok' | 'error' } | null
  /** The help screen (`?`) is open. */
  help: boolean
  /** Merged tasks are listed; `m` folds them away (and back). */
  showMerged: boolean
  /** The task filter (`/`): ids or titles containing it. */
  filter: string
  /** Keys go to the filter (after `/`, until Enter or Esc). */
  filtering: boolean
}

/** The start state: the task DAG, nothing selected yet. */
export function initialUiState (): UiState {
  return { view: 'tasks', taskId: null, inboxKey: null, scroll: 0, pending: null, message: null, help: false, showMerged: true, filter: '', filtering: false }
}

/** What the key handler needs to know about the current frame. */
export interface KeyContext {
  /** Task ids in the order the task view lists them. */
  taskIds: readonly string[]
  /** States of those tasks. */
  taskStates: ReadonlyMap<string, string>
  inbox: readonly InboxItem[]
}

/** The key of each `resolve` action (ours, theirs, rerun, agent, abandon). */
export const RESOLVE_KEYS: Readonly<Record<string, ResolveAction>> = { o: 'ours', t: 'theirs', r: 'rerun', a: 'agent', x: 'abandon' }

/** What each resolve action does, for the confirmation question (the words `meshwork resolve --help` uses). */
export const RESOLVE_MEANING: Readonly<Record<ResolveAction, string>> = {
  ours: 'keep main\'s side of every conflicted hunk, merge the rest',
  theirs: 'take the task\'s side of every conflicted hunk',
  rerun: 'discard the branch and run the task again on the current main',
  agent: 'ask an agent to resolve the conflicted merge',
  abandon: 'drop the task\'s changes; the task ends cancelled'
}

/** Keys of a permission request in the inbox: allow, deny. */
export const ALLOW_KEY = 'a'
export const DENY_KEY = 'd'

/** Lines moved by PgUp/PgDn (or `[`/`]`). @default 10 */
export const SCROLL_STEP = 10

/** Key of cancel and of retry in the task view and for failed inbox items. */
export const CANCEL_KEY = 'c'
export const RETRY_KEY = 'r'

/** States a task can be cancelled from (`cancelTask` refuses merged; cancelled is a no-op). */
const CANCELLABLE = new Set(['pending', 'ready', 'claimed', 'running', 'done', 'merging', 'conflict', 'failed'])
const RETRYABLE = new Set(['failed', 'cancelled'])

/** The selected task id, falling back to the first row. */
export function selectedTask (ui: UiState, ctx: KeyContext): string | null {
  if (ui.taskId !== null && ctx.taskIds.includes(ui.taskId)) return ui.taskId
  return ctx.taskIds[0] ?? null
}

/** The selected inbox item, falling back to the first. */
export function selectedInbox (ui: UiState, ctx: KeyContext): InboxItem | null {
  return ctx.inbox.find(i => i.key === ui.inboxKey) ?? ctx.inbox[0] ?? null
}

export interface KeyResult {
  state: UiState
  effect?: Effect
  quit?: boolean
}

function move<T> (list: readonly T[], current: T | null, delta: number): T | null {
  if (list.length === 0) return null
  const i = current === null ? -1 : list.indexOf(current)
  const next = i < 0 ? 0 : Math.min(list.length - 1, Math.max(0, i + delta))
  return list[next] ?? null
}

function ask (state: UiState, effect: Effect, question: string, detail: string): KeyResult {
  return { state: { ...state, pending: { effect, question, detail }, message: null } }
}

/** The confirmation question of a task action, or a refusal message when the task's state does not allow it. */
function taskAction (state: UiState, ctx: KeyContext, taskId: string | null, kind: 'cancel' | 'retry'): KeyResult {
  if (taskId === null) return { state: { ...state, message: { text: 'no task selected', tone: 'error' } } }
  const st = ctx.taskStates.get(taskId) ?? ''
  if (kind === 'cancel') {
    if (!CANCELLABLE.has(st)) return { state: { ...state, message: { text: `${taskId} is ${st}; it cannot be cancelled`, tone: 'error' } } }
    return ask(state, { kind: 'cancel', taskId }, `Cancel ${taskId}?`, `it is ${st}${st === 'running' ? '; its node stops the agent' : ''}`)
  }
  if (!RETRYABLE.has(st)) return { state: { ...state, message: { text: `${taskId} is ${st}; only failed or cancelled tasks can be retried`, tone: 'error' } } }
  return ask(state, { kind: 'retry', taskId }, `Retry ${taskId}?`, `it is ${st}; it goes back in line with its attempts reset`)
}

/**
 * Handles one key press. While a question is pending only `y` (send), `n` or
 * Escape (drop) and `q` are read, so a stray key never sends anything.
 */
export function handleKey (state: UiState, ctx: KeyContext, input: string, key: KeyInfo): KeyResult {
  if (key.ctrl === true && input === 'c') return { state, quit: true }
  if (state.pending !== null) {
    if (input === 'y' || input === 'Y') return { state: { ...state, pending: null, message: { text: 'sending…', tone: 'info' } }, effect: state.pending.effect }
    if (input === 'n' || input === 'N' || key.escape === true) return { state: { ...state, pending: null, message: { text: 'not sent', tone: 'info' } } }
    return { state }
  }
  if (state.help) {
    // any key closes the help screen; q still quits
    if (input === 'q') return { state, quit: true }
    return { state: { ...state, help: false } }
  }
  if (state.filtering) {
    if (key.return === true) return { state: { ...state, filtering: false } }
    if (key.escape === true) return { state: { ...state, filtering: false, filter: '' } }
    if (key.backspace === true || key.delete === true) return { state: { ...state, filter: state.filter.slice(0, -1) } }
    if (input !== '' && key.ctrl !== true && !/[\x00-\x1f]/.test(input)) return { state: { ...state, filter: state.filter + input } }
    return { state }
  }
  if (input === 'q') return { state, quit: true }
  if (input === '?') return { state: { ...state, help: true, message: null } }
  if (input === '/' && (state.view === 'tasks' || state.view === 'output')) return { state: { ...state, view: 'tasks', filtering: true, message: null } }
  if (input === 'm' && state.view === 'tasks') {
    return { state: { ...state, showMerged: !state.showMerged, message: { text: state.showMerged ? 'merged tasks folded away (m shows them)' : 'merged tasks shown (m folds them)', tone: 'info' } } }
  }
  const viewKey = ['1', '2', '3', '4'].indexOf(input)
  if (viewKey >= 0) return { state: { ...state, view: VIEWS[viewKey]!, scroll: 0, message: null } }
  if (key.tab === true) {
    const i = VIEWS.indexOf(state.view)
    const next = VIEWS[(i + (key.shift === true ? VIEWS.length - 1 : 1)) % VIEWS.length]!
    return { state: { ...state, view: next, scroll: 0, message: null } }
  }
  if (key.pageUp === true || key.pageDown === true || input === '[' || input === ']') {
    // output counts from the bottom (it follows the tail), the inbox detail from the top
    const towardsStart = key.pageUp === true || input === '['
    const delta = (towardsStart ? 1 : -1) * (state.view === 'output' ? 1 : -1) * SCROLL_STEP
    return { state: { ...state, scroll: Math.max(0, state.scroll + delta) } }
  }
  const up = key.upArrow === true || input === 'k'
  const down = key.downArrow === true || input === 'j'
  const last = key.end === true || input === 'G'
  const first = key.home === true || input === 'g'
  if ((last || first) && (state.view === 'tasks' || state.view === 'output')) {
    const id = (last ? ctx.taskIds[ctx.taskIds.length - 1] : ctx.taskIds[0]) ?? null
    return { state: { ...state, taskId: id, scroll: 0 } }
  }
  if ((last || first) && state.view === 'inbox') {
    const item = last ? ctx.inbox[ctx.inbox.length - 1] : ctx.inbox[0]
    return { state: { ...state, inboxKey: item?.key ?? null, scroll: 0 } }
  }
  switch (state.view) {
    case 'tasks':
    case 'output': {
      const current = selectedTask(state, ctx)
      if (up || down) return { state: { ...state, taskId: move(ctx.taskIds, current, up ? -1 : 1), scroll: 0 } }
      if (key.return === true && state.view === 'tasks') return { state: { ...state, taskId: current, view: 'output', scroll: 0 } }
      if (key.escape === true && state.view === 'output') return { state: { ...state, view: 'tasks', scroll: 0 } }
      if (input === CANCEL_KEY) return taskAction(state, ctx, current, 'cancel')
      if (input === RETRY_KEY) return taskAction(state, ctx, current, 'retry')
      return { state }
    }
    case 'inbox': {
      const item = selectedInbox(state, ctx)
      if (up || down) {
        const keys = ctx.inbox.map(i => i.key)
        return { state: { ...state, inboxKey: move(keys, item?.key ?? null, up ? -1 : 1), scroll: 0 } }
      }
      if (item === null) return { state }
      if (key.return === true) return { state: { ...state, taskId: item.taskId, view: 'output', scroll: 0 } }
      if (item.approval !== undefined) {
        const a = item.approval
        if (input === ALLOW_KEY) return ask(state, { kind: 'approve', approvalId: a.id, allow: true }, `Allow ${a.tool} for ${item.taskId}?`, `request ${a.id}: ${item.summary}`)
        if (input === DENY_KEY) return ask(state, { kind: 'approve', approvalId: a.id, allow: false }, `Deny ${a.tool} for ${item.taskId}?`, `request ${a.id}: the agent is told and goes on without it`)
        return { state }
      }
      if (item.conflictId !== null) {
        const action = RESOLVE_KEYS[input]
        if (action === undefined) return { state }
        return ask(state, { kind: 'resolve', conflictId: item.conflictId, action }, `Resolve ${item.conflictId} with "${action}"?`, RESOLVE_MEANING[action])
      }
      if (input === CANCEL_KEY) return taskAction(state, ctx, item.taskId, 'cancel')
      if (input === RETRY_KEY) return taskAction(state, ctx, item.taskId, 'retry')
      return { state }
    }
    case 'nodes':
      return { state }
    default: {
      const never: never = state.view
      throw new Error(`unknown view ${String(never)}`)
    }
  }
}

/** The keys shown on screen for the current view and selection: [key, meaning] pairs. */
export function keyHelp (state: UiState, ctx: KeyContext): Array<[string, string]> {
  if (state.pending !== null) return [['y', 'send'], ['n/Esc', 'do not send']]
  if (state.help) return [['any key', 'close help'], ['q', 'quit']]
  if (state.filtering) return [['type', 'filter'], ['Enter', 'keep'], ['Esc', 'clear']]
  const common: Array<[string, string]> = [['1-4/Tab', 'views'], ['?', 'help'], ['q', 'quit']]
  switch (state.view) {
    case 'tasks':
      return [['↑↓', 'select'], ['Enter', 'output'], [CANCEL_KEY, 'cancel'], [RETRY_KEY, 'retry'], ['/', 'filter'], ['m', state.showMerged ? 'fold merged' : 'show merged'], ...common]
    case 'output':
      return [['↑↓', 'task'], ['PgUp/PgDn', 'scroll'], [CANCEL_KEY, 'cancel'], [RETRY_KEY, 'retry'], ['Esc', 'tasks'], ...common]
    case 'nodes':
      return common
    case 'inbox': {
      const item = selectedInbox(state, ctx)
      if (item === null) return common
      const nav: Array<[string, string]> = [['↑↓', 'select'], ['PgUp/PgDn', 'scroll']]
      if (item.approval !== undefined) return [[ALLOW_KEY, 'allow'], [DENY_KEY, 'deny'], ['Enter', 'output'], ...nav, ...common]
      if (item.conflictId !== null) return [...Object.entries(RESOLVE_KEYS).map(([k, a]): [string, string] => [k, a]), ...nav, ...common]
      return [[RETRY_KEY, 'retry'], [CANCEL_KEY, 'cancel'], ...nav, ...common]
    }
    default: {
      const never: never = state.view
      throw new Error(`unknown view ${String(never)}`)
    }
  }
}

/** The help screen: every key of every view. */
export function helpLines (): Array<[string, string]> {
  return [
    ['1 2 3 4, Tab', 'views: tasks, nodes, inbox, output'],
    ['↑↓ or j k', 'select a task or an inbox item'],
    ['g / Home, G / End', 'first / last row'],
    ['Enter', 'a task\'s live agent output (from tasks or the inbox)'],
    ['PgUp PgDn or [ ]', 'scroll the output or the inbox detail'],
    ['/', 'filter tasks by id or title (Enter keeps it, Esc clears it)'],
    ['m', 'fold merged tasks away, or show them again'],
    [ALLOW_KEY, 'inbox, on a permission request: allow it (the run\'s tool goes ahead)'],
    [DENY_KEY, 'inbox, on a permission request: deny it (the agent is told and goes on)'],
    ...Object.entries(RESOLVE_KEYS).map(([k, a]): [string, string] => [k, `inbox, on a conflict: ${a}: ${RESOLVE_MEANING[a]}`]),
    [CANCEL_KEY, 'cancel the task (tasks, output, a failed inbox item)'],
    [RETRY_KEY, 'retry a failed or cancelled task'],
    ['y / n', 'every action asks first: y sends it, n or Esc drops it'],
    ['Esc', 'back to tasks from the output'],
    ['?', 'this help'],
    ['q or Ctrl-C', 'quit']
  ]
}
