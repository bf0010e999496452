/**
 * What the benchmarks that start real `meshwork node` processes set up first:
 * a `git` shim that logs every git command (to count git processes per node)
 * and the first node's one-commit repository.
 */
import { execFileSync } from 'node:child_process'
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * Writes `ROOT/bin/git`, which appends its arguments to the file named by
 * `$MESHWORK_BENCH_GIT_LOG` and runs the real git: put `ROOT/bin` first on a
 * node's PATH. Returns that directory. Shell built-ins only, then `exec`: the
 * shim adds one `sh` start to each git call and no process of its own (a
 * pipe through `cut` added two, and their CPU counted as git's).
 */
export async function writeGitShim (root: string): Promise<string> {
  const realGit = execFileSync('sh', ['-c', 'command -v git']).toString().trim()
  const bin = join(root, 'bin')
  await mkdir(bin)
  await writeFile(join(bin, 'git'), `#!/bin/sh\nprintf '%.200s\\n' "$*" >> "$MESHWORK_BENCH_GIT_LOG"\nexec ${realGit} "$@"\n`)
  await chmod(join(bin, 'git'), 0o755)
  return bin
}

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
