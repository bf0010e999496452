import { readFile } from 'node:fs/promises'
import { join as joinPath, resolve } from 'node:path'
import { UsageError } from '../util/errors.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { defaultDataDir } from './data-dir.ts'

/**
 * The join token a node on this machine wrote to `DATA/node.json`. A missing
 * or unreadable file is a usage error saying which data dir was read and how
 * to name another.
 */
export async function readLocalJoinToken (dataDir: string): Promise<string> {
  const file = joinPath(dataDir, 'node.json')
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    throw new UsageError(`cannot read ${file} (${code}): no node has started with the data dir ${dataDir}. Start \`meshwork node\` first, or name its data dir with --data DIR (or its repository with --repo DIR).`)
  }
  let token: unknown
  try {
    token = (JSON.parse(text) as { join?: unknown }).join
  } catch {
    token = undefined
  }
  if (typeof token !== 'string' || token === '') throw new UsageError(`${file} holds no join token; start the node again to write it.`)
  return token
}

export const tokenCommand = defineCommand({
  name: 'token',
  summary: summaryOf('token'),
  usage: 'meshwork token [--data DIR | --repo DIR] [--json]',
  details: 'Reads DATA/node.json of a node on this machine (the last start of that node wrote it). The token carries the mesh\'s swarm key: hand it over a channel you trust, and keep it out of logs and shell history (--join-file FILE reads it from a file).',
  options: {
    data: opt.string({ arg: 'DIR', description: 'The node\'s data dir (its --data).' }),
    repo: opt.string({ arg: 'DIR', default: '.', description: 'Without --data: the node\'s repository, whose default data dir is read.' }),
    json: opt.boolean({ description: 'Print {"join", "data"} as JSON.' })
  },
  run: async (opts) => {
    const dataDir = resolve(opts.data ?? await defaultDataDir(opts.repo))
    const join = await readLocalJoinToken(dataDir)
    process.stdout.write((opts.json ? JSON.stringify({ join, data: dataDir }) : join) + '\n')
    return 0
  }
})
