// The approval MCP server as a script (approval-mcp.ts; a node's Claude runs
// start it, see approvals.ts). A module of its own, so that a bundle, which
// may move approval-mcp.ts into a chunk shared with the CLI, keeps it as an
// entry whose only work is to serve.
import { serveApprovalMcp } from './approval-mcp.ts'

serveApprovalMcp()
