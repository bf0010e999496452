import * as A from '@automerge/automerge'
import { pathReader, readPath } from './detached.ts'
import { isDocumentChunk } from './chunks.ts'
import { materializeDocument } from './document-reader.ts'

/*
 * A plain copy of a detached document's content (detached.ts), kept up to
 * date in place after each update from the places its changes wrote
 * (`ChangedPlaces`, read again from the document): what the board reads its
 * entries from. Automerge's own object tree is immutable, so each update
 * copied every object on the way to what changed (the map of all tasks among
 * them); this copy is private to its owner and changed where it stands.
 *
 * A place whose parent is not in the copy (a copy that missed an update)
 * never leaves it wrong: the entry it falls in is read again whole.
 */

/** An object of the copy: a map or a list. */
type Node = Record<string, unknown> | unknown[]

function isNode (v: unknown): v is Node {
  return v !== null && typeof v === 'object' && !(v instanceof A.ImmutableString) && !(v instanceof A.Counter) && !(v instanceof Uint8Array) && !(v instanceof Date)
}

/** Whether `v`, a value of a copy, is a map of it (not a list, nor a scalar such as a string, counter, date or bytes). */
export function isMap (v: unknown): v is Record<string, unknown> {
  return isNode(v) && !Array.isArray(v)
}

/** Sets key `key` of map `m` as its own property, whatever the key (`__proto__` too: a key of a peer's is only a key). */
function setKey (m: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(m, key, { value, writable: true, enumerable: true, configurable: true })
  else m[key] = value
}

/** A path in a document: map keys and list indexes. */
type Path = ReadonlyArray<string | number>

/** Whole entries of one root map an update must write before the map is read whole (`DocMirror.refresh`). */
const WHOLE_SECTION_MIN = 64

/** Actions that make an object (its id is the op's id). */
const MAKES = new Set(['makeMap', 'makeList', 'makeText', 'makeTable'])

/**
 * The places one update's changes wrote, from their operations: each a key of
 * a map (a list is taken whole), to be read again from the document once the
 * update stands (`DocMirror.refresh`). Cheaper than Automerge's patches, whose
 * cost grows with the document: a place is read in a few calls.
 */
export class ChangedPlaces {
  /** Root keys written themselves (the whole copy is made again). */
  root = false
  /** Places by the label of the entry they are in (the labels `DocMirror.refresh` returns); null: the entry whole. */
  readonly byEntry = new Map<string, Path[] | null>()

  /** Notes the places `change` writes; `pathOf` gives an object's path in the document (null: not in it). */
  note (change: A.DecodedChange, pathOf: (obj: string) => Path | null): void {
    // objects the change makes: their paths follow from the change itself
    const made = new Map<string, Path>()
    change.ops.forEach((op, i) => {
      const base = op.obj === '_root' ? [] : made.get(op.obj) ?? pathOf(op.obj)
      // an object that is nowhere in the document (a loser of concurrent writes of one key): nothing shows
      if (base === null) return
      const key = typeof op.key === 'string' && (op as { elemId?: string }).elemId === undefined ? op.key : null
      if (key !== null && MAKES.has(op.action)) made.set(`${change.startOp + i}@${change.actor}`, [...base, key])
      const place = key === null ? base : [...base, key]
      // inside a list: the list whole
      const list = place.findIndex(p => typeof p === 'number')
      this.#add(list < 0 ? place : place.slice(0, list))
    })
  }

  #add (place: Path): void {
    if (place.length <= 1) { this.root = true; return }
    const [top, key] = place as [string, string | number]
    const label = top === 'main' ? 'main' : `${top}/${String(key)}`
    if (top === 'main' || place.length === 2) { this.byEntry.set(label, null); return }
    const known = this.byEntry.get(label)
    if (known === null) return
    if (known === undefined) this.byEntry.set(label, [place])
    else if (known.length < 64) known.push(place)
    else this.byEntry.set(label, null)
  }
}

/** A place is not in the copy as it stands. */
class MisfitError extends Error {}

function child (node: unknown, prop: string | number): unknown {
  if (Array.isArray(node) && typeof prop === 'number') return node[prop]
  if (isMap(node) && typeof prop === 'string') return Object.hasOwn(node, prop) ? node[prop] : undefined
  throw new MisfitError()
}

/** The place of the entry a label names: `main`, a root key (`<key>/*`), or an entry of a root map. */
function entryOf (label: string): string[] {
  const slash = label.indexOf('/')
  if (slash < 0) return [label]
  const key = label.slice(slash + 1)
  return key === '*' ? [label.slice(0, slash)] : [label.slice(0, slash), key]
}

export class DocMirror {
  #root: Record<string, unknown> = {}

  /** How the copy was last made whole: read from saved bytes (`readLargestDocument`) or by Automerge; for tests. */
  lastReset: 'read' | 'materialized' | null = null

  /**
   * Copies the whole of `doc` afresh; `shown`, when given, is that copy
   * already (what `readLargestDocument` read from the bytes `doc` was loaded
   * from, at heads `doc` has), taken as it is.
   */
  reset (doc: A.Doc<unknown>, shown?: Record<string, unknown>): void {
    const all = shown ?? readPath(doc, [])
    this.#root = isMap(all) ? all : {}
    this.lastReset = shown === undefined ? 'materialized' : 'read'
  }

  /**
   * Reads the places `places` names again from `doc` (the update that wrote
   * them stands) and returns what they touched: `<root key>/<key>` for an
   * entry of a root map, `<root key>/*` when a root key itself was written,
   * and `main` for anything under `main`.
   */
  refresh (doc: A.Doc<unknown>, places: ChangedPlaces): Set<string> {
    const touched = new Set<string>()
    if (places.root) {
      this.reset(doc)
      for (const k of Object.keys(this.#root)) touched.add(k === 'main' ? 'main' : `${k}/*`)
      return touched
    }
    const read = pathReader(doc)
    const whole = this.#wholeSections(places)
    for (const section of whole) {
      if (!this.#put([section], read([section]))) { this.reset(doc); break }
    }
    for (const [label, within] of places.byEntry) {
      touched.add(label)
      if (whole.has(entryOf(label)[0] as string) && label.includes('/')) continue
      const entry = entryOf(label)
      if (within !== null && within.every(place => this.#put(place, read(place as string[])))) continue
      if (!this.#put(entry, read(entry))) this.reset(doc)
    }
    return touched
  }

  /**
   * The root maps whose entries `places` names mostly afresh (a plan of
   * hundreds of tasks): read whole, in one call into Automerge, rather than
   * entry by entry (a 10,000-task plan's entries: 0.62 s whole, 0.96 s one by one).
   * A section is read whole when it gets at least `WHOLE_SECTION_MIN` whole
   * entries and no fewer than it holds already.
   */
  #wholeSections (places: ChangedPlaces): Set<string> {
    const counts = new Map<string, number>()
    for (const [label, within] of places.byEntry) {
      const [section, key] = entryOf(label)
      if (within === null && key !== undefined) counts.set(section as string, (counts.get(section as string) ?? 0) + 1)
    }
    const whole = new Set<string>()
    for (const [section, n] of counts) if (n >= WHOLE_SECTION_MIN && n >= this.keys(section).length) whole.add(section)
    return whole
  }

  /** Sets `place` of the copy to `value` (absent: removed); false when its parent is not a map of the copy. */
  #put (place: Path, value: unknown): boolean {
    let parent: unknown = this.#root
    try {
      for (let i = 0; i < place.length - 1; i++) parent = child(parent, place[i] as string)
    } catch (err) {
      if (err instanceof MisfitError) return false
      throw err
    }
    if (!isMap(parent)) return false
    const key = place[place.length - 1] as string
    if (value === undefined) delete parent[key]
    else setKey(parent, key, value)
    return true
  }

  /** The value at `key` of the document's root. */
  root (key: string): unknown {
    return Object.hasOwn(this.#root, key) ? this.#root[key] : undefined
  }

  /** The entry `key` of the root map `section`. */
  entry (section: string, key: string): unknown {
    const s = this.root(section)
    return isMap(s) && Object.hasOwn(s, key) ? s[key] : undefined
  }

  /** The keys of the root map `section`. */
  keys (section: string): string[] {
    const s = this.root(section)
    return isMap(s) ? Object.keys(s) : []
  }
}

/**
 * What the largest document chunk among `chunks` holds, read lean by
 * document-reader.ts (a board of 10,000 tasks: about 0.12 s, where
 * Automerge's materialize takes 0.6: no hidden properties, scalar strings as
 * plain strings, which the board reads through `plain` as it reads the
 * `ImmutableString`s later updates put in), with its heads; null when there is none
 * or the reader does not read it. It is the content of a document loaded from
 * those bytes only where that document has exactly these heads (Automerge
 * checked them on load); where it has more, the changes beyond them say what
 * differs (`Board`).
 */
export function readLargestDocument (chunks: readonly Uint8Array[]): { heads: string[], root: Record<string, unknown> } | null {
  const largest = largestDocument(chunks)
  return largest === null ? null : materializeDocument(largest, { lean: true })
}

/** The largest document chunk among `chunks`, or null when there is none. */
export function largestDocument (chunks: readonly Uint8Array[]): Uint8Array | null {
  let largest: Uint8Array | null = null
  for (const c of chunks) if (isDocumentChunk(c) && c.length > (largest?.length ?? 0)) largest = c
  return largest
}
