import { spawn } from 'node:child_process'
import { Socket } from 'node:net'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { join, resolve } from 'node:path'
import { killGroup, observeGroups } from '../agent/process.ts'
import type { Logger } from '../util/logger.ts'

/**
 * The process groups a node's runs started (agents, `--setup`, `--verify`),
 * recorded in `DATA/run-groups/<pgid>` while they run, so that none outlives
 * its node: a watchdog process kills them the moment the node is gone (even
 * after `kill -9`), and a node starting on the data dir kills any left from an
 * earlier life. A record carries the boot id and the start time of the group's
 * leader, so a pgid reused by an unrelated process is never killed. A group is
 * recorded just after its process starts (its pid is known only then): a kill
 * -9 of the node in that instant leaves that one run unrecorded, and it runs on.
 */

/** Subdirectory of the data dir holding one file per live process group. */
export const RUN_GROUPS_DIR = 'run-groups'

/**
 * The variable every run's processes carry: a mark of the data dir whose node
 * started them and of that node's life (`MESHWORK_RUN_OF=<16 hex>-<8 hex>`).
 * Processes inherit it whatever group or session they move to, and it is
 * there from a run's first instruction, before the node has recorded the
 * run's group: the watchdog also kills every process with its life's mark,
 * and a restart every process with the data dir's (any earlier life's).
 */
export const RUN_MARK_ENV = 'MESHWORK_RUN_OF'

/** The part of the mark that names the data dir (the same in every life of its node). */
export function dataDirMark (dataDir: string): string {
  return createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 16)
}

/** Pids of the processes (other than this one) with a variable `name` whose value starts with `prefix`; Linux only. */
export function processesMarked (name: string, prefix: string): number[] {
  const needle = Buffer.from(`${name}=${prefix}`)
  const inside = Buffer.concat([Buffer.from([0]), needle])
  let pids: string[]
  try { pids = readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch { return [] }
  const found: number[] = []
  for (const p of pids) {
    const pid = Number(p)
    if (pid === process.pid) continue
    let env: Buffer
    try { env = readFileSync(`/proc/${p}/environ`) } catch { continue }
    // a variable starts the block or follows a NUL
    if (env.subarray(0, needle.length).equals(needle) || env.includes(inside)) found.push(pid)
  }
  return found
}

/** SIGKILLs every process whose run mark starts with `prefix`; the pids it killed. */
function killMarked (prefix: string): number[] {
  return processesMarked(RUN_MARK_ENV, prefix).filter(pid => {
    try { process.kill(pid, 'SIGKILL'); return true } catch { return false }
  })
}

interface GroupRecord { boot: string, start: number }

/** This boot's id (Linux), or '' where there is none. */
function bootId (): string {
  try { return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() } catch { return '' }
}

/** `[pgrp, starttime]` of a process from /proc, or null. */
function procStat (pid: number): [number, number] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the command name may hold spaces and parentheses: the fields start after its last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return [Number(fields[2]), Number(fields[19])]
  } catch {
    return null
  }
}

/** Whether some process of group `pgid` started no earlier than `start` (it belongs to the recorded run). */
function groupStartedSince (pgid: number, start: number): boolean {
  let pids: string[]
  try { pids = readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch { return false }
  return pids.some(p => {
    const st = procStat(Number(p))
    return st !== null && st[0] === pgid && st[1] >= start
  })
}

export class RunGroups {
  readonly dir: string
  /** This life's mark in every run's environment (`RUN_MARK_ENV`): the data dir's, then this life's. */
  readonly mark: string
  readonly #dirMark: string
  #log: Logger
  #boot = bootId()

  constructor (dataDir: string, logger: Logger) {
    this.dir = join(dataDir, RUN_GROUPS_DIR)
    this.#dirMark = dataDirMark(dataDir)
    this.mark = `${this.#dirMark}-${randomBytes(4).toString('hex')}`
    this.#log = logger
  }

  /**
   * Kills the groups an earlier life of this node left running, starts the
   * watchdog and records every group started from now on. Linux only (it reads
   * /proc); elsewhere it does nothing.
   */
  start (): void {
    if (this.#boot === '') return
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.#killLeftovers()
    observeGroups({
      started: pgid => {
        const st = procStat(pgid)
        try {
          // whole or not at all: a kill -9 in the middle of a write left an empty record, which no restart could read
          const tmp = join(this.dir, `.${pgid}.tmp`)
          writeFileSync(tmp, JSON.stringify({ boot: this.#boot, start: st?.[1] ?? 0 } satisfies GroupRecord))
          renameSync(tmp, join(this.dir, String(pgid)))
        } catch (err) {
          this.#log.warn('run:record-failed', { pgid, error: (err as Error).message, note: 'a kill -9 of this node may leave this run running' })
        }
      },
      ended: pgid => { rmSync(join(this.dir, String(pgid)), { force: true }) },
      env: { [RUN_MARK_ENV]: this.mark }
    })
    this.#startWatchdog()
  }

  /**
   * Called once the node's runs have ended (a graceful stop): kills what they
   * left outside their groups (a process an agent moved to a session of its own).
   */
  stop (): void {
    observeGroups(null)
    if (this.#boot === '') return
    for (const pid of killMarked(this.mark)) {
      this.#log.info('run:left-behind-killed', { pid, note: 'a process a run started outside its process group, killed as the node stops' })
    }
  }

  #killLeftovers (): void {
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name)
      const pgid = Number(name)
      let rec: GroupRecord | null = null
      try { rec = JSON.parse(readFileSync(file, 'utf8')) as GroupRecord } catch {}
      if (Number.isInteger(pgid) && pgid > 1 && rec !== null && rec.boot === this.#boot && groupStartedSince(pgid, rec.start)) {
        killGroup(pgid, 'SIGKILL')
        this.#log.warn('run:leftover-killed', { pgid, note: 'a run of this node\'s earlier life was still running (the node was killed); killed with its process group' })
      } else if (Number.isInteger(pgid)) {
        // only after a crash of node and watchdog both (a run's end removes its record): worth a line
        this.#log.info('run:leftover-gone', { pgid: name, record: rec, sameBoot: rec?.boot === this.#boot, note: 'a run recorded by an earlier life of this node is no longer running' })
      }
      rmSync(file, { force: true })
    }
    // what no record covers: a run the node was killed before recording, a process that left its group
    // every earlier life's (this one has started nothing yet)
    for (const pid of killMarked(`${this.#dirMark}-`)) {
      this.#log.warn('run:leftover-killed', { pid, note: 'a process of a run of this node\'s earlier life was still running (the node was killed); found by the mark in its environment' })
    }
  }

  /**
   * A detached shell that waits for this node to vanish, then kills every
   * group still recorded. It waits on a pipe whose other end only this node
   * holds (libuv opens every descriptor close-on-exec, so no run inherits it):
   * the kernel closes that end when the node exits, however it dies, and the
   * shell's read returns. No polling while the node lives (a `sleep` a second
   * was a process a second on an idle node). Its own process group, so a
   * terminal's Ctrl-C or a kill of the node's group leaves it to do its job.
   */
  #startWatchdog (): void {
    // then twice over /proc: every process whose environment carries this life's mark (a second pass for
    // children forked during the first; a later life's runs have another); grep prints the matching
    // environ files, /proc/PID/environ
    const script = [
      'while read -r _; do :; done',
      'for f in "$1"/*; do [ -e "$f" ] || continue; kill -KILL "-${f##*/}" 2>/dev/null; rm -f "$f"; done',
      'for pass in 1 2; do',
      '  for e in $(grep -lsaF "$2=$3" /proc/[0-9]*/environ 2>/dev/null); do p=${e#/proc/}; p=${p%/environ}; [ "$p" = "$$" ] || kill -KILL "$p" 2>/dev/null; done',
      'done'
    ].join('\n')
    try {
      const child = spawn('/bin/sh', ['-c', script, 'meshwork-watchdog', this.dir, RUN_MARK_ENV, this.mark], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] })
      child.on('error', err => { this.#log.warn('run:watchdog-failed', { error: err.message }) })
      child.unref()
      // the pipe stays open for the node's life without holding its event loop open
      const stdin = child.stdin
      if (stdin instanceof Socket) stdin.unref()
      stdin?.on('error', () => {})
      if (child.pid !== undefined) writeFileSync(join(this.dir, '..', 'watchdog.pid'), `${child.pid}\n`)
    } catch (err) {
      this.#log.warn('run:watchdog-failed', { error: (err as Error).message })
    }
  }
}
