/**
 * Packs a git server made lately, kept to send again (`serveGit`): after each
 * merge round every follower asks the leader for the same new main from the
 * same old one, at about the same moment. The first request makes the pack
 * and sends it as it comes, keeping a copy (`keep`); the others wait for it
 * (`take`, at most a bound, then make their own) and send the same bytes,
 * saving a `git pack-objects` each. Only small packs are kept, for a while; a
 * pack is of immutable objects, so the same bytes answer the same request for
 * as long as they are kept.
 */
import { withTimeout } from '../../node/service.ts'

/** How long a pack made here is kept to answer the same request again. @default 10 s */
export const PACK_REUSE_TTL_MS = 10_000
/** Largest pack kept for reuse: a new main's pack is a few KiB; larger ones are made for each request. @default 128 KiB */
export const PACK_REUSE_MAX_BYTES = 128 * 1024
/** Packs kept for reuse at once. */
const PACK_REUSE_ENTRIES = 8
/** How long a request waits for the same pack another request is making, before making its own. @default 2 s */
export const PACK_REUSE_WAIT_MS = 2000

/** A pack being made for a request, kept for others when it is whole and small. */
export interface KeptPack {
  /** Passes the pack's bytes through, keeping a copy. */
  tee: (source: AsyncIterable<Buffer>) => AsyncIterable<Buffer>
  /** The pack is whole (pack-objects exited 0): keep it. */
  done: () => void
  /** Not kept (failed, cut short, or too large); a no-op after `done`. */
  drop: () => void
}

/** The key of a pack: the commit and the haves it excludes. */
export function packKey (oid: string, haves: readonly string[]): string {
  return `${oid} ${[...haves].sort().join(' ')}`
}

export class PackReuse {
  readonly #ttlMs: number
  readonly #waitMs: number
  readonly #packs = new Map<string, { until: number, pack: Promise<Buffer | null> }>()

  constructor (opts: { ttlMs?: number | undefined, waitMs?: number | undefined } = {}) {
    this.#ttlMs = opts.ttlMs ?? PACK_REUSE_TTL_MS
    this.#waitMs = opts.waitMs ?? PACK_REUSE_WAIT_MS
  }

  /**
   * The pack kept (or being made) under `key`, once whole, or null (not kept,
   * or not whole in time); null at once, not a promise, when there is none: a
   * caller that then makes it calls `keep` before any other request can look.
   */
  take (key: string): Promise<Buffer | null> | null {
    const made = this.#packs.get(key)
    if (made === undefined || made.until <= performance.now()) return null
    return withTimeout(made.pack, this.#waitMs).then(b => b ?? null)
  }

  /** Starts keeping the pack a request is making under `key` (it stands for any pack kept under it before). */
  keep (key: string): KeptPack {
    const packs = this.#packs
    const now = performance.now()
    for (const [k, e] of packs) if (e.until <= now) packs.delete(k)
    while (packs.size >= PACK_REUSE_ENTRIES) packs.delete(packs.keys().next().value as string)
    let settle: (b: Buffer | null) => void = () => {}
    const entry = { until: now + this.#ttlMs, pack: new Promise<Buffer | null>(resolve => { settle = resolve }) }
    packs.set(key, entry)
    const chunks: Buffer[] = []
    let bytes = 0
    let open = true
    const drop = (): void => {
      if (!open) return
      open = false
      chunks.length = 0
      if (packs.get(key) === entry) packs.delete(key)
      settle(null)
    }
    return {
      tee: async function * (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          if (open) {
            bytes += chunk.length
            if (bytes > PACK_REUSE_MAX_BYTES) drop()
            else chunks.push(chunk)
          }
          yield chunk
        }
      },
      done: () => {
        if (!open) return
        open = false
        settle(Buffer.concat(chunks))
      },
      drop
    }
  }
}
