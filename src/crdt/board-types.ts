import * as A from '@automerge/automerge'
import type { Conflict, MainRef, NodeRecord, Task, TaskId, TASK_DEFAULTS } from './schema.ts'

/*
 * The board's stored types (what a change writes), its errors and its update
 * event: what writers and the replication layer share with `Board`.
 */

/**
 * The stored form of a value of a board schema: every string (branded or not)
 * is an Automerge `ImmutableString`; numbers, booleans and null as they are.
 * Write types are derived from the zod schemas with it, so a writer cannot set
 * a field the schema does not have or give it the wrong type.
 */
export type Stored<T> =
  T extends string ? A.ImmutableString
    : T extends number | boolean | null | undefined ? T
      : T extends ReadonlyArray<infer U> ? Array<Stored<U>>
        : T extends object ? { -readonly [K in keyof T]: Stored<T[K]> }
          : never

/** The fields a compact task record leaves out while they hold their default (schema.ts `TASK_DEFAULTS`). */
type DefaultedField = keyof typeof TASK_DEFAULTS

/** A task as it is written inside a board change (a compact record leaves out the fields of `TASK_DEFAULTS`). */
export type TaskRecord = Omit<Stored<Task>, DefaultedField> & Partial<Pick<Stored<Task>, DefaultedField>>
/** A conflict as it is written inside a board change. */
export type ConflictRecord = Stored<Conflict>
/** A node registration as it is written inside a board change. */
export type NodeRecordDraft = Stored<NodeRecord>
/** The `main` record as it is written inside a board change. */
export type MainRecord = Stored<MainRef>

/**
 * The raw Automerge document. Strings are stored as `ImmutableString` (scalars,
 * not text CRDTs). Records are typed for writers; what a peer wrote may still
 * fail the schema, which is why reads go through `snapshot()`.
 */
export interface BoardDoc {
  meshId: A.ImmutableString
  tasks: Record<string, TaskRecord>
  nodes: Record<string, NodeRecordDraft>
  conflicts: Record<string, ConflictRecord>
  main: MainRecord
}

/** Why a change or sync message from a peer was refused. */
export class BoardChangeRejectedError extends Error {
  override name = 'BoardChangeRejectedError'
}

/**
 * Changes were refused for who wrote them: an author the node does not admit
 * (`--allow`), or one that wrote what its role does not allow. `actors` names
 * the authors, `reason` says why.
 */
export class BoardAuthorRefusedError extends BoardChangeRejectedError {
  override name = 'BoardAuthorRefusedError'
  readonly actors: string[]
  readonly reason: string
  constructor (actors: string[], count: number, reason = 'author not on the allowlist (--allow)') {
    super(`refused ${count} change(s) by ${actors.length} author(s) (${actors.map(a => a.slice(0, 12)).join(', ')}): ${reason}; rolled back`)
    this.actors = actors
    this.reason = reason
  }
}

/**
 * Changes that claim an author who did not make them: under a signing actor
 * without that peer's valid signature (an attempt to take its next sequence
 * number, or to write in its name), or in an older peer's unsigned form for a
 * peer that signs. Counted against the peer that sent them, not the actor.
 */
export class BoardForgedChangeError extends BoardAuthorRefusedError {
  override name = 'BoardForgedChangeError'
}

/**
 * What one local board change came to (`Board.write`). A caller that must
 * know its transition landed (the end of a run, say) reads this rather than
 * the bare "changed or not" of `Board.change`.
 */
export type BoardWrite =
  /** Made, and handed on to be persisted and sent: `bytes` is the change. */
  | { readonly kind: 'written', readonly bytes: Uint8Array }
  /** The function changed nothing (a transition its record's state did not allow, say). */
  | { readonly kind: 'unchanged' }
  /**
   * Dropped before it existed, because peers would refuse it (`reason`, from
   * the role rules: see `Board.checkOwnChanges`); nothing was written.
   */
  | { readonly kind: 'withheld', readonly reason: string }

/** A change to the board, local or remote. */
export interface BoardUpdate {
  /** true when this node made the change. */
  local: boolean
  /** Change bytes of a local change (for broadcast); empty for remote ones. */
  changes: Uint8Array[]
  /** Task ids whose record changed. */
  tasks: TaskId[]
}

/** Wraps a value as an Automerge scalar string (never a text CRDT: concurrent writes resolve last-writer-wins). */
export function str (s: string): A.ImmutableString {
  return new A.ImmutableString(s)
}

/**
 * Converts Automerge values (ImmutableString, proxies, counters) into plain
 * JSON values. Objects and arrays that hold none are returned as they are,
 * not copied (a joiner's copy of the board, read with plain strings, holds
 * none): a caller that hands the result out or changes it must copy it. The
 * board parses it with zod, whose objects, arrays and records are new.
 */
export function plain (value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value
  // (instanceof first: the common case, cheaper than the marker A.isImmutableString looks for)
  if (value instanceof A.ImmutableString || A.isImmutableString(value)) return value.toString()
  if (Array.isArray(value)) {
    let out: unknown[] | null = null
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i]
      const p = plain(v)
      if (p !== v && out === null) out = value.slice(0, i)
      if (out !== null) out.push(p)
    }
    return out ?? value
  }
  if (value instanceof Uint8Array || value instanceof Date) return value
  // a joiner reads every field of every task through here: keys, not entries (an array per field)
  const keys = Object.keys(value)
  let out: Record<string, unknown> | null = null
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string
    const v = (value as Record<string, unknown>)[k]
    const p = plain(v)
    if (p !== v && out === null) {
      out = {}
      for (let j = 0; j < i; j++) out[keys[j] as string] = (value as Record<string, unknown>)[keys[j] as string]
    }
    if (out !== null) out[k] = p
  }
  return out ?? value
}
