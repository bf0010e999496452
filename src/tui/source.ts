import { switchPeer, type Client, type PeerCandidate } from '../api/client.ts'
import { asPeerId } from '../crdt/schema.ts'
import { buildStatus } from '../api/status.ts'
import { cancelTask, resolveConflict, retryTask } from '../api/tasks.ts'
import { answerApproval } from '../api/approvals.ts'
import type { MembersView } from '../protocol/members.ts'
import type { TuiActions, TuiSource } from './app.ts'
import { appendProgress, tuiData, type LinkState, type ProgressLine, type TuiData } from './model.ts'

/** How often the membership view (liveness, load, back-off, latest progress) is asked for. @default 1 s */
export const MEMBERS_POLL_MS = 1000

/** Least time between two frames: at most five redraws a second, whatever the gossip rate. @default 200 ms */
export const MIN_FRAME_MS = 200

/**
 * How long the node read through may go without answering before the TUI says
 * it lost it and tries another node: three missed polls. @default 3 s
 */
export const LOST_AFTER_MS = 3000

/** How often a full sync repairs board gossip the client may have missed. @default 5 s */
export const RESYNC_MS = 5000

export interface LiveSourceInit {
  client: Client
  pollMs?: number
  minFrameMs?: number
}

/** A `TuiSource` that also has to be started and stopped. */
export interface LiveSource extends TuiSource {
  start: () => void
  stop: () => Promise<void>
}

/**
 * The TUI's data from a light client: the board it follows, the membership
 * view of the node it reads through (polled; runs never overlap), and the
 * agents' progress gossip, which the client subscribes to so the output view
 * is live. Changes are coalesced into at most one frame per `minFrameMs`.
 */
export function liveSource (init: LiveSourceInit): LiveSource {
  const { client } = init
  const pollMs = init.pollMs ?? MEMBERS_POLL_MS
  const minFrameMs = init.minFrameMs ?? MIN_FRAME_MS
  const listeners = new Set<() => void>()
  const progress = new Map<string, ProgressLine[]>()
  let view: MembersView | null = null
  let lastOkAt = Date.now()
  let link: LinkState | null = null
  // every node heard of, with its addresses: where to go when the node read through stops
  const known = new Map<string, PeerCandidate & { name: string }>()
  let current: TuiData | null = null
  let lastFrame = 0
  let frameTimer: NodeJS.Timeout | null = null
  let stopped = false
  let loop: Promise<void> = Promise.resolve()
  const stopSignal = new AbortController()

  const emit = (): void => {
    frameTimer = null
    if (stopped) return
    lastFrame = Date.now()
    const snap = client.node.board.snapshot()
    current = tuiData(buildStatus(snap, view), snap, view, progress, client.peer, lastFrame, link ?? undefined)
    for (const l of listeners) l()
  }
  const schedule = (): void => {
    if (frameTimer !== null || stopped) return
    frameTimer = setTimeout(emit, Math.max(0, lastFrame + minFrameMs - Date.now()))
  }
  const onProgress = (evt: CustomEvent<{ taskId: string, kind: string, text: string, at: number }>): void => {
    if (appendProgress(progress, evt.detail.taskId, evt.detail)) schedule()
  }
  const onBoard = (): void => { schedule() }

  const sleep = async (ms: number): Promise<void> => {
    await new Promise<void>(resolve => {
      const t = setTimeout(resolve, ms)
      stopSignal.signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
  }

  const poll = async (): Promise<void> => {
    let lastSync = Date.now()
    while (!stopped) {
      const v = await client.node.fetchMembers(client.peer).catch(() => null)
      if (stopped) return
      if (v !== null) {
        view = v
        lastOkAt = Date.now()
        if (link !== null) link = null
        for (const m of v.members) if (m.addrs.length > 0 && m.state !== 'left') known.set(m.peerId, { peerId: m.peerId, addrs: m.addrs, name: m.name })
        for (const [taskId, p] of Object.entries(v.progress ?? {})) appendProgress(progress, taskId, p)
      } else if (Date.now() - lastOkAt >= LOST_AFTER_MS) {
        await recover()
        if (stopped) return
        schedule()
        continue
      }
      if (Date.now() - lastSync >= RESYNC_MS) {
        lastSync = Date.now()
        await client.node.requestSync(client.peer)
      }
      // a frame every poll even when nothing changed: elapsed times, back-off and "last seen" move on
      schedule()
      await sleep(pollMs)
    }
  }

  const nameOf = (peer: string): string => known.get(peer)?.name ?? client.node.board.snapshot().nodes.get(asPeerId(peer))?.name ?? peer.slice(-8)

  // the node read through stopped answering: say so at once, then try every other node heard of
  const recover = async (): Promise<void> => {
    const lostPeer = client.peer
    const lostSince = link?.lostSince ?? lastOkAt
    const others = [...known.values()].filter(c => c.peerId !== lostPeer)
    link = { lostSince, lostPeer: nameOf(lostPeer), lastOkAt, note: others.length > 0 ? `trying ${others.map(o => o.name).join(', ')}` : 'no other node known; retrying it' }
    emit()
    const moved = others.length > 0 ? await switchPeer(client, others) : null
    if (stopped) return
    if (moved !== null) {
      const v = await client.node.fetchMembers(moved).catch(() => null)
      if (v !== null) {
        view = v
        lastOkAt = Date.now()
        link = null
        return
      }
    }
    link = { lostSince, lostPeer: nameOf(lostPeer), lastOkAt, note: others.length > 0 ? `no other node answered (${others.map(o => o.name).join(', ')}); retrying` : 'no other node known; retrying it' }
    await sleep(pollMs)
  }

  return {
    current: () => current,
    subscribe: (listener) => {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    start: () => {
      client.node.followProgress()
      client.node.addEventListener('progress', onProgress)
      client.node.addEventListener('board:update', onBoard)
      // the first frame waits for the first membership view: without it every node would read as dead
      loop = poll()
    },
    stop: async () => {
      stopped = true
      stopSignal.abort()
      if (frameTimer !== null) clearTimeout(frameTimer)
      client.node.removeEventListener('progress', onProgress)
      client.node.removeEventListener('board:update', onBoard)
      await loop
    }
  }
}

/**
 * The TUI's actions: exactly the calls `meshwork resolve`, `cancel` and
 * `retry` make (a decision, a cancel's too, records the client's peer id as `by`).
 */
export function liveActions (client: Client): TuiActions {
  return {
    resolve: async (conflictId, action) => { await resolveConflict(client, conflictId, action, '') },
    cancel: async (taskId) => await cancelTask(client, taskId),
    retry: async (taskId) => { await retryTask(client, taskId) },
    approve: async (approvalId, allow) => { await answerApproval(client, approvalId, allow, '') }
  }
}
