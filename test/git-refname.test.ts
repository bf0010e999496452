/** `isWellFormedRefName` agrees with `git check-ref-format` (which it replaces on the transfer path). */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { rm } from 'node:fs/promises'
import { tempDir } from './helpers/mesh.ts'
import { git } from '../src/git/git.ts'
import { isWellFormedRefName } from '../src/git/repo.ts'

const NAMES = [
  'refs/heads/main', 'refs/heads/meshwork/t1', 'refs/meshwork/main-incoming', 'refs/remotes/a/main', 'refs/heads/a-b_c.d',
  'refs/heads/ünïcode', 'refs/heads/x@y', 'refs/heads/a.lockx', 'refs/heads/@',
  'refs/heads/../tags/v1', 'refs/heads/a..b', 'refs/heads/.hidden', 'refs/heads/a/.b', 'refs/heads/a.lock', 'refs/heads/a/b.lock/c',
  'refs/heads/a/', 'refs/heads//a', 'refs/heads/a.', 'refs/heads/a@{1}', 'refs/heads/a b', 'refs/heads/a\tb', 'refs/heads/a~1',
  'refs/heads/a^', 'refs/heads/a:b', 'refs/heads/a?', 'refs/heads/a*', 'refs/heads/a[b', 'refs/heads/a\\b', 'refs/heads/a\x7f',
  'refs/heads/a\nb', 'refs/', 'refs', 'HEAD', 'main', 'heads/main', '--all', 'refs/heads/-dash'
]

let dir: string
beforeAll(async () => { dir = await tempDir('meshwork-refname-') })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('isWellFormedRefName', () => {
  it('accepts exactly the full refs/ names git check-ref-format accepts', async () => {
    for (const name of NAMES) {
      const res = await git(['check-ref-format', name], { cwd: dir, allowFail: true })
      expect(isWellFormedRefName(name), JSON.stringify(name)).toBe(res.code === 0 && name.startsWith('refs/'))
    }
  })
})
