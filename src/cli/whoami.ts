import { defaultClientIdentityFile, loadClientIdentity, peerIdOf } from '../node/identity.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'

export const whoamiCommand = defineCommand({
  name: 'whoami',
  summary: summaryOf('whoami'),
  usage: 'meshwork whoami [--identity FILE] [--json]',
  details: 'Creates the key on first use (mode 0600). Put the peer id in a node\'s --allow FILE to let this client in; decisions made with `meshwork resolve` record it as `by`.',
  options: {
    identity: CLIENT_OPTIONS.identity,
    json: opt.boolean({ description: 'Print {"peerId", "identity"} as JSON.' })
  },
  run: async (opts) => {
    const file = opts.identity ?? defaultClientIdentityFile()
    const peerId = peerIdOf(await loadClientIdentity(file))
    process.stdout.write(opts.json ? JSON.stringify({ peerId, identity: file }) + '\n' : `${peerId}\n`)
    return 0
  }
})
