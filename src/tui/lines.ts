import { safeText } from '../util/text.ts'

/**
 * Screen lines as data: every view is a pure function to `Line[]` of exactly
 * known width and count, so a frame never grows past the terminal and views are
 * testable without a terminal. The app turns lines into ink `Text` elements.
 */

/** Colours the views use (ink `Text` colour names). */
export type Colour = 'red' | 'green' | 'yellow' | 'blue' | 'magenta' | 'cyan' | 'gray' | 'white'

/** A run of text with one style. */
export interface Segment {
  text: string
  color?: Colour
  bold?: boolean
  dim?: boolean
  inverse?: boolean
}

/** One screen line. */
export type Line = Segment[]

/** A plain segment; control characters in `text` (peers and agents wrote most of it) are made harmless. */
export function seg (text: string, style: Omit<Segment, 'text'> = {}): Segment {
  return { text: safeText(text), ...style }
}

/** The text of a line without styles (tests and the no-TTY output read it). */
export function lineText (line: Line): string {
  return line.map(s => s.text).join('')
}

/**
 * Cuts a line to `width` columns (marking a cut with `…`); with `pad`, fills it
 * with spaces to exactly `width` (side-by-side columns need that).
 */
export function fitLine (line: Line, width: number, pad = false): Line {
  const out: Line = []
  let used = 0
  const total = line.reduce((n, s) => n + s.text.length, 0)
  const cut = total > width
  const room = cut ? Math.max(0, width - 1) : width
  for (const s of line) {
    if (used >= room) break
    const text = s.text.length + used > room ? s.text.slice(0, room - used) : s.text
    out.push({ ...s, text })
    used += text.length
  }
  if (cut && width > 0) {
    const last = out[out.length - 1]
    out.push({ text: '…', ...(last?.color !== undefined ? { color: last.color } : {}), ...(last?.dim === true ? { dim: true } : {}) })
    used++
  }
  if (pad && used < width) out.push({ text: ' '.repeat(width - used) })
  return out
}

/** Column alignment of `row`. */
export interface Cell {
  text: string
  width: number
  align?: 'left' | 'right'
  style?: Omit<Segment, 'text'>
}

/** A table row: each cell cut or padded to its width, one space between cells. */
export function row (cells: readonly Cell[]): Line {
  const line: Line = []
  cells.forEach((c, i) => {
    const text = safeText(c.text)
    const t = text.length > c.width ? (c.width > 1 ? text.slice(0, c.width - 1) + '…' : text.slice(0, c.width)) : text
    const padded = c.align === 'right' ? t.padStart(c.width) : t.padEnd(c.width)
    line.push(seg(padded, c.style ?? {}))
    if (i < cells.length - 1) line.push(seg(' '))
  })
  return line
}

/**
 * The `height` lines of a list around the selected index (it stays visible),
 * with the window's first index.
 */
export function windowAround<T> (items: readonly T[], selected: number, height: number): { items: T[], start: number } {
  if (height <= 0) return { items: [], start: 0 }
  if (items.length <= height) return { items: [...items], start: 0 }
  const start = Math.min(Math.max(0, selected - Math.floor(height / 2)), items.length - height)
  return { items: items.slice(start, start + height), start }
}

/** Splits a text into lines, tabs expanded, without the trailing empty line. */
export function textLines (text: string): string[] {
  if (text === '') return []
  const lines = text.replace(/\t/g, '  ').replace(/\r/g, '').split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  return lines
}
