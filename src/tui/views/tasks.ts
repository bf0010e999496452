import { row, seg, windowAround, type Cell, type Line } from '../lines.ts'
import { criticalPath, firstLine, formatCost, formatDuration, formatTokens, taskRows, type TaskRow, type TuiData } from '../model.ts'
import { STATE_COLOURS } from './colours.ts'

/**
 * The task DAG: tasks in dependency order, indented under what they depend on,
 * the critical path marked `*`, with state, node, attempt, elapsed time, cost,
 * tokens and the agent's latest line; the selected task's dependencies, scope
 * and prompt below. Exactly `height` lines of at most `width` columns.
 */
export function taskLines (data: TuiData, selected: string | null, width: number, height: number, opts: { showMerged: boolean, filter: string, filtering: boolean } = { showMerged: true, filter: '', filtering: false }): Line[] {
  if (data.status.tasks.length === 0) return pad([[seg('No tasks on the board yet. Submit a plan: meshwork submit plan.yaml --join …', { dim: true })]], height)
  const rows = taskRows(data, opts)
  const merged = data.status.tasks.filter(t => t.state === 'merged').length
  // one line above the list says what is folded or filtered away, and how to get it back
  const notes: Line = []
  if (opts.filtering || opts.filter !== '') notes.push(seg(`filter /${opts.filter}${opts.filtering ? '▏' : ''}`, { color: 'cyan', bold: true }), seg(opts.filtering ? '  (Enter keeps, Esc clears)  ' : '  (/ edits)  ', { dim: true }))
  if (!opts.showMerged && merged > 0) notes.push(seg(`${merged} merged folded away (m shows them)`, { dim: true }))
  const head: Line[] = notes.length > 0 ? [notes] : []
  if (rows.length === 0) return pad([...head, [seg(opts.filter !== '' ? `No task matches "${opts.filter}".` : 'Every task is merged.', { dim: true })]], height)
  height -= head.length
  const wide = width >= 110
  const idWidth = Math.min(28, Math.max(8, ...rows.map(r => r.id.length + 2 * Math.min(r.depth, 4))))
  const cols = (r: TaskRow | null): Cell[] => {
    const cells: Cell[] = [
      { text: r === null ? ' ' : r.critical ? '*' : ' ', width: 1, style: { color: 'yellow', bold: true } },
      // a join (several dependencies) is drawn once, after the last of them, marked ⋈ and named in full in DEPS/PROGRESS
      { text: r === null ? 'TASK' : '  '.repeat(Math.min(r.depth, 4) - (r.join ? 1 : 0)) + (r.join ? '⋈ ' : '') + r.id, width: idWidth, style: r === null ? { bold: true } : {} },
      { text: r === null ? 'STATE' : r.state, width: 9, style: r === null ? { bold: true } : { color: STATE_COLOURS[r.state] } },
      { text: r === null ? 'NODE' : r.node, width: wide ? 12 : 8, style: r === null ? { bold: true } : {} },
      { text: r === null ? 'TRY' : r.attempts === 0 ? '-' : `#${r.attempts}`, width: 3, align: 'right', style: r === null ? { bold: true } : {} },
      { text: r === null ? 'TIME' : r.elapsedMs === null ? '-' : formatDuration(r.elapsedMs), width: 6, align: 'right', style: r === null ? { bold: true } : {} },
      { text: r === null ? 'COST' : formatCost(r.costUsd), width: 6, align: 'right', style: r === null ? { bold: true } : {} },
      { text: r === null ? 'TOK' : formatTokens(r.tokens), width: 6, align: 'right', style: r === null ? { bold: true } : {} }
    ]
    if (wide) cells.push({ text: r === null ? 'DEPS' : r.deps.join(',') || '-', width: 16, style: r === null ? { bold: true } : { dim: true } })
    const used = cells.reduce((n, c) => n + c.width + 1, 0)
    cells.push({ text: r === null ? 'PROGRESS' : r.note, width: Math.max(0, width - used), style: r === null ? { bold: true } : r.state === 'failed' ? { color: 'red' } : { dim: true } })
    return cells
  }
  const sel = Math.max(0, rows.findIndex(r => r.id === selected))
  const listHeight = Math.max(1, height - 3)
  const win = windowAround(rows, sel, listHeight)
  const out: Line[] = [...head, row(cols(null))]
  win.items.forEach((r, i) => {
    const line = row(cols(r))
    out.push(win.start + i === sel ? line.map(s => ({ ...s, inverse: true })) : line)
  })
  while (out.length < height + head.length - 2) out.push([])
  const cp = criticalPath(data)
  const t = rows[sel]
  const d = t === undefined ? undefined : data.tasks.get(t.id)
  out.push(t === undefined
    ? []
    : [seg(`${t.id}`, { bold: true }), seg(`  deps ${t.deps.join(', ') || '-'}  files ${d?.files.join(', ') || '-'}  priority ${d?.priority ?? 0}`), seg(cp.ids.length > 0 ? `  * critical path ${formatDuration(cp.ms)}` : '', { color: 'yellow' })])
  out.push(d === undefined ? [] : [seg('prompt ', { dim: true }), seg(firstLine(d.prompt))])
  return pad(out, height + head.length)
}

function pad (lines: Line[], height: number): Line[] {
  const out = lines.slice(0, height)
  while (out.length < height) out.push([])
  return out
}
