/**
 * `npm start` end to end, as a new user runs it, without a terminal (as in CI):
 * the demo exits 0, prints its summary and the repository it names holds every
 * task's merge in dependency order, the conflict settled by "theirs".
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { rm, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gitText } from '../src/git/git.ts'
import { parsePlan } from '../src/scheduler/plan.ts'
import { DEMO_PLAN } from '../src/cli/demo.ts'
import { tail } from './helpers/cli.ts'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..')
let workspace = ''

afterAll(async () => {
  if (workspace !== '') await rm(workspace, { recursive: true, force: true })
})

async function npmStart (timeoutMs: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const env = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('MESHWORK_')) delete env[k]
  const child = spawn('npm', ['start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch {} }, timeoutMs)
  const code = await new Promise<number | null>(resolveExit => { child.once('close', c => { resolveExit(c) }) })
  clearTimeout(timer)
  return { code, stdout, stderr }
}

describe('npm start (the demo) without a terminal', () => {
  it('exits 0, prints the summary, and the repository it names has every merge', async () => {
    const r = await npmStart(200_000)
    const why = `${tail('stdout', r.stdout, 6000)}\n${tail('stderr', r.stderr)}`
    const repoLine = /the merged repository: (\S+)/.exec(r.stdout)
    if (repoLine !== null) workspace = dirname(dirname(resolve(repoLine[1]!)))
    expect(r.code, why).toBe(0)
    const ids = parsePlan(DEMO_PLAN, new Set(), 'demo plan').map(t => t.id)
    expect(r.stdout, why).toMatch(new RegExp(`summary: ${ids.length} of ${ids.length} tasks merged in [\\d.]+ s`))
    // the deliberate conflict always happens (the node killed mid-run never holds one of its two tasks)
    expect(r.stdout, why).toMatch(/CONFLICT port-(8080|9000)-1: /)
    expect(r.stdout, why).toMatch(/decision for port-\S+: theirs \(no terminal to ask/)
    expect(r.stdout, why).toMatch(/killing \S+ \(kill -9\) while it runs \S+/)
    expect(r.stdout, why).toMatch(/\S+ was killed mid-run; \S+ ran again on \S+/)
    expect(repoLine, why).not.toBeNull()
    const repo = resolve(repoLine![1]!)
    expect((await stat(repo)).isDirectory()).toBe(true)

    // one merge commit per task on main's first-parent line, each with the task trailer
    const log = await gitText(['log', '--first-parent', '--merges', '--format=%(trailers:key=Meshwork-Task,valueonly)%x00', 'main'], { cwd: repo })
    const merged = log.split('\0').map(s => s.trim()).filter(s => s !== '').reverse()
    expect([...merged].sort()).toEqual([...ids].sort())
    // dependency order: a task's merge comes after its dependencies' merges
    const at = new Map(merged.map((id, i) => [id, i]))
    expect(at.get('users-table')!).toBeLessThan(at.get('login-form')!)
    expect(at.get('users-table')!).toBeLessThan(at.get('users-api')!)
    expect(at.get('users-api')!).toBeLessThan(at.get('api-docs')!)
    expect(at.get('login-form')!).toBeLessThan(at.get('api-docs')!)
    // the conflict was settled with the later task's side: the port is 9000 or 8080, never conflict markers
    const server = await gitText(['show', 'main:config/server.json'], { cwd: repo })
    expect(server).toMatch(/^\{ "port": (8080|9000) \}$/)
    // the files of every task are on main
    for (const f of ['db/001_users.sql', 'web/login.html', 'api/users.js', 'api/limits.js', 'scripts/backfill.sh', 'search/index.js', 'docs/api.md']) {
      expect(await gitText(['cat-file', '-t', `main:${f}`], { cwd: repo }), f).toBe('blob')
    }
  }, 220_000)
})
