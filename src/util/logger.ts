/**
 * A small namespaced logger. Library code takes a `Logger`; only the CLI decides
 * where lines go (stderr, human-readable on a TTY and JSON lines otherwise).
 */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export type LogFields = Record<string, unknown>

export interface Logger {
  debug: (event: string, fields?: LogFields) => void
  info: (event: string, fields?: LogFields) => void
  warn: (event: string, fields?: LogFields) => void
  error: (event: string, fields?: LogFields) => void
  /** A logger whose lines carry `ns` as their namespace. */
  child: (ns: string) => Logger
}

export interface LogSinkInit {
  level?: LogLevel
  /** JSON lines (for machines) or `time level ns event k=v` (for people). */
  format?: 'json' | 'text'
  write?: (line: string) => void
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }

function formatValue (value: unknown): string {
  if (typeof value === 'string') return /\s/.test(value) || value === '' ? JSON.stringify(value) : value
  if (value instanceof Error) return JSON.stringify(value.message)
  return JSON.stringify(value) ?? String(value)
}

/** Creates a root logger writing to `init.write` (default: stderr). */
export function createLogger (ns: string, init: LogSinkInit = {}): Logger {
  const level = init.level ?? 'info'
  const format = init.format ?? (process.stderr.isTTY === true ? 'text' : 'json')
  const write = init.write ?? ((line: string) => { process.stderr.write(line + '\n') })
  const make = (name: string): Logger => {
    const log = (lvl: LogLevel) => (event: string, fields: LogFields = {}) => {
      if (RANK[lvl] < RANK[level]) return
      const time = new Date()
      if (format === 'json') {
        const clean: LogFields = {}
        for (const [k, v] of Object.entries(fields)) clean[k] = v instanceof Error ? v.message : v
        write(JSON.stringify({ time: time.getTime(), level: lvl, ns: name, event, ...clean }))
      } else {
        const kv = Object.entries(fields).map(([k, v]) => `${k}=${formatValue(v)}`).join(' ')
        write(`${time.toISOString().slice(11, 23)} ${lvl.padEnd(5)} ${name} ${event}${kv === '' ? '' : ' ' + kv}`)
      }
    }
    return {
      debug: log('debug'),
      info: log('info'),
      warn: log('warn'),
      error: log('error'),
      child: (child: string) => make(`${name}:${child}`)
    }
  }
  return make(ns)
}

/** A logger that drops everything (tests, light clients). */
export const silentLogger: Logger = createLogger('silent', { level: 'silent', write: () => {} })
