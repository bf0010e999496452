/**
 * `npm test`: the bundle made again if a source changed (the CLI tests run
 * `meshwork` from it, as users and CI do), then the type-check and the core
 * suite side by side, then one verdict.
 *
 * The suite's tests mostly wait for nodes, timers and git, so its workers
 * (one more than the cores: vitest.config.ts) leave room on a 2-core machine,
 * and the type-check is one process of about 25-35 s there: running it beside
 * the suite instead of before it takes it off the wall time. Arguments go to `vitest run`
 * (`npm test -- test/board.test.ts`). The type-check's output is printed after
 * the suite's, so the two do not interleave; the exit code is the first
 * non-zero of the two.
 */
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = (name: string): string => join(root, 'node_modules', '.bin', name)

interface Done { code: number, output: string }

function run (cmd: string, args: string[], capture: boolean): Promise<Done> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'inherit' })
    let output = ''
    child.stdout?.setEncoding('utf8').on('data', (s: string) => { output += s })
    child.stderr?.setEncoding('utf8').on('data', (s: string) => { output += s })
    child.on('error', (err) => resolve({ code: 1, output: `${cmd}: ${err.message}\n` }))
    child.on('close', (code, signal) => resolve({ code: code ?? (signal != null ? 1 : 0), output }))
  })
}

// the CLI tests start `meshwork` as users do: from the bundle, made again first if a source changed since
// (scripts/bundle.ts; it never fails, and without a bundle the commands run from the sources)
await run(process.execPath, [join(root, 'scripts', 'bundle.ts')], false)
const started = Date.now()
const typecheck = run(bin('tsc'), ['--noEmit', '-p', '.'], true).then((d) => ({ ...d, ms: Date.now() - started }))
const suite = await run(bin('vitest'), ['run', ...process.argv.slice(2)], false)
const tc = await typecheck
if (tc.code === 0) {
  process.stdout.write(`type-check (tsc --noEmit, beside the suite): no errors, ${(tc.ms / 1000).toFixed(1)} s\n`)
} else {
  process.stdout.write(`type-check (tsc --noEmit, beside the suite) FAILED:\n${tc.output}`)
}
process.exitCode = suite.code !== 0 ? suite.code : tc.code
