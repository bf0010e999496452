import { parseArgs } from 'node:util'
import { UsageError } from '../util/errors.ts'
import { parseDuration } from '../util/wait.ts'

/** What `node:util` parseArgs gives for one option: a string, a boolean, a list for repeatable options, or nothing. */
export type RawOption = string | boolean | string[] | undefined

/**
 * One command-line option: how it is parsed, documented for `--help`, and the
 * typed field it becomes. The default lives in `parse` (and is shown through
 * `default`), so a command reads one typed object and never re-applies defaults.
 */
export interface OptionSpec<T = unknown> {
  type: 'string' | 'boolean'
  short?: string
  multiple?: boolean
  /** Placeholder in help, e.g. `FILE`. */
  arg?: string
  description: string
  /** Environment variable read when the option is absent. */
  env?: string
  /** The default as shown in `--help`. */
  default?: string
  /** Turns the raw value into the typed field; throws a `UsageError` naming the flag on bad input. */
  parse: (raw: RawOption, name: string) => T
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OptionSpecs = Record<string, OptionSpec<any>>

/** The typed options object a command's `run` receives: one field per flag. */
export type Options<S extends OptionSpecs> = { -readonly [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never }

export interface Command<S extends OptionSpecs = OptionSpecs> {
  name: string
  summary: string
  usage: string
  /** Paragraphs shown after the usage line. */
  details?: string
  options: S
  /** Number of positional arguments accepted. */
  positionals?: { min: number, max: number, names: string }
  run: (opts: Options<S>, positionals: string[]) => Promise<number>
}

/** A command of any options (the list of all commands). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyCommand = Command<any>

/** Declares a command; `S` is inferred from its options so `run` gets typed fields. */
export function defineCommand<S extends OptionSpecs> (cmd: Command<S>): Command<S> {
  return cmd
}

interface Doc { arg?: string, description: string, env?: string, short?: string }

const asString = (raw: RawOption): string | undefined => typeof raw === 'string' ? raw : Array.isArray(raw) ? raw[raw.length - 1] : undefined

function withDoc<T> (type: 'string' | 'boolean', doc: Doc, parse: (raw: RawOption, name: string) => T, shown?: string, multiple = false): OptionSpec<T> {
  return {
    type,
    description: doc.description,
    ...(doc.arg !== undefined ? { arg: doc.arg } : {}),
    ...(doc.env !== undefined ? { env: doc.env } : {}),
    ...(doc.short !== undefined ? { short: doc.short } : {}),
    ...(shown !== undefined ? { default: shown } : {}),
    ...(multiple ? { multiple: true } : {}),
    parse
  }
}

/** Writes a duration in the largest whole unit (`2h`, `30s`, `500ms`) for help texts. */
export function formatDuration (ms: number): string {
  if (ms !== 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms !== 0 && ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}

/** Builders of typed options: each binds one flag to one typed field and its default. */
export const opt = {
  /** A string; `undefined` when absent unless a default is given. */
  string: ((doc: Doc & { default?: string }) => withDoc('string', doc, raw => asString(raw) ?? doc.default, doc.default)) as {
    (doc: Doc & { default: string }): OptionSpec<string>
    (doc: Doc): OptionSpec<string | undefined>
  },
  /** A flag without a value. */
  boolean: (doc: Doc): OptionSpec<boolean> => withDoc('boolean', doc, raw => raw === true),
  /** A repeatable string (the env variable, if any, is comma separated). */
  list: (doc: Doc & { default?: string[] }): OptionSpec<string[]> => withDoc('string', doc, raw => {
    const v = Array.isArray(raw) ? raw : typeof raw === 'string' ? [raw] : []
    return v.length > 0 ? v : [...(doc.default ?? [])]
  }, doc.default?.join(', '), true),
  /** An integer of at least `min` (default 1). */
  int: ((doc: Doc & { default?: number, min?: number }) => withDoc('string', doc, (raw, name) => {
    const v = asString(raw)
    if (v === undefined) return doc.default
    const n = Number(v)
    const min = doc.min ?? 1
    if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}".`)
    return n
  }, doc.default !== undefined ? String(doc.default) : undefined)) as {
    (doc: Doc & { default: number, min?: number }): OptionSpec<number>
    (doc: Doc & { min?: number }): OptionSpec<number | undefined>
  },
  /** A duration such as `500ms`, `15s`, `2m`, `1h`, as milliseconds. */
  duration: (doc: Doc & { default: number, min?: number }): OptionSpec<number> => withDoc('string', doc, (raw, name) => {
    const v = asString(raw)
    if (v === undefined) return doc.default
    const ms = parseDuration(v)
    if (ms === null) throw new UsageError(`--${name} must be a duration such as 500ms, 15s, 2m or 1h, got "${v}".`)
    if (doc.min !== undefined && ms < doc.min) throw new UsageError(`--${name} must be at least ${formatDuration(doc.min)}, got "${v}".`)
    return ms
  }, formatDuration(doc.default)),
  /** One of a fixed set of words. */
  choice: <const C extends string>(choices: readonly C[], doc: Doc & { default: C }): OptionSpec<C> => withDoc('string', doc, (raw, name) => {
    const v = asString(raw)
    if (v === undefined) return doc.default
    if (!(choices as readonly string[]).includes(v)) {
      const near = closest(v, choices)
      throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got "${v}"${near !== null ? ` (did you mean ${near}?)` : ''}.`)
    }
    return v as C
  }, doc.default),
  /** Any other type: `parse` gets the string (or undefined when absent) and returns the field. */
  custom: <T>(doc: Doc & { default?: string, parse: (v: string | undefined, name: string) => T }): OptionSpec<T> =>
    withDoc('string', doc, (raw, name) => doc.parse(asString(raw), name), doc.default)
}

/** Edit distance between two short strings: insertions, deletions, substitutions and swaps of neighbours each count 1. */
export function editDistance (a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => i === 0 ? j : j === 0 ? i : 0))
  const at = (i: number, j: number): number => d[i]?.[j] ?? Infinity
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] as number[]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row[j] = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(at(i, j), at(i - 2, j - 2) + 1)
    }
  }
  return at(a.length, b.length)
}

/**
 * The candidate closest to `input` when it is a likely typo: at most 2 edits
 * away (1 for words of up to 4 letters), or a unique candidate it is a prefix of.
 */
export function closest (input: string, candidates: readonly string[]): string | null {
  let best: string | null = null
  let bestD = Infinity
  for (const c of candidates) {
    const d = editDistance(input, c)
    if (d < bestD) { best = c; bestD = d }
  }
  if (best !== null && bestD <= (input.length <= 4 ? 1 : 2)) return best
  const prefixed = candidates.filter(c => input.length >= 2 && c.startsWith(input))
  return prefixed.length === 1 ? prefixed[0] ?? null : null
}

/** "did you mean --slots?" for an unknown flag of `cmd`, or ''. */
function suggestFlag (cmd: Command, unknown: string): string {
  const bare = unknown.replace(/^-+/, '').replace(/=.*$/, '')
  const near = closest(bare, [...Object.keys(cmd.options), 'help'])
  return near !== null ? ` Did you mean --${near}?` : ''
}

/**
 * Parses argv for a command into its typed options: unknown flags (with the
 * nearest known one suggested), bad values and bad arity are usage errors
 * naming the fix; every bad value is reported at once.
 */
export function parseCommandArgs<S extends OptionSpecs> (cmd: Command<S>, argv: string[]): { opts: Options<S>, positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean', short?: string, multiple?: boolean }> = {}
  for (const [name, spec] of Object.entries(cmd.options)) {
    options[name] = { type: spec.type, ...(spec.short !== undefined ? { short: spec.short } : {}), ...(spec.multiple === true ? { multiple: true } : {}) }
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (err) {
    const message = (err as Error).message.replace(/\. To specify.*$/s, '')
    const unknown = /Unknown option '([^']+)'/.exec(message)?.[1]
    const hint = unknown !== undefined ? suggestFlag(cmd as unknown as Command, unknown) : ''
    throw new UsageError(`${message}.${hint} Run \`meshwork ${cmd.name} --help\` for the options.`)
  }
  const raw = { ...parsed.values } as Record<string, RawOption>
  for (const [name, spec] of Object.entries(cmd.options)) {
    if (raw[name] !== undefined || spec.env === undefined) continue
    const v = process.env[spec.env]
    if (v === undefined || v === '') continue
    raw[name] = spec.multiple === true ? v.split(',').map(s => s.trim()).filter(s => s !== '') : v
  }
  const opts: Record<string, unknown> = {}
  const problems: string[] = []
  for (const [name, spec] of Object.entries(cmd.options)) {
    try {
      opts[name] = spec.parse(raw[name], name)
    } catch (err) {
      if (!(err instanceof UsageError)) throw err
      problems.push(err.message)
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join(' '))
  const pos = cmd.positionals ?? { min: 0, max: 0, names: '' }
  if (parsed.positionals.length < pos.min) throw new UsageError(`meshwork ${cmd.name} needs ${pos.names}. Usage: ${cmd.usage}`)
  if (parsed.positionals.length > pos.max) throw new UsageError(`unexpected argument "${parsed.positionals[pos.max] ?? ''}". Usage: ${cmd.usage}`)
  return { opts: opts as Options<S>, positionals: parsed.positionals }
}

/** The `--help` text of a command. */
export function commandHelp (cmd: AnyCommand): string {
  const lines = [`Usage: ${cmd.usage}`, '', cmd.summary]
  if (cmd.details !== undefined) lines.push('', cmd.details)
  lines.push('', 'Options:')
  const rows = Object.entries(cmd.options as OptionSpecs).map(([name, spec]) => {
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
