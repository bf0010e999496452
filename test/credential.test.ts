import { describe, it, expect, afterAll } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { credentialFingerprint } from '../src/agent/claude-args.ts'

const dirs: string[] = []
afterAll(async () => { await Promise.all(dirs.map(async d => { await rm(d, { recursive: true, force: true }) })) })

describe('credential fingerprint', () => {
  it('is a short hash of the key, token or login, equal for equal credentials, never containing the secret', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshwork-cred-'))
    dirs.push(dir)
    const secret = 'sk-ant-api03-THE-SECRET-KEY'
    const a = await credentialFingerprint({ ANTHROPIC_API_KEY: secret, CLAUDE_CONFIG_DIR: dir })
    expect(a).toMatch(/^sha256:[0-9a-f]{16}$/)
    expect(a).not.toContain('SECRET')
    expect(await credentialFingerprint({ ANTHROPIC_API_KEY: secret, CLAUDE_CONFIG_DIR: dir })).toBe(a)
    expect(await credentialFingerprint({ ANTHROPIC_API_KEY: secret + 'x', CLAUDE_CONFIG_DIR: dir })).not.toBe(a)
    expect(await credentialFingerprint({ CLAUDE_CODE_OAUTH_TOKEN: 'sk-ant-oat01-TOKEN', CLAUDE_CONFIG_DIR: dir })).toMatch(/^sha256:/)
    // no key or token: the login's credentials file; none at all: no fingerprint
    expect(await credentialFingerprint({ CLAUDE_CONFIG_DIR: dir })).toBeUndefined()
    await writeFile(join(dir, '.credentials.json'), '{"claudeAiOauth":{"accessToken":"x"}}')
    const login = await credentialFingerprint({ CLAUDE_CONFIG_DIR: dir })
    expect(login).toMatch(/^sha256:/)
    expect(await credentialFingerprint({}, dir)).toBe(login)
  })
})
