import { describe, it, expect, afterAll } from 'vitest'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { simAgent } from '../src/agent/sim.ts'
import type { AgentResult, AgentProgress } from '../src/agent/types.ts'
import { waitFor } from '../src/util/wait.ts'
import { task } from './helpers/tui.ts'

const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(async d => await rm(d, { recursive: true, force: true }))) })

async function tempDir (): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'meshwork-sim-'))
  dirs.push(d)
  return d
}

describe('sim agent: until', () => {
  it('holds the run until the file exists, then writes its files and succeeds', async () => {
    const dir = await tempDir()
    const release = join(dir, 'release')
    const progress: AgentProgress[] = []
    let result: AgentResult | null = null
    const run = simAgent().run({
      task: task('held', { sim: { durationMs: 0, write: { 'out.txt': 'x\n' }, append: {}, fail: 0, until: release } }),
      attempt: 1,
      node: 'n',
      cwd: dir,
      signal: new AbortController().signal,
      onProgress: e => { progress.push(e) }
    }).then(r => { result = r })
    await waitFor(() => progress.some(p => p.text.includes(`waiting for ${release}`)), { timeoutMs: 10_000, message: 'the sim run never said it waits' })
    // still held: nothing written, no result, whatever the time it waits
    expect(result).toBeNull()
    await expect(readFile(join(dir, 'out.txt'), 'utf8')).rejects.toThrow()
    await writeFile(release, '')
    await run
    expect(result).toMatchObject({ outcome: 'success' })
    expect(await readFile(join(dir, 'out.txt'), 'utf8')).toBe('x\n')
  })

  it('an abort ends a held run as aborted', async () => {
    const dir = await tempDir()
    const ac = new AbortController()
    const progress: AgentProgress[] = []
    const run = simAgent().run({
      task: task('held', { sim: { durationMs: 0, write: {}, append: {}, fail: 0, until: join(dir, 'never') } }),
      attempt: 1,
      node: 'n',
      cwd: dir,
      signal: ac.signal,
      onProgress: e => { progress.push(e) }
    })
    await waitFor(() => progress.some(p => p.text.includes('waiting for')), { timeoutMs: 10_000, message: 'the sim run never said it waits' })
    ac.abort(new Error('stop'))
    expect(await run).toMatchObject({ outcome: 'aborted' })
  })
})
