/**
 * `/meshwork/git/2` on this side of the wire: its defaults, its error codes,
 * and reading its frames (tags and bodies are defined in
 * src/protocol/git.ts).
 */
import type { AbortOptions, PeerId, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import type { z } from 'zod'
import { EmptyFrameError, parseJson, type FramedStream, type Frame } from '../../protocol/frame.ts'

/**
 * Pack bytes per DATA frame a server sends by default. Fewer, larger frames
 * cost less CPU per byte on the libp2p path (one trip through yamux, Noise and
 * pnet each; with 64 KiB frames a 25 MiB transfer took about a fifth more CPU
 * in the trial). Writes this large through pnet's xsalsa20 are safe since
 * src/node/pnet-fix.ts (its shared WebAssembly memory used to grow without
 * bound after one write above 64 KiB).
 * @default 256 KiB
 */
export const DEFAULT_CHUNK_BYTES = 256 * 1024
/** Default cap on one transfer's pack. @default 2 GiB */
export const DEFAULT_MAX_TRANSFER_BYTES = 2 * 1024 * 1024 * 1024
/** Default time bound of one transfer, either side. @default 10 min */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10 * 60_000
/** Default bound on transfers one node serves at once. */
export const DEFAULT_MAX_CONCURRENT_SERVES = 4

export type GitTransferErrorCode =
  /** malformed request (from the server) or bad arguments (local) */
  | 'bad-request'
  /** the server will not serve that `want` (outside `refs/heads/`) */
  | 'refused'
  /** no such branch or commit on the server */
  | 'not-found'
  /** the server is serving its maximum of transfers */
  | 'busy'
  /** the pack is larger than a `maxBytes` */
  | 'too-large'
  /** the transfer took longer than allowed */
  | 'timeout'
  /** the caller's signal aborted the transfer */
  | 'aborted'
  /** the peer could not be dialled */
  | 'unreachable'
  /** the peer broke the protocol (bad frame, bad size or hash, stream reset or ended early) */
  | 'protocol'
  /**
   * what arrived is not a valid pack of what was announced (git rejected the
   * pack, or the announced commit is not connected); the name is from the
   * bundle-based `/meshwork/git/1`
   */
  | 'bad-bundle'
  /** the server failed */
  | 'server'
  /** a local git command failed */
  | 'git'
  /** a local file operation failed (or the repository is not a git repository) */
  | 'local'

export const REMOTE_CODES = new Set<string>(['bad-request', 'refused', 'not-found', 'busy', 'too-large', 'timeout', 'server'])

/** A failed peer-to-peer git transfer; `code` says why. The local repository is left as it was. */
export class GitTransferError extends Error {
  override name = 'GitTransferError'
  readonly code: GitTransferErrorCode
  readonly peer: string | undefined
  constructor (code: GitTransferErrorCode, message: string, opts: { peer?: string, cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined)
    this.code = code
    this.peer = opts.peer
  }
}

/** What git transfers need of a node: open and serve streams (a `MeshNode` is one). */
export interface GitStreams {
  dialProtocol: (peer: PeerId, protocol: string, options?: AbortOptions) => Promise<Stream>
  handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
  unhandle: (protocol: string) => Promise<void>
}

/** Reads the next frame; an empty frame is a protocol error (a `StreamIdleError` is passed on: the server answers it, the requester fails with `timeout`). */
export async function readFrame (lp: FramedStream, signal: AbortSignal): Promise<Frame> {
  try {
    return await lp.read({ signal })
  } catch (err) {
    if (err instanceof EmptyFrameError) throw new GitTransferError('protocol', 'empty frame')
    throw err
  }
}

/** The JSON body of a `what` frame, checked against `schema`; a protocol error otherwise. */
export function parseBody<S extends z.ZodType> (schema: S, body: Uint8Array, what: string): z.infer<S> {
  const r = parseJson(schema, body)
  if (!r.ok) throw new GitTransferError('protocol', `${what} frame ${r.reason === 'not JSON' ? 'is not JSON' : `is malformed: ${r.reason.slice(0, 300)}`}`)
  return r.value
}

export const lastLines = (text: string, n: number): string => text.trim().split('\n').slice(-n).join(' | ')

