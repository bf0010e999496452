import { existsSync } from 'node:fs'
import { readFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Board } from '../crdt/board.ts'
import { BOARD_FILE, BOARD_LOG, readSavedBoard, writeSavedBoard } from '../crdt/store.ts'
import { acquireLock } from '../node/lock.ts'
import { readSwarmKey, type SwarmKey } from '../node/swarm-key.ts'
import { decodeJoinToken } from '../node/join-token.ts'
import { UsageError } from '../util/errors.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { defaultDataDir } from './data-dir.ts'

/** What `rotateBoard` did to a data dir. */
export interface RotateResult {
  from: string
  to: string
  /** Where the old board files went. */
  kept: string[]
  /** Counts of what moved onto the new mesh (null with fromPeers: the board comes from the peers). */
  carried: { tasks: number, nodes: number, conflicts: number, main: string | null } | null
}

/**
 * Moves the board of a stopped node's data dir to the mesh of `toMeshId`: the
 * old board files are renamed to `<file>.<old mesh id>` and, unless
 * `fromPeers`, a new board is written whose content (tasks with their states
 * and attempts, nodes, conflicts, main) is the old one's on the new mesh's
 * genesis (`Board.carryTo`). With `fromPeers` the node starts empty and takes
 * that board from the nodes already on the new mesh.
 */
export async function rotateBoard (dataDir: string, toMeshId: string, fromPeers: boolean): Promise<RotateResult> {
  const bytes = await readSavedBoard(dataDir)
  if (bytes === null) throw new UsageError(`${dataDir} holds no board (${BOARD_FILE}): is it a node's data dir (its --data)? A node that never started needs no rotation: start it with the new key.`)
  const from = Board.meshIdOf(bytes)
  if (from === null) throw new UsageError(`the board in ${dataDir} cannot be read as a meshwork board; nothing was changed.`)
  if (from === toMeshId) throw new UsageError(`the board in ${dataDir} is already on mesh ${toMeshId} (this key's); nothing to do.`)
  const old = Board.load(from, '00'.repeat(16), bytes)
  const carried = fromPeers ? null : old.carryTo(toMeshId)
  const kept: string[] = []
  for (const f of [BOARD_FILE, BOARD_LOG]) {
    const src = join(dataDir, f)
    if (!existsSync(src)) continue
    let dst = `${src}.${from}`
    if (existsSync(dst)) dst = `${dst}.${Date.now()}`
    await rename(src, dst)
    kept.push(dst)
  }
  if (carried !== null) await writeSavedBoard(dataDir, carried)
  const snap = old.snapshot()
  return {
    from,
    to: toMeshId,
    kept,
    carried: carried === null ? null : { tasks: snap.tasks.size, nodes: snap.nodes.size, conflicts: snap.conflicts.size, main: snap.main.head }
  }
}

export const rotateKeyCommand = defineCommand({
  name: 'rotate-key',
  summary: summaryOf('rotate-key'),
  usage: 'meshwork rotate-key (--swarm-key NEW_KEY_FILE | --join-file NEW_TOKEN_FILE) [--data DIR | --repo DIR] [--from-peers] [--json]',
  details: [
    'Moves a stopped node to a new swarm key (from `meshwork init --out NEW_KEY_FILE`) without losing the board: its tasks,',
    'their states and attempts, nodes, conflicts and main are written onto the new mesh, whose id and genesis come from the new',
    'key. Run it on one node (the one whose board is most complete, e.g. the leader), and with --from-peers on every other node:',
    'those set their board aside and take it from the first when they start. Then start every node with the new key.',
    'The old board is kept beside the new one as board.am.<old mesh id>. Nodes and clients with the old key cannot connect',
    'any more. Step by step: README.md, "Rotating the swarm key".'
  ].join('\n'),
  options: {
    'swarm-key': opt.string({ arg: 'FILE', description: 'The NEW swarm key file (from `meshwork init --out FILE`).' }),
    'join-file': opt.string({ arg: 'FILE', description: 'Instead of --swarm-key: a file holding a join token of a node already on the new key (`meshwork token` there).' }),
    data: opt.string({ arg: 'DIR', description: 'The node\'s data dir (its --data).' }),
    repo: opt.string({ arg: 'DIR', default: '.', description: 'Without --data: the node\'s repository, whose default data dir is used.' }),
    'from-peers': opt.boolean({ description: 'Set this node\'s board aside instead of moving it: it takes the board from the nodes already on the new key when it starts.' }),
    json: opt.boolean({ description: 'Print {"from", "to", "kept", "carried"} as JSON (carried: counts of tasks, nodes, conflicts and main\'s head; null with --from-peers).' })
  },
  run: async (opts) => {
    const key = await newKey(opts['swarm-key'], opts['join-file'])
    const dataDir = resolve(opts.data ?? await defaultDataDir(opts.repo))
    if (!existsSync(dataDir)) throw new UsageError(`no data dir ${dataDir}: name the node's data dir with --data DIR (or its repository with --repo DIR).`)
    // the node must be stopped: a running one holds the lock and would write the old board back
    const lock = await acquireLock(dataDir).catch((err: Error) => {
      if (err.name !== 'DataDirLockedError') throw err
      throw new UsageError(`${err.message.replace(/\. Stop that node first.*$/, '')}: stop that node first; rotate-key moves the board of a stopped node.`)
    })
    try {
      const r = await rotateBoard(dataDir, key.meshId, opts['from-peers'])
      if (opts.json) {
        process.stdout.write(JSON.stringify(r) + '\n')
        return 0
      }
      const out = [r.carried !== null
        ? `moved the board of mesh ${r.from} to mesh ${r.to}: ${r.carried.tasks} tasks, ${r.carried.nodes} nodes, ${r.carried.conflicts} conflicts, main ${r.carried.main ?? '(none)'}`
        : `set the board of mesh ${r.from} aside: this node takes the board of mesh ${r.to} from its peers when it starts`]
      out.push(`the old board is kept as ${r.kept.join(' and ')}`)
      out.push(`start the node with the new key: meshwork node --data ${dataDir} ${opts['swarm-key'] !== undefined ? `--swarm-key ${resolve(opts['swarm-key'])}` : `--join-file ${resolve(opts['join-file'] as string)}`} ...`)
      process.stdout.write(out.join('\n') + '\n')
      return 0
    } finally {
      await lock.release()
    }
  }
})

/** The new key: from its key file, or from a join token of a node already on it. */
async function newKey (keyFile: string | undefined, joinFile: string | undefined): Promise<SwarmKey> {
  if (keyFile !== undefined && joinFile !== undefined) throw new UsageError('give the new key as --swarm-key FILE or --join-file FILE, not both.')
  if (keyFile !== undefined) return await readSwarmKey(keyFile)
  if (joinFile === undefined) throw new UsageError('rotate-key needs the new key: --swarm-key FILE (make one with `meshwork init --out FILE`), or --join-file FILE (a token of a node already on the new key).')
  let text: string
  try {
    text = await readFile(joinFile, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read --join-file ${joinFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`)
  }
  return decodeJoinToken(text.trim()).key
}
