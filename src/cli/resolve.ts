import { resolveConflict, RESOLVE_ACTIONS, type ResolveAction } from '../api/tasks.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { closest, defineCommand, opt } from './command.ts'
import { UsageError } from '../util/errors.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'

export const resolveCommand = defineCommand({
  name: 'resolve',
  summary: summaryOf('resolve'),
  usage: 'meshwork resolve CONFLICT_ID|TASK_ID --action ours|theirs|rerun|agent|abandon [--note TEXT] (--join TOKEN | ...)',
  details: [
    'ours     keep main\'s side of every conflicted hunk, merge the rest of the task',
    'theirs   take the task\'s side of every conflicted hunk',
    'rerun    discard the task\'s branch and run it again on the current main, telling the agent what conflicted',
    'agent    the merge leader starts the merge in a worktree with git\'s conflict markers and runs its agent (--agent) there',
    '         to resolve them (the note is passed on); no marker may be left. The merge then goes through --verify',
    '         like any merge; if the agent fails or leaves markers, the conflict waits for another decision, with the reason',
    'abandon  drop the task\'s changes; the task ends cancelled',
    'The decision records who made it (this client\'s peer id, from --identity; `meshwork whoami` prints it) and when;',
    'ours, theirs and agent go through --verify like any merge.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a conflict id (or the id of a task with one open conflict)' },
  options: {
    action: opt.custom<ResolveAction>({
      arg: 'ACTION',
      description: 'ours, theirs, rerun, agent or abandon.',
      parse: (v) => {
        if (v === undefined || !(RESOLVE_ACTIONS as readonly string[]).includes(v)) {
          const near = v === undefined ? null : closest(v, RESOLVE_ACTIONS)
          throw new UsageError(`--action must be one of ${RESOLVE_ACTIONS.join(', ')}${v === undefined ? '' : `, got "${v}"${near !== null ? ` (did you mean ${near}?)` : ''}`}.`)
        }
        return v as ResolveAction
      }
    }),
    note: opt.string({ arg: 'TEXT', default: '', description: 'Why (kept with the decision).' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts, [id]) => {
    const action = opts.action
    const client = await clientFromOptions(opts)
    try {
      const cid = await resolveConflict(client, id as string, action, opts.note)
      process.stdout.write(`${cid}${cid !== id ? ` (the open conflict of task ${id as string})` : ''}: decision "${action}" recorded by ${client.node.peerId}; the merge leader carries it out\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})
