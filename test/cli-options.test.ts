import { describe, it, expect } from 'vitest'
import { closest, commandHelp, editDistance, parseCommandArgs } from '../src/cli/command.ts'
import { nodeCommand } from '../src/cli/node.ts'
import { statusCommand } from '../src/cli/status.ts'
import { resolveCommand } from '../src/cli/resolve.ts'
import { UsageError } from '../src/util/errors.ts'

describe('typed CLI options', () => {
  it('every flag is a typed field with its default applied in one place', () => {
    const { opts } = parseCommandArgs(nodeCommand, [])
    expect(opts.slots).toBe(1)
    expect(opts.grace).toBe(30_000)
    expect(opts['suspect-after']).toBe(3000)
    expect(opts['task-timeout']).toBe(2 * 3_600_000)
    expect(opts.listen).toEqual(['/ip4/0.0.0.0/tcp/4001'])
    expect(opts.agent).toBe('claude')
    expect(opts['init-repo']).toBe(false)
    expect(opts.repo).toBeUndefined()
    const given = parseCommandArgs(nodeCommand, ['--slots', '0', '--grace', '2s', '--listen', '/ip4/127.0.0.1/tcp/0', '--listen', '/ip4/127.0.0.1/tcp/1', '--agent', 'sim', '--allowed-tools', 'Bash(git *), Bash(npm test)', '--max-budget-usd', '0.5']).opts
    expect(given).toMatchObject({ slots: 0, grace: 2000, listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/1'], agent: 'sim', 'allowed-tools': ['Bash(git *)', 'Bash(npm test)'], 'max-budget-usd': 0.5 })
    // a comma inside a rule's parentheses belongs to the rule
    expect(parseCommandArgs(nodeCommand, ['--allowed-tools', 'Bash(echo a,b),Read, Bash(git log --format=%h,%s)']).opts['allowed-tools']).toEqual(['Bash(echo a,b)', 'Read', 'Bash(git log --format=%h,%s)'])
    expect(parseCommandArgs(statusCommand, []).opts).toMatchObject({ json: false, watch: false, interval: 1000, timeout: 15_000, bootstrap: [] })
    // the help text shows the same defaults
    const help = commandHelp(nodeCommand)
    expect(help).toMatch(/--grace DURATION +.*\(default: 30s\)/)
    expect(help).toMatch(/--slots N +.*\(default: 1\)/)
  })

  it('--main-lost-after: how long a main on no live node is waited for (default 15s, at least 1s), in --help', () => {
    expect(parseCommandArgs(nodeCommand, []).opts['main-lost-after']).toBe(15_000)
    expect(parseCommandArgs(nodeCommand, ['--main-lost-after', '2m']).opts['main-lost-after']).toBe(120_000)
    expect(() => parseCommandArgs(nodeCommand, ['--main-lost-after', 'soon'])).toThrow('--main-lost-after must be a duration such as 500ms, 15s, 2m or 1h, got "soon".')
    expect(() => parseCommandArgs(nodeCommand, ['--main-lost-after', '10ms'])).toThrow('--main-lost-after must be at least 1s, got "10ms".')
    expect(commandHelp(nodeCommand)).toMatch(/--main-lost-after DURATION +[\s\S]*puts main back to the last main it has[\s\S]*\(default: 15s\)/)
  })

  it('bad values are usage errors naming the flag, all reported at once', () => {
    let err: unknown
    try { parseCommandArgs(nodeCommand, ['--slots', 'two', '--grace', 'soon']) } catch (e) { err = e }
    expect(err).toBeInstanceOf(UsageError)
    expect((err as Error).message).toContain('--slots must be an integer >= 0, got "two".')
    expect((err as Error).message).toContain('--grace must be a duration such as 500ms, 15s, 2m or 1h, got "soon".')
    expect(() => parseCommandArgs(statusCommand, ['--interval', '10ms'])).toThrow('--interval must be at least 100ms, got "10ms".')
    expect(() => parseCommandArgs(resolveCommand, ['c-1', '--action', 'ousr'])).toThrow('--action must be one of ours, theirs, rerun, agent, abandon, got "ousr" (did you mean ours?).')
  })

  it('unknown flags suggest the nearest known one', () => {
    expect(() => parseCommandArgs(nodeCommand, ['--slot', '2'])).toThrow(/Unknown option '--slot'\. Did you mean --slots\? Run `meshwork node --help`/)
    expect(() => parseCommandArgs(nodeCommand, ['--init-rpeo'])).toThrow(/Did you mean --init-repo\?/)
    expect(() => parseCommandArgs(nodeCommand, ['--zzzzzz'])).toThrow(/^Unknown option '--zzzzzz'\. Run/)
    expect(editDistance('smi', 'sim')).toBe(1)
    expect(editDistance('slot', 'slots')).toBe(1)
    expect(closest('stauts', ['status', 'submit'])).toBe('status')
    expect(closest('xyz', ['status', 'submit'])).toBeNull()
  })
})
