import { git } from './git.ts'

/** Longest a single `git push` of main may take before it is abandoned. @default 2 min */
export const PUSH_TIMEOUT_MS = 2 * 60_000

/** How one push of main ended. */
export interface PushOutcome {
  ok: boolean
  /** Git's reason when the push was refused or failed (rejection summary, fatal message). */
  error: string | null
}

/**
 * Pushes `head` to `refs/heads/<branch>` of `remote` without force: git itself
 * refuses anything but a fast-forward of the remote branch (a remote that moved
 * to a commit main does not contain is rejected and left as it is). Never
 * throws for a refused or failed push: the outcome says why, in git's words.
 */
export async function pushMain (repo: string, remote: string, head: string, branch: string, signal?: AbortSignal): Promise<PushOutcome> {
  const timeout = AbortSignal.timeout(PUSH_TIMEOUT_MS)
  const both = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
  let res
  try {
    res = await git(['push', '--porcelain', '--no-verify', remote, `${head}:refs/heads/${branch}`], { cwd: repo, allowFail: true, signal: both })
  } catch (err) {
    if (timeout.aborted) return { ok: false, error: `git push to ${redactRemote(remote)} did not finish within ${PUSH_TIMEOUT_MS / 1000} s` }
    return { ok: false, error: `git push could not run: ${(err as Error).message}` }
  }
  if (res.code === 0) return { ok: true, error: null }
  return { ok: false, error: pushError(res.stdout.toString('utf8'), res.stderr, res.code) }
}

/**
 * Git's reason for a failed push (pure): the porcelain status line of the ref
 * (`!  <src>:<dst>  [rejected] (non-fast-forward)`) and git's error lines
 * (`error:`, `fatal:`, `remote:`), hints left out.
 */
export function pushError (stdout: string, stderr: string, code: number | null): string {
  const refLines = stdout.split('\n').filter(l => l.startsWith('!\t')).map(l => {
    const [, spec = '', summary = ''] = l.split('\t')
    const dst = spec.slice(spec.indexOf(':') + 1)
    const behind = /non-fast-forward|fetch first|stale info/.test(summary) ? ': the remote branch has commits that main does not contain (never forced; fix the remote and the next push succeeds)' : ''
    return `${dst} ${summary.trim()}${behind}`
  })
  const errLines = stderr.split('\n').map(l => l.trim()).filter(l => /^(error|fatal|remote):/.test(l) && !/^error: failed to push some refs/.test(l))
  const parts = [...refLines, ...errLines.slice(-4)]
  if (parts.length === 0) parts.push(`git push exited with ${code ?? 'a signal'}${stderr.trim() !== '' ? `: ${stderr.trim().split('\n').slice(-2).join(' | ')}` : ''}`)
  return parts.join('; ').slice(0, 2000)
}

/** A remote as it may be shown to the mesh: a URL's password or token is masked (pure). */
export function redactRemote (remote: string): string {
  return remote.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1***@')
}
