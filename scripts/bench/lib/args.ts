/**
 * Command-line options of the benchmark scripts: `--help` prints the script's
 * own leading doc comment (where each script lists its options), and an
 * unknown or malformed option is one line naming it plus that usage, exit 2,
 * instead of a stack trace.
 */
import { readFileSync } from 'node:fs'
import { basename, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'

type Options = NonNullable<ParseArgsConfig['options']>

/** The first doc comment of the script at `scriptUrl`, without its comment markers. */
export function usageOf (scriptUrl: string): string {
  const source = readFileSync(fileURLToPath(scriptUrl), 'utf8')
  const doc = /\/\*\*([\s\S]*?)\*\//.exec(source)?.[1] ?? ''
  return doc.split('\n').map(line => line.replace(/^\s*\* ?/, '')).join('\n').trim() + '\n'
}

/** `parseArgs` with `--help`/`-h` and a readable error; exits on either. */
export function parseScriptArgs<O extends Options> (scriptUrl: string, options: O): ReturnType<typeof parseArgs<{ options: O }>>['values'] {
  const name = basename(fileURLToPath(scriptUrl))
  let values: Record<string, unknown>
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } } }).values
  } catch (err) {
    process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n\n${usageOf(scriptUrl)}`)
    process.exit(2)
  }
  if (values.help === true) {
    process.stdout.write(usageOf(scriptUrl))
    process.exit(0)
  }
  return values as ReturnType<typeof parseArgs<{ options: O }>>['values']
}

/** A checkout a benchmark runs (`--variant NAME=DIR`). */
export interface VariantSpec { name: string, dir: string }

/** The `--variant NAME=DIR` options given (DIR resolved), or `this=<defaultDir>` when none. */
export function variantSpecs (given: readonly string[] | undefined, defaultDir: string): VariantSpec[] {
  return (given ?? [`this=${defaultDir}`]).map(s => {
    const eq = s.indexOf('=')
    if (eq <= 0) throw new Error(`--variant takes NAME=DIR, got "${s}"`)
    return { name: s.slice(0, eq), dir: resolve(s.slice(eq + 1)) }
  })
}
