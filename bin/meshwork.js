#!/usr/bin/env node
// meshwork's executable: checks the Node version, then runs the CLI. From a
// clone it runs the bundle `npm ci` made (.build/cli, see bin/bundle.js)
// while that matches the sources, else the TypeScript sources directly
// (Node >= 22.18 strips types natively; the npm `node` devDependency pins
// such a Node for npm scripts and npx). Installed from a package (where Node
// will not strip types inside node_modules) it runs the JavaScript that
// `npm pack` built into dist/.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`meshwork needs Node.js >= 22.18 (this is ${process.version}). From a clone, run it through npm (npx meshwork ..., npm start) so the pinned Node is used.\n`)
  process.exit(1)
}
// V8's compile cache (in the OS temp dir) saves a third of the start-up of a
// command that loads libp2p; it is only a cache, so a failure to use it is ignored
const { enableCompileCache } = await import('node:module')
try { enableCompileCache?.() } catch {}
const { existsSync } = await import('node:fs')
const fromSources = existsSync(new URL('../src/cli/main.ts', import.meta.url)) && !import.meta.url.includes('/node_modules/')
let entry = '../dist/cli/main.js'
if (fromSources) {
  const { freshBundle } = await import('./bundle.js')
  const { fileURLToPath, pathToFileURL } = await import('node:url')
  const bundle = freshBundle(fileURLToPath(new URL('..', import.meta.url)))
  entry = bundle !== null ? pathToFileURL(bundle).href : '../src/cli/main.ts'
}
const { main } = await import(entry)
const code = await main(process.argv.slice(2))
process.exitCode = code
// libp2p may leave handles behind after stop(): exit once output is flushed
process.stdout.write('', () => process.exit(code))
