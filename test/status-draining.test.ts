/**
 * A node being drained in `status --json`: the contract's node states are
 * alive|suspect|dead|left, so a draining node is `alive` with `draining: true`
 * (a script testing for alive still counts it). What people read (the status
 * table, the TUI, the metrics' counts) shows it as draining. A report from a
 * version that sent `draining` as the state reads the same.
 */
import { describe, it, expect } from 'vitest'
import { buildStatus } from '../src/api/status.ts'
import { meshTotals } from '../src/api/totals.ts'
import { renderStatus } from '../src/cli/render.ts'
import { decodeStatusReport } from '../src/protocol/status.ts'
import { tuiData, nodeRows } from '../src/tui/model.ts'
import { membersView, snapshot, NOW, PEER_A, PEER_B } from './helpers/tui.ts'
import type { PeerIdString } from '../src/crdt/schema.ts'

describe('a draining node in status', () => {
  it('is alive with draining set in status --json; the table, the TUI and the counts show it draining', () => {
    const base = snapshot([])
    const nodes = new Map(base.nodes)
    nodes.set(PEER_B as PeerIdString, { ...nodes.get(PEER_B as PeerIdString)!, drainAt: NOW - 1000 })
    const snap = { ...base, nodes }
    const view = membersView()
    const status = buildStatus(snap, view)
    expect(status.nodes.find(n => n.peerId === PEER_B)).toMatchObject({ state: 'alive', draining: true })
    expect(status.nodes.find(n => n.peerId === PEER_A)).toMatchObject({ state: 'alive', draining: false })
    expect(renderStatus(status, PEER_A), renderStatus(status, PEER_A)).toMatch(/^\s*beta\s+draining\s/m)
    expect(nodeRows(tuiData(status, snap, view, new Map(), PEER_A, NOW)).find(r => r.name === 'beta')!.state).toBe('draining')
    expect(meshTotals(status).nodes).toMatchObject({ alive: 1, draining: 1 })
    // the round trip a client makes keeps it
    const back = decodeStatusReport(new TextEncoder().encode(JSON.stringify(status)), 'a node')
    expect(back.nodes.find(n => n.peerId === PEER_B)).toMatchObject({ state: 'alive', draining: true })
  })

  it('reads a report of an older node that sent "draining" as the state as alive and draining', () => {
    const status = buildStatus(snapshot([]), membersView())
    const old = { ...status, nodes: status.nodes.map(({ draining: _, ...n }) => n.peerId === PEER_B ? { ...n, state: 'draining' } : n) }
    const back = decodeStatusReport(new TextEncoder().encode(JSON.stringify(old)), 'an older node')
    expect(back.nodes.find(n => n.peerId === PEER_B)).toMatchObject({ state: 'alive', draining: true })
    expect(back.nodes.find(n => n.peerId === PEER_A)).toMatchObject({ state: 'alive', draining: false })
  })
})
