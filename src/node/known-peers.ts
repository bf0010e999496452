import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { every, type Startable } from './service.ts'
import type { Logger } from '../util/logger.ts'
import { toError } from '../util/errors.ts'

/** The file in the data dir where a node keeps its peers' last known addresses. */
export const KNOWN_PEERS_FILE = 'peers.json'
/** Peers remembered at most (the most recently seen). @default 64 */
export const KNOWN_PEERS_MAX = 64
/** How often the remembered addresses are refreshed from the live peers and written when they changed. @default 10 s */
export const KNOWN_PEERS_SAVE_MS = 10_000
/** Addresses kept per peer. */
const ADDRS_PER_PEER = 8

const fileSchema = z.object({
  peers: z.array(z.object({
    peerId: z.string().min(1).max(128),
    addrs: z.array(z.string().max(512)).max(ADDRS_PER_PEER),
    seenAt: z.number()
  })).max(4 * KNOWN_PEERS_MAX)
})

export interface KnownPeer { peerId: string, addrs: string[], seenAt: number }

export interface KnownPeersComponents {
  dataDir: string
  /** The peers this node hears now, with the addresses their heartbeats give. */
  live: () => Array<{ peerId: string, state: string, addrs: string[] }>
  self: () => string
  logger: Logger
}

/**
 * The addresses of the peers this node last heard, kept in DATA/peers.json:
 * a node restarted (on a new address, or the first node of the mesh, started
 * without `--bootstrap`) dials them to find its mesh again, and its peers
 * learn its new address from its heartbeats once it reaches them.
 */
export class KnownPeers implements Startable {
  readonly #c: KnownPeersComponents
  #peers = new Map<string, KnownPeer>()
  #saved = ''
  #stopTimer: (() => void) | null = null

  constructor (components: KnownPeersComponents) {
    this.#c = components
  }

  get file (): string {
    return join(this.#c.dataDir, KNOWN_PEERS_FILE)
  }

  /** Reads the file (a missing or damaged file is an empty list, logged). */
  async start (): Promise<void> {
    let text: string
    try {
      text = await readFile(this.file, 'utf8')
    } catch {
      return
    }
    const parsed = fileSchema.safeParse((() => { try { return JSON.parse(text) } catch { return null } })())
    if (!parsed.success) {
      this.#c.logger.warn('peers:file-ignored', { file: this.file, note: 'not a list of known peers; starting without it' })
      return
    }
    for (const p of parsed.data.peers) if (p.peerId !== this.#c.self()) this.#peers.set(p.peerId, p)
    this.#saved = this.#serialize()
  }

  afterStart (): void {
    this.#stopTimer ??= every(KNOWN_PEERS_SAVE_MS, () => { void this.save() }, err => { this.#c.logger.warn('peers:save-failed', { error: toError(err).message }) })
  }

  async stop (): Promise<void> {
    this.#stopTimer?.()
    this.#stopTimer = null
    await this.save()
  }

  /** The remembered peers, most recently seen first. */
  list (): KnownPeer[] {
    return [...this.#peers.values()].sort((a, b) => b.seenAt - a.seenAt)
  }

  #saving: Promise<void> = Promise.resolve()

  /**
   * Takes the live peers' addresses in, keeps the newest `KNOWN_PEERS_MAX`, and
   * writes the file when it changed. Called every `KNOWN_PEERS_SAVE_MS` and
   * whenever a peer comes alive (a node killed within its first seconds must
   * find its mesh again, too); one save at a time.
   */
  async save (): Promise<void> {
    const run = this.#saving.then(async () => { await this.#save() })
    this.#saving = run.catch(() => {})
    await run
  }

  async #save (): Promise<void> {
    const now = Date.now()
    const self = this.#c.self()
    for (const m of this.#c.live()) {
      if (m.peerId === self || m.addrs.length === 0 || (m.state !== 'alive' && m.state !== 'suspect')) continue
      this.#peers.set(m.peerId, { peerId: m.peerId, addrs: m.addrs.slice(0, ADDRS_PER_PEER), seenAt: now })
    }
    const keep = this.list().slice(0, KNOWN_PEERS_MAX)
    this.#peers = new Map(keep.map(p => [p.peerId, p]))
    const text = this.#serialize()
    // seenAt alone changes every round: write when the set of peers or their addresses changed
    if (this.#key(text) === this.#key(this.#saved)) return
    try {
      const tmp = `${this.file}.tmp`
      await writeFile(tmp, text, { mode: 0o600 })
      await rename(tmp, this.file)
      this.#saved = text
    } catch (err) {
      this.#c.logger.warn('peers:save-failed', { file: this.file, error: toError(err).message })
    }
  }

  #serialize (): string {
    return JSON.stringify({ peers: this.list() }, null, 1) + '\n'
  }

  #key (text: string): string {
    try {
      const v = JSON.parse(text) as { peers: KnownPeer[] }
      return v.peers.map(p => `${p.peerId}=${p.addrs.join(',')}`).sort().join(';')
    } catch {
      return ''
    }
  }
}
