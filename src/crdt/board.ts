/*
 * Over 400 lines, on purpose: the Board owns the Automerge document and every
 * path into it (local signed changes, gossiped changes, sync messages, a key
 * rotation's carry), so the write rules, signatures and author checks
 * (authors.ts, signing.ts) are applied in one class, beside the validated
 * snapshot every reader uses. Its stored types live in
 * board-types.ts, its transitions in lifecycle.ts.
 */
import * as A from '@automerge/automerge'
import { createHash } from 'node:crypto'
import { changeContext, forbiddenWrite, objectPaths, isSigningActor, peerTagOfActor, roleViolation, unvouchedChanges, type ObjectPaths } from './authors.ts'
import { signChange, signatureProblem, type ChangeSigner } from './signing.ts'
import {
  mainSchema,
  type BoardSnapshot, type Conflict, type ConflictId, type MainRef, type NodeRecord, type PeerIdString, type Task, type TaskId
} from './schema.ts'
import { BoardAuthorRefusedError, BoardChangeRejectedError, BoardForgedChangeError, plain, str, type BoardDoc, type BoardUpdate, type BoardWrite } from './board-types.ts'
import { BoardCorruptError } from '../util/errors.ts'
import { setBounded } from '../util/bounded.ts'
import { isDocumentChunk, splitChunks } from './chunks.ts'
import { decodeChange } from './change-decoder.ts'
import { applyQuietly, changeQuietly, detachedDoc, keysAt, loadDetached, pinned, readPath } from './detached.ts'
import { ChangedPlaces, DocMirror, largestDocument, readLargestDocument } from './mirror.ts'
import { COPY_ASIDE_BYTES, CopyReader, type CopyRead } from './copy-reader.ts'
import { RECORD_SECTIONS, parseEntry, type RecordSection } from './entries.ts'

export type { Stored, TaskRecord, ConflictRecord, NodeRecordDraft, MainRecord, BoardDoc, BoardUpdate, BoardWrite } from './board-types.ts'
export { BoardChangeRejectedError, BoardAuthorRefusedError, BoardForgedChangeError, str, plain } from './board-types.ts'
export type { ChangeSigner } from './signing.ts'

/**
 * A sync message whose chunks come to at least this many bytes and hold a
 * whole document is loaded, not applied (`Board.receiveSyncMessage`). Small:
 * a compressed document of 1,000 tasks can be 22 KB, and applying it took
 * four times as long as loading it.
 * @default 4 KiB
 */
export const LOAD_SYNC_BYTES = 4 * 1024

function concatBytes (parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

/** The deterministic Automerge actor of the genesis change of `meshId`. */
function genesisActor (meshId: string): string {
  return createHash('sha256').update('meshwork/genesis/1:' + meshId).digest('hex').slice(0, 32)
}

/**
 * The genesis change: identical bytes (hence hash) on every node of a mesh, so
 * all nodes share one root instead of hiding each other's data behind conflicts.
 */
function genesis (meshId: string): A.Doc<BoardDoc> {
  return A.change(A.init<BoardDoc>({ actor: genesisActor(meshId) }), { time: 0, message: 'genesis' }, d => {
    d.meshId = str(meshId)
    d.tasks = {}
    d.nodes = {}
    d.conflicts = {}
    d.main = { head: null, leader: null, term: 0 }
  })
}

/**
 * A board document of `g` (a genesis) written as `actor`: detached
 * (detached.ts), like every document a board holds, so that no update copies
 * the object of all its tasks.
 */
function genesisAs (g: A.Doc<BoardDoc>, actor: string): A.Doc<BoardDoc> {
  return detachedDoc<BoardDoc>(actor, backend => { backend.applyChanges(A.getAllChanges(g)) })
}

/**
 * The actor of a mesh's carry change: the one change a key rotation
 * (`meshwork rotate-key`) writes on the new mesh's genesis, holding the old
 * board's content. Deterministic, like the genesis actor, and exempt from the
 * author rules like the genesis change (it writes every peer's entries).
 */
export function carryActor (meshId: string): string {
  return createHash('sha256').update('meshwork/carry/1:' + meshId).digest('hex').slice(0, 32)
}

/** Whether `change` has the form of `meshId`'s carry change: by carryActor, its first, on the genesis alone. */
function isCarryChange (change: { actor: string, seq: number, deps: readonly string[] }, meshId: string, genesisHash: string): boolean {
  return change.actor === carryActor(meshId) && change.seq === 1 && change.deps.length === 1 && change.deps[0] === genesisHash
}

/** A deep copy of a value read from an Automerge document, fit to assign into another (scalar strings stay scalar, text stays text). */
function copyValue (v: unknown): unknown {
  if (v instanceof A.ImmutableString) return new A.ImmutableString(v.val)
  if (v instanceof A.Counter) return new A.Counter(v.value)
  if (v instanceof Date) return new Date(v.getTime())
  if (v instanceof Uint8Array) return new Uint8Array(v)
  if (Array.isArray(v)) return v.map(copyValue)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copyValue(x)]))
  return v
}

export { actorForPeer, nodeActorForPeer, sessionActorForPeer, actorBelongsTo, peerTagOfActor, isSigningActor } from './authors.ts'

type Listener = (update: BoardUpdate) => void

/** A local change that changed nothing. */
const UNCHANGED: BoardWrite = { kind: 'unchanged' }

/** Changes beyond the document read from saved bytes that a board reads in one by one, rather than having Automerge materialize it all (`#resetMirror`). */
const MAX_CHANGES_AFTER_READ = 256

/** Checked changes a board remembers (`Board.checkChange`): a gossiped change is applied within moments of its check. */
const CHECKED_KEPT = 256

/** Answers of `Board.seenBy` a board remembers. */
const SEEN_ANSWERS_KEPT = 4096

/** Change hashes `Board.hasHeads` remembers (present, and absent ones per document version) before it starts again. */
const MAX_REMEMBERED_HASHES = 100_000

/** A change's bytes, as a key: their SHA-256 (a hash costs microseconds; decoding and verifying a change, a good part of a millisecond). */
function checkedKey (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64')
}

interface Section<K, V> {
  entries: Map<K, V>
}

/**
 * The mesh's replicated task board: one Automerge document with a single,
 * deterministic root. Local changes are returned (and emitted) as change bytes
 * for gossip; remote changes are checked before they are applied; reads go
 * through `snapshot()`, whose entries have all passed the zod schema.
 *
 * Not safe for concurrent use from several event loops; within one it is
 * synchronous, so changes never interleave.
 */
export class Board {
  readonly meshId: string
  readonly genesisHash: string
  #doc: A.Doc<BoardDoc>
  #listeners = new Set<Listener>()
  #tasks: Section<TaskId, Task> = { entries: new Map() }
  #nodes: Section<PeerIdString, NodeRecord> = { entries: new Map() }
  #conflicts: Section<ConflictId, Conflict> = { entries: new Map() }
  #main: MainRef = { head: null, leader: null, term: 0 }
  #invalid = new Set<string>()
  #snapshot: BoardSnapshot | null = null
  /** The document's content as plain objects, updated in place after each update: what the entries are read from. */
  readonly #mirror = new DocMirror()
  /** Called once per board entry that fails the schema. */
  onInvalid: (key: string, reason: string) => void = () => {}
  /**
   * Whether local changes are checked as peers check them (`forbiddenWrite`,
   * `roleViolation`) and dropped when they would be refused (`onWithheld` says
   * so): a change peers refuse would park every later change of this actor. A
   * mesh node sets it; off for a board nobody else reads (tests write any
   * state). A signed change is made on a fork, so dropping one costs nothing.
   */
  checkOwnChanges = false
  /** Called when a local change is dropped because peers would refuse it (this node no longer leads, say). */
  onWithheld: (message: string, reason: string) => void = () => {}
  /** Object paths the role checks looked up (see `changeContext`). */
  #paths: ObjectPaths = new Map()
  /**
   * Who may author received changes (a node's `--allow`), by Automerge actor:
   * changes of another author are refused, with everything that came with
   * them, unless an admitted change among them builds on them. null: anyone.
   */
  authorFilter: ((actor: string) => boolean) | null = null

  /** Who signs this board's local changes; null: they go out unsigned (an older peer's form; tests forge with it). */
  readonly #signer: ChangeSigner | null
  /** The newest change (seq, hash) of every signing actor in the document: what vouches for an older peer's unsigned history. */
  readonly #signingTips = new Map<string, { seq: number, hash: string }>()

  /**
   * Whether the document holds a change of another author than this board's
   * (the genesis aside). A carry change is taken only before: by a node that
   * starts on a rotated mesh with an empty board. A board with history of its
   * own mesh never takes one (it would be exempt from the author rules).
   */
  #foreignSeen: boolean

  private constructor (meshId: string, doc: A.Doc<BoardDoc>, genesisHash: string, signer: ChangeSigner | null, loadedFrom: readonly Uint8Array[] = []) {
    this.meshId = meshId
    this.#doc = doc
    this.genesisHash = genesisHash
    this.#signer = signer
    const all = A.getChangesMetaSince(doc, [])
    const own = A.getActorId(doc)
    this.#foreignSeen = all.some(c => c.hash !== genesisHash && c.actor !== own)
    this.#noteSigners(all)
    this.#resetMirror(doc, loadedFrom)
    this.#reindexAll()
  }

  /** Why a change of the carry's form may not be taken here, or null when it may (the board has nothing of others yet). */
  #carryProblem (c: A.DecodedChange): string | null {
    if (!isCarryChange(c, this.meshId, this.genesisHash)) return 'a change under the carry actor that is not the carry change'
    return this.#foreignSeen ? 'a carry change for a board that already has history (only a node that starts empty on a rotated mesh takes one)' : null
  }

  /**
   * Makes the plain copy of `doc` afresh: read from `chunks`, the bytes it was
   * loaded from, where document-reader.ts reads their largest document (3-4x
   * faster than Automerge's materialize) and `doc` has all of its heads; the
   * few changes `doc` has beyond them (a joiner's own registration, a log
   * after a snapshot) are then read in from the places they wrote, as any
   * update is. Otherwise (more than `MAX_CHANGES_AFTER_READ` such changes,
   * or bytes the reader does not read) Automerge materializes it.
   *
   * With `aside` (copy-reader.ts: that document read on a worker thread, with
   * its records), its read is taken when it has one; then it returns the
   * records it parsed, for the caller to take, and the entries the changes
   * beyond them touched (to be read again from the copy). Null otherwise.
   */
  #resetMirror (doc: A.Doc<BoardDoc>, chunks: readonly Uint8Array[], aside: CopyReader | null = null): (CopyRead & { refreshed: Set<string> }) | null {
    const ahead = aside?.take() ?? null
    this.#readAside = ahead !== null
    const read = ahead ?? readLargestDocument(chunks)
    const after = read !== null && A.hasHeads(doc, read.heads) ? A.getChangesMetaSince(doc, read.heads) : null
    if (read === null || after === null || after.length > MAX_CHANGES_AFTER_READ) {
      this.#mirror.reset(doc)
      return null
    }
    this.#mirror.reset(doc, read.root)
    let refreshed = new Set<string>()
    if (after.length > 0) {
      const backend = A.getBackend(doc)
      const places = new ChangedPlaces()
      for (const m of after) {
        const bytes = backend.getChangeByHash(m.hash)
        if (bytes === null) {
          this.#mirror.reset(doc)
          return null
        }
        places.note(decodeChange(bytes), objectPaths(doc, this.#paths))
      }
      refreshed = this.#mirror.refresh(doc, places)
    }
    return ahead === null ? null : { ...ahead, refreshed }
  }

  /** A new board for `meshId`, writing as `actor` (signing its changes with `signer` when given). */
  static create (meshId: string, actor: string, signer: ChangeSigner | null = null): Board {
    const g = genesis(meshId)
    const hash = A.getHeads(g)[0] as string
    return new Board(meshId, genesisAs(g, actor), hash, signer)
  }

  /**
   * A board from saved bytes (a `save()` followed by any number of incremental
   * chunks). Throws `BoardCorruptError` when the bytes cannot be loaded or
   * belong to another mesh.
   */
  static load (meshId: string, actor: string, bytes: Uint8Array, signer: ChangeSigner | null = null): Board {
    const g = genesis(meshId)
    const hash = A.getHeads(g)[0] as string
    let doc: A.Doc<BoardDoc>
    try {
      doc = loadDetached<BoardDoc>(bytes, actor)
    } catch (err) {
      throw new BoardCorruptError(`the saved board cannot be read: ${(err as Error).message}`)
    }
    if (A.getHeads(doc).length > 0 && !A.hasHeads(doc, [hash])) {
      throw new BoardCorruptError('the saved board belongs to another mesh (its genesis differs from this swarm key\'s; after a key change, `meshwork rotate-key` moves the board to the new key)')
    }
    if (A.getHeads(doc).length === 0) doc = genesisAs(g, actor)
    return new Board(meshId, doc, hash, signer, splitChunks(bytes) ?? [])
  }

  /** The mesh id a saved board was made for (its genesis), or null when the bytes hold no meshwork board. */
  static meshIdOf (bytes: Uint8Array): string | null {
    try {
      const doc = loadDetached<BoardDoc>(bytes)
      const meshId = readPath(doc, ['meshId'])
      const id = meshId instanceof A.ImmutableString ? meshId.val : typeof meshId === 'string' ? meshId : null
      if (id === null) return null
      const g = genesis(id)
      const ok = A.hasHeads(doc, A.getHeads(g))
      A.free(doc)
      return ok ? id : null
    } catch {
      return null
    }
  }

  /**
   * This board's content (tasks, nodes, conflicts, main) on `meshId`'s genesis,
   * written by one carry change (`carryActor`): what a key rotation keeps. The
   * old history (its changes and their signatures) stays behind. Saved bytes.
   */
  carryTo (meshId: string): Uint8Array {
    const old = readPath(this.#doc, []) as BoardDoc
    const doc = A.change(A.clone(genesis(meshId), { actor: carryActor(meshId) }), { time: 0, message: `carry from mesh ${this.meshId}` }, d => {
      for (const section of RECORD_SECTIONS) {
        const src = old[section] as Record<string, unknown> | undefined
        for (const [k, v] of Object.entries(src ?? {})) (d[section] as Record<string, unknown>)[k] = copyValue(v)
      }
      for (const [k, v] of Object.entries(old.main ?? {})) (d.main as unknown as Record<string, unknown>)[k] = copyValue(v)
    })
    const bytes = A.save(doc)
    A.free(doc)
    return bytes
  }

  /** Registers a listener for every change; returns the function that removes it. */
  subscribe (listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** The document's current heads (change hashes), sorted. A fresh array; cached until the document changes. */
  heads (): string[] {
    return [...this.#headsCache().sorted]
  }

  /**
   * Whether every change named in `heads` is in this board. Every peer's
   * heartbeat asks this, and Automerge answers it by rebuilding each named
   * change from the document (a 50-node mesh spent 28 % of its CPU there), so
   * a change found once is remembered as present (`#present`: a document only
   * grows, but for a roll-back), this board's own current heads are answered
   * without Automerge, and an absent one is remembered until the document
   * changes.
   */
  hasHeads (heads: string[]): boolean {
    const cache = this.#headsCache()
    for (const h of heads) {
      if (this.#present.has(h)) continue
      if (cache.absent.has(h)) return false
      let has: boolean
      try {
        has = A.hasHeads(this.#doc, [h])
      } catch {
        has = false
      }
      if (!has) {
        if (cache.absent.size >= MAX_REMEMBERED_HASHES) cache.absent.clear()
        cache.absent.add(h)
        return false
      }
      this.#remember(h)
    }
    return true
  }

  /**
   * Changes known to be in the document: its heads as `#headsCache` read them
   * (then and since), and what `hasHeads` found. Emptied by `#rollBack`: the
   * only way the document loses changes.
   */
  readonly #present = new Set<string>()

  #remember (hash: string): void {
    if (this.#present.size >= MAX_REMEMBERED_HASHES) this.#present.clear()
    this.#present.add(hash)
  }

  /**
   * Puts the document back to `before` (a change refused after it was
   * applied): every assignment of `#doc` that is not a document grown from the
   * last one goes through here, so `#present` never names a change it lost.
   */
  #rollBack (before: A.Doc<BoardDoc>): void {
    this.#doc = A.clone(before, { actor: A.getActorId(before) })
    this.#present.clear()
    this.#heads = null
  }

  #heads: { doc: A.Doc<BoardDoc>, sorted: string[], set: Set<string>, absent: Set<string> } | null = null

  #headsCache (): { sorted: string[], set: Set<string>, absent: Set<string> } {
    if (this.#heads?.doc !== this.#doc) {
      const sorted = [...A.getHeads(this.#doc)].sort()
      // heads stay in the document as it grows (a roll-back empties `#present` too)
      for (const h of sorted) this.#remember(h)
      this.#heads = { doc: this.#doc, sorted, set: new Set(sorted), absent: new Set() }
    }
    return this.#heads
  }

  /**
   * Makes one local change (keep changes coarse: one per scheduler event) and
   * returns its bytes for broadcast, or null when `fn` changed nothing (or,
   * with `checkOwnChanges`, when peers would refuse the change: it is dropped).
   * `write` says which of the two it was.
   */
  change (message: string, fn: (doc: BoardDoc) => void): Uint8Array | null {
    const w = this.write(message, fn)
    return w.kind === 'written' ? w.bytes : null
  }

  /**
   * Makes one local change like `change`, and says what came of it: written
   * (with its bytes), unchanged (`fn` changed nothing), or withheld (with
   * `checkOwnChanges`, peers would refuse it: dropped, `onWithheld` called, and
   * the reason returned so the caller can undo what it assumed, see
   * `Scheduler`).
   */
  write (message: string, fn: (doc: BoardDoc) => void): BoardWrite {
    if (this.#signer !== null) return this.#signedChange(this.#signer, message, fn)
    const before = this.#doc
    // (the live document first: `before` is now a view, and a write that throws leaves the board writable)
    const after = this.#doc = pinned(before)
    if (!changeQuietly(after, message, fn)) return UNCHANGED
    const bytes = A.getLastLocalChange(after)
    if (bytes === undefined) return UNCHANGED
    const decoded = decodeChange(bytes)
    // peers judge this change on the history it was made on, as here: one they would refuse is never
    // sent (it would park every later change of this actor), e.g. a merge finished after leadership moved
    const refused = this.checkOwnChanges ? this.#ownChangeRefused(decoded, after) : null
    if (refused !== null) {
      this.#rollBack(before)
      this.onWithheld(message, refused)
      return { kind: 'withheld', reason: refused }
    }
    this.#afterOwn(decoded, [bytes])
    return { kind: 'written', bytes }
  }

  /**
   * A local change, signed: made on a fork of the document (an Automerge
   * change cannot be re-encoded in place), checked against the rules every
   * peer applies (a change they would refuse is refused here, before it
   * exists: the writer's later changes never depend on a refused one), signed
   * (signing.ts) and applied. Throws `BoardChangeRejectedError` when it writes the root.
   */
  #signedChange (signer: ChangeSigner, message: string, fn: (doc: BoardDoc) => void): BoardWrite {
    const fork = A.clone(this.#doc, { actor: A.getActorId(this.#doc) })
    let decoded: A.DecodedChange
    let made: Uint8Array | undefined
    try {
      made = changeQuietly(fork, message, fn) ? A.getLastLocalChange(fork) : undefined
      if (made === undefined) return UNCHANGED
      decoded = decodeChange(made)
      for (const op of decoded.ops) {
        if (op.obj === '_root') throw new BoardChangeRejectedError(`a local change writes the document root (key ${String(op.key)}); not made`)
      }
      const refused = this.checkOwnChanges ? this.#ownChangeRefused(decoded, fork) : null
      if (refused !== null) {
        // dropped with the fork: never written, sent or persisted, so no later change depends on it
        this.onWithheld(message, refused)
        return { kind: 'withheld', reason: refused }
      }
    } finally {
      A.free(fork)
    }
    const bytes = signChange(decoded, signer, made)
    const after = this.#doc = pinned(this.#doc)
    applyQuietly(after, [bytes])
    // made on every head of the document, it is now its only head: its hash without decoding it again
    const heads = A.getHeads(after)
    this.#noteSigners([heads.length === 1 ? { actor: decoded.actor, seq: decoded.seq, hash: heads[0] } : decodeChange(bytes)])
    // the signed change writes what the unsigned one did (the same operations under the same ids)
    this.#afterOwn(decoded, [bytes])
    return { kind: 'written', bytes }
  }

  /** Reads what this board's own change `decoded` (now in the document) wrote, and tells the listeners. */
  #afterOwn (decoded: A.DecodedChange, changes: Uint8Array[]): void {
    const places = new ChangedPlaces()
    places.note(decoded, objectPaths(this.#doc, this.#paths))
    this.#afterPatches(this.#mirror.refresh(this.#doc, places), true, changes)
  }

  /**
   * Why peers would refuse this board's own change `decoded` (made on `withIt`,
   * a document that holds it), or null: the rules every node applies on
   * receipt, judged on what the change was made on, so the verdict is theirs.
   */
  #ownChangeRefused (decoded: A.DecodedChange, withIt: A.Doc<BoardDoc>): string | null {
    return forbiddenWrite(decoded, this.#mainId) ?? roleViolation(decoded, changeContext(withIt, decoded, this.#paths))
  }

  /** Records the newest change of every signing actor among `changes`. */
  #noteSigners (changes: Array<{ actor: string, seq: number, hash: string | undefined }>): void {
    for (const c of changes) {
      if (!isSigningActor(c.actor) || c.hash === undefined) continue
      const tip = this.#signingTips.get(c.actor)
      if (tip === undefined || tip.seq < c.seq) this.#signingTips.set(c.actor, { seq: c.seq, hash: c.hash })
    }
  }

  /**
   * Checks a change from a peer: it must decode, and only the genesis change may
   * touch the document root (a peer that replaces `tasks` would otherwise hide
   * the whole board). Returns the decoded change.
   */
  checkChange (bytes: Uint8Array): A.DecodedChange {
    // a gossiped change is checked by the topic validator, then again when it is applied: the second time is
    // a look-up (only verdicts that depend on the bytes alone are kept: signature, root and main rules)
    const key = checkedKey(bytes)
    const known = this.#checked.get(key)
    if (known !== undefined) return known
    let decoded: A.DecodedChange
    try {
      decoded = decodeChange(bytes)
    } catch (err) {
      throw new BoardChangeRejectedError(`undecodable change: ${(err as Error).message}`)
    }
    if (decoded.hash !== this.genesisHash && decoded.actor === carryActor(this.meshId)) {
      const why = this.hasHeads([decoded.hash as string]) ? null : this.#carryProblem(decoded)
      if (why !== null) throw new BoardForgedChangeError([decoded.actor], 1, why)
    } else if (decoded.hash !== this.genesisHash) {
      const forged = signatureProblem(decoded, bytes)
      if (forged !== null) throw new BoardForgedChangeError([decoded.actor], 1, forged)
      for (const op of decoded.ops) {
        if (op.obj === '_root') throw new BoardChangeRejectedError(`change ${decoded.hash?.slice(0, 12) ?? '?'} writes the document root (key ${String(op.key)})`)
      }
      const forbidden = forbiddenWrite(decoded, this.#mainId)
      if (forbidden !== null) throw new BoardAuthorRefusedError([decoded.actor], 1, forbidden)
      setBounded(this.#checked, key, decoded, CHECKED_KEPT)
    }
    return decoded
  }

  /** Changes that passed `checkChange`'s checks of their bytes alone (signed ones), decoded, by `checkedKey`; the oldest go first. */
  readonly #checked = new Map<string, A.DecodedChange>()

  /** The object id of `main` (fixed by the genesis change). */
  get #mainId (): string | null {
    this.#mainObj ??= A.getObjectId(this.#doc, 'main')
    return this.#mainObj
  }

  #mainObj: string | null = null

  /**
   * Applies changes received from a peer after checking each; throws
   * `BoardChangeRejectedError` and applies none if one is bad. The root rule is
   * also checked on the resulting patches: a change parked earlier by Automerge
   * (its dependency was missing, e.g. one that arrived in a sync message) is
   * applied together with the change that completes it and was not checked before.
   */
  applyChanges (changes: Uint8Array[]): void {
    try {
      for (const c of changes) {
        const decoded = this.checkChange(c)
        // checked here, with their bytes: #checkAuthors need not read, decode and verify them again
        if (decoded.hash !== undefined && isSigningActor(decoded.actor)) this.#preverified.set(decoded.hash, decoded)
      }
      this.#applyChecked(changes)
    } finally {
      this.#preverified.clear()
    }
  }

  #applyChecked (changes: Uint8Array[]): void {
    const before = this.#doc
    const after = this.#doc = pinned(before)
    // through the backend, without patches (their cost grows with the board): what the changes wrote,
    // including a change parked earlier that one of them completes, is read from their operations
    try {
      applyQuietly(after, changes)
    } catch (err) {
      // nothing of a batch Automerge could not take stays (the copy never saw any of it)
      this.#rollBack(before)
      throw err
    }
    const places = new ChangedPlaces()
    // a parked change that writes the root is refused here with the rest (a roll-back also drops
    // Automerge's queue of parked changes)
    this.#checkAuthors(before, after, true, places)
    this.#afterPatches(this.#mirror.refresh(after, places), false, [])
  }

  /**
   * Rolls back to `before` and throws when `after` adds changes whose author
   * wrote what its role does not allow (`forbiddenWrite`), or that
   * `authorFilter` refuses. A sync message may carry a compressed chunk, and
   * a change parked earlier is applied with the one completing it, so the
   * changes are checked once they are in the document.
   */
  #checkAuthors (before: A.Doc<BoardDoc>, after: A.Doc<BoardDoc>, rootRule = false, places: ChangedPlaces | null = null): void {
    if (after === before) return
    const backend = A.getBackend(after)
    const added = A.getChangesMetaSince(after, A.getHeads(before)).filter(m => m.hash !== this.genesisHash)
    const forged: Array<{ actor: string, why: string }> = []
    const legacy: A.ChangeMetadata[] = []
    const tips = new Map(this.#signingTips)
    const forbidden = new Map<string, string>()
    let count = 0
    let rootWrite: string | null = null
    // one change at a time: decoded (every op a JS object), judged on every rule, and dropped before the
    // next is decoded. Decoding them all first kept a joiner's ~370,000 ops alive at once, and garbage
    // collection was a large part of its sync. The verdicts are thrown in the same order as ever:
    // forgeries first, then the root rule, then the role rules.
    for (const m of added) {
      // a change a sync message or `applyChanges` carried was decoded (and its signature checked) already
      let decoded = this.#preverified.get(m.hash)
      let raw: Uint8Array | undefined
      if (decoded === undefined) {
        const bytes = backend.getChangeByHash(m.hash)
        if (bytes === null) {
          this.#rollBack(before)
          throw new BoardChangeRejectedError(`change ${m.hash.slice(0, 12)} is listed in the document but cannot be read from it`)
        }
        raw = bytes
        decoded = decodeChange(bytes)
      }
      const why = this.#authorshipProblem(decoded, raw, tips, legacy, m)
      if (why !== null) forged.push({ actor: m.actor, why })
      const ctx = changeContext(after, decoded, this.#paths)
      places?.note(decoded, ctx.pathOf)
      // the carry change writes every peer's entries: exempt from the role rules, like the genesis change
      if (isCarryChange(m, this.meshId, this.genesisHash)) continue
      // (changes applied through a sync message are held to the root rule by their patches)
      if (rootRule && rootWrite === null && decoded.ops.some(op => op.obj === '_root')) rootWrite = m.hash
      const role = forbiddenWrite(decoded, this.#mainId) ?? roleViolation(decoded, ctx)
      if (role !== null) { forbidden.set(decoded.actor, role); count++ }
    }
    forged.push(...this.#legacyForgeries(after, legacy, tips))
    if (forged.length > 0) {
      this.#rollBack(before)
      throw new BoardForgedChangeError([...new Set(forged.map(f => f.actor))], forged.length, [...new Set(forged.map(f => f.why))].slice(0, 3).join('; '))
    }
    if (rootWrite !== null) {
      this.#rollBack(before)
      throw new BoardChangeRejectedError(`change ${rootWrite.slice(0, 12)} writes the document root; refused with what came with it, rolled back`)
    }
    if (forbidden.size > 0) {
      this.#rollBack(before)
      throw new BoardAuthorRefusedError([...forbidden.keys()], count, [...new Set(forbidden.values())].join('; '))
    }
    const admits = this.authorFilter
    const bad = admits === null ? [] : unvouchedChanges(before, after, admits)
    if (bad.length > 0) {
      this.#rollBack(before)
      throw new BoardAuthorRefusedError([...new Set(bad.map(c => c.actor))], bad.length)
    }
    this.#noteSigners(added)
    const own = A.getActorId(after)
    if (added.some(c => c.actor !== own)) this.#foreignSeen = true
  }

  /**
   * Why `c` (now in the document; `meta` its metadata) claims an author who
   * did not make it, or null. A change under a signing actor needs its peer's
   * signature (checked on `raw`, its bytes; a change without them was checked
   * by `#precheckSync`), and then counts in `tips`; the carry change must be
   * the carry change; a change in an older peer's unsigned form goes to
   * `legacy`, judged once all are seen (`#legacyForgeries`).
   */
  #authorshipProblem (c: A.DecodedChange, raw: Uint8Array | undefined, tips: Map<string, { seq: number, hash: string }>, legacy: A.ChangeMetadata[], meta: A.ChangeMetadata): string | null {
    if (c.actor === carryActor(this.meshId)) return this.#carryProblem(c)
    if (!isSigningActor(c.actor)) {
      legacy.push(meta)
      return null
    }
    const why = raw === undefined ? null : signatureProblem(c, raw)
    if (why !== null) return why
    const tip = tips.get(c.actor)
    if (tip === undefined || tip.seq < c.seq) tips.set(c.actor, { seq: c.seq, hash: meta.hash })
    return null
  }

  /**
   * The changes among `legacy` (in an older peer's unsigned form, now in
   * `after`) that claim an author who did not make them. Such a change is
   * history, taken as it comes, unless that peer signs (a signing actor of its
   * tag is among `tips`): then only its unsigned changes that one of its
   * signed changes builds on (its own history from before it upgraded) are
   * taken; any other is a forgery in its name.
   */
  #legacyForgeries (after: A.Doc<BoardDoc>, legacy: A.ChangeMetadata[], tips: ReadonlyMap<string, { seq: number, hash: string }>): Array<{ actor: string, why: string }> {
    const forged: Array<{ actor: string, why: string }> = []
    if (legacy.length === 0) return forged
    const notBefore = new Map<string, Set<string>>()
    for (const c of legacy) {
      const tag = peerTagOfActor(c.actor)
      const own = [...tips].filter(([actor]) => actor.startsWith(tag)).map(([, t]) => t.hash)
      if (own.length === 0) continue
      const vouched = own.some(tip => {
        let later = notBefore.get(tip)
        if (later === undefined) {
          later = new Set(A.getChangesMetaSince(after, [tip]).map(m => m.hash))
          notBefore.set(tip, later)
        }
        return !later.has(c.hash)
      })
      if (!vouched) forged.push({ actor: c.actor, why: `unsigned change in the name of ${tag.slice(0, 12)}, a peer that signs` })
    }
    return forged
  }

  /** The next Automerge sync message for a peer, or null when the peer is up to date. */
  generateSyncMessage (state: A.SyncState): [A.SyncState, Uint8Array | null] {
    return A.generateSyncMessage(this.#doc, state)
  }

  /**
   * Applies a sync message from a peer. Sync messages may carry compressed
   * document chunks rather than single changes, so the root rule is checked on
   * the resulting patches: a message that writes the root is rolled back whole
   * and refused.
   */
  receiveSyncMessage (state: A.SyncState, message: Uint8Array): A.SyncState {
    try {
      const loaded = this.#receiveDocument(state, message)
      if (loaded !== null) return loaded
      this.#precheckSync(message)
      return this.#receiveSync(state, message)
    } finally {
      this.#preverified.clear()
    }
  }

  /**
   * A sync message carrying a whole document (what Automerge sends a peer
   * that lacks most of the board: a joiner) of `LOAD_SYNC_BYTES` or more is
   * loaded together with this board's own content (`A.load` of both), then
   * checked like any received change (signatures, the root rule, the role
   * rules, `authorFilter`) and taken whole or refused whole. Applying it as a
   * sync message builds a patch for every field of every task, and that took
   * more than half of a joiner's sync of a 10,000-task board. Returns null
   * when the message is not such a one (the caller applies it as usual).
   */
  #receiveDocument (state: A.SyncState, message: Uint8Array): A.SyncState | null {
    let chunks: Uint8Array[]
    let senderHeads: string[]
    try {
      ({ changes: chunks, heads: senderHeads } = A.decodeSyncMessage(message))
    } catch {
      return null
    }
    let size = 0
    for (const c of chunks) size += c.length
    if (size < LOAD_SYNC_BYTES || !chunks.some(isDocumentChunk)) return null
    // both ends of a new connection start a session, so a joiner is sent the document twice: when it has
    // the sender's heads already, Automerge's own path skips a document chunk whose heads it has (cheap)
    if (senderHeads.length > 0 && this.hasHeads(senderHeads)) return null
    // the copy depends on the document's bytes alone: a large one is read on another thread meanwhile
    const largest = largestDocument(chunks)
    const aside = largest !== null && largest.length >= COPY_ASIDE_BYTES ? this.startCopyReader(largest) : null
    try {
      return this.#takeDocument(state, message, chunks, aside)
    } finally {
      aside?.close()
    }
  }

  /** `#receiveDocument` once it knows the message carries a whole document (`aside`: its copy being read on a worker thread). */
  #takeDocument (state: A.SyncState, message: Uint8Array, chunks: Uint8Array[], aside: CopyReader | null): A.SyncState | null {
    const before = this.#doc
    let loaded: A.Doc<BoardDoc>
    let bytes: Uint8Array
    try {
      // the peer's document first: Automerge takes a first document chunk as it is stored, while it
      // turns every later chunk into changes and applies them op by op (this board's own content is small)
      bytes = concatBytes([...chunks.filter(isDocumentChunk), A.save(before), ...chunks.filter(c => !isDocumentChunk(c))])
      loaded = loadDetached<BoardDoc>(bytes, A.getActorId(before))
    } catch {
      // not loadable as it stands (a chunk that needs changes this board lacks): the sync path handles it
      return null
    }
    // loaded with this board's own content, the document always holds this mesh's genesis: another mesh's
    // shows as a second change without dependencies (its own genesis)
    const foreign = this.#foreignGenesis(before, loaded)
    if (foreign !== null) {
      A.free(loaded)
      throw new BoardChangeRejectedError(foreign)
    }
    try {
      this.#checkAuthors(before, loaded, true)
    } catch (err) {
      A.free(loaded)
      throw err
    }
    // the message's other parts (their heads, what they need) go through Automerge's sync state; its
    // changes are all in the document now, so this applies nothing
    let doc: A.Doc<BoardDoc>
    let next: A.SyncState
    try {
      [doc, next] = A.receiveSyncMessage(loaded, state, message)
    } catch (err) {
      throw new BoardChangeRejectedError(`bad sync message: ${(err as Error).message}`)
    }
    const touched = new Set<string>(['main'])
    for (const d of [before, doc]) {
      for (const section of RECORD_SECTIONS) {
        for (const key of keysAt(d, section)) touched.add(`${section}/${key}`)
      }
    }
    this.#doc = doc
    A.free(before)
    this.#tookWhole = true
    this.#loadedFrom = { heads: A.getHeads(doc), bytes }
    const parsed = this.#resetMirror(doc, chunks, aside)
    if (parsed !== null) this.#takeEntries(parsed)
    this.#afterPatches(touched, false, [], parsed?.refreshed ?? null)
    return next
  }

  /**
   * Why `after` is refused as another mesh's board, or null: every change of a
   * mesh's board builds on its genesis, so a change `after` adds beyond
   * `before` that has no dependencies is the genesis of another mesh (a peer
   * with another swarm key's board, or one from before a key rotation).
   */
  #foreignGenesis (before: A.Doc<BoardDoc>, after: A.Doc<BoardDoc>): string | null {
    const root = A.getChangesMetaSince(after, A.getHeads(before)).find(c => c.deps.length === 0 && c.hash !== this.genesisHash)
    if (root === undefined) return null
    return `sync message carries a board of another mesh (its genesis ${root.hash.slice(0, 12)} is not this mesh's ${this.genesisHash.slice(0, 12)}); refused whole`
  }

  #receiveSync (state: A.SyncState, message: Uint8Array): A.SyncState {
    const before = this.#doc
    let rootWrite: string | null = null
    let doc: A.Doc<BoardDoc>
    let next: A.SyncState
    try {
      // (Automerge computes a sync message's patches whatever the board does: they say whether it writes the root)
      [doc, next] = A.receiveSyncMessage(this.#doc, state, message, {
        patchCallback: ps => { for (const p of ps) if (p.path.length === 1) rootWrite ??= String(p.path[0]) }
      })
    } catch (err) {
      throw new BoardChangeRejectedError(`bad sync message: ${(err as Error).message}`)
    }
    if (rootWrite !== null) {
      this.#rollBack(before)
      throw new BoardChangeRejectedError(this.#foreignGenesis(before, doc) ?? `sync message writes the document root (key ${rootWrite as string}); rolled back`)
    }
    const places = new ChangedPlaces()
    this.#checkAuthors(before, doc, false, places)
    this.#doc = doc
    this.#afterPatches(this.#mirror.refresh(doc, places), false, [])
    return next
  }

  /**
   * Refuses a sync message carrying a forged change before Automerge sees it:
   * a forgery of a change this board already holds (same actor, same sequence
   * number) would otherwise fail inside Automerge as a duplicate, uncounted.
   * A message that carries a compressed chunk instead of changes is checked
   * after applying (`#checkAuthors`).
   */
  #precheckSync (message: Uint8Array): void {
    let changes: Uint8Array[]
    try {
      changes = A.decodeSyncMessage(message).changes
    } catch {
      return
    }
    for (const bytes of changes) {
      let c: A.DecodedChange
      try {
        c = decodeChange(bytes)
      } catch {
        continue
      }
      if (c.hash === this.genesisHash || this.hasHeads([c.hash as string])) continue
      const why = c.actor === carryActor(this.meshId) ? this.#carryProblem(c) : signatureProblem(c, bytes)
      if (why !== null) throw new BoardForgedChangeError([c.actor], 1, why)
      if (c.hash !== undefined) this.#preverified.set(c.hash, c)
    }
  }

  /** Changes being applied whose signatures were verified (`#precheckSync`, `applyChanges`), decoded, by hash. */
  readonly #preverified = new Map<string, A.DecodedChange>()

  /**
   * Whether a peer whose document is at `heads` has seen change `hash`: true or
   * false, or null when this board lacks some of those heads (cannot tell yet).
   */
  seenBy (heads: string[], hash: string): boolean | null {
    if (!this.hasHeads(heads)) return null
    if (!this.hasHeads([hash])) return false
    // with both in the document, whether `hash` is among the ancestors of `heads` never changes: the answer
    // is kept (a settling claim asks it of every peer's last heads at each tick, and each ask lists changes)
    const key = `${hash} ${heads.join(',')}`
    const known = this.#seenAnswers.get(key)
    if (known !== undefined) return known
    const seen = !A.getChangesMetaSince(this.#doc, heads).some(c => c.hash === hash)
    setBounded(this.#seenAnswers, key, seen, SEEN_ANSWERS_KEPT)
    return seen
  }

  /** Answers of `seenBy` (immutable once both sides are in the document), oldest first. */
  readonly #seenAnswers = new Map<string, boolean>()

  /** Hash of a change made by `change()`. */
  static hashOf (change: Uint8Array): string {
    return decodeChange(change).hash as string
  }

  /**
   * The whole document: compacted (`A.save`), or, while the board is still
   * the document it took whole from a peer (`#receiveDocument`), the bytes it
   * loaded it from (the peer's compacted document and this board's own small
   * one): a joiner of a 10,000-task board writes its first snapshot without
   * compacting the document again.
   */
  save (): Uint8Array {
    this.#tookWhole = false
    const loaded = this.#loadedFrom
    this.#loadedFrom = null
    const heads = A.getHeads(this.#doc)
    this.#savedHeads = heads
    // the same heads, the same document (later sync rounds that bring nothing new give a new Doc object)
    const same = loaded !== null && loaded.heads.length === heads.length && loaded.heads.every(h => heads.includes(h))
    return same ? loaded.bytes : A.save(this.#doc)
  }

  /** The changes since the last `save()`/`saveIncremental()`. */
  saveIncremental (): Uint8Array {
    this.#tookWhole = false
    const since = this.#savedHeads
    // Automerge's own record of what was saved is only kept by A.save/A.saveIncremental, and a save()
    // above may not have called A.save: after one, what is new is counted from the heads it saved
    if (since === null) return A.saveIncremental(this.#doc)
    this.#savedHeads = A.getHeads(this.#doc)
    return A.saveSince(this.#doc, since)
  }

  /** The heads of the last `save()`/`saveIncremental()` after a `save()`; null before the first `save()`. */
  #savedHeads: string[] | null = null
  /** The heads of the document `#receiveDocument` took whole and the bytes it loaded it from, until the next `save()`. */
  #loadedFrom: { heads: string[], bytes: Uint8Array } | null = null

  /**
   * Whether the board took a whole document at once (a joiner's first sync,
   * `#receiveDocument`) since it was last saved: then what is new is best
   * persisted with `save()`, compacted, not with `saveIncremental()`, which
   * holds every change of the board uncompressed (6.9 MiB against 0.7 MiB for
   * a board of 10,000 tasks).
   */
  get needsSnapshot (): boolean {
    return this.#tookWhole
  }

  #tookWhole = false

  /** Number of changes in the document's history. */
  changeCount (): number {
    return A.getAllChanges(this.#doc).length
  }

  /** The validated plain view of the board; the same object until the board changes. */
  snapshot (): BoardSnapshot {
    if (this.#snapshot === null) for (const section of RECORD_SECTIONS) this.#handedOut.add(section)
    this.#snapshot ??= {
      meshId: this.meshId,
      tasks: this.#tasks.entries,
      nodes: this.#nodes.entries,
      conflicts: this.#conflicts.entries,
      main: this.#main,
      invalid: [...this.#invalid]
    }
    return this.#snapshot
  }

  /** The sections whose entries map a snapshot was given since the map was last copied. */
  readonly #handedOut = new Set<string>()

  /**
   * How the plain copy of the document was last made whole: read from saved
   * bytes (`read aside`: on a worker thread, copy-reader.ts) or materialized
   * by Automerge (`#resetMirror`; for tests).
   */
  get copyMadeBy (): 'read' | 'read aside' | 'materialized' | null {
    const made = this.#mirror.lastReset
    return made === 'read' && this.#readAside ? 'read aside' : made
  }

  /** Whether the copy was last made from a worker's read (`#resetMirror`). */
  #readAside = false

  /** Starts the read of a whole document's copy on a worker thread (`#receiveDocument`, from `COPY_ASIDE_BYTES` up); null: this thread reads it. For tests. */
  startCopyReader: (chunk: Uint8Array) => CopyReader | null = chunk => CopyReader.start(chunk)

  /** Shortcut for one task of the snapshot. */
  task (id: string): Task | undefined {
    return this.#tasks.entries.get(id as TaskId)
  }

  /**
   * Takes the records a worker parsed from the copy (`#resetMirror`) as this
   * board's entries, whole: what each section holds and which entries fail
   * their schema (`onInvalid` is called for those not failing before).
   */
  #takeEntries (read: CopyRead): void {
    this.#tasks.entries = new Map(read.entries.tasks as Array<[TaskId, Task]>)
    this.#nodes.entries = new Map(read.entries.nodes as Array<[PeerIdString, NodeRecord]>)
    this.#conflicts.entries = new Map(read.entries.conflicts as Array<[ConflictId, Conflict]>)
    this.#handedOut.clear()
    const was = this.#invalid
    this.#invalid = new Set([...was].filter(label => label === 'main'))
    for (const [label, why] of read.invalid) {
      this.#invalid.add(label)
      if (!was.has(label)) this.onInvalid(label, why)
    }
  }

  /**
   * Reads the entries `touched` names again from the copy (but for those
   * that were taken parsed already: all but `reparse`, when given) and tells
   * the listeners.
   */
  #afterPatches (touched: Set<string>, local: boolean, changes: Uint8Array[], reparse: ReadonlySet<string> | null = null): void {
    if (touched.size === 0 && changes.length === 0) return
    const tasks: TaskId[] = []
    let all = false
    for (const t of touched) {
      if (t === 'main') { this.#reindexMain(); continue }
      const slash = t.indexOf('/')
      const section = t.slice(0, slash)
      const key = t.slice(slash + 1)
      if (section !== 'tasks' && section !== 'nodes' && section !== 'conflicts') continue
      // a root key written: the copy was made afresh (`DocMirror.refresh`), and every entry is read again, once
      if (key === '*') { if (!all) this.#reindexAll(); all = true; continue }
      if (all || (reparse !== null && !reparse.has(t))) {
        if (section === 'tasks') tasks.push(key as TaskId)
        continue
      }
      const target = section === 'tasks' ? this.#tasks : section === 'nodes' ? this.#nodes : this.#conflicts
      // a snapshot someone holds keeps the entries it was given: a map handed out is copied before it changes
      // (once: the copy is this board's until the next snapshot), one nobody was given is changed in place
      if (this.#handedOut.delete(section)) (target as Section<string, unknown>).entries = new Map((target as Section<string, unknown>).entries)
      this.#reindexEntry(section, target as Section<string, unknown>, key)
      if (section === 'tasks') tasks.push(key as TaskId)
    }
    this.#snapshot = null
    const update: BoardUpdate = { local, changes, tasks }
    for (const l of this.#listeners) l(update)
  }

  #reindexEntry (section: RecordSection, target: Section<string, unknown>, key: string): void {
    const raw = this.#mirror.entry(section, key)
    const label = `${section}/${key}`
    if (raw === undefined) {
      target.entries.delete(key)
      this.#invalid.delete(label)
      return
    }
    const parsed = parseEntry(section, key, raw)
    if ('value' in parsed) {
      target.entries.set(key, parsed.value)
      this.#invalid.delete(label)
    } else {
      target.entries.delete(key)
      if (!this.#invalid.has(label)) {
        this.#invalid.add(label)
        this.onInvalid(label, parsed.why)
      }
    }
  }

  #reindexMain (): void {
    const parsed = mainSchema.safeParse(plain(this.#mirror.root('main')))
    if (parsed.success) {
      this.#main = parsed.data
      this.#invalid.delete('main')
    } else if (!this.#invalid.has('main')) {
      this.#invalid.add('main')
      this.onInvalid('main', parsed.error.message)
    }
  }

  /** Reads every entry again from the copy (made afresh by the caller). */
  #reindexAll (): void {
    for (const section of RECORD_SECTIONS) {
      const target = (section === 'tasks' ? this.#tasks : section === 'nodes' ? this.#nodes : this.#conflicts) as Section<string, unknown>
      target.entries = new Map()
      for (const key of this.#mirror.keys(section)) this.#reindexEntry(section, target, key)
    }
    this.#handedOut.clear()
    this.#reindexMain()
    this.#snapshot = null
  }
}
