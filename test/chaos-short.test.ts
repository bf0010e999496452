/**
 * The short variant of `npm run chaos` (issue 11's "Prove it"): the real
 * script, `--short`: three `meshwork node` processes with the sim agent, a
 * plan in three waves (a hung `--verify` among the tasks), the merge leader
 * killed with SIGKILL and restarted, and the mesh cut in two sides that both
 * keep running (each side's `--allow` files list only that side, reloaded on
 * SIGHUP) and healed. The script itself checks every valid task merged exactly
 * once, main identical on every node and equal to the board, each node's main
 * only moved forward (or kept aside on a backup branch), the minority merged
 * nothing while cut off, no task lost and no process left behind; it exits 0
 * only if all hold. The full run (`npm run chaos`) needs root for its
 * full-disk fault and takes minutes; this one needs neither.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { ChaosRunner, CORE_CHAOS_CHECKS } from './helpers/chaos-run.ts'

/**
 * Bound of the whole script run (it bounds each of its own waits). About 55 s on
 * a quiet 2-core machine; 154-221 s were measured beside other test files at a
 * load average of about 25, so the bound leaves room for a loaded host.
 */
const RUN_BOUND_MS = 400_000

const chaos = new ChaosRunner()
afterAll(async () => { await chaos.stop(10_000) }, 30_000)

describe('npm run chaos -- --short', { timeout: RUN_BOUND_MS + 10_000 }, () => {
  it('survives a leader kill and a partition: every task merged once, one main, moved only forward, nothing left running', async () => {
    const { exit, out, report } = await chaos.run(['--short', '--seed', '1'], RUN_BOUND_MS)
    expect(exit, `the chaos script did not finish within ${RUN_BOUND_MS / 1000} s:\n${out}`).not.toBe('timeout')
    expect(exit, out).toBe(0)
    expect(report, out).not.toBeNull()
    expect(report!.faults.map(f => f.kind).sort()).toEqual(['leader-kill', 'partition'])
    expect(report!.checks.filter(c => !c.ok), out).toEqual([])
    expect(report!.checks.map(c => c.name)).toEqual(expect.arrayContaining(CORE_CHAOS_CHECKS))
  })
})
