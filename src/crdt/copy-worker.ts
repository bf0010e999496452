/**
 * The worker thread of copy-reader.ts: reads the one document chunk it is
 * sent (`readCopy`), answers on its port, and says so in its shared state.
 */
import { workerData } from 'node:worker_threads'
import { AsideState, readCopy, type CopyRead, type CopyWorkerData } from './copy-reader.ts'

const { port, state } = workerData as CopyWorkerData
Atomics.store(state, 0, AsideState.Started)
port.once('message', (chunk: Uint8Array) => {
  Atomics.store(state, 0, AsideState.Reading)
  let read: CopyRead | null = null
  try {
    read = readCopy(chunk)
  } catch {
    // not read here: the main thread reads it
  }
  try {
    port.postMessage(read)
  } catch {
    port.postMessage(null)
  }
  Atomics.store(state, 0, AsideState.Answered)
  Atomics.notify(state, 0)
})
