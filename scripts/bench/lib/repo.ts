/**
 * What the benchmarks that start real `meshwork node` processes set up first:
 * the first node's one-commit repository. (They count a node's git processes
 * by setting `MESHWORK_BENCH_GIT_LOG`, which the node appends each git command
 * it starts to: src/git/git.ts.)
 */
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** Makes `repo` a new repository on `main` with one commit (a README). */
export async function seedRepo (repo: string): Promise<void> {
  await mkdir(repo)
  const g = (args: string[]): void => { execFileSync('git', ['-C', repo, ...args], { stdio: 'ignore' }) }
  g(['init', '-q', '-b', 'main'])
  g(['config', 'user.email', 'bench@example.invalid'])
  g(['config', 'user.name', 'bench'])
  await writeFile(join(repo, 'README.md'), '# bench\n')
  g(['add', '.'])
  g(['commit', '-q', '-m', 'start'])
}
