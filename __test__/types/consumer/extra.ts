// A consumer of the packed package, type-checked by `npm run pack:test` with strict and
// skipLibCheck off under node16 and bundler resolution, beside every snippet of the README and
// the guides. Nothing here runs; the declarations must compile and carry these types.
import {
  Capability,
  Context,
  ErrorCode,
  FrameDecoder,
  MessageType,
  PolyCallClient,
  PolyCallError,
  PolyCallServer,
  Router,
  SessionMachine,
  StateMachine,
  checksum,
  createContext,
  defineContract,
  diagnosticsChannels,
  encodeFrame,
  inspectFrame,
  isPolyCallError,
  parseHandshake,
  type Authenticator,
  type ClientEvents,
  type Credentials,
  type DecodeError,
  type Frame,
  type RequestContext,
  type ServerOptions,
  type StateMachineSnapshot,
  type TransitionRecord,
  type WireFrame,
} from 'polycall'
import { MemoryLink, connectInMemory } from 'polycall/testing'
import { z } from 'zod'

// Errors: a class with a code, a guard that narrows.
const failure: unknown = new PolyCallError(ErrorCode.NOT_FOUND, 'no route', { cause: new Error('x') })
if (isPolyCallError(failure)) {
  const code: string = failure.code
  const errno: number | undefined = failure.errno
  void [code, errno]
}

// Frames: the decoder's inherited members are declared.
const decoder = new FrameDecoder({ maxPayload: 1024 })
const frames: Frame[] = decoder.push(encodeFrame({ type: MessageType.Command, sequence: 1, payload: Buffer.from('{}') }))
const pending: boolean = decoder.pending
const held: number = decoder.buffered
decoder.end()
decoder.free()
const sum: number = checksum(Buffer.from('hello'))
const info = inspectFrame(encodeFrame({ type: MessageType.Heartbeat, sequence: 0 }))
const problems: string[] = info.problems.map((p) => p.code)
const hello = parseHandshake(Buffer.from([0x43, 0x4c, 0x50, 0x00]))
const decodeError = (e: DecodeError): Frame[] => e.frames
void [frames, pending, held, sum, problems, hello, decodeError, Capability.Msgpack]

// Authentication: the default credentials, and a verifier for another scheme.
const byPassword: Authenticator = ({ username, password }: Credentials) => (username === 'ada' && password === 'pw' ? { user: username } : null)
const byToken: Authenticator<unknown> = (credentials, peer) => {
  if (typeof credentials !== 'object' || credentials === null || !('token' in credentials)) throw new PolyCallError(ErrorCode.UNAUTHENTICATED, 'no token')
  return { token: String(credentials.token), from: peer.remoteAddress }
}
const options: ServerOptions = { requireAuth: true, authenticate: byToken, maxInFlight: 16 }
const withPassword = new PolyCallServer({ requireAuth: true, authenticate: byPassword })

// The server is an EventEmitter whose events are typed.
const srv = new PolyCallServer(options)
const listeners: number = srv.listenerCount('connect')
srv.on('disconnect', (peer, error) => void [peer.remoteAddress, error?.code])
srv.use(async (ctx: RequestContext, next) => {
  await next()
  void [ctx.command, ctx.params, ctx.query, ctx.principal, ctx.deadline, ctx.signal.aborted]
})
srv.route('/users/:id', { GET: (ctx) => ({ id: ctx.params['id'] }) }, { idempotent: true, summary: 'one user' })
const router: Router = srv.router
void [listeners, router.find('GET /users/1')?.params, withPassword]

// Clients: events, stats, typed contracts, disposal.
const api = defineContract({
  'users.get': { input: z.object({ id: z.string() }), output: z.object({ id: z.string(), name: z.string() }) },
})
srv.implement(api, { 'users.get': (ctx) => ({ id: ctx.data.id, name: 'Ada' }) })
async function useClient(port: number): Promise<string> {
  await using c = new PolyCallClient({ host: '127.0.0.1', port, timeout: 1000, reconnect: { maxAttempts: 3 } })
  c.on('unsolicited', (frame: WireFrame) => void frame.sequence)
  const onConnect: (...args: ClientEvents['connect']) => void = (info) => void info.capabilities
  c.on('connect', onConnect)
  const user = await c.typed(api)['users.get']({ id: '1' }, { timeout: 500 })
  const inFlight: number = c.stats().requests.inFlight
  void inFlight
  return user.name
}

// State machines and their snapshots.
const sm = new StateMachine({ maxHistory: 10 })
sm.addState('A')
sm.addState('B', { final: true })
sm.addTransition('A', 'B', { guard: async ({ signal }) => !signal.aborted })
async function drive(): Promise<TransitionRecord> {
  const record = await sm.transition('B', { timeout: 100 })
  const snap: StateMachineSnapshot = sm.snapshot()
  await new StateMachine().restore(snap)
  return record
}
const session = new SessionMachine('client')
void [session.state, drive]

// Contexts and in-memory tests.
async function contexts(): Promise<void> {
  await using ctx: Context = createContext({ timeout: 2000, limits: { maxInFlight: 8 }, logger: console })
  const s = ctx.server()
  s.route('ping', () => 'pong')
  const { client: c, link } = await connectInMemory(s, { timeout: 500 })
  const memory: MemoryLink = link
  memory.delay(10)
  memory.corrupt({ direction: 'toClient', offset: 0 })
  memory.drop()
  await c.close()
}
void [useClient, contexts, diagnosticsChannels]
