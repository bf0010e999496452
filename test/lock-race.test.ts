/**
 * The data-dir lock under a race: several processes start at once on a data
 * dir whose lock a dead process left; exactly one of them takes it (real
 * processes, since a lock names its holder's pid).
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LOCK_FILE } from '../src/node/lock.ts'

const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(async d => { await rm(d, { recursive: true, force: true }) })) })

const LOCK_MODULE = fileURLToPath(new URL('../src/node/lock.ts', import.meta.url))

/**
 * A process that loads the lock module, says `ready`, waits for `go`, tries the lock, prints `took` or
 * `refused`, and holds what it took until stdin closes.
 */
function contender (dir: string, go: string): { ready: Promise<void>, result: Promise<string>, stop: () => void } {
  const script = `
    import { existsSync } from 'node:fs'
    const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)})
    process.stdout.write('ready\\n')
    while (!existsSync(${JSON.stringify(go)})) await new Promise(r => setTimeout(r, 5))
    try { await acquireLock(${JSON.stringify(dir)}); process.stdout.write('took\\n') } catch (e) { process.stdout.write('refused ' + e.message + '\\n') }
    process.stdin.resume(); process.stdin.on('end', () => process.exit(0))
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  let onReady = (): void => {}
  const ready = new Promise<void>(resolve => { onReady = resolve })
  const result = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString()
      // first line `ready`, second the answer
      const lines = out.split('\n')
      if (lines.length > 1) onReady()
      if (lines.length > 2) resolve(lines[1]!.trim())
    })
    child.once('exit', code => { reject(new Error(`contender exited (${code}) before answering: ${out}`)) })
  })
  // a contender that dies before it is ready fails the wait for it with its own error
  return { ready: Promise.race([ready, result.then(() => {})]), result, stop: () => { child.stdin.end() } }
}

describe('data-dir lock', () => {
  it('of six processes racing for a stale lock, exactly one takes it', { timeout: 60_000 }, async () => {
    for (let round = 0; round < 3; round++) {
      const dir = await mkdtemp(join(tmpdir(), 'meshwork-lock-'))
      dirs.push(dir)
      // a pid that is not running (pid_max is far below this)
      await writeFile(join(dir, LOCK_FILE), '99999999')
      const go = join(dir, 'go')
      const cs = Array.from({ length: 6 }, () => contender(dir, go))
      // all six loaded and polling for go: they try the lock within a few ms of one another
      await Promise.all(cs.map(async c => await c.ready))
      await writeFile(go, '')
      const results = await Promise.all(cs.map(async c => await c.result))
      const took = results.filter(r => r === 'took')
      expect(took, `round ${round}: ${results.join(' | ')}`).toHaveLength(1)
      for (const r of results.filter(x => x !== 'took')) expect(r).toMatch(/refused .*(in use by process|at the same moment)/)
      expect(Number(await readFile(join(dir, LOCK_FILE), 'utf8'))).toBeGreaterThan(0)
      for (const c of cs) c.stop()
    }
  })
})
