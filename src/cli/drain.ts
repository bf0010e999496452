import { requestDrain, findNode, drained } from '../api/drain.ts'
import { CLIENT_OPTIONS } from './connection.ts'
import { defineCommand, opt } from './command.ts'
import { summaryOf } from './commands.ts'
import { clientFromOptions } from './mesh-client.ts'

export const drainCommand = defineCommand({
  name: 'drain',
  summary: summaryOf('drain'),
  usage: 'meshwork drain NODE [--wait] (--join TOKEN | --join-file FILE | --swarm-key FILE --bootstrap MULTIADDR)',
  details: [
    'NODE is a node\'s --name or peer id. The node lets running agents finish for up to its --grace period and hands',
    'the rest back to the mesh, waits (up to the same period) until the leader has merged the tasks it finished, so',
    'their branches are held by a peer, then leaves and exits 0. `status` shows it as draining meanwhile.'
  ].join('\n'),
  positionals: { min: 1, max: 1, names: 'a node (its --name or peer id)' },
  options: {
    wait: opt.boolean({ description: 'Wait until the node has left.' }),
    'wait-timeout': opt.duration({ arg: 'DURATION', default: 15 * 60_000, description: 'With --wait: give up (exit 1) after this long.' }),
    ...CLIENT_OPTIONS
  },
  run: async (opts, [target]) => {
    const waitMs = opts['wait-timeout']
    const client = await clientFromOptions(opts)
    try {
      const r = await requestDrain(client, target as string)
      const label = `${r.name !== '' ? r.name + ' ' : ''}(${r.peerId})`
      if (r.already) {
        process.stdout.write(`${label} has already left the mesh\n`)
        return 0
      }
      process.stdout.write(`draining ${label}: it stops claiming, finishes or hands back its runs and leaves\n`)
      if (!opts.wait) return 0
      const deadline = Date.now() + waitMs
      let lastSync = Date.now()
      while (Date.now() < deadline) {
        const rec = findNode(client.node.board.snapshot(), r.peerId).rec
        if (drained(rec)) {
          process.stdout.write(`${label} left the mesh\n`)
          return 0
        }
        await new Promise(resolve => setTimeout(resolve, 500))
        if (Date.now() - lastSync > 3000) {
          lastSync = Date.now()
          await client.node.requestSync(client.peer)
        }
      }
      process.stderr.write(`meshwork drain: ${label} has not left after ${Math.round(waitMs / 1000)} s; \`meshwork status\` shows what it still runs\n`)
      return 1
    } finally {
      await client.close()
    }
  }
})
