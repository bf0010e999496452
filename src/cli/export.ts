import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { parseTaskId, simSchema, TASK_STATES, type BoardSnapshot } from '../crdt/schema.ts'
import type { NewTask } from '../crdt/ops.ts'
import { submitTasks } from '../api/tasks.ts'
import { UsageError } from '../util/errors.ts'

/** Identifies the shape of `meshwork export` output, for scripts and a future import. */
export const EXPORT_FORMAT = 'meshwork-export/1'

/** The board as one plain JSON object: every task (prompts included), conflict, node record and main. */
export function exportBoard (snap: BoardSnapshot, now = Date.now()): Record<string, unknown> {
  return {
    format: EXPORT_FORMAT,
    exportedAt: now,
    meshId: snap.meshId,
    main: snap.main,
    tasks: [...snap.tasks.values()].sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id)),
    conflicts: [...snap.conflicts.values()],
    nodes: [...snap.nodes].map(([peerId, rec]) => ({ ...rec, peerId })),
    ...(snap.invalid.length > 0 ? { invalid: snap.invalid } : {})
  }
}

export const exportCommand = defineCommand({
  name: 'export',
  summary: summaryOf('export'),
  usage: 'meshwork export (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR) > board.json',
  details: 'Joins as a light peer, syncs the board from the node it reaches and prints it on stdout.',
  options: { ...CLIENT_OPTIONS },
  run: async (opts) => {
    const client = await clientFromOptions(opts)
    try {
      process.stdout.write(JSON.stringify(exportBoard(client.node.board.snapshot()), null, 2) + '\n')
      return 0
    } finally {
      await client.close()
    }
  }
})


/** A task as `export` wrote it (the fields `import` reads). */
const exportedTaskSchema = z.object({
  id: z.string(),
  title: z.string(),
  prompt: z.string(),
  deps: z.array(z.string()),
  files: z.array(z.string()),
  priority: z.number(),
  timeoutMs: z.number().nullable(),
  maxAttempts: z.number().int().positive(),
  sim: simSchema.nullable(),
  state: z.enum(TASK_STATES)
})

/**
 * The tasks of an export to start again in a new mesh: every task that was not
 * merged (its work is in the old main, which the new mesh starts from) or
 * cancelled, as a fresh task; dependencies on merged tasks are dropped.
 */
export function tasksToImport (text: string, file: string): { tasks: NewTask[], skipped: number } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`${file} is not JSON (${(err as Error).message}). Give a file written by \`meshwork export\`.`)
  }
  const doc = z.object({ format: z.literal(EXPORT_FORMAT), tasks: z.array(exportedTaskSchema) }).safeParse(json)
  if (!doc.success) throw new UsageError(`${file} is not a meshwork export (${EXPORT_FORMAT}): ${doc.error.issues[0]?.path.join('.') ?? ''} ${doc.error.issues[0]?.message ?? ''}. Give a file written by \`meshwork export\`.`)
  const all = new Map(doc.data.tasks.map(t => [t.id, t]))
  const keep = doc.data.tasks.filter(t => t.state !== 'merged' && t.state !== 'cancelled')
  const tasks: NewTask[] = []
  for (const t of keep) {
    const deps = t.deps.filter(d => all.get(d)?.state !== 'merged')
    const blocked = deps.filter(d => !keep.some(k => k.id === d))
    if (blocked.length > 0) throw new UsageError(`task "${t.id}" depends on ${blocked.map(d => `"${d}" (${all.get(d)?.state ?? 'not in the export'})`).join(', ')}, which would not be imported. Edit the export: drop the dependency or the task.`)
    tasks.push({ id: parseTaskId(t.id), title: t.title, prompt: t.prompt, deps: deps.map(parseTaskId), files: t.files, priority: t.priority, timeoutMs: t.timeoutMs, maxAttempts: t.maxAttempts, sim: t.sim })
  }
  return { tasks, skipped: doc.data.tasks.length - keep.length }
}

export const importCommand = defineCommand({
  name: 'import',
  summary: summaryOf('import'),
  usage: 'meshwork import FILE (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'For restoring a backup into a new mesh whose repository starts from the old main: merged tasks are already in',
    'it and are not imported (dependencies on them are dropped); cancelled tasks are left out; every other task is',
    'added fresh (no attempts, no claims). A task id already on the board is an error.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'an export file' },
  options: { ...CLIENT_OPTIONS },
  run: async (opts, [file]) => {
    let text: string
    try {
      text = await readFile(file as string, 'utf8')
    } catch (err) {
      throw new UsageError(`cannot read ${file as string}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}. Give a file written by \`meshwork export\`.`)
    }
    const { tasks, skipped } = tasksToImport(text, file as string)
    const client = await clientFromOptions(opts)
    try {
      const taken = tasks.filter(t => client.node.board.task(t.id) !== undefined).map(t => t.id)
      if (taken.length > 0) throw new UsageError(`the board already has task${taken.length > 1 ? 's' : ''} ${taken.join(', ')}; import into a new mesh, or remove ${taken.length > 1 ? 'them' : 'it'} from the export.`)
      const ids = tasks.length > 0 ? await submitTasks(client, tasks) : []
      process.stdout.write(`imported ${ids.length} task${ids.length === 1 ? '' : 's'}${ids.length > 0 ? ': ' + ids.join(' ') : ''} (${skipped} merged or cancelled left out)\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})
