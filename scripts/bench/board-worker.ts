/**
 * One MeshNode in its own process (or a group of them sharing the process, each
 * a full libp2p node on its own TCP port), driven by `scripts/bench-board.ts`
 * over Node IPC (see ./board-protocol.ts). Started with
 * `child_process.fork(thisFile, [JSON.stringify(processConfig)], { execPath: process.execPath })`.
 *
 * The worker exits when the parent disconnects, so a crashed parent never
 * leaves nodes behind.
 */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { MeshNode } from '../../src/node/mesh-node.ts'
import { benchNodeInit, sendToParent, workerConfig } from './lib/worker.ts'
import { topics } from '../../src/node/constants.ts'
import { addTasks, simpleTask } from '../../src/crdt/ops.ts'
import * as lifecycle from '../../src/crdt/lifecycle.ts'
import { parseTaskId } from '../../src/crdt/schema.ts'
import { BOARD_FILE, BOARD_LOG } from '../../src/crdt/store.ts'
import type { Logger, LogFields } from '../../src/util/logger.ts'
import type { Command, LifecycleStep, ProcessConfig, SaveReply, StatusReply, WorkerConfig, WorkerEvent, WroteReply } from './board-protocol.ts'
import { promptText } from './board-text.ts'

const sendRaw = (e: WorkerEvent): void => { sendToParent(e) }
const processConfig = workerConfig<ProcessConfig>('board-worker')
const configs: WorkerConfig[] = 'group' in processConfig ? processConfig.group : [processConfig]
const bootAt = Date.now()
const handlers: Array<(c: Command) => Promise<unknown>> = []


/** Starts node `index` of this process; returns its command handler. */
function runNode (config: WorkerConfig, index: number): (c: Command) => Promise<unknown> {
  const send = (e: WorkerEvent): void => { sendRaw(index === 0 ? e : { ...e, node: index }) }
  send({ ev: 'boot', at: bootAt })

  /** Counts log events instead of printing them (50 processes of log lines help nobody); keeps the last error text of each. */
  const logCounts: Record<string, number> = {}
  const lastErrors: Record<string, string> = {}
  function countingLogger (): Logger {
    const count = (level: string) => (event: string, fields?: LogFields): void => {
      if (level === 'info') return
      const k = `${level}:${event}`
      logCounts[k] = (logCounts[k] ?? 0) + 1
      if (fields?.error !== undefined) lastErrors[k] = String(fields.error).slice(0, 300)
    }
    const self: Logger = { debug: count('debug'), info: count('info'), warn: count('warn'), error: count('error'), child: () => self }
    return self
  }

  const node = new MeshNode(benchNodeInit(config, config.name, {
    heartbeatMs: config.heartbeatMs,
    ...(config.suspectAfterMs !== undefined ? { suspectAfterMs: config.suspectAfterMs } : {}),
    ...(config.deadAfterMs !== undefined ? { deadAfterMs: config.deadAfterMs } : {}),
    logger: countingLogger()
  }))


  let lastLocalChanges: number[] = []
  let connectionsClosed = 0
  let hasAllSent = false

  node.addEventListener('board:update', evt => {
    const at = Date.now()
    const u = evt.detail
    if (u.local) {
      lastLocalChanges.push(...u.changes.map(c => c.length))
      return
    }
    if (config.expectTasks !== undefined && !hasAllSent) {
      const n = node.board.snapshot().tasks.size
      if (n >= config.expectTasks) {
        hasAllSent = true
        send({ ev: 'hasAll', tasks: n, at })
      }
    }
    if (config.reportUpdates && u.tasks.length > 0) {
      const states = u.tasks.length <= 16 ? u.tasks.map(id => node.board.task(id)?.state ?? null) : []
      send({ ev: 'update', taskIds: u.tasks, states, at })
    }
  })

  node.addEventListener('peer:state', evt => {
    const t = evt.detail
    send({ ev: 'peer', peerId: t.peerId, from: t.from, to: t.to, at: Date.now() })
  })

  /** Makes one change through the node (persisted and broadcast) and returns its bytes. */
  function change (message: string, fn: Parameters<MeshNode['changeBoard']>[1]): WroteReply {
    lastLocalChanges = []
    const at = Date.now()
    node.changeBoard(message, fn)
    return { at, changeBytes: lastLocalChanges }
  }

  const hex40 = (): string => randomBytes(20).toString('hex')

  /**
   * One step of a task's life, written by the product's own lifecycle
   * transitions (one coarse change per step, as the scheduler and the merge
   * leader make them). A step its task's state does not allow is an error.
   */
  function lifecycleStep (idText: string, step: LifecycleStep): WroteReply {
    const id = parseTaskId(idText)
    const me = node.peerId
    if (step === 'create') {
      return change('plan', addTasks([simpleTask(id, { title: `Task ${id}`, prompt: promptText(id, 200), files: [`src/${id}.ts`] })]))
    }
    return change(`task:${step}`, d => {
      const t = node.board.task(id)
      if (t === undefined) throw new Error(`task ${id} is not on this node's board`)
      const now = Date.now()
      let ok: boolean
      switch (step) {
        case 'claim':
          ok = lifecycle.claim(d, id, me, t.epoch, now)
          break
        case 'running':
          ok = lifecycle.start(d, id, me, t.attempts + 1, now)
          break
        case 'done':
          lifecycle.addUsage(d, id, { costUsd: 0.4213, tokens: { input: 18_412, output: 6_734, cacheRead: 241_907, cacheWrite: 31_220 } })
          ok = lifecycle.complete(d, id, { peer: me, head: hex40(), summary: null, now })
          break
        case 'merging':
          // the bench's leader leads (a node elects only itself): peers refuse a merge written by a node that does not
          if (String(d.main.leader) !== me) lifecycle.electLeader(d, me, Number(d.main.term) + 1)
          ok = lifecycle.startMerge(d, id)
          break
        case 'merged':
          ok = lifecycle.merge(d, id, hex40(), now)
          break
        default: {
          const never: never = step
          throw new Error(`unknown step ${String(never)}`)
        }
      }
      if (!ok) throw new Error(`task ${id} is ${t.state}: the lifecycle does not allow step ${step} from there`)
    })
  }

  async function diskBytes (): Promise<number> {
    let total = 0
    for (const f of [BOARD_FILE, BOARD_LOG]) {
      try { total += (await stat(join(config.dataDir, f))).size } catch {}
    }
    return total
  }

  function status (): StatusReply {
    const memberStates: Record<string, number> = {}
    for (const m of node.membership.members()) memberStates[m.state] = (memberStates[m.state] ?? 0) + 1
    const t = topics(node.meshId)
    // the implementation has getMeshPeers; the exported interface does not declare it
    const pubsub = node.host.services.pubsub as unknown as { getMeshPeers?: (topic: string) => string[] }
    return {
      peerId: node.peerId,
      alive: node.membership.alive().length,
      memberStates,
      tasks: node.board.snapshot().tasks.size,
      heads: node.board.heads().length,
      connections: node.host.getConnections().length,
      connectionsClosed,
      boardMeshPeers: pubsub.getMeshPeers?.(t.board).length ?? -1,
      presenceMeshPeers: pubsub.getMeshPeers?.(t.presence).length ?? -1,
      rss: process.memoryUsage.rss(),
      rpcSent,
      maxPeerLagMs: Math.max(0, ...node.membership.members().filter(m => m.state !== 'left').map(m => m.lagMs)),
      stats: node.stats,
      logCounts,
      lastErrors
    }
  }

  /**
   * With `traceRpc`, counts what gossipsub sends through its metrics hook
   * (`onRpcSent(rpc, bytes)`), by message topic and control kind. Every other
   * metrics call is a no-op.
   */
  let rpcSent: Record<string, number> | null = null
  function traceRpc (): void {
    const counts: Record<string, number> = {}
    rpcSent = counts
    const add = (k: string, n: number): void => { counts[k] = (counts[k] ?? 0) + n }
    const short = (topic: string): string => topic.split('/').slice(2).join('/')
    interface Rpc {
      messages?: Array<{ topic?: string, data?: Uint8Array }>
      subscriptions?: unknown[]
      control?: { ihave?: Array<{ messageIDs?: unknown[] }>, iwant?: Array<{ messageIDs?: unknown[] }>, idontwant?: Array<{ messageIDs?: unknown[] }>, graft?: unknown[], prune?: unknown[] }
    }
    const noop: unknown = new Proxy(function () {}, { get: () => noop, apply: () => noop })
    const metrics = new Proxy({}, {
      get: (_t, key) => {
        if (key === 'onRpcSent') {
          return (rpc: Rpc, bytes: number): void => {
            add('bytes', bytes)
            add('rpcs', 1)
            const msgs = rpc.messages ?? []
            const ctl = rpc.control
            const kind = msgs.length > 0 ? `msg:${short(msgs[0]?.topic ?? '?')}` : ctl?.ihave?.length ? 'ihave' : ctl?.iwant?.length ? 'iwant' : ctl?.idontwant?.length ? 'idontwant' : ctl?.graft?.length || ctl?.prune?.length ? 'graft/prune' : rpc.subscriptions?.length ? 'subscriptions' : 'other'
            add(`bytes:${kind}`, bytes)
            for (const m of msgs) { add(`count:msg:${short(m.topic ?? '?')}`, 1); add(`data:msg:${short(m.topic ?? '?')}`, m.data?.length ?? 0) }
            for (const k of ['ihave', 'iwant', 'idontwant'] as const) {
              for (const x of ctl?.[k] ?? []) add(`ids:${k}`, x.messageIDs?.length ?? 0)
            }
          }
        }
        return noop
      }
    })
    ;(node.host.services.pubsub as unknown as { metrics: unknown }).metrics = metrics
  }

  async function handle (c: Command): Promise<unknown> {
    switch (c.cmd) {
      case 'write':
        return change('bench:write', addTasks([simpleTask(c.id, { prompt: promptText(c.id, 200) })]))
      case 'step':
        return lifecycleStep(c.id, c.step)
      case 'bulk': {
        const bytes: number[] = []
        const at = Date.now()
        for (let i = 0; i < c.count; i += c.batch) {
          const tasks = []
          for (let j = i; j < Math.min(c.count, i + c.batch); j++) {
            const id = `${c.prefix}-${j}`
            tasks.push(simpleTask(id, { title: `Task ${j}`, prompt: promptText(id, c.promptChars) }))
          }
          bytes.push(...change('plan', addTasks(tasks)).changeBytes)
          // let the persist-and-publish queue run between plan submissions, as separate CLI calls would
          await new Promise(resolve => setImmediate(resolve))
        }
        await node.flush()
        return { at, changeBytes: bytes } satisfies WroteReply
      }
      case 'status':
        return status()
      case 'save': {
        await node.flush()
        return {
          saveBytes: node.board.save().length,
          diskBytes: await diskBytes(),
          tasks: node.board.snapshot().tasks.size,
          changes: node.board.changeCount()
        } satisfies SaveReply
      }
      case 'stop':
        await node.stop()
        setImmediate(() => process.exit(0))
        return undefined
    }
  }

  send({ ev: 'starting', at: Date.now() })
  node.start().then(
    () => {
      node.host.addEventListener('connection:close', () => { connectionsClosed++ })
      if (config.traceRpc === true) traceRpc()
      if (config.diagNoPingAbort === true) {
        const monitor = (node.host as unknown as { components?: { connectionMonitor?: { abortConnectionOnPingFailure: boolean } } }).components?.connectionMonitor
        if (monitor === undefined) throw new Error('diagNoPingAbort: no connection monitor found on the libp2p node')
        monitor.abortConnectionOnPingFailure = false
      }
      send({ ev: 'ready', peerId: node.peerId, addrs: node.addrs(), at: Date.now() })
    },
    err => {
      send({ ev: 'failed', error: String((err as Error)?.stack ?? err) })
      setTimeout(() => process.exit(1), 100).unref()
    }
  )
  return handle
}

configs.forEach((c, i) => { handlers.push(runNode(c, i)) })

process.on('message', (msg: Command) => {
  const index = msg.node ?? 0
  const handle = handlers[index]
  const reply = (e: WorkerEvent): void => { sendRaw(index === 0 ? e : { ...e, node: index }) }
  if (handle === undefined) {
    reply({ ev: 'reply', reqId: msg.reqId, at: Date.now(), ok: false, error: `no node ${index} in this process` })
    return
  }
  handle(msg).then(
    data => { reply({ ev: 'reply', reqId: msg.reqId, at: Date.now(), ok: true, data }) },
    err => { reply({ ev: 'reply', reqId: msg.reqId, at: Date.now(), ok: false, error: String((err as Error)?.stack ?? err) }) }
  )
})

// the parent went away (crashed or finished): never outlive it
process.on('disconnect', () => { process.exit(0) })
// the end of a phase (`stop`): at once, so that a `--cpu-prof` profile is written
process.on('SIGTERM', () => { process.exit(0) })
