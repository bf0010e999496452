/*
 * Rate and usage limits as Claude Code reports them, and the reset times in its
 * messages.
 *
 * As Claude Code prints them (anthropics/claude-code issues #2087, #9046, #11429:
 * result text "Claude AI usage limit reached|<epoch seconds>"; #2087, #15064:
 * "Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).";
 * #18663, #42042, #51981: "You've hit your limit · resets 8pm (Europe/Berlin)" /
 * "resets Apr 23 at 4pm (America/Recife)"; the API errors behind them: "429
 * {"type":"error","error":{"type":"rate_limit_error",...}}"; #39745, #72390: "API
 * Error: 529 {...overloaded_error...}" / "API Error: 529 Overloaded."). Claude
 * Code 2.1.332 prints "API Error: Request rejected (429) · <message>" and "API
 * Error: 529 <message>. This is a server-side issue…" after its own retries.
 */

/** True for the texts Claude Code prints for rate limits, usage limits and overload. */
export function isRateLimitText (text: string): boolean {
  if (text.length === 0) return false
  return /usage limit reached|hit your limit|limit will reset|rate[ _-]?limit|too many requests|overloaded|\b(429|529)\b.{0,40}(error|rate|overload|too many)|api error:?\s*\(?(429|529)\b/i.test(text)
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']

/**
 * The reset time (epoch ms) in a limit message, if one can be read:
 * "Claude AI usage limit reached|1749924000", "resets 8pm (Europe/Berlin)",
 * "resets Apr 23 at 4pm (America/Recife)", "resets Jan 21, 5am (Etc/GMT-9)",
 * "Your limit will reset at 3pm (America/Bogota)". Without a zone the local one
 * is assumed. A bare time means its next occurrence after `now`.
 */
export function parseResetTime (text: string, now = Date.now()): number | undefined {
  const epoch = /limit reached\|(\d{9,13})/i.exec(text)
  if (epoch !== null) {
    const n = Number(epoch[1])
    return n < 1e12 ? n * 1000 : n
  }
  const m = /resets?\s+(?:at\s+)?(?:([A-Za-z]{3})[a-z]*\.?\s+(\d{1,2})(?:,|\s+at)?\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b(?:\s*\(([^)]+)\))?/i.exec(text)
  if (m === null) return undefined
  let hour = Number(m[3]) % 12
  if (m[5]!.toLowerCase() === 'pm') hour += 12
  const minute = m[4] !== undefined ? Number(m[4]) : 0
  const zone = m[6]?.trim() ?? Intl.DateTimeFormat().resolvedOptions().timeZone
  try {
    const today = zonedParts(now, zone)
    if (m[1] !== undefined && m[2] !== undefined) {
      const month = MONTHS.indexOf(m[1].toLowerCase())
      if (month === -1) return undefined
      let t = zonedToEpoch(today.year, month, Number(m[2]), hour, minute, zone)
      if (t < now - 86_400_000) t = zonedToEpoch(today.year + 1, month, Number(m[2]), hour, minute, zone)
      return t
    }
    let t = zonedToEpoch(today.year, today.month, today.day, hour, minute, zone)
    if (t <= now) t = zonedToEpoch(today.year, today.month, today.day + 1, hour, minute, zone)
    return t
  } catch {
    return undefined // unknown time zone
  }
}

function zonedParts (t: number, zone: string): { year: number, month: number, day: number, hour: number, minute: number, second: number } {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' }).formatToParts(t)
  const get = (type: string): number => Number(parts.find(p => p.type === type)?.value ?? 0)
  return { year: get('year'), month: get('month') - 1, day: get('day'), hour: get('hour'), minute: get('minute'), second: get('second') }
}

/** Epoch ms of a wall-clock time in `zone` (month 0-based; days may overflow). */
function zonedToEpoch (year: number, month: number, day: number, hour: number, minute: number, zone: string): number {
  const wall = Date.UTC(year, month, day, hour, minute)
  const offsetAt = (t: number): number => {
    const p = zonedParts(t, zone)
    return Date.UTC(p.year, p.month, p.day, p.hour, p.minute, p.second) - Math.floor(t / 1000) * 1000
  }
  let t = wall - offsetAt(wall)
  t = wall - offsetAt(t)
  return t
}

