import { z } from 'zod'

/**
 * A permission request of a claude run on a node started with `--approvals`:
 * the tool the agent wants to use and its input, waiting on the board for a
 * human to allow or deny it (`meshwork approve`, the TUI). Stored inside its
 * task's record (`tasks/<id>/approvals/<request id>`): a request belongs to one
 * run of one task, and only the genesis change may add keys to the board root.
 */

/** A request's id as users type it (`meshwork approve ID`): `<task id>-<6 hex>`. */
export type ApprovalId = string & { readonly __brand: 'ApprovalId' }

/**
 * `open`: waiting for a human. `allowed` / `denied`: answered (`by` names the
 * deciding client; `denied` with `by` null: nobody answered within
 * `--approval-timeout`). `expired`: the run that asked is gone (cancelled,
 * stopped, timed out, its claude aborted the prompt): nothing waits any more.
 */
export const APPROVAL_STATES = ['open', 'allowed', 'denied', 'expired'] as const
export type ApprovalState = typeof APPROVAL_STATES[number]

/** Longest tool input kept on the board, as JSON text (board changes are gossiped: keep them small). @default 2000 */
export const MAX_APPROVAL_INPUT_CHARS = 2000

export const approvalSchema = z.object({
  id: z.string().min(1).transform(s => s as ApprovalId),
  /** The peer id of the node whose run asks. */
  node: z.string(),
  /** The run's attempt number (the task's `attempts` when it asked). */
  attempt: z.number().int().nonnegative(),
  /** Claude's tool name, e.g. `Bash`, `Write`, `mcp__server__tool`. */
  tool: z.string(),
  /** The tool's input as JSON text, at most `MAX_APPROVAL_INPUT_CHARS` (see `clipToolInput`). */
  input: z.string(),
  state: z.enum(APPROVAL_STATES),
  /** When the run asked (epoch ms). */
  at: z.number(),
  /** The peer id of the client that answered; null while open, for a timeout and for an expiry. */
  by: z.string().nullable(),
  /** When it was answered or expired (epoch ms); null while open. */
  decidedAt: z.number().nullable(),
  /** The decider's note, or why it was denied or expired without a human. */
  note: z.string(),
  /** Allowed with `--always-for-task`: every later request of the same tool in this task is allowed without asking. */
  always: z.boolean().optional()
})
export type Approval = z.infer<typeof approvalSchema>

/**
 * A tool input as JSON text of at most `max` characters: long string values
 * are cut first (a Bash command keeps its start), and if that is not enough
 * the JSON text itself is cut and kept under `{"clipped": ...}`.
 */
export function clipToolInput (input: unknown, max = MAX_APPROVAL_INPUT_CHARS): string {
  const whole = JSON.stringify(input ?? {}) ?? '{}'
  if (whole.length <= max) return whole
  const cut = (v: unknown, depth: number): unknown => {
    if (typeof v === 'string') return v.length > max / 4 ? v.slice(0, Math.floor(max / 4) - 1) + '…' : v
    if (Array.isArray(v)) return depth > 4 ? '[…]' : v.slice(0, 20).map(x => cut(x, depth + 1))
    if (v !== null && typeof v === 'object') return depth > 4 ? '{…}' : Object.fromEntries(Object.entries(v).slice(0, 30).map(([k, x]) => [k, cut(x, depth + 1)]))
    return v
  }
  const shorter = JSON.stringify(cut(input, 0)) ?? '{}'
  if (shorter.length <= max) return shorter
  // escapes make the quoted text longer than the text: cut until it fits
  let n = max - 20
  let out = JSON.stringify({ clipped: whole.slice(0, n) + '…' })
  while (out.length > max && n > 0) {
    n -= out.length - max
    out = JSON.stringify({ clipped: whole.slice(0, Math.max(0, n)) + '…' })
  }
  return out
}

/** The stored input text back as a JSON value (`{ clipped: text }` when it does not parse). */
export function parseToolInput (text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text)
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : { value: v }
  } catch {
    return { clipped: text }
  }
}
