import { row, seg, windowAround, type Cell, type Line } from '../lines.ts'
import { formatDuration, nodeRows, type NodeRow, type TuiData } from '../model.ts'
import { NODE_COLOURS } from './colours.ts'

/**
 * The nodes: liveness, slots in use, load per core, rate-limit back-off, when
 * last heard, what each runs. Exactly `height` lines of at most `width` columns.
 */
export function nodeLines (data: TuiData, width: number, height: number): Line[] {
  // while the node read through does not answer, nobody's liveness is known: never show the old one as live
  const stale = data.link !== undefined && data.link.lostSince !== null
  const rows = nodeRows(data)
  const wide = width >= 110
  const nameWidth = Math.min(16, Math.max(6, ...rows.map(r => r.name.length)))
  const cols = (r: NodeRow | null): Cell[] => {
    const h = r === null ? { bold: true } : {}
    const cells: Cell[] = [
      { text: r === null ? 'NODE' : r.name, width: nameWidth, style: h },
      { text: r === null ? 'STATE' : stale ? '?' : r.paused !== null && r.state === 'alive' ? 'paused' : r.state, width: 7, style: r === null ? h : stale ? { color: 'gray' } : r.paused !== null && r.state === 'alive' ? { color: 'yellow', bold: true } : { color: NODE_COLOURS[r.state] } },
      { text: r === null ? 'SLOTS' : `${r.used}/${r.slots}`, width: 5, align: 'right', style: h },
      { text: r === null ? 'LOAD' : r.load === null ? '-' : r.load.toFixed(2), width: 5, align: 'right', style: r !== null && r.load !== null && r.load > 1 ? { color: 'yellow' } : h },
      { text: r === null ? 'BACKOFF' : r.backoffMs > 0 ? formatDuration(r.backoffMs) : '-', width: 7, align: 'right', style: r !== null && r.backoffMs > 0 ? { color: 'yellow', bold: true } : h },
      { text: r === null ? 'SEEN' : stale ? '?' : r.lastSeenMs === null ? 'never' : r.lastSeenMs < 1000 ? 'now' : `${formatDuration(r.lastSeenMs)} ago`, width: 10, align: 'right', style: h }
    ]
    if (wide) cells.push({ text: r === null ? 'PEER' : r.peerId, width: 20, style: r === null ? h : { dim: true } })
    const used = cells.reduce((n, c) => n + c.width + 1, 0)
    cells.push({ text: r === null ? 'RUNNING' : r.running.join(', ') || '-', width: Math.max(0, width - used), style: r === null ? h : { color: 'cyan' } })
    return cells
  }
  const alive = rows.filter(r => r.state === 'alive')
  const free = alive.reduce((n, r) => n + Math.max(0, r.slots - r.used), 0)
  const limited = alive.filter(r => r.backoffMs > 0).length
  const paused = alive.filter(r => r.paused !== null)
  const pausedText = paused.map(r => `${r.name} paused${r.pauseMs > 0 ? ` (retry in ${formatDuration(r.pauseMs)})` : ''}: ${(r.paused ?? '').split('\n')[0]}`).join('; ')
  const out: Line[] = stale ? [[seg(`liveness unknown: the node read through does not answer (last heard ${new Date(data.link?.lastOkAt ?? 0).toISOString().slice(11, 19)} UTC)`, { color: 'yellow', bold: true })]] : [[seg(`${alive.length} alive of ${rows.length}, ${free} free slot${free === 1 ? '' : 's'}`, { bold: true }), seg(limited > 0 ? `  ${limited} backing off from a rate limit: the mesh runs fewer agents at once` : '', { color: 'yellow' }), seg(paused.length > 0 ? `  ${pausedText}` : '', { color: 'yellow', bold: true })]]
  if (rows.length === 0) {
    out.push([seg('No node heard yet.', { dim: true })])
  } else {
    out.push(row(cols(null)))
    out.push(...windowAround(rows, 0, height - 2).items.map(r => row(cols(r))))
  }
  while (out.length < height) out.push([])
  return out.slice(0, height)
}
