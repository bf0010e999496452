/**
 * A serving meshwork node in its own process for the execution benchmark
 * (`scripts/bench-exec.ts`): a real MeshNode on 127.0.0.1 that bootstraps to
 * the benchmark's fetching node and serves one repository with `serveGit`.
 * Started with `child_process.fork(thisFile, [JSON.stringify(config)])`; talks
 * over IPC; exits when the parent disconnects.
 *
 *   parent → worker  { cmd: 'cpu' }            → { ev: 'cpu', self, children } (ms)
 *                    { cmd: 'stop' }           → { ev: 'stopped' }, then exits
 *   worker → parent  { ev: 'ready', peerId }   once serving
 *                    { ev: 'error', message }  on a failure, then exits
 */
import { MeshNode } from '../../src/node/mesh-node.ts'
import { serveGit } from '../../src/git/transfer.ts'
import { cpuSample } from './exec-report.ts'
import { benchNodeInit, sendToParent, workerConfig } from './lib/worker.ts'

export interface ExecWorkerConfig {
  swarmKeyHex: string
  dataDir: string
  bootstrap: string[]
  repo: string
}

export type ExecWorkerEvent =
  | { ev: 'ready', peerId: string }
  | { ev: 'cpu', self: number, children: number }
  | { ev: 'stopped' }
  | { ev: 'error', message: string }

const send = (e: ExecWorkerEvent): void => { sendToParent(e) }
const config = workerConfig<ExecWorkerConfig>('exec-worker')
const node = new MeshNode(benchNodeInit(config, 'exec-server'))

async function main (): Promise<void> {
  await node.start()
  const server = await serveGit(node, config.repo)
  process.on('message', (msg: { cmd: string }) => {
    if (msg.cmd === 'cpu') {
      const c = cpuSample()
      send({ ev: 'cpu', self: c.self, children: c.children })
    } else if (msg.cmd === 'stop') {
      void (async () => {
        await server.close()
        await node.stop()
        send({ ev: 'stopped' })
        process.disconnect()
        process.exit(0)
      })()
    }
  })
  process.on('disconnect', () => { process.exit(0) })
  send({ ev: 'ready', peerId: node.peerId })
}

main().catch((err: unknown) => {
  send({ ev: 'error', message: err instanceof Error ? err.message : String(err) })
  process.exit(1)
})
