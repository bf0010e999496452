import { runTui, renderPlain, plainSignature } from '../tui/index.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions, watchStatus } from './mesh-client.ts'

export const tuiCommand = defineCommand({
  name: 'tui',
  summary: summaryOf('tui'),
  usage: 'meshwork tui [--no-bell] [--plain] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'Joins as a light peer (never takes work, never listed among the nodes). Views: 1 tasks (the DAG: state, node,',
    'attempt, time, cost, tokens, latest agent line, critical path *), 2 nodes (slots, load, rate-limit back-off),',
    '3 inbox (permission requests of --approvals runs, conflicts with both sides of each hunk, failed tasks), 4 output',
    '(one task\'s live agent output). Keys: arrows or j/k select, Enter opens a task\'s output, PgUp/PgDn scroll; in the',
    'inbox on a permission request a allow, d deny; on a conflict o ours, t theirs, r rerun, a agent, x abandon; on tasks',
    'c cancel, r retry. Every action asks y/n and does exactly what `meshwork approve`, `resolve`, `cancel` and `retry` do.',
    'q or Ctrl-C quits. The bell rings when something new waits on you.',
    'Without a terminal (or with --plain) it prints the `status` view and the inbox whenever they change.'
  ].join('\n'),
  options: {
    'no-bell': opt.boolean({ description: 'Do not ring the terminal bell when a conflict or failure reaches the inbox.' }),
    plain: opt.boolean({ description: 'Print plain status frames when something changes instead of the interactive UI (the default without a terminal).' }),
    interval: opt.duration({ arg: 'DURATION', default: 1000, min: 100, description: 'How often the plain output checks for changes.' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts) => {
    const interval = opts.interval
    const interactive = !opts.plain && process.stdout.isTTY === true && process.stdin.isTTY === true
    const client = await clientFromOptions(opts)
    try {
      if (interactive) {
        await runTui({ client, bell: !opts['no-bell'] })
        return 0
      }
      process.stderr.write('meshwork tui: no terminal here (or --plain): printing the status and the inbox whenever they change; Ctrl-C to stop.\n')
      let last = ''
      await watchStatus(client, interval, s => {
        const sig = plainSignature(s)
        if (sig === last) return
        last = sig
        process.stdout.write(`--- ${new Date().toISOString()}\n${renderPlain(s, client.peer)}\n`)
      })
      return 0
    } finally {
      await client.close()
    }
  }
})
