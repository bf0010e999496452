import type { PrivateKey } from '@libp2p/interface'
import { createClientHost } from '../node/client-host.ts'
import { MAX_STREAM_FRAME_BYTES } from '../node/constants.ts'
import type { SwarmKey } from '../node/swarm-key.ts'
import { FramedStream } from '../protocol/frame.ts'
import { BadStatusReportError, STATUS_PROTOCOL, decodeStatusReport } from '../protocol/status.ts'
import type { Logger } from '../util/logger.ts'
import { askFirst } from './ask-first.ts'
import type { StatusReport } from './status.ts'

export interface StatusRequestInit {
  key: SwarmKey
  bootstrap: string[]
  timeoutMs: number
  /** The client's identity (`--identity`): a node's `--allow` admits or refuses it. */
  privateKey: PrivateKey
  logger?: Logger
}

/**
 * What came of asking the bootstrap nodes for the status: the report and the
 * node that sent it, or `unsupported` when no node answered and at least one
 * does not serve `/meshwork/status/1` (a node of an earlier release; the caller
 * reads the status through a light mesh client instead, in the time left).
 */
export type StatusAnswer =
  | { kind: 'report', report: StatusReport, peer: string }
  | { kind: 'unsupported', remainingMs: number }

/**
 * Asks a mesh node for its status report over `/meshwork/status/1`: every
 * bootstrap address is dialled at once by a bare libp2p host (./client-host.ts),
 * the first report that arrives wins (./ask-first.ts), and the host is stopped
 * before this returns. Fails as `askFirst` does: at once when every address
 * refuses or fails the handshake, after `timeoutMs` when no node answered.
 */
export async function requestStatus (init: StatusRequestInit): Promise<StatusAnswer> {
  const host = await createClientHost({ privateKey: init.privateKey, swarmKey: init.key, ...(init.logger !== undefined ? { logger: init.logger } : {}) })
  try {
    const answer = await askFirst({
      host,
      bootstrap: init.bootstrap,
      timeoutMs: init.timeoutMs,
      protocol: STATUS_PROTOCOL,
      exchange: async (stream, peer, signal) => decodeStatusReport(await new FramedStream(stream, { maxDataLength: MAX_STREAM_FRAME_BYTES }).readRaw({ signal }), peer),
      isFinal: e => e instanceof BadStatusReportError
    })
    return answer.kind === 'answer' ? { kind: 'report', report: answer.value, peer: answer.peer } : answer
  } finally {
    await host.stop()
  }
}
