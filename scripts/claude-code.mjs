#!/usr/bin/env node
// Installs the pinned Claude Code CLI that the real-CLI tests run, into a cache
// outside the repository (it is a ~400 MB native binary, kept out of `npm ci`),
// and prints the path of its executable. Installs only when missing.
//   node scripts/claude-code.mjs            # prints the path
// Environment: MESHWORK_CLAUDE_CODE_CACHE overrides the cache directory
// (default $XDG_CACHE_HOME/meshwork-test, else ~/.cache/meshwork-test).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

export const CLAUDE_CODE_VERSION = '2.1.332'

export function claudeCodeDir () {
  const base = process.env.MESHWORK_CLAUDE_CODE_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'meshwork-test')
  return join(base, `claude-code-${CLAUDE_CODE_VERSION}`)
}

function works (bin) {
  try {
    const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' } })
    return out.includes(CLAUDE_CODE_VERSION)
  } catch {
    return false
  }
}

/** The installed executable's path, installing it first when missing. Throws with the reason when it cannot. */
export function ensureClaudeCode () {
  const dir = claudeCodeDir()
  const bin = join(dir, 'node_modules', '.bin', 'claude')
  if (existsSync(bin) && works(bin)) return bin
  // install into a fresh directory, then move it into place: parallel test files never see half an install
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  try {
    execFileSync('npm', ['install', '--prefix', tmp, '--no-audit', '--no-fund', '--no-save', '--loglevel=error', `@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}`], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 600_000 })
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    throw new Error(`could not install @anthropic-ai/claude-code@${CLAUDE_CODE_VERSION} into ${tmp}: ${err.stderr?.toString().trim() || err.message}`)
  }
  if (!(existsSync(bin) && works(bin))) {
    try { rmSync(dir, { recursive: true, force: true }); renameSync(tmp, dir) } catch { /* another process won the race */ }
    rmSync(tmp, { recursive: true, force: true })
  }
  if (!works(bin)) throw new Error(`@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION} installed into ${dir}, but \`${bin} --version\` does not print ${CLAUDE_CODE_VERSION}`)
  return bin
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    console.log(ensureClaudeCode())
  } catch (err) {
    console.error(err.message)
    process.exit(1)
  }
}
