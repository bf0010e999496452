import type { AnyCommand } from './command.ts'

/** One command of the CLI: its name, its one-line summary and how to load it. */
export interface CommandEntry {
  name: string
  summary: string
  load: () => Promise<AnyCommand>
}

/**
 * Every command's name, one-line summary and loader, in the order
 * `meshwork --help` lists them. Commands are loaded only when they run: the
 * top-level help imports nothing heavy (libp2p, Automerge and ink take most of
 * a second to load), and a command loads only the modules it uses.
 */
export const COMMAND_TABLE: readonly CommandEntry[] = [
  { name: 'init', summary: 'Create a new mesh: write a swarm key (libp2p pnet format, mode 0600) and print the mesh id.', load: async () => (await import('./init.ts')).initCommand },
  { name: 'node', summary: 'Run a worker node until SIGINT/SIGTERM.', load: async () => (await import('./node.ts')).nodeCommand },
  { name: 'submit', summary: 'Validate a plan (YAML or JSON) and add its tasks to the board.', load: async () => (await import('./tasks.ts')).submitCommand },
  { name: 'status', summary: 'Show the mesh as seen through the node it connects to: nodes, tasks, main, conflicts.', load: async () => (await import('./status.ts')).statusCommand },
  { name: 'resolve', summary: 'Record a human decision for a merge conflict; the merge leader carries it out.', load: async () => (await import('./resolve.ts')).resolveCommand },
  { name: 'approve', summary: 'Allow or deny a permission request that a run of a node started with --approvals waits on.', load: async () => (await import('./approve.ts')).approveCommand },
  { name: 'cancel', summary: 'Cancel a task that has not merged (stops its agent if running).', load: async () => (await import('./tasks.ts')).cancelCommand },
  { name: 'retry', summary: 'Put a failed or cancelled task back to pending with its attempt count reset.', load: async () => (await import('./tasks.ts')).retryCommand },
  { name: 'launch', summary: 'Install and start nodes on hosts over ssh (systemd unit, or nohup where there is no systemd) and print each one\'s state.', load: async () => (await import('./launch.ts')).launchCommand },
  { name: 'drain', summary: 'Take a node out: it stops claiming, finishes or hands back its runs, waits for its branches to merge, and leaves.', load: async () => (await import('./drain.ts')).drainCommand },
  { name: 'forget', summary: 'Stop counting a node that is gone for good toward the majority the merge leader needs to advance main.', load: async () => (await import('./forget.ts')).forgetCommand },
  { name: 'budget', summary: 'Set the mesh\'s total spending cap (--usd X) or a plan\'s (--plan); alone, print the caps and what is spent.', load: async () => (await import('./budget.ts')).budgetCommand },
  { name: 'tui', summary: 'Terminal UI: nodes, the task DAG with live progress and cost, the conflict inbox, keys for resolve, cancel and retry.', load: async () => (await import('./tui.ts')).tuiCommand },
  { name: 'export', summary: 'Print the board as one JSON object (tasks, conflicts, main, nodes), for backups and scripts.', load: async () => (await import('./export.ts')).exportCommand },
  { name: 'import', summary: 'Start the unfinished tasks of an export (not merged, not cancelled) again in a new mesh.', load: async () => (await import('./export.ts')).importCommand },
  { name: 'rotate-key', summary: 'Move a stopped node\'s board to a new swarm key (the mesh id and genesis change with the key; tasks, states, main are kept).', load: async () => (await import('./rotate-key.ts')).rotateKeyCommand },
  { name: 'whoami', summary: 'Print this client\'s peer id (its --identity key, created on first use), for --allow lists and decisions.', load: async () => (await import('./whoami.ts')).whoamiCommand },
  { name: 'token', summary: 'Print the join token of a node on this machine (from DATA/node.json).', load: async () => (await import('./token.ts')).tokenCommand },
  { name: 'demo', summary: 'Start a local three-node mesh on loopback and run a sample plan end to end with the sim agent.', load: async () => (await import('./demo.ts')).demoCommand }
]

/** The one-line summary of a command, for its own `Command` object. */
export function summaryOf (name: string): string {
  const entry = COMMAND_TABLE.find(c => c.name === name)
  if (entry === undefined) throw new Error(`no command "${name}" in the command table`)
  return entry.summary
}
