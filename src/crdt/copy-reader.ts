import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { materializeDocument } from './document-reader.ts'
import { isMap } from './mirror.ts'
import { RECORD_SECTIONS, parseEntry, type RecordSection } from './entries.ts'

/*
 * A joiner's copy of a whole board, read on a second thread. A node that
 * joins a mesh receives the board as one document (`Board`'s
 * `#receiveDocument`); its main thread loads it into Automerge and checks every
 * change in it, and the copy the board reads its entries from (the document
 * read lean by document-reader.ts, each record through its schema) depends
 * only on the document's bytes. So a worker thread reads it meanwhile, on the
 * other core: for a board of 10,000 tasks that is about 0.3 s of the main
 * thread's 1.4 s, against 0.07-0.1 s to take the worker's answer (a real
 * joiner on this project's 2-core hosts, where the sender runs too, gained
 * 3-5 %: docs/benchmarks.md). The main thread
 * waits for it synchronously (`Atomics.wait`; the board's API is synchronous)
 * and reads the copy itself when the worker did not start, failed, or is slow.
 */

/** A document chunk from this size up is read aside (about 2,500 tasks; smaller ones take less than a worker's start). @default 64 KiB */
export const COPY_ASIDE_BYTES = 64 * 1024

/**
 * Longest the main thread waits for a worker that has started, once it needs
 * the copy, before it reads it itself (about 0.3 s of work at 10,000 tasks,
 * which the worker has had the main thread's load and checks to do). @default 1 s
 */
export const COPY_ASIDE_WAIT_MS = 1000

/** The worker's state, in a shared Int32: not started yet, waiting for the chunk, reading it, answered. */
export const AsideState = { Starting: 0, Started: 1, Reading: 2, Answered: 3 } as const

/** What a worker is given: the port it answers on and the state it keeps. */
export interface CopyWorkerData {
  port: MessagePort
  state: Int32Array
}

/** A document's copy and its records, read from its bytes. */
export interface CopyRead {
  /** The document's heads (the caller takes the copy only for a document with exactly these). */
  heads: string[]
  /** The plain copy (document-reader.ts, lean). */
  root: Record<string, unknown>
  /** The records of each section that pass their schema (`parseEntry`), by key, in the copy's order. */
  entries: Record<RecordSection, Array<[string, unknown]>>
  /** The entries that do not, as `section/key` labels and why. */
  invalid: Array<[string, string]>
}

/** `chunk` (a document chunk) read lean and its records parsed; null when document-reader.ts does not read it. */
export function readCopy (chunk: Uint8Array): CopyRead | null {
  const read = materializeDocument(chunk, { lean: true })
  if (read === null) return null
  const entries: CopyRead['entries'] = { tasks: [], nodes: [], conflicts: [] }
  const invalid: Array<[string, string]> = []
  for (const section of RECORD_SECTIONS) {
    // (as the board's copy reads a section: anything but a map at its place has no records)
    const s = read.root[section]
    if (!isMap(s)) continue
    for (const key of Object.keys(s)) {
      const e = parseEntry(section, key, s[key])
      if ('value' in e) entries[section].push([key, e.value])
      else invalid.push([`${section}/${key}`, e.why])
    }
  }
  return { heads: read.heads, root: read.root, entries, invalid }
}

/** The worker script beside this module (`.ts` from a clone, `.js` when built or bundled: the bundle has it as an entry of its own). */
export function copyWorkerScript (): string {
  const here = fileURLToPath(import.meta.url)
  return join(dirname(here), `copy-worker${extname(here)}`)
}

/** A read of one document chunk on a worker thread (`CopyReader.start`), taken once (`take`). */
export class CopyReader {
  readonly #worker: Worker
  readonly #port: MessagePort
  readonly #state: Int32Array
  #taken = false

  private constructor (worker: Worker, port: MessagePort, state: Int32Array) {
    this.#worker = worker
    this.#port = port
    this.#state = state
  }

  /** Starts reading `chunk` on a new worker thread; null when no worker could be made. */
  static start (chunk: Uint8Array, script = copyWorkerScript()): CopyReader | null {
    const { port1, port2 } = new MessageChannel()
    const state = new Int32Array(new SharedArrayBuffer(4))
    let worker: Worker
    try {
      worker = new Worker(script, { workerData: { port: port2, state } satisfies CopyWorkerData, transferList: [port2] })
    } catch {
      port1.close()
      return null
    }
    // a worker that fails (a missing script, an error while it reads) is only a read the main thread makes itself
    worker.on('error', () => {})
    worker.unref()
    port1.postMessage(chunk)
    return new CopyReader(worker, port1, state)
  }

  /**
   * The worker's read, waiting for it (at most `waitMs`) while it is under
   * way; null when it failed, did not read the chunk, had not started, or did
   * not answer in time (the caller reads the copy itself). Ends the worker.
   */
  take (waitMs = COPY_ASIDE_WAIT_MS): CopyRead | null {
    if (this.#taken) return null
    this.#taken = true
    try {
      let s = Atomics.load(this.#state, 0)
      const until = performance.now() + waitMs
      while ((s === AsideState.Started || s === AsideState.Reading) && performance.now() < until) {
        Atomics.wait(this.#state, 0, s, Math.max(1, until - performance.now()))
        s = Atomics.load(this.#state, 0)
      }
      if (s !== AsideState.Answered) return null
      const got = receiveMessageOnPort(this.#port)?.message as CopyRead | null | undefined
      return got ?? null
    } finally {
      this.close()
    }
  }

  /** Whether the worker has answered (its read is there to take). */
  get answered (): boolean {
    return Atomics.load(this.#state, 0) === AsideState.Answered
  }

  /** Ends the worker without taking its read. */
  close (): void {
    this.#taken = true
    this.#port.close()
    void this.#worker.terminate().catch(() => {})
  }
}
