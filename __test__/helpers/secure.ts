// Servers, clients and identities for the secure-session specs: everything made here is closed
// (and the close awaited, within a bound) when the test ends.
import type { ExecutionContext } from 'ava'
import { Identity, PolyCallClient, PolyCallServer, type ClientOptions, type PeerInfo, type PolyCallError, type ServerOptions } from '../../ts/index.js'

export async function settles(what: string, p: Promise<void>, ms = 5000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)))])
  clearTimeout(timer)
}

/** Rejects when `p` has not settled within `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms))),
  ])
}

export function identity(t: ExecutionContext): Identity {
  const id = Identity.generate()
  t.teardown(() => id.destroy())
  return id
}

/** A server with an `echo` route (data back) and a `who` route (principal and peer). */
export async function startServer(t: ExecutionContext, options: ServerOptions, setup?: (server: PolyCallServer) => void) {
  const server = new PolyCallServer({ onError: () => {}, ...options })
  server.route('echo', (ctx) => ctx.data)
  server.route('who', (ctx) => ({
    principal: ctx.principal ?? null,
    secure: ctx.peer.secure ?? null,
    publicKey: ctx.peer.publicKey ?? null,
    tls: ctx.peer.tls,
  }))
  setup?.(server)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => settles('server.close()', server.close({ timeout: 1000 })))
  return { server, port }
}

export function newClient(t: ExecutionContext, port: number, options: Partial<ClientOptions>): PolyCallClient {
  const client = new PolyCallClient({ host: '127.0.0.1', reconnect: false, timeout: 5000, connectTimeout: 5000, ...options, port })
  t.teardown(() => settles('client.close()', client.close({ timeout: 1000 })))
  return client
}

/** The next `disconnect` of the server: its peer and the error that ended the connection. */
export function nextDisconnect(server: PolyCallServer, ms = 5000): Promise<{ peer: PeerInfo; error: PolyCallError | undefined }> {
  return within(
    new Promise((resolve) => server.once('disconnect', (peer, error) => resolve({ peer, error }))),
    ms,
    'server disconnect',
  )
}

/** Rejects with the error `p` rejects with, or fails when it resolves. */
export async function rejection(p: Promise<unknown>, ms = 5000): Promise<PolyCallError> {
  try {
    await within(p, ms, 'expected a rejection')
  } catch (e) {
    return e as PolyCallError
  }
  throw new Error('expected a rejection, got a result')
}
