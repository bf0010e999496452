/**
 * Generated git repositories for the execution benchmark (`npm run bench:exec`),
 * written with `git fast-import` (one pack, no loose objects) so that a
 * repository of tens of thousands of files and hundreds of MB of history takes
 * seconds, not minutes.
 *
 * Content is random bytes (a deterministic PRNG seeded per repository), so it is
 * incompressible and no blob deltas against another: the pack is as large as the
 * content, and a transfer of N MB of fresh objects really moves N MB.
 */
import { spawn } from 'node:child_process'
import { mkdir, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { git, gitText } from '../../src/git/git.ts'
import { commitEnv } from '../../src/git/worktree.ts'

export interface RepoSpec {
  /** Files in the tip tree of `main`. */
  files: number
  /** Size of each file of the first commit: uniform in [min, max] bytes. */
  minBytes: number
  maxBytes: number
  /** Commits after the first one; each rewrites `changedPerCommit` random files with fresh content. */
  commits: number
  changedPerCommit: number
  /** PRNG seed. */
  seed: number
  /**
   * Check `main` out in the repository's own working tree. Worktrees never read
   * it, and writing tens of thousands of files costs seconds on a slow disk.
   * @default true
   */
  checkout?: boolean
}

export interface RepoStats {
  /** Files in the tip tree. */
  files: number
  /** Commits on main. */
  commits: number
  /** Bytes of all blob content written (the history's raw size). */
  contentBytes: number
  /** Size of the repository's object store on disk (`du` of `.git/objects`). */
  packBytes: number
  /** Size of the tip tree's files (what a checkout of main writes). */
  checkoutBytes: number
  genMs: number
}

/** xorshift128+ filling a buffer with pseudo-random bytes: fast, deterministic, incompressible for zlib. */
export class Prng {
  #s0: bigint
  #s1: bigint
  constructor (seed: number) {
    this.#s0 = BigInt(seed) * 0x9E3779B97F4A7C15n & 0xFFFFFFFFFFFFFFFFn | 1n
    this.#s1 = (BigInt(seed) + 0x632BE59BD9B4E019n) * 0xBF58476D1CE4E5B9n & 0xFFFFFFFFFFFFFFFFn | 1n
    for (let i = 0; i < 16; i++) this.#next()
  }

  #next (): bigint {
    let s1 = this.#s0
    const s0 = this.#s1
    this.#s0 = s0
    s1 ^= (s1 << 23n) & 0xFFFFFFFFFFFFFFFFn
    this.#s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n)
    return (this.#s1 + s0) & 0xFFFFFFFFFFFFFFFFn
  }

  /** A uniform integer in [0, n). */
  int (n: number): number {
    return Number(this.#next() % BigInt(n))
  }

  /**
   * Fills `buf` with pseudo-random bytes. BigInt per 8 bytes would be slow for
   * hundreds of MB, so a 32-bit xorshift seeded from the main generator fills it.
   */
  fill (buf: Buffer): Buffer {
    let x = Number(this.#next() & 0xFFFFFFFFn) | 1
    const words = buf.length >>> 2
    const view = new Uint32Array(buf.buffer, buf.byteOffset, words)
    if ((buf.byteOffset & 3) !== 0) throw new Error('unaligned buffer')
    for (let i = 0; i < words; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5
      view[i] = x >>> 0
    }
    for (let i = words * 4; i < buf.length; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5
      buf[i] = x & 0xff
    }
    return buf
  }
}

/** Path of file number `i` of `n`: spread over two directory levels (about 20 files per directory). */
export function filePath (i: number, n: number): string {
  const perDir = 20
  const dirs = Math.max(1, Math.ceil(n / perDir))
  const top = Math.max(1, Math.ceil(Math.sqrt(dirs)))
  const d = Math.floor(i / perDir)
  return `src/m${String(d % top).padStart(3, '0')}/p${String(Math.floor(d / top)).padStart(3, '0')}/f${String(i % perDir).padStart(2, '0')}.bin`
}

/**
 * `git fast-import` that always writes a pack (by default fewer than 100 objects
 * become loose objects), compresses fast (the content is random: zlib stores it
 * whatever the level) and tries no deltas (random blobs have none).
 */
const FAST_IMPORT = ['-c', 'fastimport.unpackLimit=0', '-c', 'pack.compression=1', 'fast-import', '--quiet', '--done', '--depth=0']
/**
 * glibc gives the heap's top back to the kernel after each object's zlib state is
 * freed and grows it again for the next: on some VMs (page faults are dear) that
 * made fast-import 10x slower. Generation only: measured git commands run as they are.
 */
const FAST_IMPORT_ENV = { MALLOC_TRIM_THRESHOLD_: String(1 << 30), MALLOC_TOP_PAD_: String(16 << 20) }

/** Writes to a child's stdin, waiting for drain (backpressure). */
async function writeAll (stream: NodeJS.WritableStream, chunk: Buffer | string): Promise<void> {
  if (!stream.write(chunk)) await new Promise<void>(resolve => stream.once('drain', () => { resolve() }))
}

/**
 * Creates `dir` as a non-bare repository on `main` with `spec`'s history, written
 * by `git fast-import`, and checks `main` out.
 */
export async function generateRepo (dir: string, spec: RepoSpec): Promise<RepoStats> {
  const started = performance.now()
  await mkdir(dir, { recursive: true })
  await git(['init', '--quiet', '-b', 'main'], { cwd: dir })
  await git(['config', 'user.name', 'meshwork bench'], { cwd: dir })
  await git(['config', 'user.email', 'bench@meshwork.invalid'], { cwd: dir })
  await git(['config', 'commit.gpgsign', 'false'], { cwd: dir })
  // no auto-gc in the middle of a measurement
  await git(['config', 'gc.auto', '0'], { cwd: dir })

  const rng = new Prng(spec.seed)
  const child = spawn('git', FAST_IMPORT, { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C', ...FAST_IMPORT_ENV } })
  let err = ''
  child.stderr.on('data', (c: Buffer) => { if (err.length < 8192) err += c.toString() })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', code => { resolve(code) })
  })
  const input = child.stdin
  input.on('error', () => {})
  let contentBytes = 0
  const time0 = 1_700_000_000
  const blob = async (path: string): Promise<void> => {
    const size = spec.minBytes + rng.int(spec.maxBytes - spec.minBytes + 1)
    const data = rng.fill(Buffer.allocUnsafeSlow(size))
    contentBytes += size
    await writeAll(input, `M 100644 inline ${path}\ndata ${size}\n`)
    await writeAll(input, data)
    await writeAll(input, '\n')
  }
  const commitHeader = async (n: number, message: string): Promise<void> => {
    await writeAll(input, `commit refs/heads/main\ncommitter meshwork bench <bench@meshwork.invalid> ${time0 + n * 60} +0000\ndata ${Buffer.byteLength(message)}\n${message}\n`)
  }
  await commitHeader(0, 'initial tree')
  for (let i = 0; i < spec.files; i++) await blob(filePath(i, spec.files))
  await writeAll(input, '\n')
  for (let c = 1; c <= spec.commits; c++) {
    await commitHeader(c, `change ${c}`)
    const picked = new Set<number>()
    while (picked.size < Math.min(spec.changedPerCommit, spec.files)) picked.add(rng.int(spec.files))
    for (const i of picked) await blob(filePath(i, spec.files))
    await writeAll(input, '\n')
  }
  await writeAll(input, 'done\n')
  input.end()
  const code = await exited
  if (code !== 0) throw new Error(`git fast-import exited ${code}: ${err.trim()}`)
  if (spec.checkout !== false) await git(['checkout', '--quiet', '--force', 'main'], { cwd: dir })
  else await git(['read-tree', 'main'], { cwd: dir }) // index = main, working tree left empty
  const checkoutBytes = await treeBytes(dir, 'main')
  return {
    files: Number(await gitText(['ls-tree', '-r', '--name-only', 'main'], { cwd: dir, maxOutput: 1 << 30 }).then(t => t.split('\n').filter(l => l !== '').length)),
    commits: Number(await gitText(['rev-list', '--count', 'main'], { cwd: dir })),
    contentBytes,
    packBytes: await dirBytes(join(dir, '.git', 'objects')),
    checkoutBytes,
    genMs: performance.now() - started
  }
}

/** Sum of blob sizes in `rev`'s tree. */
export async function treeBytes (dir: string, rev: string): Promise<number> {
  const out = await gitText(['ls-tree', '-r', '-l', rev], { cwd: dir, maxOutput: 1 << 30 })
  let sum = 0
  for (const line of out.split('\n')) {
    const m = /^\S+ blob \S+\s+(\d+)\t/.exec(line)
    if (m !== null) sum += Number(m[1])
  }
  return sum
}

/** Bytes of all regular files under `dir`. */
export async function dirBytes (dir: string): Promise<number> {
  let sum = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) sum += await dirBytes(p)
    else if (entry.isFile()) sum += (await stat(p)).size
  }
  return sum
}

/**
 * Adds one commit on a new branch `branch` off `base` holding `files` new files of
 * `bytesPerFile` random bytes each (fresh objects nobody else has), with
 * fast-import (the checkout is not touched). Returns the new commit's oid.
 */
export async function addBigCommit (dir: string, branch: string, base: string, files: number, bytesPerFile: number, seed: number): Promise<string> {
  const rng = new Prng(seed)
  const child = spawn('git', FAST_IMPORT, { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C', ...FAST_IMPORT_ENV } })
  let err = ''
  child.stderr.on('data', (c: Buffer) => { if (err.length < 8192) err += c.toString() })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', code => { resolve(code) })
  })
  const input = child.stdin
  input.on('error', () => {})
  const message = `big commit: ${files} files of ${bytesPerFile} bytes`
  const env = commitEnv()
  await writeAll(input, `commit refs/heads/${branch}\ncommitter ${env.GIT_COMMITTER_NAME} <${env.GIT_COMMITTER_EMAIL}> ${Math.floor(Date.now() / 1000)} +0000\ndata ${message.length}\n${message}\nfrom ${base}\n`)
  for (let i = 0; i < files; i++) {
    const data = rng.fill(Buffer.allocUnsafeSlow(bytesPerFile))
    await writeAll(input, `M 100644 inline big/${String(i).padStart(4, '0')}.bin\ndata ${bytesPerFile}\n`)
    await writeAll(input, data)
    await writeAll(input, '\n')
  }
  await writeAll(input, '\ndone\n')
  input.end()
  const code = await exited
  if (code !== 0) throw new Error(`git fast-import exited ${code}: ${err.trim()}`)
  return await gitText(['rev-parse', `refs/heads/${branch}`], { cwd: dir })
}
