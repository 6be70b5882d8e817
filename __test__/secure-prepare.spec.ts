// The client builds the first message of an IK or NK secure handshake while the connection is
// being made. Whatever becomes of the attempt, no native session is left behind: the native
// session table's size is read before and after each attempt (the tests are serial, so nothing
// else makes sessions meanwhile).
import test from 'ava'
import { readFileSync } from 'node:fs'
import { connect as netConnect, createServer, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { setImmediate as tick } from 'node:timers/promises'
import { ErrorCode, type SecureClientOptions, type SecurePattern } from '../ts/index.js'
import { native } from '../ts/native.js'
import { freePort } from './helpers/processes.js'
import { identity, newClient, rejection, settles, startServer } from './helpers/secure.js'

const pem = (name: string) => readFileSync(new URL(`./fixtures/tls/${name}`, import.meta.url))

const live = () => native.secureLiveCount()

function dialTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port })
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

test.serial('IK and NK: the first message exists while the connection is made; a failed dial destroys it', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId } })
  const options: Record<SecurePattern, SecureClientOptions> = {
    IK: { serverKey: serverId.toString(), identity: clientId },
    NK: { serverKey: serverId.publicKey },
    XX: { serverKey: (key) => key === serverId.toString(), identity: clientId },
  }
  for (const pattern of ['IK', 'NK', 'XX'] as const) {
    const base = live()
    let during = -1
    const failing = newClient(t, port, {
      secure: options[pattern],
      dial: async () => {
        await tick()
        during = live()
        throw new Error('no route to the server')
      },
    })
    const err = await rejection(failing.connect())
    t.is(err.code, ErrorCode.CONNECT_FAILED, pattern)
    // XX checks the server key with a callback after message 2: nothing is built early.
    t.is(during, pattern === 'XX' ? base : base + 1, pattern)
    t.is(live(), base, `${pattern}: the prepared channel was destroyed`)
    await failing.close()

    const client = newClient(t, port, {
      secure: options[pattern],
      dial: async () => {
        await tick()
        during = live()
        return dialTo(port)
      },
    })
    await client.connect()
    t.is(during, pattern === 'XX' ? base : base + 1, pattern)
    t.deepEqual(await client.request('echo', { pattern }), { pattern })
    await client.close()
  }
})

test.serial('a refused TCP connect leaves no live native session', async (t) => {
  const serverId = identity(t)
  const port = await freePort()
  const base = live()
  for (const secure of [{ serverKey: serverId.toString(), identity: identity(t) }, { serverKey: serverId.publicKey }]) {
    const client = newClient(t, port, { secure })
    const err = await rejection(client.connect())
    t.is(err.code, ErrorCode.CONNECT_FAILED)
    t.is(live(), base)
    await client.close()
  }
})

test.serial('a failed TLS handshake under a secure session leaves no live native session', async (t) => {
  const serverId = identity(t)
  const tlsServer = createTlsServer({ key: pem('server.key'), cert: pem('server.crt') }, (s) => s.destroy())
  tlsServer.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => settles('tls server close', new Promise((resolve) => tlsServer.close(() => resolve()))))
  const { port } = tlsServer.address() as { port: number }
  const base = live()
  // No `ca`: the client does not trust the server's certificate.
  const client = newClient(t, port, { tls: {}, secure: { serverKey: serverId.toString(), identity: identity(t) } })
  const err = await rejection(client.connect())
  t.is(err.code, ErrorCode.CONNECT_FAILED)
  t.is(live(), base)
  await client.close()
})

test.serial('a server that never answers the hello: the setup times out and the channel goes with the connection', async (t) => {
  const serverId = identity(t)
  const sockets = new Set<Socket>()
  const silent = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
  })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return settles('silent server close', new Promise((resolve) => silent.close(() => resolve())))
  })
  const { port } = silent.address() as { port: number }
  const base = live()
  const client = newClient(t, port, { connectTimeout: 300, secure: { serverKey: serverId.publicKey } })
  // connect()'s own bound is wider, so the setup's bound (connectTimeout) is the one that fires.
  const err = await rejection(client.connect({ timeout: 10_000 }))
  t.is(err.code, ErrorCode.CONNECT_FAILED)
  t.regex(err.message, /connection setup timed out/)
  t.is(live(), base)
  await client.close()
})

test.serial('over TLS the prepared handshake completes: IK through a trusted TLS server', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, {
    tls: { key: pem('server.key'), cert: pem('server.crt') },
    secure: { identity: serverId, required: true },
  })
  const client = newClient(t, port, { tls: { ca: pem('ca.crt') }, secure: { serverKey: serverId.toString(), identity: clientId } })
  t.deepEqual(await client.request('echo', [1, 2]), [1, 2])
})
