import * as A from '@automerge/automerge'
import { readFileSync, existsSync } from 'node:fs'
const dir = process.argv[2] as string
let doc = A.load(readFileSync(`${dir}/board.am`))
if (existsSync(`${dir}/board.log`)) {
  const buf = readFileSync(`${dir}/board.log`)
  let at = 0
  while (at + 8 <= buf.length) {
    const len = buf.readUInt32BE(at) ; const chunk = buf.subarray(at + 8, at + 8 + len); at += 8 + len
    try { doc = A.loadIncremental(doc, chunk) } catch (e) { console.log('chunk', (e as Error).message); break }
  }
}
const changes = A.getAllChanges(doc).map(c => A.decodeChange(c))
const by = new Map<string, { n: number, ops: number }>()
for (const c of changes) {
  const k = (c.message ?? '').replace(/[0-9a-f]{8,}/g, 'X').replace(/\b[lt]\d+[-\w]*/g, 'T').slice(0, 40)
  const e = by.get(k) ?? { n: 0, ops: 0 }
  e.n++; e.ops += c.ops.length
  by.set(k, e)
}
console.log('changes', changes.length)
for (const [k, v] of [...by].sort((a, b) => b[1].n - a[1].n).slice(0, 30)) console.log(k.padEnd(42), v.n, 'ops', v.ops)
