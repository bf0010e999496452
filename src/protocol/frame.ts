/**
 * The one framing every meshwork wire message uses: a one-byte tag, then a
 * body. On a stream each frame is length-prefixed (unsigned varint, `lpStream`);
 * on gossip the message itself is the frame. JSON bodies are parsed against a
 * zod schema at the edge, so code behind it trusts the types.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream, AbortOptions } from '@libp2p/interface'
import type { z } from 'zod'
import { TimeoutError, toError } from '../util/errors.ts'

/** One frame: what kind of message (`tag`) and its bytes. */
export interface Frame {
  tag: number
  body: Uint8Array
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/** `tag` then `body` in one buffer. */
export function encodeFrame (tag: number, body?: Uint8Array): Uint8Array {
  const frame = new Uint8Array(1 + (body?.length ?? 0))
  frame[0] = tag
  if (body !== undefined) frame.set(body, 1)
  return frame
}

/** `tag` then `value` as JSON. */
export function encodeJsonFrame (tag: number, value: unknown): Uint8Array {
  return encodeFrame(tag, encodeJson(value))
}

/** Splits a frame into its tag and body; null for an empty buffer. */
export function decodeFrame (data: Uint8Array): Frame | null {
  if (data.length === 0) return null
  return { tag: data[0] as number, body: data.subarray(1) }
}

export function encodeJson (value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

/**
 * Parses UTF-8 JSON bytes against `schema`: the value, or the reason it was
 * refused (not UTF-8, not JSON, or not of the schema's shape).
 */
export function parseJson<S extends z.ZodType> (schema: S, bytes: Uint8Array): { ok: true, value: z.infer<S> } | { ok: false, reason: string } {
  let json: unknown
  try {
    json = JSON.parse(decoder.decode(bytes))
  } catch {
    return { ok: false, reason: 'not JSON' }
  }
  const parsed = schema.safeParse(json)
  if (!parsed.success) return { ok: false, reason: parsed.error.issues.map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') }
  return { ok: true, value: parsed.data }
}

/** Like `parseJson`, null when refused. */
export function decodeJson<S extends z.ZodType> (schema: S, bytes: Uint8Array): z.infer<S> | null {
  const r = parseJson(schema, bytes)
  return r.ok ? r.value : null
}

/** The longest varint length prefix of a frame. */
const MAX_LENGTH_PREFIX_BYTES = 10

export interface FramedStreamOptions {
  /** Largest frame accepted (tag included). */
  maxDataLength: number
  /**
   * Largest amount of unread data buffered.
   * @default maxDataLength plus its length prefix (a frame is buffered whole
   * before it is read: libp2p's default of 4 MiB refused every larger frame,
   * such as the board sync of a plan of 10,000 tasks, whatever maxDataLength said)
   */
  maxBufferSize?: number
  /**
   * Longest wait for one read or write: when a peer sends nothing (or reads
   * nothing) for this long, the read or write throws a `StreamIdleError`.
   * @default no bound
   */
  idleTimeoutMs?: number
}

/** Thrown by `FramedStream.read` for a zero-length frame (it has no tag). */
export class EmptyFrameError extends Error {
  override name = 'EmptyFrameError'
}

/**
 * Nothing arrived on a stream (or nothing could be written to it) for its idle
 * time: the peer is gone or holds the stream open without using it. A
 * `TimeoutError`, so callers tell it from other failures with `instanceof`.
 */
export class StreamIdleError extends TimeoutError {
  override name = 'StreamIdleError'
}

/** A stream refused before it was used: the peer opened too many at once or too fast (see src/node/peer-limits.ts). */
export class StreamRefusedError extends Error {
  override name = 'StreamRefusedError'
}

/**
 * Closes our side of `stream` (bounded by `idleMs`) and, if the peer has not
 * closed its side `idleMs` later, aborts the stream with a `StreamIdleError`:
 * a half-closed stream otherwise stays open (and counted against the
 * connection's stream limits) for as long as the peer likes. Never throws.
 */
export async function closeStream (stream: Stream, idleMs: number): Promise<void> {
  const signal = AbortSignal.timeout(idleMs)
  try {
    await stream.close({ signal })
  } catch (err) {
    stream.abort(signal.aborted ? new StreamIdleError(`could not close the stream within ${idleMs} ms`) : toError(err))
    return
  }
  if (stream.status !== 'open' && stream.status !== 'closing') return
  const timer = setTimeout(() => {
    if (stream.status === 'open' || stream.status === 'closing') stream.abort(new StreamIdleError(`the peer did not close the stream within ${idleMs} ms of our close`))
  }, idleMs)
  timer.unref()
  stream.addEventListener('close', () => { clearTimeout(timer) }, { once: true })
}

/**
 * A stream of length-prefixed tagged frames: every meshwork stream protocol
 * (board sync, members, git) reads and writes through this.
 */
export class FramedStream {
  readonly #lp: ReturnType<typeof lpStream>
  /** The bound of each read and write from now on (see `FramedStreamOptions.idleTimeoutMs`); undefined: none. */
  idleTimeoutMs: number | undefined
  /** When bytes last moved (arrived, or the peer took what we wrote): a frame still arriving is not idle. */
  #activeAt = 0

  constructor (stream: Stream, opts: FramedStreamOptions) {
    this.#lp = lpStream(stream, { maxDataLength: opts.maxDataLength, maxBufferSize: opts.maxBufferSize ?? opts.maxDataLength + MAX_LENGTH_PREFIX_BYTES })
    this.idleTimeoutMs = opts.idleTimeoutMs
    if (opts.idleTimeoutMs !== undefined) {
      // added after lpStream's own listener, so it never sees data lpStream does not
      const moved = (): void => { this.#activeAt = performance.now() }
      stream.addEventListener('message', moved)
      stream.addEventListener('drain', moved)
    }
  }

  /**
   * Runs one read or write under the idle bound: when no byte moved on the
   * stream for `idleTimeoutMs` while it waits, the operation throws a
   * `StreamIdleError` (the caller then tells the peer, or aborts the stream).
   */
  async #bounded<T> (op: (opts: AbortOptions) => Promise<T>, what: string, opts?: AbortOptions): Promise<T> {
    const idleMs = this.idleTimeoutMs
    if (idleMs === undefined) return await op(opts ?? {})
    const idle = new AbortController()
    this.#activeAt = performance.now()
    let timer: NodeJS.Timeout | undefined
    const check = (): void => {
      const quiet = performance.now() - this.#activeAt
      if (quiet >= idleMs) idle.abort(new StreamIdleError(`nothing ${what} the stream for ${idleMs} ms`))
      else timer = setTimeout(check, idleMs - quiet)
    }
    timer = setTimeout(check, idleMs)
    // one controller for both: AbortSignal.any per frame would hang a listener on a caller's
    // long-lived signal (a whole transfer's) for every frame
    const outer = opts?.signal
    const onOuter = (): void => { idle.abort(outer?.reason) }
    if (outer?.aborted === true) onOuter()
    else outer?.addEventListener('abort', onOuter, { once: true })
    try {
      return await op({ ...opts, signal: idle.signal })
    } catch (err) {
      if (idle.signal.reason instanceof StreamIdleError && outer?.aborted !== true) throw idle.signal.reason
      throw err
    } finally {
      clearTimeout(timer)
      outer?.removeEventListener('abort', onOuter)
    }
  }

  /** Writes one length-prefixed message as is (a frame built by `encodeFrame`, or an untagged body). */
  async writeRaw (data: Uint8Array, opts?: AbortOptions): Promise<void> {
    await this.#bounded(async o => { await this.#lp.write(data, o) }, 'could be written to', opts)
  }

  /** Reads one length-prefixed message as is. */
  async readRaw (opts?: AbortOptions): Promise<Uint8Array> {
    return await this.#bounded(async o => (await this.#lp.read(o)).subarray(), 'arrived on', opts)
  }

  async write (tag: number, body?: Uint8Array, opts?: AbortOptions): Promise<void> {
    await this.writeRaw(encodeFrame(tag, body), opts)
  }

  async writeJson (tag: number, value: unknown, opts?: AbortOptions): Promise<void> {
    await this.writeRaw(encodeJsonFrame(tag, value), opts)
  }

  /** Reads the next frame; throws `EmptyFrameError` on a frame without a tag. */
  async read (opts?: AbortOptions): Promise<Frame> {
    const data = await this.readRaw(opts)
    const frame = decodeFrame(data)
    if (frame === null) throw new EmptyFrameError('empty frame')
    return frame
  }
}
