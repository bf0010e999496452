import React from 'react'
import { render } from 'ink'
import type { Client } from '../api/client.ts'
import { App } from './app.ts'
import { liveActions, liveSource, MIN_FRAME_MS } from './source.ts'

export { App, type AppProps, type TuiActions, type TuiSource } from './app.ts'
export { liveActions, liveSource } from './source.ts'
export { renderPlain, plainSignature } from './plain.ts'

export interface RunTuiInit {
  client: Client
  /** Ring the terminal bell when something new waits on a human. @default true */
  bell?: boolean
  stdout?: NodeJS.WriteStream
  stdin?: NodeJS.ReadStream
}

/**
 * Runs the interactive TUI on a terminal until the user quits (q, Ctrl-C) or
 * the process gets SIGTERM. Draws on the alternate screen at most five frames
 * a second and restores the terminal on exit.
 */
export async function runTui (init: RunTuiInit): Promise<void> {
  const stdout = init.stdout ?? process.stdout
  const source = liveSource({ client: init.client })
  source.start()
  const bell = init.bell === false ? undefined : (): void => { stdout.write('\x07') }
  const app = render(React.createElement(App, { source, actions: liveActions(init.client), ...(bell !== undefined ? { bell } : {}) }), {
    stdout,
    stdin: init.stdin ?? process.stdin,
    // a terminal is a terminal even when CI=true is set: ink would otherwise only print the last frame
    interactive: true,
    alternateScreen: true,
    maxFps: Math.round(1000 / MIN_FRAME_MS),
    // whole frames (inside synchronized-output brackets, so no flicker): a line-diffing renderer never
    // repaints a line that did not change, which leaves it blank if anything cleared the screen meanwhile
    incrementalRendering: false,
    exitOnCtrlC: true,
    patchConsole: true
  })
  const onTerm = (): void => { app.unmount() }
  process.once('SIGTERM', onTerm)
  try {
    await app.waitUntilExit()
  } finally {
    process.off('SIGTERM', onTerm)
    await source.stop()
  }
}
