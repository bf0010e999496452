import type { Command } from './command.ts'

/**
 * Every command's name, one-line summary and loader, in the order
 * `meshwork --help` lists them. Commands are loaded only when they run: the
 * top-level help imports nothing heavy (libp2p, Automerge and ink take most of
 * a second to load), and a command loads only the modules it uses.
 */
export const COMMAND_TABLE = [
  { name: 'init', summary: 'Create a new mesh: write a swarm key (libp2p pnet format, mode 0600) and print the mesh id.', load: async () => (await import('./init.ts')).initCommand },
  { name: 'node', summary: 'Run a worker node until SIGINT/SIGTERM.', load: async () => (await import('./node.ts')).nodeCommand },
  { name: 'submit', summary: 'Validate a plan (YAML or JSON) and add its tasks to the board.', load: async () => (await import('./tasks.ts')).submitCommand },
  { name: 'status', summary: 'Show the mesh as seen through the node it connects to: nodes, tasks, main, conflicts.', load: async () => (await import('./status.ts')).statusCommand },
  { name: 'resolve', summary: 'Record a human decision for a merge conflict; the merge leader carries it out.', load: async () => (await import('./resolve.ts')).resolveCommand },
  { name: 'cancel', summary: 'Cancel a task that has not merged (stops its agent if running).', load: async () => (await import('./tasks.ts')).cancelCommand },
  { name: 'retry', summary: 'Put a failed or cancelled task back to pending with its attempt count reset.', load: async () => (await import('./tasks.ts')).retryCommand },
  { name: 'tui', summary: 'Terminal UI: nodes, the task DAG with live progress and cost, the conflict inbox, keys for resolve, cancel and retry.', load: async () => (await import('./tui.ts')).tuiCommand },
  { name: 'demo', summary: 'Start a local three-node mesh on loopback and run a sample plan end to end with the sim agent.', load: async () => (await import('./demo.ts')).demoCommand }
] as const satisfies ReadonlyArray<{ name: string, summary: string, load: () => Promise<Command> }>

export type CommandName = typeof COMMAND_TABLE[number]['name']

/** The one-line summary of a command, for its own `Command` object. */
export function summaryOf (name: CommandName): string {
  return COMMAND_TABLE.find(c => c.name === name)!.summary
}
