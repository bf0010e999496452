/**
 * The board document as Automerge stores it, and the typed form writers see:
 * each record type is derived from its zod schema (src/crdt/schema.ts), so a
 * board change cannot set a field the schema lacks. Board (src/crdt/board.ts)
 * owns the document; src/crdt/lifecycle.ts makes every state write.
 */
import * as A from '@automerge/automerge'
import type { Conflict, MainRef, NodeRecord, Task } from './schema.ts'

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

/** A task as it is written inside a board change. */
export type TaskRecord = Stored<Task>
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

/** Wraps a value as an Automerge scalar string (never a text CRDT: concurrent writes resolve last-writer-wins). */
export function str (s: string): A.ImmutableString {
  return new A.ImmutableString(s)
}

/** Converts Automerge values (ImmutableString, proxies, counters) into plain JSON values. */
export function plain (value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value
  if (A.isImmutableString(value)) return value.toString()
  if (Array.isArray(value)) return value.map(plain)
  if (value instanceof Uint8Array || value instanceof Date) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = plain(v)
  return out
}
