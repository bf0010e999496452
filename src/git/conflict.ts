import { git } from './git.ts'
import type { ConflictHunk } from '../crdt/schema.ts'

/** Most hunks kept in one conflict record. @default 20 */
export const MAX_HUNKS = 20
/** Most bytes kept of one side of a hunk; more is cut with a marker. @default 2048 */
export const MAX_SIDE_BYTES = 2048
/** Context lines kept before and after a hunk. @default 3 */
export const CONTEXT_LINES = 3
/** Most bytes of hunk text in one record, far under the board's 256 KiB message cap. @default 64 KiB */
export const MAX_HUNK_TOTAL_BYTES = 64 * 1024
/** Largest conflicted blob read to find hunks. @default 4 MiB */
const MAX_BLOB_BYTES = 4 * 1024 * 1024

/** One index stage of a conflicted path, as `git merge-tree --write-tree` lists it. */
export interface ConflictStage {
  mode: string
  oid: string
  /** 1 = merge base, 2 = ours (main), 3 = theirs (the task). */
  stage: 1 | 2 | 3
  path: string
}

/** What `git merge-tree --write-tree -z` says about a merge. */
export interface MergeTreeOutput {
  tree: string
  stages: ConflictStage[]
  /** Informational messages (`CONFLICT (modify/delete): ...`) with the paths they are about. */
  messages: Array<{ paths: string[], type: string, text: string }>
}

/** Parses the `-z` output of `git merge-tree --write-tree` (pure). */
export function parseMergeTree (out: string): MergeTreeOutput {
  const parts = out.split('\0')
  const tree = parts[0] ?? ''
  let i = 1
  const stages: ConflictStage[] = []
  for (; i < parts.length && parts[i] !== ''; i++) {
    const m = /^(\d+) ([0-9a-f]+) ([123])\t(.*)$/s.exec(parts[i] as string)
    if (m !== null) stages.push({ mode: m[1] as string, oid: m[2] as string, stage: Number(m[3]) as 1 | 2 | 3, path: m[4] as string })
  }
  i++
  const messages: MergeTreeOutput['messages'] = []
  while (i < parts.length && parts[i] !== '') {
    const n = Number(parts[i])
    if (!Number.isInteger(n) || n < 0) break
    const paths = parts.slice(i + 1, i + 1 + n)
    const type = parts[i + 1 + n] ?? ''
    const text = (parts[i + 2 + n] ?? '').trim()
    messages.push({ paths, type, text })
    i += n + 3
  }
  return { tree, stages, messages }
}

/** Cuts `text` to at most `max` bytes (UTF-8), saying how much was left out. */
export function truncate (text: string, max = MAX_SIDE_BYTES): string {
  const buf = Buffer.from(text, 'utf8')
  if (buf.length <= max) return text
  // drop a partial character at the cut
  const cut = buf.subarray(0, max).toString('utf8').replace(/\uFFFD$/, '')
  return `${cut}\n[… ${buf.length - Buffer.byteLength(cut, 'utf8')} more bytes not shown]\n`
}

const OPEN = '<<<<<<<'
const BASE = '|||||||'
const SEP = '======='
const CLOSE = '>>>>>>>'

function isMarker (line: string, marker: string): boolean {
  return line === marker || line.startsWith(marker + ' ')
}

/**
 * The conflicted hunks of one file as git wrote it with conflict markers (pure):
 * main's side (`ours`), the task's side (`theirs`) and `CONTEXT_LINES` of
 * context, with the 1-based line of each `<<<<<<<` in the marked-up file. A
 * diff3 base section (`|||||||`) is left out. Sides are cut to `maxSide` bytes.
 */
export function hunksFromMarkers (file: string, text: string, maxSide = MAX_SIDE_BYTES): ConflictHunk[] {
  const lines = text.split('\n')
  if (lines.at(-1) === '') lines.pop()
  const join = (ls: string[]): string => ls.length === 0 ? '' : ls.join('\n') + '\n'
  const hunks: ConflictHunk[] = []
  let i = 0
  let lastEnd = 0
  while (i < lines.length) {
    if (!isMarker(lines[i] as string, OPEN)) { i++; continue }
    const start = i
    const ours: string[] = []
    const theirs: string[] = []
    let part: 'ours' | 'base' | 'theirs' = 'ours'
    i++
    for (; i < lines.length; i++) {
      const l = lines[i] as string
      if (part === 'ours' && isMarker(l, BASE)) { part = 'base'; continue }
      if (part !== 'theirs' && l === SEP) { part = 'theirs'; continue }
      if (part === 'theirs' && isMarker(l, CLOSE)) break
      if (part === 'ours') ours.push(l)
      else if (part === 'theirs') theirs.push(l)
    }
    if (i >= lines.length) break // unterminated: not a conflict hunk git wrote
    const end = i
    // context stops at the previous hunk so no text is shown twice
    const before = lines.slice(Math.max(lastEnd, start - CONTEXT_LINES), start)
    let afterEnd = end + 1
    while (afterEnd < lines.length && afterEnd < end + 1 + CONTEXT_LINES && !isMarker(lines[afterEnd] as string, OPEN)) afterEnd++
    const after = lines.slice(end + 1, afterEnd)
    hunks.push({ file, line: start + 1, before: truncate(join(before), 512), ours: truncate(join(ours), maxSide), theirs: truncate(join(theirs), maxSide), after: truncate(join(after), 512) })
    lastEnd = end + 1
    i = end + 1
  }
  return hunks
}

async function readBlob (repo: string, oid: string): Promise<Buffer | null> {
  const r = await git(['cat-file', 'blob', oid], { cwd: repo, allowFail: true, maxOutput: MAX_BLOB_BYTES }).catch(() => null)
  return r === null || r.code !== 0 ? null : r.stdout
}

function isBinary (b: Buffer): boolean {
  return b.subarray(0, 8000).includes(0)
}

function describeSide (b: Buffer | null, oid: string | undefined, gone: string): string {
  if (oid === undefined) return gone
  if (b === null) return `[not shown: blob ${oid.slice(0, 12)} is larger than ${MAX_BLOB_BYTES} bytes]\n`
  if (isBinary(b)) return `[binary, ${b.length} bytes, blob ${oid.slice(0, 12)}]\n`
  return truncate(b.toString('utf8'))
}

/**
 * The hunks of a conflicted merge, for the conflict record: for each conflicted
 * path, the hunks between git's conflict markers in the merge result `tree`; for
 * a path git could not mark up (deleted on one side and changed on the other,
 * binary, a rename conflict) one hunk at line 0 whose sides say what each side
 * did, with git's message as `before`. At most `MAX_HUNKS` hunks and
 * `MAX_HUNK_TOTAL_BYTES` of text; a last hunk says how many were left out.
 */
export async function conflictHunks (repo: string, out: MergeTreeOutput): Promise<ConflictHunk[]> {
  const byPath = new Map<string, Partial<Record<1 | 2 | 3, ConflictStage>>>()
  for (const s of out.stages) {
    const e = byPath.get(s.path) ?? {}
    e[s.stage] = s
    byPath.set(s.path, e)
  }
  const all: ConflictHunk[] = []
  let stoppedEarly = false
  for (const [path, st] of byPath) {
    if (all.length > MAX_HUNKS) { stoppedEarly = true; break }
    const ours = st[2]
    const theirs = st[3]
    if (ours !== undefined && theirs !== undefined) {
      const marked = await readBlob(repo, `${out.tree}:${path}`)
      if (marked !== null && !isBinary(marked)) {
        const hs = hunksFromMarkers(path, marked.toString('utf8'))
        if (hs.length > 0) { all.push(...hs); continue }
      }
    }
    const [o, t] = await Promise.all([ours, theirs].map(async s => s === undefined ? null : await readBlob(repo, s.oid)))
    const note = out.messages.filter(m => m.paths.includes(path) && m.type !== 'Auto-merging').map(m => m.text).join('\n')
    all.push({
      file: path,
      line: 0,
      before: truncate(note === '' ? '' : note + '\n', 1024),
      ours: describeSide(o ?? null, ours?.oid, '[deleted on main]\n'),
      theirs: describeSide(t ?? null, theirs?.oid, '[deleted by the task]\n'),
      after: ''
    })
  }
  const kept: ConflictHunk[] = []
  let bytes = 0
  for (const h of all) {
    const size = Buffer.byteLength(h.before + h.ours + h.theirs + h.after + h.file, 'utf8')
    if (kept.length >= MAX_HUNKS - 1 || bytes + size > MAX_HUNK_TOTAL_BYTES) break
    kept.push(h)
    bytes += size
  }
  if (kept.length < all.length) {
    const left = all.length - kept.length
    const files = [...new Set(all.slice(kept.length).map(h => h.file))]
    const truncatedNote = `[${left}${stoppedEarly ? '+' : ''} more conflicted hunk(s) not shown, in ${files.slice(0, 10).join(', ')}${files.length > 10 ? ', …' : ''}]\n`
    kept.push({ file: files[0] ?? '', line: 0, before: '', ours: truncatedNote, theirs: truncatedNote, after: '' })
  }
  return kept
}
