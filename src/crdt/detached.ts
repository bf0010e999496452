import * as A from '@automerge/automerge'
import { chunkFramingProblem } from './chunks.ts'

/*
 * Automerge documents without a JavaScript mirror.
 *
 * Automerge's JavaScript side keeps every document as an immutable object
 * tree, and updates it after each change, apply or sync message by copying
 * every object on the path to what changed. The board keeps every task under
 * one map, so each change copied an object of as many keys as the board has
 * tasks: at 5,000 tasks more than half of a change's time.
 *
 * A detached document is an ordinary `A.Doc` whose object tree is the empty
 * root `{}`: its content lives in Automerge's backend alone, where changes,
 * sync and history go on as usual. Where Automerge still computes the patches
 * of an update (`A.receiveSyncMessage`; a patch callback gets them), their
 * paths are missing from the empty root, so applying them copies nothing.
 * `changeQuietly` and `applyQuietly` compute none: they write through
 * `A.change`'s proxies (which read and write the backend) and apply through
 * the backend. What the document holds is read with `readPath` and `keysAt`,
 * never from the object. A clone (`A.clone`) of a detached document is
 * detached too.
 */

/** Automerge's backend of a document (its wasm handle). */
export type Backend = ReturnType<typeof A.getBackend>

/** A detached document written as `actor` (random when undefined), filled through its backend by `fill`. */
export function detachedDoc<T> (actor: string | undefined, fill: (backend: Backend) => void): A.Doc<T> {
  const doc = A.init<T>(actor === undefined ? {} : { actor })
  const backend = A.getBackend(doc)
  fill(backend)
  // what `fill` put in the backend is not reported as patches to the empty root later
  backend.updateDiffCursor()
  return doc
}

/**
 * A detached document loaded from saved bytes (`A.save`, followed by any
 * number of incremental saves or changes). Throws on what `A.load` refuses:
 * bytes that are not whole chunks, a chunk Automerge cannot read, a change
 * whose dependencies are missing (other than changes a saved document kept
 * waiting for theirs).
 */
export function loadDetached<T> (bytes: Uint8Array, actor?: string): A.Doc<T> {
  const framing = chunkFramingProblem(bytes)
  if (framing !== null) throw new Error(`unable to parse chunk: ${framing}`)
  return detachedDoc<T>(actor, backend => {
    backend.loadIncremental(bytes)
    // changes waiting for their dependencies: A.load keeps those a saved document held (a board saves
    // the changes Automerge parked) and refuses others; it is asked in this rare case, and its answer kept
    if (backend.getMissingDeps([]).length > 0) A.free(A.load(bytes))
  })
}

/**
 * The value at `path` of `doc` (its current state), as a plain object tree
 * with Automerge's scalar types (`ImmutableString`, `Counter`); undefined
 * when absent.
 */
export function readPath (doc: A.Doc<unknown>, path: readonly string[]): unknown {
  return pathReader(doc)(path)
}

/**
 * `readPath` for several paths of `doc` as it is now: the objects on the way
 * are looked up once (each look-up is a call into Automerge's backend).
 */
export function pathReader (doc: A.Doc<unknown>): (path: readonly string[]) => unknown {
  const backend = A.getBackend(doc)
  // the object at each path prefix seen (by the prefix's keys joined with NUL), or null when there is none
  const objects = new Map<string, string | null>([['', '_root']])
  return path => {
    if (path.length === 0) return backend.materialize('_root')
    let obj: string | null = '_root'
    let prefix = ''
    for (let i = 0; i < path.length - 1 && obj !== null; i++) {
      const next = prefix + '\0' + (path[i] as string)
      let known = objects.get(next)
      if (known === undefined) {
        const got = backend.getWithType(obj, path[i] as string)
        known = got !== null && got !== undefined && isObjectType(got[0]) ? got[1] as string : null
        objects.set(next, known)
      }
      obj = known
      prefix = next
    }
    if (obj === null) return undefined
    const got = backend.getWithType(obj, path[path.length - 1] as string)
    if (got === null || got === undefined) return undefined
    return isObjectType(got[0]) ? backend.materialize(got[1] as string) : scalar(got[0], got[1])
  }
}

function isObjectType (type: string): boolean {
  return type === 'map' || type === 'list' || type === 'text' || type === 'table'
}

/** A scalar read from the backend, in the type the object tree would give it (strings as `ImmutableString`). */
function scalar (type: string, value: unknown): unknown {
  if (type === 'str' && typeof value === 'string') return new A.ImmutableString(value)
  if (type === 'counter' && typeof value === 'number') return new A.Counter(value)
  return value
}

/** The keys of the map at `key` of `doc`'s root; empty when it is absent or not a map. */
export function keysAt (doc: A.Doc<unknown>, key: string): string[] {
  const backend = A.getBackend(doc)
  const got = backend.getWithType('_root', key)
  if (got === null || got === undefined || got[0] !== 'map') return []
  return backend.keys(got[1] as string)
}

/**
 * A live document object on `doc`'s backend, leaving `doc` itself as a view
 * of the document as it is now: what `A.clone` forks a roll-back from, and
 * what `A.getHeads` and `A.getChangesMetaSince` compare an update with. (This
 * is what `A.applyChanges` does to the document it is given; with no changes
 * it computes no patches.)
 */
export function pinned<T> (doc: A.Doc<T>): A.Doc<T> {
  return A.applyChanges(doc, [])[0]
}

/** Applies `changes` to the live document `doc` through its backend: no patches are computed. */
export function applyQuietly<T> (doc: A.Doc<T>, changes: Uint8Array[]): void {
  const backend = A.getBackend(doc)
  backend.applyChanges(changes)
  backend.updateDiffCursor()
}

/**
 * Makes what `fn` writes one change of the live document `doc`, committed
 * through its backend so that no patches are computed (`A.change` computes
 * them for the whole path of every write). Returns whether `fn` wrote anything.
 */
export function changeQuietly<T> (doc: A.Doc<T>, message: string, fn: (d: T) => void): boolean {
  const backend = A.getBackend(doc)
  let made = false
  A.change(doc, { message }, d => {
    fn(d)
    if (backend.pendingOps() > 0) {
      backend.commit(message, Math.floor(Date.now() / 1000))
      made = true
    }
  })
  backend.updateDiffCursor()
  return made
}
