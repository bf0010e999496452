import type { Libp2p, PrivateKey, Stream } from '@libp2p/interface'
import { createClientHost } from '../node/client-host.ts'
import { MAX_STREAM_FRAME_BYTES } from '../node/constants.ts'
import type { SwarmKey } from '../node/swarm-key.ts'
import { FramedStream, encodeJson } from '../protocol/frame.ts'
import { BadFollowMessageError, FOLLOW_KEEPALIVE_MS, FOLLOW_PROTOCOL, decodeFollowMessage, type FollowEntry } from '../protocol/follow.ts'
import { MeshUnreachableError, toError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { askFirst } from './ask-first.ts'

export interface FollowInit {
  key: SwarmKey
  bootstrap: string[]
  /** The client's `--timeout`: how long it waits for a node to answer. */
  timeoutMs: number
  privateKey: PrivateKey
  /** The tasks followed. */
  ids: readonly string[]
  logger?: Logger
  /** A node that sends nothing (not even its keepalive) this long is taken for lost. @default 3 keepalives */
  silentMs?: number
  /**
   * How long to keep asking the bootstrap addresses again once the node
   * followed through is lost, before giving up. @default the larger of
   * `timeoutMs` and 60 s (a node restarting)
   */
  reconnectMs?: number
}

/** What a follower hands out: the entries of one message, and the node it came through. */
export interface FollowBatch {
  entries: FollowEntry[]
  peer: string
}

interface Opened { stream: Stream, lp: FramedStream, first: FollowEntry[] }

/** How long to wait between rounds of asking again after the followed node was lost. @default 1 s */
const RECONNECT_PAUSE_MS = 1000

/**
 * Follows tasks through one mesh node over `/meshwork/follow/1`, on a bare
 * client host (no board replica, no gossip): the first bootstrap node that
 * answers is followed; when it goes away (its stream ends, or it is silent
 * for three keepalives), the bootstrap addresses are asked again, and the new
 * node's first message gives every task's line afresh.
 */
export class TaskFollower {
  readonly #init: FollowInit
  readonly #host: Libp2p
  #current: Opened | null
  #peer: string
  #pending: FollowEntry[] | null
  #closed = false

  private constructor (init: FollowInit, host: Libp2p, opened: Opened, peer: string) {
    this.#init = init
    this.#host = host
    this.#current = opened
    this.#peer = peer
    this.#pending = opened.first
  }

  /**
   * Follows `init.ids` through the first node that answers, or returns
   * `unsupported` when none does and one does not serve the protocol (nodes
   * of an earlier release). Throws `MeshUnreachableError` as `status` does.
   */
  static async open (init: FollowInit): Promise<TaskFollower | 'unsupported'> {
    const host = await createClientHost({ privateKey: init.privateKey, swarmKey: init.key, ...(init.logger !== undefined ? { logger: init.logger } : {}) })
    try {
      const answer = await ask(host, init, init.timeoutMs)
      if (answer.kind === 'unsupported') { await host.stop(); return 'unsupported' }
      return new TaskFollower(init, host, answer.value, answer.peer)
    } catch (err) {
      await host.stop()
      throw err
    }
  }

  /** The node followed through now. */
  get peer (): string {
    return this.#peer
  }

  /**
   * The next message's entries. When the node is lost, `onLost` is told and
   * the bootstrap addresses are asked again; throws `MeshUnreachableError`
   * when none answered within `reconnectMs`.
   */
  async next (onLost: (peer: string, why: string) => void = () => {}): Promise<FollowBatch> {
    for (;;) {
      if (this.#closed) throw new Error('the follower is closed')
      if (this.#pending !== null) {
        const entries = this.#pending
        this.#pending = null
        return { entries, peer: this.#peer }
      }
      const cur = this.#current
      if (cur !== null) {
        try {
          return { entries: decodeFollowMessage(await cur.lp.readRaw(), this.#peer), peer: this.#peer }
        } catch (err) {
          if (this.#closed) throw err
          cur.stream.abort(toError(err))
          this.#current = null
          onLost(this.#peer, describeLoss(err))
        }
      }
      await this.#reconnect()
    }
  }

  async #reconnect (): Promise<void> {
    const budget = this.#init.reconnectMs ?? Math.max(this.#init.timeoutMs, 60_000)
    const until = Date.now() + budget
    let last: unknown = null
    while (!this.#closed && Date.now() < until) {
      try {
        const answer = await ask(this.#host, this.#init, Math.max(1000, Math.min(this.#init.timeoutMs, until - Date.now())))
        if (answer.kind === 'answer') {
          this.#current = answer.value
          this.#peer = answer.peer
          this.#pending = answer.value.first
          return
        }
        last = new Error(`no node answering serves ${FOLLOW_PROTOCOL}`)
      } catch (err) {
        last = err
      }
      await new Promise(resolve => setTimeout(resolve, RECONNECT_PAUSE_MS))
    }
    throw new MeshUnreachableError(`lost the node it followed the plan through, and no node answered again within ${Math.round(budget / 1000)} s (${toError(last).message}). The plan goes on in the mesh: \`meshwork status\` shows it`)
  }

  /** Closes the stream and the host. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const cur = this.#current
    this.#current = null
    if (cur !== null) await cur.stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => { cur.stream.abort(new Error('closed')) })
    await this.#host.stop()
  }
}

/** Asks every bootstrap address at once for a follow stream: the first whose first message arrives wins. */
async function ask (host: Libp2p, init: FollowInit, timeoutMs: number): ReturnType<typeof askFirst<Opened>> {
  const silentMs = init.silentMs ?? 3 * FOLLOW_KEEPALIVE_MS
  return await askFirst<Opened>({
    host,
    bootstrap: init.bootstrap,
    timeoutMs,
    protocol: FOLLOW_PROTOCOL,
    exchange: async (stream, peer, signal) => {
      // a node silent for three keepalives is taken for lost
      const lp = new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES, idleTimeoutMs: silentMs })
      try {
        await lp.writeRaw(encodeJson({ ids: init.ids }), { signal })
        const first = decodeFollowMessage(await lp.readRaw({ signal }), peer)
        return { stream, lp, first }
      } catch (err) {
        stream.abort(toError(err))
        throw err
      }
    },
    isFinal: e => e instanceof BadFollowMessageError,
    discard: o => { o.stream.abort(new Error('another node answered first')) }
  })
}

function describeLoss (err: unknown): string {
  const e = toError(err)
  if (e.name === 'StreamIdleError') return 'it sent nothing for too long'
  if (e instanceof BadFollowMessageError) return e.message
  return `its stream ended (${e.message})`
}
