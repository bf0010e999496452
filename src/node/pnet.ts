import './pnet-fix.ts'
import xsalsa20 from 'xsalsa20'
import { byteStream, AbstractMultiaddrConnection } from '@libp2p/utils'
import type { AbortOptions, ConnectionProtector, Logger, MultiaddrConnection } from '@libp2p/interface'

/** Nonce each side sends in the clear before the XSalsa20 stream starts (libp2p pnet). */
const NONCE_LENGTH = 24

/**
 * The first bytes either side of a libp2p connection receives once the private
 * network layer is set up: multistream-select's header, length-prefixed
 * (`0x13 "/multistream/1.0.0\n"`). The initiator sends it first, the responder
 * answers with the same header.
 */
const MSS_HEADER = new Uint8Array([0x13, ...new TextEncoder().encode('/multistream/1.0.0\n')])

/** What a client reports for a peer whose first bytes do not decrypt to the header. */
export const HANDSHAKE_FAILED = 'handshake failed: wrong swarm key or not a meshwork node'

/** Raised (and used to reset the connection) when the first decrypted bytes are not the header. */
export class WrongSwarmKeyError extends Error {
  override name = 'WrongSwarmKeyError'
  constructor () { super(HANDSHAKE_FAILED) }
}

/**
 * The libp2p private-network protector (the pnet wire format: a 24-byte nonce
 * each way, then XSalsa20 with the pre-shared key), with one addition: each side
 * checks that the first bytes it decrypts are multistream-select's header, and
 * resets the connection at once when they are not.
 *
 * Without the check a wrong key (or a peer that is not a meshwork node) turns
 * the handshake into random bytes that both sides wait on until the upgrade
 * times out (20 s); with it the side that hears garbage hangs up within a round
 * trip, so a client with the wrong key sees its connection closed and can say
 * so right away. The bytes on the wire are unchanged: peers without the check
 * interoperate.
 */
export function preSharedKeyGuarded (init: { psk: Uint8Array, timeoutMs?: number }): () => ConnectionProtector {
  const psk = decodePsk(init.psk)
  const timeoutMs = init.timeoutMs ?? 1000
  return () => ({
    [Symbol.toStringTag]: '@meshwork/pnet',
    async protect (connection: MultiaddrConnection, options?: AbortOptions): Promise<MultiaddrConnection> {
      const log = connection.log.newScope('pnet')
      const localNonce = crypto.getRandomValues(new Uint8Array(NONCE_LENGTH))
      const opts = options ?? { signal: AbortSignal.timeout(timeoutMs) }
      const bytes = byteStream(connection)
      const [remote] = await Promise.all([
        bytes.read({ bytes: NONCE_LENGTH, ...opts }),
        bytes.write(localNonce, opts)
      ])
      return new GuardedBoxStream({ localNonce, remoteNonce: remote.subarray(), psk, maConn: bytes.unwrap(), log })
    }
  })
}

interface BoxInit {
  localNonce: Uint8Array
  remoteNonce: Uint8Array
  psk: Uint8Array
  maConn: MultiaddrConnection
  log: Logger
}

interface Xor { update: (input: Uint8Array, output?: Uint8Array) => Uint8Array }

/** The XSalsa20 box over the raw connection, checking the first decrypted bytes. */
class GuardedBoxStream extends AbstractMultiaddrConnection {
  readonly #maConn: MultiaddrConnection
  readonly #in: Xor
  readonly #out: Xor
  /** How many header bytes were checked so far (the check ends at MSS_HEADER.length). */
  #checked = 0

  constructor (init: BoxInit) {
    super({ log: init.log, remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction })
    this.#maConn = init.maConn
    this.#in = xsalsa20(init.remoteNonce, init.psk)
    this.#out = xsalsa20(init.localNonce, init.psk)
    this.#maConn.addEventListener('message', evt => {
      const data = evt.data
      if (data instanceof Uint8Array) this.#receive(data)
      else for (const buf of data) this.#receive(buf)
    })
    this.#maConn.addEventListener('drain', () => { this.onMuxerDrain() })
    this.#maConn.addEventListener('close', evt => {
      if (evt.error != null) {
        if (evt.local) this.abort(evt.error)
        else this.onRemoteReset()
      } else {
        this.onTransportClosed()
      }
    })
  }

  #receive (cipher: Uint8Array): void {
    if (this.status === 'aborted' || this.status === 'reset' || this.status === 'closed') return
    const plain = this.#in.update(cipher)
    if (this.#checked < MSS_HEADER.length) {
      const n = Math.min(plain.byteLength, MSS_HEADER.length - this.#checked)
      for (let i = 0; i < n; i++) {
        if (plain[i] !== MSS_HEADER[this.#checked + i]) {
          this.log.error('the first bytes from %a are not a libp2p handshake: wrong swarm key, or not a meshwork node', this.remoteAddr)
          this.#checked = MSS_HEADER.length
          this.abort(new WrongSwarmKeyError())
          return
        }
      }
      this.#checked += n
    }
    this.onData(plain)
  }

  async sendClose (options?: AbortOptions): Promise<void> {
    await this.#maConn.close(options)
  }

  sendData (data: { subarray: () => Uint8Array, byteLength: number }): { sentBytes: number, canSendMore: boolean } {
    return { sentBytes: data.byteLength, canSendMore: this.#maConn.send(this.#out.update(data.subarray())) }
  }

  sendReset (err: Error): void {
    this.#maConn.abort(err)
  }

  sendPause (): void {
    this.#maConn.pause()
  }

  sendResume (): void {
    this.#maConn.resume()
  }
}

/** The 32 key bytes of a pnet key file (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits). */
function decodePsk (file: Uint8Array): Uint8Array {
  const lines = new TextDecoder().decode(file).split(/\r?\n/)
  const hex = lines[2] ?? ''
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error('invalid pre-shared key: expected 64 hex digits on the third line')
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}
