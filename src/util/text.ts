/**
 * Text from peers and agents (names, titles, file names, errors, agent output)
 * is printed to terminals: a control character in it could move the cursor,
 * rewrite the screen, set the window title or worse. Everything printed that
 * another party wrote goes through `safeText` first.
 */

/** C0 controls except tab and newline, DEL, and C1 controls (ESC, CSI, OSC and the rest). */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g
// eslint-disable-next-line no-control-regex
const LINE_BREAKS = /[\t\n]/g

/** What stands in for a removed control character: visible, and one column wide like most of what it replaces. */
export const REPLACEMENT = '\uFFFD'

/**
 * `text` with every control character replaced by `REPLACEMENT`, so it cannot
 * drive the terminal. Tabs and newlines become spaces unless `newlines` is set
 * (multi-line text such as an error's output keeps its lines and tabs). Each
 * character is replaced by one, so widths computed before and after agree.
 */
export function safeText (text: string, opts: { newlines?: boolean } = {}): string {
  const out = text.replace(UNSAFE, REPLACEMENT)
  return opts.newlines === true ? out : out.replace(LINE_BREAKS, ' ')
}
