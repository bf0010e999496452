import { UsageError, toError } from '../util/errors.ts'
import { closest, commandHelp, parseCommandArgs } from './command.ts'
import { COMMAND_TABLE as COMMANDS } from './commands.ts'


function mainHelp (): string {
  const width = Math.max(...COMMANDS.map(c => c.name.length)) + 2
  return [
    'meshwork: run many coding-agent sessions in parallel across machines you own, with no central coordinator.',
    '',
    'Usage: meshwork <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map(c => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Run `meshwork <command> --help` for a command\'s options.',
    'Connection options (--join, --join-file, --swarm-key, --bootstrap) also come from MESHWORK_JOIN, MESHWORK_JOIN_FILE, MESHWORK_SWARM_KEY, MESHWORK_BOOTSTRAP;',
    'a client\'s key (--identity, default <user config dir>/meshwork/client.key) from MESHWORK_IDENTITY.'
  ].join('\n')
}

/**
 * Runs the CLI and returns the exit code: 0 success, 1 runtime failure, 2 usage
 * or input error. This is the one place that turns errors into messages.
 */
export async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp() + '\n')
    return name === undefined ? 2 : 0
  }
  if (name === '--version' || name === '-v') {
    // the version in package.json (loaded only here: `--help` stays light)
    process.stdout.write((await import('../node/version.ts')).MESHWORK_VERSION + '\n')
    return 0
  }
  const entry = COMMANDS.find(c => c.name === name)
  if (entry === undefined) {
    const near = closest(name, COMMANDS.map(c => c.name))
    process.stderr.write(`meshwork: unknown command "${name}".${near !== null ? ` Did you mean \`meshwork ${near}\`?` : ''} Commands: ${COMMANDS.map(c => c.name).join(', ')}. Run \`meshwork --help\`.\n`)
    return 2
  }
  const cmd = await entry.load()
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(commandHelp(cmd) + '\n')
    return 0
  }
  process.stdout.on('error', (err: NodeJS.ErrnoException) => { onStdoutError(cmd.name, err) })
  try {
    const { opts, positionals } = parseCommandArgs(cmd, rest)
    return await cmd.run(opts, positionals)
  } catch (err) {
    const e = toError(err)
    if (e instanceof UsageError) {
      process.stderr.write(`meshwork ${cmd.name}: ${e.message}\n`)
      return 2
    }
    process.stderr.write(`meshwork ${cmd.name}: ${e.message}\n`)
    if (process.env.MESHWORK_DEBUG === '1' && e.stack !== undefined) process.stderr.write(e.stack + '\n')
    return 1
  }
}

/**
 * stdout closed by its reader (`meshwork status --watch --json | head -1`):
 * a client has nowhere left to write and exits 0 at once, quietly (it was a
 * stack trace); a node keeps running without its stdout (its logs go to
 * stderr). Any other write error is thrown as before.
 */
function onStdoutError (command: string, err: NodeJS.ErrnoException): void {
  if (err.code !== 'EPIPE') throw err
  if (command !== 'node') process.exit(0)
}
