import { resolve } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { generateSwarmKey, writeSwarmKey } from '../node/swarm-key.ts'
import { defaultClientIdentityFile, loadClientIdentity, peerIdOf } from '../node/identity.ts'
import { parseAllowlist } from '../node/allowlist.ts'
import { UsageError } from '../util/errors.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { CLIENT_OPTIONS } from './connection.ts'

/** Where `meshwork init --allowlist` writes when no FILE is given. */
export const DEFAULT_ALLOWLIST_FILE = './allowlist.txt'

/** The text of a starter allowlist: how to fill it in, then `peers` (the first one, this machine's client, labelled). */
export function starterAllowlist (client: string, extra: readonly string[]): string {
  return [
    '# meshwork allowlist: one peer id a line; # starts a comment.',
    '# Give the same file to every node: meshwork node --allow FILE (kill -HUP <pid> reloads it).',
    '# A node with it admits connections and board changes only from the peers named here.',
    '# Add each node: meshwork node --print-peer-id --data DIR (on that node\'s machine).',
    '# Add each client (laptop, CI job): meshwork whoami (on that machine, as that user).',
    `${client}  # this machine's client (meshwork whoami)`,
    ...extra,
    ''
  ].join('\n')
}

export const initCommand = defineCommand({
  name: 'init',
  summary: summaryOf('init'),
  usage: 'meshwork init [--out FILE] | meshwork init --allowlist [FILE] [--add PEERID ...]',
  details: [
    'Copy the key file to every machine of the mesh over a channel you trust (scp, a secret manager); a node without it cannot connect. The file is never overwritten.',
    `With --allowlist, writes a starter allowlist instead (FILE, default ${DEFAULT_ALLOWLIST_FILE}; never overwritten): this machine's client id and how to add the others, for \`meshwork node --allow FILE\`.`
  ].join('\n'),
  positionals: { min: 0, max: 1, names: 'the allowlist file (with --allowlist)' },
  options: {
    out: opt.string({ arg: 'FILE', default: './swarm.key', description: 'Where to write the swarm key.' }),
    allowlist: opt.boolean({ description: `Write a starter allowlist to FILE (default ${DEFAULT_ALLOWLIST_FILE}) instead of a swarm key.` }),
    add: opt.list({ arg: 'PEERID', description: 'With --allowlist: another peer id to list (a node\'s --print-peer-id, a client\'s whoami).' }),
    identity: CLIENT_OPTIONS.identity
  },
  run: async (opts, [file]) => {
    if (!opts.allowlist) {
      if (file !== undefined) throw new UsageError(`unexpected argument "${file}": a file name goes with --allowlist (the swarm key's path is --out FILE).`)
      const out = resolve(opts.out)
      const key = generateSwarmKey()
      await writeSwarmKey(out, key)
      process.stdout.write(`mesh ${key.meshId}\nswarm key written to ${out} (mode 0600)\n\nStart the first node in your project's git clone:\n  meshwork node --repo PATH/TO/PROJECT --swarm-key ${out}\nor in a new, empty history:\n  meshwork node --repo ./repo --init-repo --swarm-key ${out}\n`)
      return 0
    }
    const out = resolve(file ?? DEFAULT_ALLOWLIST_FILE)
    const extra = parseAllowlist(opts.add.join('\n'), '--add')
    const me = peerIdOf(await loadClientIdentity(opts.identity ?? defaultClientIdentityFile()))
    try {
      await writeFile(out, starterAllowlist(me, extra.filter(p => p !== me)), { flag: 'wx', mode: 0o644 })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EEXIST') throw new UsageError(`${out} already exists; meshwork init never overwrites it. Edit it (one peer id a line), or name another file.`)
      throw new UsageError(`cannot write the allowlist to ${out} (${code ?? (err as Error).message}); choose another path.`)
    }
    process.stdout.write(`allowlist written to ${out} with this client (${me})\nAdd every node's id (meshwork node --print-peer-id --data DIR) and every client's (meshwork whoami), then start each node with --allow ${out}.\n`)
    return 0
  }
})
