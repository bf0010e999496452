// Which build of meshwork a clone runs (bin/meshwork.js): the bundle that
// `npm ci` / `npm install` made (`npm run bundle`: scripts/bundle.ts) while it
// matches the sources, else the TypeScript sources themselves. A bundle is a
// few dozen files where the sources and their dependencies are about a
// thousand modules, and a command starts in about a third of the time (docs/benchmarks.md).
// Built-in modules only: this runs at every command's start.
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

/** Where a clone's bundle is made, under the package root. */
export const BUILD_DIR = '.build'
/** The bundle's directory in it (two levels under the root, as the sources are: paths relative to a module stay right). */
export const BUNDLE_SUBDIR = 'cli'
/** The file in it holding the fingerprint of the sources the bundle was made from. */
export const STAMP_NAME = 'sources'

/**
 * A fingerprint of what a bundle is made from: every file under src/ (path,
 * size, modification time) and the package's manifest and lock file. Stat
 * calls only (a few milliseconds for the whole tree): any edit, checkout or
 * install changes it.
 */
export function sourcesFingerprint (root) {
  const hash = createHash('sha256')
  const files = readdirSync(join(root, 'src'), { recursive: true }).map(String).sort()
  for (const f of [...files.map(f => join('src', f)), 'package.json', 'package-lock.json']) {
    let st
    try { st = statSync(join(root, f)) } catch { continue }
    if (st.isFile()) hash.update(`${f}\0${st.size}\0${st.mtimeMs}\n`)
  }
  return hash.digest('hex')
}

/** The bundle's entry (an absolute path) when `root` has one made from the sources whose fingerprint is `fingerprint`, else null. */
export function bundleMadeFrom (root, fingerprint) {
  const entry = join(root, BUILD_DIR, BUNDLE_SUBDIR, 'main.js')
  try {
    if (!existsSync(entry)) return null
    return readFileSync(join(root, BUILD_DIR, STAMP_NAME), 'utf8').trim() === fingerprint ? entry : null
  } catch {
    return null
  }
}

/**
 * The bundle's entry (an absolute path) when `root` has one made from the
 * sources as they are now, else null. `MESHWORK_SOURCES=1` always says null.
 */
export function freshBundle (root) {
  if (process.env.MESHWORK_SOURCES === '1') return null
  return bundleMadeFrom(root, sourcesFingerprint(root))
}
