/**
 * Runs once around the whole suite: every test's temp files go under one
 * directory of this run (TMPDIR, inherited by the test workers and by every
 * process they start), and that directory is removed at the end, so a run
 * leaves nothing in the system temp dir even when a test fails before its own
 * clean-up or a child process writes temp files of its own.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export default function setup (): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'meshwork-test-run-'))
  process.env.TMPDIR = dir
  return () => {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  }
}
