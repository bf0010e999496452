/**
 * `npm run bundle`: bundles the CLI into .build/cli/ (gitignored), which
 * bin/meshwork.js runs in a clone while it matches the sources (bin/bundle.js
 * keeps their fingerprint); otherwise it runs the TypeScript sources, as
 * before. `npm ci` and `npm install` run it (the `prepare` script).
 *
 * Why: a command loads about a thousand modules from the sources and their
 * dependencies, 0.4 s before it does anything on this project's 2-core test
 * machines; from the bundle 0.14 s. Every `meshwork` command and every node's
 * start gains that (docs/benchmarks.md, "Session of 2026-12-05, ninth").
 *
 * Three entries: the CLI (`main.js`), the approval MCP server a node's
 * Claude runs start as a script beside it (`approval-mcp-server.js`, see
 * src/agent/approvals.ts), and the worker thread a joiner reads its copy of
 * a large board on (`copy-worker.js`, src/crdt/copy-reader.ts). Left out of the bundle and loaded from
 * node_modules as usual: Automerge (it reads its WebAssembly file beside its
 * own module) and ink's optional devtools.
 *
 * It never fails an install: when the bundle cannot be made it says why, and
 * the commands run from the sources.
 *
 * `--dist` (the `prepack` script): the same bundle into dist/cli/, which a
 * package made with `npm pack` runs (the VMs' nodes and commands), so an
 * installed meshwork starts from it too. No stamp: a package never runs its
 * sources. A failure there fails the pack.
 */
import { build } from 'rolldown'
import { rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BUILD_DIR, BUNDLE_SUBDIR, STAMP_NAME, bundleMadeFrom, sourcesFingerprint } from '../bin/bundle.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const say = (line: string): void => { process.stderr.write(`meshwork: ${line}\n`) }
const started = performance.now()

/** The bundle's three entries, into `dir` (ESM chunks beside them). */
async function bundleInto (dir: string): Promise<void> {
  await build({
    input: {
      main: join(root, 'src/cli/main.ts'),
      'approval-mcp-server': join(root, 'src/agent/approval-mcp-server.ts'),
      'copy-worker': join(root, 'src/crdt/copy-worker.ts')
    },
    platform: 'node',
    external: ['@automerge/automerge', 'react-devtools-core'],
    logLevel: 'warn',
    output: { dir, format: 'esm' }
  })
}

if (process.argv.includes('--dist')) {
  // `npm pack` (prepack): the package runs dist/cli/main.js (bin/meshwork.js), two levels under its root as in a
  // clone. Unlike a clone's bundle this one is needed: a failure fails the pack.
  await rm(join(root, 'dist'), { recursive: true, force: true })
  await bundleInto(join(root, 'dist', BUNDLE_SUBDIR))
  say(`bundled the CLI into dist/cli for the package in ${((performance.now() - started) / 1000).toFixed(1)} s`)
} else {
  // taken before the build: a source edited while it runs leaves the bundle stale, never wrongly fresh
  const fingerprint = sourcesFingerprint(root)
  const out = join(root, BUILD_DIR)
  const where = join(BUILD_DIR, BUNDLE_SUBDIR)
  // built aside and swapped in whole: a command running meanwhile (a test beside `npm pack`, which runs
  // this too) finds either bundle complete; chunk names are content hashes, so the same sources give the same files
  const aside = `${out}-${process.pid}`
  try {
    if (bundleMadeFrom(root, fingerprint) !== null) {
      say(`the bundle in ${where} is up to date`)
    } else {
      await rm(aside, { recursive: true, force: true })
      await bundleInto(join(aside, BUNDLE_SUBDIR))
      await writeFile(join(aside, STAMP_NAME), fingerprint + '\n')
      const old = `${out}-old-${process.pid}`
      await rename(out, old).catch(() => {})
      await rename(aside, out)
      await rm(old, { recursive: true, force: true })
      say(`bundled the CLI into ${where} in ${((performance.now() - started) / 1000).toFixed(1)} s (commands start from it while src/ is unchanged)`)
    }
  } catch (err) {
    await rm(aside, { recursive: true, force: true }).catch(() => {})
    say(`no bundle made (${err instanceof Error ? err.message : String(err)}); commands run from the TypeScript sources`)
  }
}
