import { Scheduler } from '../../src/scheduler/scheduler.ts'
import { simAgent } from '../../src/agent/sim.ts'
import type { MeshNode } from '../../src/node/mesh-node.ts'
import type { TaskId } from '../../src/crdt/schema.ts'
import type { TestMesh } from './mesh.ts'

/** Counts every run start across a test mesh: `runs.get(id)` is the list of (node, epoch) that started it. */
export class RunLog {
  readonly runs = new Map<string, Array<{ node: string, epoch: number }>>()
  record (node: string, id: TaskId, epoch: number): void {
    const list = this.runs.get(id) ?? []
    list.push({ node, epoch })
    this.runs.set(id, list)
  }

  /** Tasks started more than once. */
  duplicates (): string[] {
    return [...this.runs].filter(([, l]) => l.length > 1).map(([id]) => id)
  }
}

/** Attaches a sim-agent scheduler to a node. */
export function attachScheduler (node: MeshNode, log: RunLog, slots = 2, extra: Partial<ConstructorParameters<typeof Scheduler>[0]> = {}): Scheduler {
  const s = new Scheduler({
    node,
    agent: simAgent(),
    slots,
    retryBaseMs: 200,
    onRunStart: (id, epoch) => { log.record(node.peerId, id, epoch) },
    ...extra
  })
  s.start()
  return s
}

export async function stopSchedulers (list: Scheduler[], graceMs = 0): Promise<void> {
  await Promise.all(list.map(async s => { await s.stop(graceMs) }))
}

export type { TestMesh }
