// Unknown option keys are refused, naming the key; handler errors are logged by default.
import test from 'ava'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ErrorCode, FrameDecoder, PolyCallClient, PolyCallServer, StateMachine, createContext } from '../ts/index.js'

const run = promisify(execFile)
const entry = fileURLToPath(new URL('../ts/index.ts', import.meta.url))

const refused = (t: import('ava').ExecutionContext, fn: () => unknown, key: string, suggestion?: string) => {
  const err = t.throws(fn, { code: ErrorCode.INVALID_ARGUMENT })
  t.true(err!.message.includes(`unknown option "${key}"`), err!.message)
  if (suggestion) t.true(err!.message.includes(`did you mean ${suggestion}?`), err!.message)
}

test('constructors refuse option keys they do not know, and suggest the near one', (t) => {
  refused(t, () => new PolyCallServer({ maxInflight: 4 } as never), 'maxInflight', 'maxInFlight')
  refused(t, () => new PolyCallClient({ port: 1, timout: 5 } as never), 'timout', 'timeout')
  refused(t, () => new PolyCallClient({ port: 1, retries: 3 } as never), 'retries')
  refused(t, () => new StateMachine({ maxhistory: 3 } as never), 'maxhistory', 'maxHistory')
  refused(t, () => new FrameDecoder({ maxPayLoad: 10 } as never), 'maxPayLoad', 'maxPayload')
  refused(t, () => createContext({ limit: {} } as never), 'limit', 'limits')
  refused(t, () => createContext({ limits: { maxConnection: 1 } } as never), 'maxConnection', 'maxConnections')
})

test('every documented option is accepted', (t) => {
  const server = new PolyCallServer({
    protocol: 'v1',
    authenticate: () => ({}),
    requireAuth: false,
    tls: undefined,
    maxConnections: 5,
    maxPayload: 1024,
    maxInFlight: 4,
    handshakeTimeout: 100,
    idleTimeout: 0,
    heartbeatInterval: 0,
    requestTimeout: 100,
    stallTimeout: 100,
    controlToken: undefined,
    onError: () => {},
  })
  t.teardown(() => server.destroy())
  const client = new PolyCallClient({
    host: '127.0.0.1',
    port: 1,
    protocol: 'v1',
    tls: false,
    timeout: 10,
    connectTimeout: 10,
    credentials: undefined,
    reconnect: false,
    maxInFlight: 2,
    heartbeatInterval: 0,
    legacy: false,
    codec: 'json',
    callerStacks: false,
  })
  t.teardown(() => client.destroy())
  const sm = new StateMachine({ maxHistory: 1, allowSelfTransitions: true, maxStates: 2, maxTransitions: 2, maxNameLength: 8 })
  t.teardown(() => sm.free())
  new FrameDecoder({ maxPayload: 8 }).free()
  const ctx = createContext({ timeout: 1, connectTimeout: 1, reconnect: false, codec: 'msgpack', limits: { maxInFlight: 1 }, logger: {} })
  t.teardown(() => ctx.close())
  t.pass()
})

test('call options: request() and control() refuse unknown keys before anything is sent', async (t) => {
  const client = new PolyCallClient({ port: 1, reconnect: false })
  t.teardown(() => client.destroy())
  const err = await t.throwsAsync(client.request('x', undefined, { timeOut: 5 } as never), { code: ErrorCode.INVALID_ARGUMENT })
  t.regex(err!.message, /unknown option "timeOut" in RequestOptions \(did you mean timeout\?\)/)
  t.is(client.stats().requests.total, 0)
  const pcr1 = new PolyCallClient({ port: 1, protocol: 'pcr1', reconnect: false })
  t.teardown(() => pcr1.destroy())
  await t.throwsAsync(pcr1.control('ping', { token: 'x' } as never), { code: ErrorCode.INVALID_ARGUMENT, message: /"token" in ControlOptions/ })
})

/** Runs a server whose handler throws, calls it once, and returns the process's stderr. */
async function handlerErrorStderr(serverOptions: string): Promise<string> {
  const script = `
    import { PolyCallClient, PolyCallError, PolyCallServer } from ${JSON.stringify(entry)}
    const server = new PolyCallServer(${serverOptions})
    server.route('boom', () => { throw new TypeError('the handler has a bug') })
    server.route('refuse', () => { throw new PolyCallError('ERR_APP_NO', 'a deliberate answer') })
    const { port } = await server.listen(0, '127.0.0.1')
    const client = new PolyCallClient({ port })
    for (const command of ['boom', 'refuse']) await client.request(command).catch((e) => console.log(e.code))
    await client.close()
    await server.close()`
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 30_000 })
  if (stdout.trim() !== `${ErrorCode.INTERNAL}\nERR_APP_NO`) throw new Error(`unexpected replies: ${stdout}`)
  return stderr
}

test('without onError, a handler error is logged as one line with its code and command; onError: () => {} silences it', async (t) => {
  const stderr = await handlerErrorStderr('{}')
  const lines = stderr.trim().split('\n')
  t.is(lines.length, 1, stderr)
  t.regex(lines[0]!, /^polycall server: ERR_POLYCALL_INTERNAL from "boom": TypeError: the handler has a bug/)
  t.false(stderr.includes('deliberate'), 'an error a handler chose to send is an answer, not a bug')
  t.is(await handlerErrorStderr('{ onError: () => {} }'), '')
})
