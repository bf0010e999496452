#!/usr/bin/env node
// meshwork's executable: checks the Node version, then runs the TypeScript CLI
// directly (Node >= 22.18 strips types natively; the npm `node` devDependency
// pins such a Node for npm scripts and npx).
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`meshwork needs Node.js >= 22.18 (this is ${process.version}). From a clone, run it through npm (npx meshwork ..., npm start) so the pinned Node is used.\n`)
  process.exit(1)
}
const { main } = await import('../src/cli/main.ts')
const code = await main(process.argv.slice(2))
process.exitCode = code
// libp2p may leave handles behind after stop(): exit once output is flushed
process.stdout.write('', () => process.exit(code))
