/**
 * `meshwork node --allow FILE` with real processes: a client whose peer id
 * (`--identity`, `meshwork whoami`) is on the list works; one that is not
 * fails fast with a message naming its id and the fix; SIGHUP reloads the
 * list, and the second client is let in without a restart.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, startNode, describeResult, killAllChildren, makeTempDir, removeDir, type CliNode } from './helpers/cli.ts'
import { waitFor } from '../src/util/wait.ts'

let dir = ''
let node: CliNode | null = null

beforeAll(async () => { dir = await makeTempDir('meshwork-cli-allow-') })
afterAll(async () => {
  await node?.stop().catch(() => {})
  await killAllChildren()
  await removeDir(dir)
})

async function whoami (key: string): Promise<string> {
  const r = await runCli(['whoami', '--identity', key], { timeoutMs: 30_000 })
  expect(r.code, describeResult(['whoami'], r)).toBe(0)
  return r.stdout.trim()
}

describe('meshwork node --allow', { timeout: 180_000 }, () => {
  it('admits the clients it lists, refuses the others at once, and reloads the list on SIGHUP', async () => {
    const keyFile = join(dir, 'swarm.key')
    expect((await runCli(['init', '--out', keyFile], { timeoutMs: 30_000 })).code).toBe(0)
    const listedKey = join(dir, 'listed.key')
    const strangerKey = join(dir, 'stranger.key')
    const listed = await whoami(listedKey)
    const stranger = await whoami(strangerKey)
    const allow = join(dir, 'allow.txt')
    await writeFile(allow, `# clients\n${listed}  # the listed one\n`)
    node = await startNode({ dir, name: 'a', keyFile, extraArgs: ['--agent', 'sim', '--allow', allow] })
    const conn = ['--join', node.info.join]

    const ok = await runCli(['status', '--json', '--identity', listedKey, ...conn], { timeoutMs: 60_000 })
    expect(ok.code, describeResult(['status', '--identity', 'listed'], ok)).toBe(0)
    expect(JSON.parse(ok.stdout).nodes.map((n: { peerId: string }) => n.peerId)).toContain(node.info.peerId)

    const no = await runCli(['status', '--identity', strangerKey, ...conn], { timeoutMs: 60_000 })
    expect(no.code, describeResult(['status', '--identity', 'stranger'], no)).toBe(1)
    expect(no.stderr).toContain('does not admit this client')
    expect(no.stderr).toContain(stranger)
    expect(no.stderr).toContain('--allow')
    // the connection is cut after the handshake: fails as fast as a wrong key does (SPEC: within 3 s), not at --timeout
    expect(no.ms, describeResult(['status', '--identity', 'stranger'], no)).toBeLessThan(8000)
    await waitFor(() => node!.stderr().includes('peer:not-allowed'), { timeoutMs: 10_000, message: () => `the node did not log the refusal\n${node!.describe()}` })

    // let the stranger in: edit the file, SIGHUP, and it works without a restart
    await appendFile(allow, `${stranger}\n`)
    node.proc.kill('SIGHUP')
    await waitFor(() => node!.stderr().includes('allow:reloaded'), { timeoutMs: 10_000, message: () => `the node did not reload the list\n${node!.describe()}` })
    const now = await runCli(['status', '--identity', strangerKey, ...conn], { timeoutMs: 60_000 })
    expect(now.code, describeResult(['status', '--identity', 'stranger'], now)).toBe(0)
    expect(node.running()).toBe(true)
  })
})
