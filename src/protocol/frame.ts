/**
 * The one framing every meshwork wire message uses: a one-byte tag, then a
 * body. On a stream each frame is length-prefixed (unsigned varint, `lpStream`);
 * on gossip the message itself is the frame. JSON bodies are parsed against a
 * zod schema at the edge, so code behind it trusts the types.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream, AbortOptions } from '@libp2p/interface'
import type { z } from 'zod'

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

export interface FramedStreamOptions {
  /** Largest frame accepted (tag included). */
  maxDataLength: number
  /** Largest amount of unread data buffered. */
  maxBufferSize?: number
}

/** Thrown by `FramedStream.read` for a zero-length frame (it has no tag). */
export class EmptyFrameError extends Error {
  override name = 'EmptyFrameError'
}

/**
 * A stream of length-prefixed tagged frames: every meshwork stream protocol
 * (board sync, members, git) reads and writes through this.
 */
export class FramedStream {
  readonly #lp: ReturnType<typeof lpStream>

  constructor (stream: Stream, opts: FramedStreamOptions) {
    this.#lp = lpStream(stream, { maxDataLength: opts.maxDataLength, ...(opts.maxBufferSize !== undefined ? { maxBufferSize: opts.maxBufferSize } : {}) })
  }

  /** Writes one length-prefixed message as is (a frame built by `encodeFrame`, or an untagged body). */
  async writeRaw (data: Uint8Array, opts?: AbortOptions): Promise<void> {
    await this.#lp.write(data, opts)
  }

  /** Reads one length-prefixed message as is. */
  async readRaw (opts?: AbortOptions): Promise<Uint8Array> {
    return (await this.#lp.read(opts)).subarray()
  }

  async write (tag: number, body?: Uint8Array, opts?: AbortOptions): Promise<void> {
    await this.#lp.write(encodeFrame(tag, body), opts)
  }

  async writeJson (tag: number, value: unknown, opts?: AbortOptions): Promise<void> {
    await this.#lp.write(encodeJsonFrame(tag, value), opts)
  }

  /** Reads the next frame; throws `EmptyFrameError` on a frame without a tag. */
  async read (opts?: AbortOptions): Promise<Frame> {
    const data = await this.readRaw(opts)
    const frame = decodeFrame(data)
    if (frame === null) throw new EmptyFrameError('empty frame')
    return frame
  }
}
