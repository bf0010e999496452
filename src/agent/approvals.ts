import { writeFile } from 'node:fs/promises'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Task } from '../crdt/schema.ts'
import type { AgentProgress } from './types.ts'
import { APPROVAL_TOKEN_ENV, APPROVAL_TOOL, APPROVAL_URL_ENV } from './approval-mcp.ts'

/*
 * Approvals from the agent's side: what a `claude` run needs to send its
 * permission requests to a human instead of having them denied. The node's
 * `ApprovalGate` (src/node/approvals.ts) gives each run an endpoint and a
 * secret; the run starts Claude Code with `--mcp-config` naming meshwork's
 * stdio MCP server (approval-mcp.ts, run with this process's Node) and
 * `--permission-prompt-tool mcp__meshwork__approve`.
 *
 * Facts checked with Claude Code 2.1.332: the permission prompt tool is called
 * with `{ tool_name, input, tool_use_id }` for every tool use the run's rules
 * neither allow nor deny (a Bash command outside `--allowedTools`; edits are
 * allowed by `acceptEdits`), and its text result is read as
 * `{"behavior":"allow","updatedInput":{...}}` or
 * `{"behavior":"deny","message":"..."}` (a deny reaches the model as the tool's
 * error). The tool still works as the prompt tool when the model itself may
 * not call it (`--disallowedTools mcp__meshwork__approve`), which keeps the
 * agent from filing requests of its own. A call that waits 75 s was answered
 * normally: Claude Code's MCP tool timeout defaults to 1e8 ms (MCP_TOOL_TIMEOUT).
 */

/** The MCP server's name in the run's MCP config. */
export const APPROVAL_SERVER = 'meshwork'

/** The permission prompt tool as Claude Code names it. */
export const APPROVAL_PROMPT_TOOL = `mcp__${APPROVAL_SERVER}__${APPROVAL_TOOL}`

/** What a run tells the gate when it starts. */
export interface ApprovalRunInit {
  task: Task
  attempt: number
  /** The run's own config dir (CLAUDE_CONFIG_DIR): the MCP config with the secret is written there. */
  configDir: string
  /** Aborted when the run stops (timeout, cancel, lost claim, node stop): its open requests expire. */
  signal: AbortSignal
  /** Told when the run starts and stops waiting for a human (shown as the task's progress). */
  onProgress?: (p: AgentProgress) => void
}

/** One run's link to the gate. */
export interface ApprovalSession {
  /** Arguments added to the claude command line. */
  args: string[]
  /** Tools the agent itself must not call (the prompt tool). */
  disallowed: string[]
  /** The run is over: requests it left open expire. */
  end: () => Promise<void>
}

/** Where a node's runs send permission requests (`--approvals`). */
export interface ApprovalGate {
  begin: (run: ApprovalRunInit) => Promise<ApprovalSession>
}

/** The MCP server script beside this module (`.ts` from a clone, `.js` when built or bundled: the bundle has it as an entry of its own). */
export function approvalMcpScript (): string {
  const here = fileURLToPath(import.meta.url)
  return join(here, '..', `approval-mcp-server${extname(here)}`)
}

/**
 * Writes the run's MCP config (mode 0600, in its config dir, which the
 * agent's file tools may not read) and returns the claude arguments that use it.
 */
export async function writeApprovalConfig (configDir: string, url: string, token: string): Promise<string[]> {
  const file = join(configDir, 'meshwork-mcp.json')
  const config = {
    mcpServers: {
      [APPROVAL_SERVER]: {
        type: 'stdio',
        command: process.execPath,
        args: [approvalMcpScript()],
        env: { [APPROVAL_URL_ENV]: url, [APPROVAL_TOKEN_ENV]: token }
      }
    }
  }
  await writeFile(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 })
  return ['--mcp-config', file, '--permission-prompt-tool', APPROVAL_PROMPT_TOOL]
}
