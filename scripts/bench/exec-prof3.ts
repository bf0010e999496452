import { spawnSync, spawn } from 'node:child_process'
import { createMesh } from '../../test/helpers/mesh.ts'
import { readFileSync } from 'node:fs'
async function measure (label: string): Promise<void> {
  const ts: number[] = []
  for (let i = 0; i < 30; i++) {
    const t0 = performance.now()
    const c = spawn('/bin/true', [], { stdio: 'ignore' })
    ts.push(performance.now() - t0) // synchronous part of spawn()
    await new Promise(r => c.on('close', r))
  }
  ts.sort((a, b) => a - b)
  const st = readFileSync('/proc/self/status', 'utf8')
  const vm = (k: string) => /^(\w+):\s+(\d+)/m && (st.match(new RegExp('^' + k + ':\\s+(\\d+)', 'm'))?.[1])
  console.log(label, 'spawn() blocks', ts[15]!.toFixed(1), 'ms median; VmSize', vm('VmSize'), 'kB VmRSS', vm('VmRSS'), 'kB; maps', readFileSync('/proc/self/maps', 'utf8').split('\n').length)
}
await measure('bare node')
const mesh = await createMesh(2)
await measure('with 2 mesh nodes')
await mesh.stop()
await measure('after stop')
