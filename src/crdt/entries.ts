import type { ZodType } from 'zod'
import { plain } from './board-types.ts'
import { conflictSchema, nodeRecordSchema, taskSchema } from './schema.ts'

/** The root maps of a board whose entries are records: tasks, nodes (registrations) and conflicts. */
export const RECORD_SECTIONS = ['tasks', 'nodes', 'conflicts'] as const
export type RecordSection = typeof RECORD_SECTIONS[number]

const SCHEMAS: Readonly<Record<RecordSection, ZodType<unknown>>> = {
  tasks: taskSchema as unknown as ZodType<unknown>,
  nodes: nodeRecordSchema as unknown as ZodType<unknown>,
  conflicts: conflictSchema as unknown as ZodType<unknown>
}

/**
 * The record entry `key` of `section` holds, read from `raw` (its value in the
 * document's plain copy) through its zod schema: a new object that shares
 * nothing with `raw`; or why it is not one (a task's id must be its key).
 */
export function parseEntry (section: RecordSection, key: string, raw: unknown): { value: unknown } | { why: string } {
  const parsed = SCHEMAS[section].safeParse(plain(raw))
  if (!parsed.success) return { why: parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ').slice(0, 300) }
  if (section === 'tasks' && (parsed.data as { id?: unknown }).id !== key) return { why: 'id does not match its key' }
  return { value: parsed.data }
}
