import { parseArgs } from 'node:util'
import { UsageError } from '../util/errors.ts'

/** One command-line option, documented for `--help`. */
export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  multiple?: boolean
  /** Placeholder in help, e.g. `FILE`. */
  arg?: string
  description: string
  /** Environment variable read when the option is absent. */
  env?: string
  default?: string
}

export type OptionSpecs = Record<string, OptionSpec>

/** Parsed options: strings, booleans, or string lists for repeatable options. */
export type ParsedOptions = Record<string, string | boolean | string[] | undefined>

export interface Command {
  name: string
  summary: string
  usage: string
  /** Paragraphs shown after the usage line. */
  details?: string
  options: OptionSpecs
  /** Number of positional arguments accepted. */
  positionals?: { min: number, max: number, names: string }
  run: (opts: ParsedOptions, positionals: string[]) => Promise<number>
}

/** Parses argv for a command: unknown flags and bad arity are usage errors naming the fix. */
export function parseCommandArgs (cmd: Command, argv: string[]): { opts: ParsedOptions, positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean', short?: string, multiple?: boolean }> = {}
  for (const [name, spec] of Object.entries(cmd.options)) {
    options[name] = { type: spec.type, ...(spec.short !== undefined ? { short: spec.short } : {}), ...(spec.multiple === true ? { multiple: true } : {}) }
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(`${(err as Error).message.replace(/\. To specify.*$/s, '')}. Run \`meshwork ${cmd.name} --help\` for the options.`)
  }
  const opts = { ...parsed.values } as ParsedOptions
  for (const [name, spec] of Object.entries(cmd.options)) {
    if (opts[name] !== undefined || spec.env === undefined) continue
    const v = process.env[spec.env]
    if (v === undefined || v === '') continue
    opts[name] = spec.multiple === true ? v.split(',').map(s => s.trim()).filter(s => s !== '') : v
  }
  const pos = cmd.positionals ?? { min: 0, max: 0, names: '' }
  if (parsed.positionals.length < pos.min) throw new UsageError(`meshwork ${cmd.name} needs ${pos.names}. Usage: ${cmd.usage}`)
  if (parsed.positionals.length > pos.max) throw new UsageError(`unexpected argument "${parsed.positionals[pos.max] ?? ''}". Usage: ${cmd.usage}`)
  return { opts, positionals: parsed.positionals }
}

/** The `--help` text of a command. */
export function commandHelp (cmd: Command): string {
  const lines = [`Usage: ${cmd.usage}`, '', cmd.summary]
  if (cmd.details !== undefined) lines.push('', cmd.details)
  lines.push('', 'Options:')
  const rows = Object.entries(cmd.options).map(([name, spec]) => {
    const flag = `${spec.short !== undefined ? `-${spec.short}, ` : ''}--${name}${spec.arg !== undefined ? ` ${spec.arg}` : ''}`
    const extra = [spec.default !== undefined ? `default: ${spec.default}` : '', spec.env !== undefined ? `env: ${spec.env}` : '', spec.multiple === true ? 'repeatable' : ''].filter(s => s !== '').join('; ')
    return [flag, spec.description + (extra !== '' ? ` (${extra})` : '')] as const
  })
  rows.push(['-h, --help', 'Show this help.'])
  const width = Math.min(34, Math.max(...rows.map(r => r[0].length)) + 2)
  for (const [flag, desc] of rows) {
    lines.push(flag.length + 2 > width ? `  ${flag}\n  ${' '.repeat(width)}${desc}` : `  ${flag.padEnd(width)}${desc}`)
  }
  return lines.join('\n')
}

/** Reads a string option. */
export function str (opts: ParsedOptions, name: string): string | undefined {
  const v = opts[name]
  return typeof v === 'string' ? v : undefined
}

/** Reads a repeatable string option. */
export function list (opts: ParsedOptions, name: string): string[] {
  const v = opts[name]
  if (Array.isArray(v)) return v
  return typeof v === 'string' ? [v] : []
}

/** Reads a boolean flag. */
export function flag (opts: ParsedOptions, name: string): boolean {
  return opts[name] === true
}

/** Reads a positive integer option. */
export function int (opts: ParsedOptions, name: string, fallback: number, min = 1): number {
  const v = str(opts, name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}".`)
  return n
}
