import { requestForget } from '../api/forget.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'

export const forgetCommand = defineCommand({
  name: 'forget',
  summary: summaryOf('forget'),
  usage: 'meshwork forget NODE (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'NODE is a node\'s --name or peer id. Main advances only while the merge leader reaches a majority of the nodes',
    'registered on the board; a node that is gone for good counts until it has been unreachable for --forget-after',
    '(default 1 h). `forget` stops counting it at once, so a mesh that lost a VM for good is not held up (a two-node',
    'mesh that lost one needs it to merge again). A forgotten node that starts again counts again. Refused for a node',
    'that is alive: use `meshwork drain` to take a live node out.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a node (its --name or peer id)' },
  options: { ...CLIENT_OPTIONS },
  run: async (opts, [target]) => {
    const client = await clientFromOptions(opts)
    try {
      const r = await requestForget(client, target as string)
      const label = `${r.name !== '' ? r.name + ' ' : ''}(${r.peerId})`
      process.stdout.write(r.already ? `${label} does not count toward the majority already\n` : `forgot ${label}: it no longer counts toward the majority main needs, until it starts again\n`)
      return 0
    } finally {
      await client.close()
    }
  }
})
