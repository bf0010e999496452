/**
 * Reading a pack's index and an object's type from the pack
 * (src/git/transfer/pack-index.ts), as a fetch does to see that the pack
 * holds the commit it announced: every object's offset agrees with
 * `git verify-pack -v`, in SHA-1 and SHA-256 repositories; commits read as
 * commits, other objects as not, objects the pack lacks as unknown.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { git } from '../src/git/git.ts'
import { packOffset, packedCommit } from '../src/git/transfer/pack-index.ts'
import { commitFiles, configIdentity } from './helpers/git.ts'

let dir = ''
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'meshwork-pack-index-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** A repository of `format` with a few commits, packed whole into DIR/NAME.pack and indexed; its objects as verify-pack lists them. */
async function packed (name: string, format: 'sha1' | 'sha256'): Promise<{ idx: string, pack: string, objects: Array<{ oid: string, type: string, offset: number, delta: boolean }>, absent: string }> {
  const repo = join(dir, name)
  await git(['init', '--quiet', `--object-format=${format}`, '-b', 'main', repo], { cwd: dir })
  await configIdentity(repo)
  for (let i = 0; i < 4; i++) await commitFiles(repo, { 'a.txt': `line\n`.repeat(200) + `change ${i}\n`, [`f${i}.txt`]: `file ${i}\n` }, `commit ${i}`)
  const data = (await git(['pack-objects', '--revs', '--stdout', '--quiet'], { cwd: repo, input: 'main~1\n' })).stdout
  const pack = join(dir, `${name}.pack`)
  await writeFile(pack, data)
  await git(['index-pack', pack], { cwd: repo })
  const idx = join(dir, `${name}.idx`)
  const listed = (await git(['verify-pack', '-v', idx], { cwd: repo })).stdout.toString('utf8').split('\n')
  const objects = listed.flatMap(line => {
    const m = /^([0-9a-f]{40,64}) (\w+)\s+\d+ \d+ (\d+)( \d+ [0-9a-f]+)?$/.exec(line)
    return m === null ? [] : [{ oid: m[1] as string, type: m[2] as string, offset: Number(m[3]), delta: m[4] !== undefined }]
  })
  const absent = (await git(['rev-parse', 'main'], { cwd: repo })).stdout.toString('utf8').trim()
  return { idx, pack, objects, absent }
}

describe('a pack index', () => {
  for (const format of ['sha1', 'sha256'] as const) {
    it(`${format}: offsets as verify-pack gives them; commits, other objects and objects not in the pack told apart`, async () => {
      const p = await packed(`repo-${format}`, format)
      expect(p.objects.length).toBeGreaterThan(8)
      expect(p.objects.some(o => o.type === 'commit')).toBe(true)
      const idx = await readFile(p.idx)
      for (const o of p.objects) {
        expect(packOffset(idx, o.oid), o.oid).toBe(o.offset)
        const held = await packedCommit(p.idx, p.pack, o.oid)
        // a delta's type is its base's: not read here
        expect(held, `${o.type} ${o.oid}`).toBe(o.delta ? null : o.type === 'commit')
      }
      // main's tip was left out of the pack (main~1 and what it reaches went in)
      expect(p.objects.some(o => o.oid === p.absent)).toBe(false)
      expect(await packedCommit(p.idx, p.pack, p.absent)).toBeNull()
      expect(packOffset(idx, 'not an oid')).toBeNull()
      expect(packOffset(idx, p.absent.slice(0, 40) === p.absent ? '0'.repeat(64) : '0'.repeat(40))).toBeNull()
    })
  }

  it('an index that is not a version 2 index is unknown, not an error', () => {
    expect(packOffset(Buffer.from('not an index at all'), 'a'.repeat(40))).toBeNull()
    expect(packOffset(Buffer.alloc(2000), 'a'.repeat(40))).toBeNull()
  })
})
