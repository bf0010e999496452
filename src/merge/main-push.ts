import { pushMain, redactRemote, type PushOutcome } from '../git/push.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** After a failed push, the newest head is pushed again this long later (unless main advances first). @default 60 s */
export const PUSH_RETRY_MS = 60_000

/** The result of one push, as the leader publishes it (`main.push` on the board). */
export interface PushReport {
  /** The remote as given to `--push`, a URL's credentials masked. */
  remote: string
  /** The main head this push tried to publish. */
  head: string
  ok: boolean
  /** When the push ended (epoch ms). */
  at: number
  /** Git's reason for a refused or failed push; null after a successful one. */
  error: string | null
}

export interface MainPusherInit {
  repo: string
  /** `--push REMOTE`: a remote name or URL (a bare repository's path works). */
  remote: string
  branch: string
  logger: Logger
  /** Called after every push, successful or not. */
  onResult: (report: PushReport) => void
  /** @default PUSH_RETRY_MS */
  retryMs?: number
  /** Whether pushing is still this node's job (it leads); a waiting push or retry is dropped otherwise. @default always */
  active?: () => boolean
  /** Runs the push (tests swap it). @default pushMain */
  push?: (repo: string, remote: string, head: string, branch: string, signal: AbortSignal) => Promise<PushOutcome>
}

/**
 * Pushes main to `--push REMOTE` after each advance, off the merge loop:
 * `request(head)` returns at once; one push runs at a time, and a head
 * requested while a push runs replaces any earlier waiting one, so after a
 * burst of merges only the newest head is pushed next. A failed push is retried
 * after `retryMs` with the newest head; the next successful one clears it.
 * Nothing is pushed once `active()` says this node no longer leads.
 */
export class MainPusher {
  #init: MainPusherInit
  #wanted: string | null = null
  #pushed: string | null = null
  #running: Promise<void> | null = null
  #retry: NodeJS.Timeout | null = null
  #abort = new AbortController()
  #stopped = false

  constructor (init: MainPusherInit) {
    this.#init = init
  }

  /** Asks for `head` to be pushed (coalesced with any push waiting). */
  request (head: string): void {
    if (this.#stopped) return
    this.#wanted = head
    if (this.#retry !== null) { clearTimeout(this.#retry); this.#retry = null }
    this.#running ??= this.#loop().finally(() => { this.#running = null })
  }

  /** Resolves when no push runs or waits (for tests and shutdown). */
  async idle (): Promise<void> {
    while (this.#running !== null) await this.#running
  }

  /** Stops retrying and abandons a running push. */
  stop (): void {
    this.#stopped = true
    if (this.#retry !== null) clearTimeout(this.#retry)
    this.#retry = null
    this.#abort.abort(new Error('the node is stopping'))
  }

  async #loop (): Promise<void> {
    const { repo, remote, branch, logger } = this.#init
    const push = this.#init.push ?? pushMain
    while (!this.#stopped && this.#wanted !== null && this.#wanted !== this.#pushed) {
      if (this.#init.active?.() === false) {
        logger.info('main:push-dropped', { head: this.#wanted, reason: 'this node no longer leads' })
        this.#wanted = null
        return
      }
      const head = this.#wanted
      const started = Date.now()
      let outcome: PushOutcome
      try {
        outcome = await push(repo, remote, head, branch, this.#abort.signal)
      } catch (err) {
        outcome = { ok: false, error: toError(err).message }
      }
      if (this.#stopped) return
      const report: PushReport = { remote: redactRemote(remote), head, ok: outcome.ok, at: Date.now(), error: outcome.error }
      if (outcome.ok) {
        this.#pushed = head
        logger.info('main:pushed', { remote: report.remote, head, ms: report.at - started })
      } else {
        logger.warn('main:push-rejected', { remote: report.remote, head, error: outcome.error })
      }
      try { this.#init.onResult(report) } catch (err) { logger.warn('main:push-report-failed', { error: toError(err).message }) }
      if (!outcome.ok) {
        // a newer head asked for meanwhile is tried at once; the same head only after a pause
        if (this.#wanted !== head) continue
        const retryMs = this.#init.retryMs ?? PUSH_RETRY_MS
        this.#retry = setTimeout(() => { this.#retry = null; if (this.#wanted !== null) this.request(this.#wanted) }, retryMs)
        this.#retry.unref()
        return
      }
    }
  }
}
