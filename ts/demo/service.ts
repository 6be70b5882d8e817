/**
 * The demo service behind `polycall serve` and `npm start`: a few plain routes and, under
 * `/machines`, the C library's demo state machine exposed as routes.
 * @internal
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError } from '../core/errors.js'
import { PolyCallServer, type ServerOptions } from '../server/server.js'

export interface DemoOptions {
  /** Require this user and password. */
  auth?: { user: string; password: string }
  server?: ServerOptions
}

/** Builds (does not start) the demo server. */
export function createDemoServer(options: DemoOptions = {}): PolyCallServer {
  const { auth } = options
  const server = new PolyCallServer({
    ...options.server,
    ...(auth
      ? {
          requireAuth: true,
          authenticate: (credentials: unknown) => {
            const c = credentials as { username?: unknown; password?: unknown } | null
            if (c?.username !== auth.user || c?.password !== auth.password) {
              throw new PolyCallError(ErrorCode.UNAUTHENTICATED, 'unknown user or wrong password')
            }
            return { user: auth.user }
          },
        }
      : {}),
  })
  server.route('status', (ctx) => ({ status: 'ok', principal: ctx.principal ?? null, time: new Date().toISOString() }), {
    summary: 'service health and the caller',
    idempotent: true,
  })
  server.route('echo', (ctx) => ctx.data, { summary: 'returns its input', idempotent: true })
  server.route(
    'sum',
    (ctx) => {
      const values = ctx.data
      if (!Array.isArray(values) || !values.every((v) => typeof v === 'number')) {
        throw new PolyCallError('ERR_APP_INVALID_INPUT', 'sum expects an array of numbers')
      }
      return values.reduce((a, b) => a + b, 0)
    },
    { summary: 'adds an array of numbers', idempotent: true },
  )
  return server
}
