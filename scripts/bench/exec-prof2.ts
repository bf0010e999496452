import { join } from 'node:path'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { createMesh } from '../../test/helpers/mesh.ts'
import { generateRepo } from './exec-repo.ts'
import { git, gitText } from '../../src/git/git.ts'
import { serveGit, fetchFromPeer } from '../../src/git/transfer.ts'
import { Worktrees } from '../../src/git/worktree.ts'
import { writeFile } from 'node:fs/promises'
import { cpuSample, cpuSince } from './exec-report.ts'
const root = await mkdtemp(join(tmpdir(), 'mw-prof-'))
const A = join(root, 'a'), B = join(root, 'b')
await generateRepo(A, { files: 200, minBytes: 500, maxBytes: 4000, commits: 5, changedPerCommit: 20, seed: 1 })
await git(['clone', '-q', '--no-checkout', A, B], { cwd: root })
const main = await gitText(['rev-parse', 'main'], { cwd: A })
const mesh = await createMesh(2)
const [a, b] = mesh.nodes as any
await serveGit(a, A)
const wts = new Worktrees(A, join(root, 'data'))
const heads: string[] = []
for (let i = 0; i < 20; i++) {
  const wt = await wts.create('p' + i, main)
  await writeFile(join(wt.path, 'x.txt'), 'x' + i)
  heads.push(await wts.commit(wt, 'p' + i, 't'))
  await wts.remove(wt)
}
let self = 0, ch = 0, wall = 0
for (let i = 0; i < 20; i++) {
  const c0 = cpuSample(); const t0 = performance.now()
  await fetchFromPeer(b, a.peerId, B, `refs/heads/meshwork/p${i}`)
  wall += performance.now() - t0
  const c = cpuSince(c0); self += c.self; ch += c.children
}
console.log('per transfer: wall', (wall / 20).toFixed(0), 'node cpu', (self / 20).toFixed(0), 'git cpu', (ch / 20).toFixed(0))
let s2 = 0, w2 = 0
for (let i = 0; i < 20; i++) {
  const c0 = cpuSample(); const t0 = performance.now()
  await git(['--version'], { cwd: root })
  w2 += performance.now() - t0; s2 += cpuSince(c0).self
}
console.log('per git --version: wall', (w2 / 20).toFixed(1), 'node cpu', (s2 / 20).toFixed(1))
await mesh.stop()
await rm(root, { recursive: true, force: true })
