import { fitLine, seg, textLines, windowAround, type Line } from '../lines.ts'
import { firstLine, formatCost, formatDuration, nodeName, oursFrom, type InboxItem, type TuiData } from '../model.ts'
import type { ConflictHunk } from '../../crdt/schema.ts'

/** Width from which a hunk's two sides are drawn next to each other. @default 100 */
export const SIDE_BY_SIDE_MIN_WIDTH = 100

/** Lines of a task's summary shown in the inbox detail. @default 4 */
const SUMMARY_LINES = 4

/** Inbox list lines at most (the rest of the height is the selected item). @default 5 */
const MAX_LIST_LINES = 5

const KIND_LABEL: Record<InboxItem['kind'], string> = { approval: 'APPROVE?', conflict: 'CONFLICT', failed: 'FAILED', budget: 'BUDGET' }

/**
 * One hunk as lines: context before, main's side (`ours`) and the task's side
 * (`theirs`) next to each other when `width` allows, stacked with conflict
 * markers otherwise, then context after.
 */
export function hunkLines (h: ConflictHunk, taskId: string, width: number, from: string | null = null): Line[] {
  // main's side names the task whose merge put it there, where the conflict record says
  const oursLabel = from === null ? 'ours: main' : `ours: main, from ${from}`
  const out: Line[] = [[seg(`${h.file}${h.line > 0 ? `:${h.line}` : ''}`, { bold: true, color: 'yellow' })]]
  const ctx = (text: string): Line[] => textLines(text).map(l => fitLine([seg('  ' + l, { dim: true })], width))
  out.push(...ctx(h.before))
  const ours = textLines(h.ours)
  const theirs = textLines(h.theirs)
  if (width >= SIDE_BY_SIDE_MIN_WIDTH) {
    const col = Math.floor((width - 3) / 2)
    const pair = (left: Line, right: Line): Line => [...fitLine(left, col, true), seg(' │ ', { dim: true }), ...fitLine(right, col)]
    out.push(pair([seg(oursLabel, { bold: true, color: 'blue' })], [seg(`theirs: task ${taskId}`, { bold: true, color: 'magenta' })]))
    const n = Math.max(ours.length, theirs.length, 1)
    for (let i = 0; i < n; i++) {
      const l = ours[i]
      const r = theirs[i]
      out.push(pair(l === undefined ? [seg(i === 0 ? '(nothing)' : '', { dim: true })] : [seg('- ' + l, { color: 'blue' })], r === undefined ? [seg(i === 0 ? '(nothing)' : '', { dim: true })] : [seg('+ ' + r, { color: 'magenta' })]))
    }
  } else {
    out.push([seg(`<<<<<<< ${oursLabel}`, { bold: true, color: 'blue' })])
    out.push(...ours.map(l => fitLine([seg('- ' + l, { color: 'blue' })], width)))
    out.push([seg('=======', { bold: true })])
    out.push(...theirs.map(l => fitLine([seg('+ ' + l, { color: 'magenta' })], width)))
    out.push([seg(`>>>>>>> theirs: task ${taskId}`, { bold: true, color: 'magenta' })])
  }
  out.push(...ctx(h.after))
  return out
}

/** Everything a human needs to decide on one inbox item, unbounded (the view scrolls it). */
export function itemDetail (data: TuiData, item: InboxItem, width: number): Line[] {
  const t = data.status.tasks.find(x => x.id === item.taskId)
  const d = data.tasks.get(item.taskId)
  const out: Line[] = []
  out.push([seg(`task ${item.taskId}`, { bold: true }), seg(item.title !== '' ? `: ${item.title}` : ''), seg(t === undefined ? '' : `  (attempt ${t.attempts} on ${nodeName(data.status, t.node)}, ${formatCost(t.costUsd)})`, { dim: true })])
  const prompt = textLines(d?.prompt ?? '')
  prompt.slice(0, 4).forEach((l, i) => { out.push(fitLine([seg(i === 0 ? 'prompt  ' : '        ', { dim: true }), seg(l)], width)) })
  if (prompt.length > 4) out.push([seg(`        … ${prompt.length - 4} more line${prompt.length - 4 === 1 ? '' : 's'}`, { dim: true })])
  // what the agent said it did (on the board once a run succeeded); else its latest line, as heard
  const summary = t?.summary !== null && t?.summary !== undefined && t.summary.trim() !== '' ? textLines(t.summary.trim()) : []
  if (summary.length > 0) {
    summary.slice(0, SUMMARY_LINES).forEach((l, i) => { out.push(fitLine([seg(i === 0 ? 'summary ' : '        ', { dim: true }), seg(l)], width)) })
    if (summary.length > SUMMARY_LINES) out.push([seg(`        … ${summary.length - SUMMARY_LINES} more line${summary.length - SUMMARY_LINES === 1 ? '' : 's'}`, { dim: true })])
  } else {
    const lines = data.progress.get(item.taskId)
    const last = lines?.[lines.length - 1]?.text ?? t?.progress?.text
    if (last !== undefined) out.push(fitLine([seg('last    ', { dim: true }), seg(firstLine(last))], width))
  }
  if (item.approval !== undefined) {
    out.push(...approvalDetail(data, item.approval, width))
  } else if (item.kind === 'conflict') {
    out.push(fitLine([seg('files   ', { dim: true }), seg(item.files.join(', ') || '(none listed)', { color: 'yellow' })], width))
    out.push([])
    if (item.hunks.length === 0) {
      out.push([seg('The merge leader recorded no hunks for this conflict; the conflicted files are listed above.', { dim: true })])
    } else {
      item.hunks.forEach((h, i) => {
        if (i > 0) out.push([])
        out.push(...hunkLines(h, item.taskId, width, oursFrom(item, h.file)))
      })
    }
  } else if (item.key.startsWith('budget:')) {
    // a spent budget holds ready tasks back: what it is and how to raise it
    out.push([seg('budget', { color: 'red', bold: true })])
    for (const l of textLines(item.summary)) out.push(fitLine([seg('  ' + l, { color: 'red' })], width))
  } else {
    out.push([seg('error', { color: 'red', bold: true })])
    for (const l of textLines(t?.error ?? item.summary)) out.push(fitLine([seg('  ' + l, { color: 'red' })], width))
  }
  return out
}

/** What a permission request asks: the tool, where, since when, and its whole input. */
function approvalDetail (data: TuiData, a: NonNullable<InboxItem['approval']>, width: number): Line[] {
  const out: Line[] = []
  out.push(fitLine([seg('asks    ', { dim: true }), seg(a.tool, { bold: true, color: 'yellow' }), seg(`  request ${a.id} from the run on ${nodeName(data.status, a.node)}, waiting ${formatDuration(Math.max(0, data.now - a.at))}`, { dim: true })], width))
  out.push([seg('input', { dim: true })])
  for (const l of textLines(JSON.stringify(a.input, null, 2))) out.push(fitLine([seg('  ' + l)], width))
  out.push([])
  out.push([seg('a allows it (the tool runs), d denies it (the agent is told and goes on); both ask y/n first.', { dim: true })])
  return out
}

/**
 * The inbox: what waits on a human (permission requests, open conflicts, failed tasks, spent
 * budgets), the selected one in full below (for a conflict: the task's prompt,
 * what its agent said it did (or its last line), the files and each hunk with both sides and context).
 * `scroll` moves the detail down. Exactly `height` lines.
 */
export function inboxLines (data: TuiData, items: readonly InboxItem[], selectedKey: string | null, scroll: number, width: number, height: number): Line[] {
  const out: Line[] = []
  if (items.length === 0) {
    out.push([seg('Nothing waits on you: no permission request, no open conflict, no failed task.', { color: 'green' })])
  } else {
    const sel = Math.max(0, items.findIndex(i => i.key === selectedKey))
    const win = windowAround(items, sel, Math.min(MAX_LIST_LINES, Math.max(1, height - 4)))
    win.items.forEach((it, i) => {
      const chosen = win.start + i === sel
      const line = fitLine([seg(chosen ? '> ' : '  '), seg(KIND_LABEL[it.kind].padEnd(9), { color: 'red', bold: true }), seg(`${(it.approval?.id ?? it.conflictId ?? it.taskId).padEnd(16)} `), seg(it.summary, { dim: !chosen })], width)
      out.push(chosen ? line.map(s => ({ ...s, inverse: true })) : line)
    })
    out.push([seg('─'.repeat(Math.max(0, width)), { dim: true })])
    const detail = itemDetail(data, items[sel]!, width)
    const room = Math.max(0, height - out.length)
    const start = Math.min(scroll, Math.max(0, detail.length - room))
    const shown = detail.slice(start, start + room)
    if (detail.length > start + room && shown.length > 0) shown[shown.length - 1] = [seg(`── ${detail.length - start - room + 1} more lines (PgDn) ──`, { dim: true })]
    out.push(...shown)
  }
  while (out.length < height) out.push([])
  return out.slice(0, height)
}
