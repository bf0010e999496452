/**
 * V8's trade of memory for speed on a long-running `meshwork node` (its own
 * module: only the node command sets V8 flags).
 */
import { setFlagsFromString } from 'node:v8'
import type { MeshNode } from '../node/mesh-node.ts'
import type { Logger } from '../util/logger.ts'
import { formatDuration } from './command.ts'

/**
 * How long a node's board must stay unchanged before V8 favours memory over
 * speed; any change of the board (a task claimed, run, merged anywhere in the
 * mesh) switches it back at once. @default 15 s
 */
export const FAVOUR_MEMORY_AFTER_MS = 15_000

/**
 * How long a joiner (a node whose data dir holds no board yet) runs at full
 * speed at most while its first sync has not completed. @default 30 s
 */
const JOIN_AT_FULL_SPEED_MS = 30_000

/**
 * V8 favours memory (`--optimize-for-size`) while the node is idle and speed
 * while its board changes. A node runs for days and is idle most of the time,
 * and V8's default heap growing then lets the old generation fill with
 * garbage to several times what is live (heaps of 100 MiB holding 35 were
 * seen): an idle node's RSS is about a sixth lower with the flag (docs/
 * benchmarks.md, idle cost). But the flag costs a busy node dearly: a
 * 10,000-task board's receive took 2.5-3x the CPU with it (in-process), and
 * bench:e2e's 40 independent tasks took 3.9x their lower bound with it set for
 * good against 3.1x without (1.14 against 1.45 merges a second with instant
 * tasks, the same checkout back to back). So it is set after
 * `FAVOUR_MEMORY_AFTER_MS` without a board change (a joiner: not before its
 * first sync completed, or `JOIN_AT_FULL_SPEED_MS`) and cleared by the next
 * change. Changed only once the node's modules are loaded: a flag changed
 * before would make V8 refuse the compile cache the other commands share (the
 * cache records the flags it was made with).
 */
export function favourMemoryWhenIdle (node: MeshNode, joining: boolean, log: Logger): () => void {
  const started = Date.now()
  let changedAt = started
  let small = false
  // one timer, set for when the flag may next be due (a timer every second woke an idle node for nothing)
  let timer: NodeJS.Timeout | null = null
  const arm = (ms: number): void => {
    timer = setTimeout(check, Math.max(0, ms))
    timer.unref()
  }
  const check = (): void => {
    timer = null
    const now = Date.now()
    if (small) return
    if (now - changedAt < FAVOUR_MEMORY_AFTER_MS) { arm(changedAt + FAVOUR_MEMORY_AFTER_MS - now); return }
    // a joiner: looked at again every second until its first sync completed (or the limit)
    if (joining && node.stats.syncSessions === 0 && now - started < JOIN_AT_FULL_SPEED_MS) { arm(1000); return }
    small = true
    setFlagsFromString('--optimize-for-size')
    log.debug('node:v8-memory', { note: `no board change for ${formatDuration(FAVOUR_MEMORY_AFTER_MS)}: V8 favours memory` })
  }
  const onChange = (): void => {
    changedAt = Date.now()
    // the timer set before this change looks again when it fires
    if (timer === null) arm(FAVOUR_MEMORY_AFTER_MS)
    if (!small) return
    small = false
    setFlagsFromString('--no-optimize-for-size')
    log.debug('node:v8-speed', { note: 'the board changed: V8 favours speed' })
  }
  node.addEventListener('board:update', onChange)
  arm(FAVOUR_MEMORY_AFTER_MS)
  return () => {
    if (timer !== null) clearTimeout(timer)
    timer = null
    node.removeEventListener('board:update', onChange)
  }
}
