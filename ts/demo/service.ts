/**
 * The demo service behind `polycall serve` and `npm start`: a few plain routes and, under
 * `machine`, the C library's demo state machine (docs/protocol.md §9.1) exposed as routes.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError } from '../core/errors.js'
import type { ServerOptions } from '../server/options.js'
import { PolyCallServer } from '../server/server.js'
import { StateMachine, type StateMachineOptions } from '../state/machine.js'

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
  const machine = demoMachine()
  server.on('close', () => machine.free())
  const view = () => ({ current: machine.current, history: machine.history(), states: machine.states().map((s) => s.name) })
  server.route('machine', { GET: view }, { summary: 'the demo state machine: current state and history', idempotent: true })
  server.route(
    'machine/transition/:to',
    {
      POST: async (ctx) => {
        const record = await machine.transition(ctx.params['to']!, { signal: ctx.signal })
        return { ...record, current: machine.current }
      },
    },
    { summary: 'moves the demo machine to another state' },
  )
  server.route('machine/snapshot', { GET: () => machine.snapshot() }, { summary: 'a snapshot of the demo machine', idempotent: true })
  return server
}

/** The C library's demo machine: INIT, READY, RUNNING, PAUSED and the final ERROR. */
export function demoMachine(options?: StateMachineOptions): StateMachine {
  const sm = new StateMachine(options)
  for (const name of ['INIT', 'READY', 'RUNNING', 'PAUSED']) sm.addState(name)
  sm.addState('ERROR', { final: true })
  sm.addTransition('INIT', 'READY')
  sm.addTransition('READY', 'RUNNING')
  sm.addTransition('RUNNING', 'PAUSED')
  sm.addTransition('PAUSED', 'RUNNING')
  sm.addTransition('RUNNING', 'ERROR')
  return sm
}
