/** Small statistics and formatting helpers for the benchmark output. */

/** Nearest-rank percentile (p in 0..100) of `values`; null when empty. */
export function percentile (values: number[], p: number): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1] ?? null
}

export function median (values: number[]): number | null {
  return percentile(values, 50)
}

export function max (values: number[]): number | null {
  return values.length === 0 ? null : Math.max(...values)
}

export function min (values: number[]): number | null {
  return values.length === 0 ? null : Math.min(...values)
}

export const ms = (v: number | null | undefined): string => v === null || v === undefined ? 'n/a' : `${Math.round(v)} ms`
export const secs = (v: number | null | undefined): string => v === null || v === undefined ? 'n/a' : `${(v / 1000).toFixed(1)} s`
export const pct = (v: number | null | undefined): string => v === null || v === undefined ? 'n/a' : `${v.toFixed(1)} %`

export function bytes (v: number | null | undefined): string {
  if (v === null || v === undefined) return 'n/a'
  if (Math.abs(v) < 10 * 1024) return `${Math.round(v)} B`
  if (Math.abs(v) < 10 * 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`
  return `${(v / 1024 / 1024).toFixed(1)} MiB`
}

/** A plain-text table with aligned columns. */
export function textTable (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(head), widths.map(w => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** A Markdown table. */
export function mdTable (head: string[], rows: string[][]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  return [
    `| ${head.map(esc).join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map(r => `| ${r.map(esc).join(' | ')} |`)
  ].join('\n')
}
