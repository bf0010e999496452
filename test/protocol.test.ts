import { asPeerId } from '../src/crdt/schema.ts'
import { describe, it, expect } from 'vitest'
import { z } from 'zod'
import { decodeFrame, encodeFrame, encodeJsonFrame, parseJson } from '../src/protocol/frame.ts'
import { BoardGossipTag, decodeBoardGossip, encodeBoardChange, encodeBoardHeads } from '../src/protocol/board-gossip.ts'
import { BadMembersViewError, decodeMembersView, type MembersView } from '../src/protocol/members.ts'
import { gitRequestSchema, gitAckSchema, GitFrame } from '../src/protocol/git.ts'
import { decodeProgress, encodeProgress } from '../src/protocol/presence.ts'
import { TimeoutError, abortedByTimeout } from '../src/util/errors.ts'

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
const HEAD = 'a'.repeat(64)

describe('frames', () => {
  it('a frame is its tag then its body; an empty buffer is no frame', () => {
    const f = encodeFrame(7, new Uint8Array([1, 2, 3]))
    expect([...f]).toEqual([7, 1, 2, 3])
    const d = decodeFrame(f)
    expect(d?.tag).toBe(7)
    expect([...(d?.body ?? [])]).toEqual([1, 2, 3])
    expect(decodeFrame(new Uint8Array(0))).toBeNull()
    expect([...encodeFrame(2)]).toEqual([2])
    const j = decodeFrame(encodeJsonFrame(GitFrame.ACK, { bytes: 5 }))
    expect(j?.tag).toBe(GitFrame.ACK)
    expect(parseJson(gitAckSchema, j!.body)).toEqual({ ok: true, value: { bytes: 5 } })
  })

  it('parseJson names why it refused', () => {
    expect(parseJson(z.object({ a: z.number() }), new TextEncoder().encode('{'))).toEqual({ ok: false, reason: 'not JSON' })
    expect(parseJson(z.object({ a: z.number() }), new Uint8Array([0xff, 0xfe]))).toEqual({ ok: false, reason: 'not JSON' })
    const r = parseJson(z.object({ a: z.number() }), enc({ a: 'x' }))
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.reason).toContain('a:')
  })
})

describe('board gossip', () => {
  it('round-trips a change and heads, and names what it refuses', () => {
    const change = new Uint8Array([9, 8, 7])
    const c = decodeBoardGossip(encodeBoardChange(change))
    expect(c.kind).toBe('change')
    if (c.kind === 'change') expect([...c.change]).toEqual([9, 8, 7])
    expect(decodeBoardGossip(encodeBoardHeads([HEAD]))).toEqual({ kind: 'heads', heads: [HEAD] })
    expect(decodeBoardGossip(encodeFrame(BoardGossipTag.HEADS, enc(['not-a-hash'])))).toEqual({ kind: 'invalid', reason: 'bad-heads' })
    expect(decodeBoardGossip(encodeFrame(BoardGossipTag.HEADS, enc(Array.from({ length: 65 }, () => HEAD))))).toEqual({ kind: 'invalid', reason: 'bad-heads' })
    expect(decodeBoardGossip(encodeFrame(99, change))).toEqual({ kind: 'invalid', reason: 'unknown-tag' })
    expect(decodeBoardGossip(new Uint8Array(0))).toEqual({ kind: 'invalid', reason: 'unknown-tag' })
  })
})

describe('members view', () => {
  const member = {
    peerId: asPeerId('p1'), name: 'n', slots: 2, running: [], heads: [], addrs: [], load: 0.1, lagMs: 0, backoffUntil: null,
    state: 'alive' as const, eligible: true, aliveSince: 1, lastSeenAt: 2, silentMs: 0
  }
  it('accepts a well-formed view', () => {
    const view: MembersView = { self: 'p1', members: [member as MembersView['members'][number]], progress: { t1: { kind: 'text', text: 'hi', at: 1, peerId: 'p1' } } }
    expect(decodeMembersView(enc(view), 'p1')).toEqual(view)
  })
  it('refuses a malformed view with an error naming the field and the peer', () => {
    expect(() => decodeMembersView(enc({ self: 'p1', members: [{ ...member, state: 'zombie' }] }), 'peerX')).toThrow(BadMembersViewError)
    expect(() => decodeMembersView(enc({ self: 'p1', members: [{ ...member, state: 'zombie' }] }), 'peerX')).toThrow(/peerX.*members\.0\.state/)
    expect(() => decodeMembersView(new TextEncoder().encode('nope'), 'peerX')).toThrow(/not JSON/)
  })
})

describe('git request and progress schemas', () => {
  it('bound wants and haves', () => {
    expect(gitRequestSchema.safeParse({ want: 'refs/heads/x', haves: ['b'.repeat(40)] }).success).toBe(true)
    expect(gitRequestSchema.safeParse({ want: '' }).success).toBe(false)
    expect(gitRequestSchema.safeParse({ want: 'x', haves: ['--upload-pack=evil'] }).success).toBe(false)
    expect(gitRequestSchema.safeParse({ want: 'x', haves: Array.from({ length: 257 }, () => 'b'.repeat(40)) }).success).toBe(false)
  })
  it('progress round-trips and refuses unknown kinds', () => {
    const p = { v: 1 as const, peerId: 'p', taskId: 't', kind: 'tool' as const, text: 'x', at: 3 }
    expect(decodeProgress(encodeProgress(p))).toEqual(p)
    expect(decodeProgress(enc({ ...p, kind: 'shell' }))).toBeNull()
  })
})

describe('timeouts are typed', () => {
  it('only a TimeoutError reason counts as a timeout, whatever the text', () => {
    const a = new AbortController()
    a.abort(new TimeoutError('took too long'))
    expect(abortedByTimeout(a.signal)).toBe(true)
    const b = new AbortController()
    b.abort(new Error('timed out after 5 ms'))
    expect(abortedByTimeout(b.signal)).toBe(false)
    expect(abortedByTimeout(AbortSignal.abort(new TimeoutError('x')))).toBe(true)
    expect(abortedByTimeout(new AbortController().signal)).toBe(false)
  })
})
