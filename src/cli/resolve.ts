import { userInfo, hostname } from 'node:os'
import { resolveConflict, RESOLVE_ACTIONS, type ResolveAction } from '../api/tasks.ts'
import { UsageError } from '../util/errors.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { str, type Command } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './status.ts'

export const resolveCommand: Command = {
  name: 'resolve',
  summary: summaryOf('resolve'),
  usage: 'meshwork resolve CONFLICT_ID --action ours|theirs|rerun|agent|abandon [--note TEXT] (--join TOKEN | ...)',
  details: [
    'ours     keep main\'s side of every conflicted hunk, merge the rest of the task',
    'theirs   take the task\'s side of every conflicted hunk',
    'rerun    discard the task\'s branch and run it again on the current main, telling the agent what conflicted',
    'agent    the merge leader starts the merge in a worktree with git\'s conflict markers and runs its agent (--agent) there',
    '         to resolve them (the note is passed on); no marker may be left. The merge then goes through --verify',
    '         like any merge; if the agent fails or leaves markers, the conflict waits for another decision, with the reason',
    'abandon  drop the task\'s changes; the task ends cancelled',
    'The decision records who made it (user@host) and when; ours, theirs and agent go through --verify like any merge.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a conflict id' },
  options: {
    action: { type: 'string', arg: 'ACTION', description: 'ours, theirs, rerun, agent or abandon.' },
    note: { type: 'string', arg: 'TEXT', description: 'Why (kept with the decision).' },
    ...CLIENT_OPTIONS
  },
  run: async (opts, [id]) => {
    const action = str(opts, 'action')
    if (action === undefined || !(RESOLVE_ACTIONS as readonly string[]).includes(action)) {
      throw new UsageError(`--action must be one of ${RESOLVE_ACTIONS.join(', ')}${action === undefined ? '' : `, got "${action}"`}.`)
    }
    const client = await clientFromOptions(opts)
    try {
      const by = `${userInfo().username}@${hostname()}`
      await resolveConflict(client, id as string, action as ResolveAction, str(opts, 'note') ?? '', by)
      process.stdout.write(`${id as string}: decision "${action}" recorded by ${by}; the merge leader carries it out\n`)
      return 0
    } finally {
      await client.close()
    }
  }
}
