import { TASK_STATES, type TaskState, type Tokens } from '../crdt/schema.ts'
import { MEMBER_STATES } from '../node/membership.ts'
import type { StatusReport } from './status.ts'
import { shownState } from './shown-state.ts'

/**
 * The mesh's totals, from one status report: what `meshwork status` shows in
 * its header and what a node's `/metrics` exports as gauges, so the two agree.
 */
export interface MeshTotals {
  tasks: Record<TaskState, number>
  /** Tasks waiting for the merge leader: done or merging. */
  mergeQueue: number
  costUsd: number
  tokens: Tokens
  nodes: Record<string, number>
  openConflicts: number
}

export function meshTotals (s: Pick<StatusReport, 'tasks' | 'nodes' | 'conflicts'>): MeshTotals {
  const tasks = Object.fromEntries(TASK_STATES.map(st => [st, 0])) as Record<TaskState, number>
  const tokens: Tokens = { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }
  let costUsd = 0
  for (const t of s.tasks) {
    tasks[t.state]++
    costUsd += t.costUsd
    tokens.input += t.tokens.input
    tokens.output += t.tokens.output
    tokens.cacheRead += t.tokens.cacheRead
    tokens.cacheWrite += t.tokens.cacheWrite
  }
  const nodes: Record<string, number> = Object.fromEntries(MEMBER_STATES.map(st => [st, 0]))
  for (const n of s.nodes) { const st = shownState(n); nodes[st] = (nodes[st] ?? 0) + 1 }
  return {
    tasks,
    mergeQueue: tasks.done + tasks.merging,
    costUsd,
    tokens,
    nodes,
    openConflicts: s.conflicts.filter(c => c.state === 'open').length
  }
}

/** The totals as the lines of the status header. */
export function renderTotals (t: MeshTotals): string[] {
  const nonzero = (r: Record<string, number>): string => Object.entries(r).filter(([, v]) => v > 0).map(([k, v]) => `${v} ${k}`).join(', ') || 'none'
  const tok = t.tokens
  return [
    `totals: tasks ${nonzero(t.tasks)}; merge queue ${t.mergeQueue}; open conflicts ${t.openConflicts}`,
    `        nodes ${nonzero(t.nodes)}; cost $${t.costUsd.toFixed(2)}; tokens in ${tok.input} out ${tok.output} cache read ${tok.cacheRead} cache write ${tok.cacheWrite}`
  ]
}
