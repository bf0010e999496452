import { answerApproval } from '../api/approvals.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'
import { UsageError } from '../util/errors.ts'

export const approveCommand = defineCommand({
  name: 'approve',
  summary: summaryOf('approve'),
  usage: 'meshwork approve REQUEST_ID|TASK_ID --allow|--deny [--always-for-task] [--note TEXT] (--join TOKEN | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'A node started with --approvals puts each permission request of its claude runs (a tool use its --allowed-tools',
    'and --permission-mode do not allow, e.g. a Bash command) on the board, and the run waits. `meshwork status` lists the',
    'open ones (and `status --json` every one, under "approvals"); the TUI inbox shows them with a and d keys. --allow lets',
    'the tool run, --deny refuses it (the agent is told, with the note). The answer records this client\'s peer id.',
    'A task id names its only open request. An unanswered request is denied after the node\'s',
    '--approval-timeout; one whose run stopped (cancel, timeout, node stop) expires.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a permission request id (or the id of a task with one open request)' },
  options: {
    allow: opt.boolean({ description: 'Let the tool run.' }),
    deny: opt.boolean({ description: 'Refuse it; the agent is told (with the note) and goes on without it.' }),
    note: opt.string({ arg: 'TEXT', default: '', description: 'Why (kept with the answer; a denial\'s note is passed to the agent).' }),
    'always-for-task': opt.boolean({ description: 'With --allow: also allow every later request of the same tool in this task, without asking.' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts, [id]) => {
    if (opts.allow === opts.deny) throw new UsageError(`meshwork approve needs exactly one of --allow or --deny${opts.allow ? ', not both' : ''}. Usage: meshwork approve REQUEST_ID --allow|--deny [--note TEXT]`)
    if (opts['always-for-task'] && !opts.allow) throw new UsageError('--always-for-task goes with --allow (it allows the tool for the rest of the task); a denial is for one request.')
    const client = await clientFromOptions(opts)
    try {
      const rid = await answerApproval(client, id as string, opts.allow, opts.note, opts['always-for-task'])
      process.stdout.write(`${rid}${rid !== id ? ` (the open request of task ${id as string})` : ''}: ${opts.allow ? 'allowed' : 'denied'}${opts['always-for-task'] ? ', with every later request of the same tool in this task' : ''} by ${client.node.peerId}; the node's run goes on\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})
