/**
 * `npm run chaos -- --netns --short`: the chaos run on a network of hosts on
 * this machine. Three `meshwork node` processes, each in a network namespace
 * of its own with its own address on a bridge the script makes, every
 * node-to-node connection through its fault-injecting TCP proxy, the client in
 * the machine's own namespace attached to the bridge. Faults: the merge leader
 * killed with SIGKILL and restarted, a link cut at the proxy and healed, a
 * slow lossy link (200 ms a chunk, 5 % of chunks held a retransmission
 * timeout), a partition by the network (blackhole routes between the sides)
 * and its heal. The script checks every valid task merged exactly once, main
 * identical on every node and only moved forward, no task lost, the minority
 * merged nothing while cut off, and no process left behind: the nodes, the
 * proxy, and the namespaces all gone. Skips where namespaces cannot be made
 * (not root, no `ip`). Slow tier: 3 to 6 minutes on 2 shared cores.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { netnsUnavailable, namespacesWith } from './helpers/netns.ts'
import { ChaosRunner, CORE_CHAOS_CHECKS } from './helpers/chaos-run.ts'

/** Bound of the whole script run (it bounds each of its own waits). */
const RUN_BOUND_MS = 420_000

const chaos = new ChaosRunner()
// the script kills its nodes and the proxy and removes its namespaces on SIGTERM (and on any exit of its own)
afterAll(async () => { await chaos.stop(15_000) }, 30_000)

describe('npm run chaos -- --netns --short', { timeout: RUN_BOUND_MS + 20_000 }, () => {
  it('on a network of namespaces, survives a leader kill, a link cut, a slow lossy link and a network partition: every task merged once, one main, nothing left', async (ctx) => {
    const why = await netnsUnavailable()
    if (why !== null) { ctx.skip(true, why); return }
    const { exit, out, report, pid } = await chaos.run(['--netns', '--short', '--seed', '1'], RUN_BOUND_MS)
    expect(exit, `the chaos script did not finish within ${RUN_BOUND_MS / 1000} s:\n${out}`).not.toBe('timeout')
    expect(exit, out).toBe(0)
    expect(report, out).not.toBeNull()
    expect(report!.netns).toBe(true)
    expect(report!.faults.map(f => f.kind).sort()).toEqual(['leader-kill', 'link-cut', 'net-partition', 'slow-link'])
    expect(report!.checks.filter(c => !c.ok), out).toEqual([])
    expect(report!.checks.map(c => c.name)).toEqual(expect.arrayContaining(CORE_CHAOS_CHECKS))
    // the script's namespaces are named after its pid
    expect(namespacesWith(`mwc${pid}-`)).toEqual([])
  })
})
