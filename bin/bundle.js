// Which build of meshwork a clone runs (bin/meshwork.js): the bundle that
// `npm ci` / `npm install` made (`npm run bundle`: scripts/bundle.ts) while it
// matches the sources, else the TypeScript sources themselves. A bundle is a
// few dozen files where the sources and their dependencies are about a
// thousand modules, and a command starts in about a third of the time (docs/benchmarks.md).
// Built-in modules only: this runs at every command's start.
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

/** Where the bundle goes, under the package root (two levels deep, as the sources are: paths relative to a module stay right). */
export const BUNDLE_DIR = join('.build', 'cli')
/** The file holding the fingerprint of the sources a bundle was made from. */
export const STAMP_FILE = join('.build', 'sources')

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

/**
 * The bundle's entry (an absolute path) when `root` has one made from the
 * sources as they are now, else null. `MESHWORK_SOURCES=1` always says null.
 */
export function freshBundle (root) {
  if (process.env.MESHWORK_SOURCES === '1') return null
  const entry = join(root, BUNDLE_DIR, 'main.js')
  try {
    if (!existsSync(entry)) return null
    return readFileSync(join(root, STAMP_FILE), 'utf8').trim() === sourcesFingerprint(root) ? entry : null
  } catch {
    return null
  }
}
