import { resolve } from 'node:path'
import { generateSwarmKey, writeSwarmKey } from '../node/swarm-key.ts'
import { str, type Command } from './command.ts'
import { summaryOf } from './commands.ts'

export const initCommand: Command = {
  name: 'init',
  summary: summaryOf('init'),
  usage: 'meshwork init [--out FILE]',
  details: 'Copy the key file to every machine of the mesh over a channel you trust (scp, a secret manager); a node without it cannot connect. The file is never overwritten.',
  options: {
    out: { type: 'string', arg: 'FILE', default: './swarm.key', description: 'Where to write the swarm key.' }
  },
  run: async (opts) => {
    const file = resolve(str(opts, 'out') ?? 'swarm.key')
    const key = generateSwarmKey()
    await writeSwarmKey(file, key)
    process.stdout.write(`mesh ${key.meshId}\nswarm key written to ${file} (mode 0600)\n\nStart the first node:\n  meshwork node --repo ./repo --swarm-key ${file}\n`)
    return 0
  }
}
