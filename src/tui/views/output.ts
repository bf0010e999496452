import { seg, textLines, type Line } from '../lines.ts'
import { firstLine, formatCost, formatDuration, formatTokens, nodeName, type TuiData } from '../model.ts'
import { STATE_COLOURS } from './colours.ts'

/** Wraps a text to `width` columns (hard breaks; agent lines are rarely prose-formatted). */
function wrap (text: string, width: number): string[] {
  if (width <= 0) return []
  const out: string[] = []
  for (const l of textLines(text)) {
    if (l.length === 0) { out.push(''); continue }
    for (let i = 0; i < l.length; i += width) out.push(l.slice(i, i + width))
  }
  return out
}

function clock (at: number): string {
  return new Date(at).toTimeString().slice(0, 8)
}

/**
 * One task's live agent output: its state, node, attempt, time, cost and
 * tokens, then the progress lines heard over gossip, following the tail;
 * `scroll` lines up from the bottom. Exactly `height` lines.
 */
export function outputLines (data: TuiData, taskId: string | null, scroll: number, width: number, height: number): Line[] {
  const t = taskId === null ? undefined : data.status.tasks.find(x => x.id === taskId)
  const out: Line[] = []
  if (t === undefined) {
    out.push([seg('No task selected: pick one in the task view (1) and press Enter.', { dim: true })])
  } else {
    const elapsed = t.startedAt === null ? null : (t.state === 'running' ? data.now : t.doneAt ?? null)
    out.push([
      seg(t.id, { bold: true }),
      seg(' '),
      seg(t.state, { color: STATE_COLOURS[t.state] }),
      seg(`${t.node === null ? '' : ` on ${nodeName(data.status, t.node)}`}  attempt ${t.attempts}  ${elapsed === null || t.startedAt === null ? '' : formatDuration(Math.max(0, elapsed - t.startedAt)) + '  '}${formatCost(t.costUsd)}  ${formatTokens(t.tokens.input + t.tokens.output + t.tokens.cacheRead + t.tokens.cacheWrite)} tok  `),
      seg(t.title, { dim: true })
    ])
    out.push([seg('prompt ', { dim: true }), seg(firstLine(data.tasks.get(t.id)?.prompt ?? ''))])
    const body: Line[] = []
    const heard = data.progress.get(t.id) ?? (t.progress === null ? [] : [t.progress])
    for (const p of heard) {
      const prefix = `${clock(p.at)} ${p.kind.padEnd(4)} `
      wrap(p.text, Math.max(10, width - prefix.length)).forEach((l, i) => {
        body.push(i === 0 ? [seg(prefix, { dim: true }), seg(l, p.kind === 'tool' ? { color: 'cyan' } : {})] : [seg(' '.repeat(prefix.length)), seg(l)])
      })
    }
    if (t.error !== null && t.state !== 'merged') for (const l of wrap(t.error, width)) body.push([seg(l, { color: 'red' })])
    if (body.length === 0) body.push([seg(t.state === 'running' ? 'No agent output heard yet.' : 'No agent output heard by this TUI (progress is live only: it is not kept on the board).', { dim: true })])
    const room = Math.max(1, height - out.length - 1)
    const maxScroll = Math.max(0, body.length - room)
    const s = Math.min(scroll, maxScroll)
    const end = body.length - s
    out.push([seg(s > 0 ? `── ${s} line${s === 1 ? '' : 's'} below (PgDn) ──` : body.length > room ? `── ${body.length - room} earlier line${body.length - room === 1 ? '' : 's'} (PgUp) ──` : '── agent output ──', { dim: true })])
    out.push(...body.slice(Math.max(0, end - room), end))
  }
  while (out.length < height) out.push([])
  return out.slice(0, height)
}
