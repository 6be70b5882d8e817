// TLS and mutual TLS with committed test certificates (__test__/fixtures/tls, valid until 2126).
import test, { type ExecutionContext } from 'ava'
import { X509Certificate, createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ErrorCode, PolyCallClient, PolyCallServer, type ClientOptions, type PolyCallError, type ServerOptions } from '../ts/index.js'

const pem = (name: string) => readFileSync(new URL(`./fixtures/tls/${name}`, import.meta.url))
const ca = pem('ca.crt')
const serverTls = { key: pem('server.key'), cert: pem('server.crt') }
// Every server and client is closed, and the close awaited, when a test ends: a close that
// never settles (say, after a failed TLS handshake) fails the test instead of hiding.
async function settles(what: string, p: Promise<void>, ms = 5000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)))])
  clearTimeout(timer)
}

async function startServer(t: ExecutionContext, options: ServerOptions, setup?: (server: PolyCallServer) => void) {
  const server = new PolyCallServer(options)
  setup?.(server)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => settles('server.close()', server.close({ timeout: 1000 })))
  return { server, port }
}

function newClient(t: ExecutionContext, port: number, options: Partial<ClientOptions>): PolyCallClient {
  const client = new PolyCallClient({ host: '127.0.0.1', reconnect: false, ...options, port })
  t.teardown(() => settles('client.close()', client.close({ timeout: 1000 })))
  return client
}

const spki = (cert: Buffer) =>
  createHash('sha256').update(new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' })).digest('base64')

test('TLS: a client trusting the CA connects; certificate validation is on by default', async (t) => {
  const { port } = await startServer(t, { tls: serverTls }, (s) => s.route('who', (ctx) => ({ tls: ctx.peer.tls })))
  const client = newClient(t, port, { tls: { ca } })
  t.deepEqual(await client.request('who'), { tls: true })
  const untrusting = newClient(t, port, { tls: true })
  const err = (await t.throwsAsync(untrusting.connect())) as PolyCallError
  t.is(err.code, ErrorCode.CONNECT_FAILED)
  t.regex(err.message, /certificate/i)
})

test('TLS: a server certificate from another CA is refused', async (t) => {
  const { port } = await startServer(t, { tls: { key: pem('server-other.key'), cert: pem('server-other.crt') } })
  const client = newClient(t, port, { tls: { ca } })
  const err = (await t.throwsAsync(client.connect())) as PolyCallError
  t.is(err.code, ErrorCode.CONNECT_FAILED)
})

test('mutual TLS: the principal carries the client certificate subject, and requireAuth is satisfied by it', async (t) => {
  const { port } = await startServer(t, { tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: true }, requireAuth: true }, (s) =>
    s.route('me', (ctx) => ({ principal: ctx.principal, peer: ctx.peer.certificate?.subject })),
  )
  const client = newClient(t, port, { tls: { ca, key: pem('client.key'), cert: pem('client.crt') } })
  const me = (await client.request('me')) as { principal: { subject: Record<string, string>; fingerprint256: string }; peer: Record<string, string> }
  t.is(me.principal.subject['CN'], 'client-1')
  t.is(me.principal.subject['O'], 'polycall tests')
  t.regex(me.principal.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
  t.is(me.peer['CN'], 'client-1')
})

test('mutual TLS: no client certificate, or one from another CA, is refused', async (t) => {
  const { port } = await startServer(t, { tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: true } })
  const anonymous = newClient(t, port, { tls: { ca } })
  t.is(((await t.throwsAsync(anonymous.connect())) as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  const intruder = newClient(t, port, { tls: { ca, key: pem('client-other.key'), cert: pem('client-other.crt') } })
  t.is(((await t.throwsAsync(intruder.connect())) as PolyCallError).code, ErrorCode.CONNECT_FAILED)
})

test('mutual TLS with an authenticate hook: the hook sees the certificate', async (t) => {
  let seenCN: unknown
  const { port } = await startServer(
    t,
    {
      tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: true },
      authenticate: (creds, peer) => {
        seenCN = peer.certificate?.subject['CN']
        return { creds, cn: peer.certificate?.subject['CN'] }
      },
    },
    (s) => s.route('me', (ctx) => ctx.principal),
  )
  const client = newClient(t, port, { tls: { ca, key: pem('client.key'), cert: pem('client.crt') }, credentials: { token: 't' } })
  t.deepEqual(await client.request('me'), { creds: { token: 't' }, cn: 'client-1' })
  t.is(seenCN, 'client-1')
})

test('certificate pinning by SPKI SHA-256: a match connects, a mismatch is refused', async (t) => {
  const { port } = await startServer(t, { tls: serverTls }, (s) => s.route('x', () => 'pinned'))
  const good = newClient(t, port, { tls: { ca, pin: [`sha256/${spki(pem('server.crt'))}`] } })
  t.is(await good.request('x'), 'pinned')
  const bad = newClient(t, port, { tls: { ca, pin: spki(pem('server-other.crt')) } })
  const err = (await t.throwsAsync(bad.connect())) as PolyCallError
  t.is(err.code, ErrorCode.TLS_PIN_MISMATCH)
})
