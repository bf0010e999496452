import { createHash } from 'node:crypto'

const WORDS = [
  'add', 'the', 'parser', 'for', 'config', 'files', 'and', 'tests', 'update', 'handler', 'so', 'that', 'errors',
  'are', 'reported', 'with', 'line', 'numbers', 'refactor', 'module', 'into', 'smaller', 'functions', 'keep',
  'public', 'api', 'stable', 'document', 'edge', 'cases', 'retry', 'timeouts', 'cache', 'results', 'between',
  'runs', 'migrate', 'schema', 'version', 'two', 'fix', 'race', 'in', 'worker', 'pool', 'on', 'shutdown', 'log',
  'metrics', 'per', 'request', 'validate', 'input', 'from', 'cli', 'flags', 'rename', 'field', 'everywhere'
]

/**
 * Deterministic prompt-like text of exactly `chars` characters, different per
 * seed (so Automerge's column compression sees realistic, not repeated, text).
 */
export function promptText (seed: string, chars: number): string {
  let out = ''
  let block = createHash('sha256').update(seed).digest()
  let i = 0
  while (out.length < chars) {
    if (i >= block.length) {
      block = createHash('sha256').update(block).digest()
      i = 0
    }
    out += (out === '' ? '' : ' ') + WORDS[(block[i++] ?? 0) % WORDS.length]
  }
  return out.slice(0, chars)
}
