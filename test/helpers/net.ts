import { createServer } from 'node:net'

/** A well-formed peer id nobody runs. */
export const NOBODY = '12D3KooWLRPJAA5o6RB1pnZqDvsdgqm6bjTDbRKNdHKHNsMk6AQp'

/** A loopback port nobody listens on: bound by us, then closed. */
export async function closedPort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>(resolve => { srv.listen(0, '127.0.0.1', resolve) })
  const port = (srv.address() as { port: number }).port
  await new Promise<void>(resolve => { srv.close(() => { resolve() }) })
  return port
}
