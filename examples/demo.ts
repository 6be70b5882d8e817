/**
 * The end-to-end demo run by `npm start`: a server and a client on loopback, the handshake,
 * authentication, several commands, state transitions through routes, a clean shutdown.
 */
import { Capability, PolyCallClient, PolyCallError, isPolyCallError } from '../ts/index.js'
import { createDemoServer } from '../ts/demo/service.js'

const step = (text: string) => console.log(`\n== ${text}`)
const show = (label: string, value: unknown) => console.log(`   ${label.padEnd(34)} ${JSON.stringify(value)}`)

step('server: the demo service on 127.0.0.1, authentication required')
const server = createDemoServer({ auth: { user: 'demo', password: 'demo' } })
const { port } = await server.listen(0, '127.0.0.1')
console.log(`   listening on 127.0.0.1:${port}`)
console.log(`   routes: ${server.router.routes().map((r) => `${r.method === '*' ? '' : `${r.method} `}${r.path}`).join(', ')}`)

step('client: connect and handshake')
const client = new PolyCallClient({ host: '127.0.0.1', port, timeout: 2000 })
await client.connect()
const caps = client.stats().capabilities
const names = Object.entries(Capability).filter(([, bit]) => caps & bit).map(([name]) => name)
console.log(`   negotiated capabilities: ${names.join(', ')} (0x${caps.toString(16)})`)

step('a command before authenticating is refused')
try {
  await client.request('status')
} catch (err) {
  if (!isPolyCallError(err)) throw err
  console.log(`   ${err.code}: ${err.message}`)
}

step('authenticate')
try {
  await client.authenticate({ username: 'demo', password: 'wrong' })
} catch (err) {
  console.log(`   wrong password -> ${(err as PolyCallError).code}`)
}
await client.authenticate({ username: 'demo', password: 'demo' })
console.log('   demo/demo accepted')

step('commands')
show('status', await client.request('status'))
show('echo {"hello":"world"}', await client.request('echo', { hello: 'world' }))
show('sum [1, 2, 3.5]', await client.request('sum', [1, 2, 3.5]))
try {
  await client.request('sum', 'not numbers')
} catch (err) {
  show('sum "not numbers"', `${(err as PolyCallError).code}: ${(err as PolyCallError).message}`)
}
const many = await Promise.all(Array.from({ length: 100 }, (_, i) => client.request('sum', [i, i])))
show('100 pipelined sums', `${many.length} answers, all correct: ${many.every((v, i) => v === 2 * i)}`)

step('the demo state machine through routes')
show('GET machine', await client.request('machine'))
for (const to of ['READY', 'RUNNING', 'PAUSED', 'RUNNING']) {
  const t = (await client.request(`POST machine/transition/${to}`)) as { from: string; to: string }
  show(`POST machine/transition/${to}`, `${t.from} -> ${t.to}`)
}
try {
  await client.request('POST machine/transition/INIT')
} catch (err) {
  const e = err as PolyCallError
  show('POST machine/transition/INIT', `refused: ${e.code}`)
}
const snapshot = (await client.request('machine/snapshot')) as { currentState: string; history: unknown[]; checksum: number }
show('GET machine/snapshot', { currentState: snapshot.currentState, history: snapshot.history.length, checksum: snapshot.checksum })

step('shutdown')
const clientStats = client.stats()
await client.close()
await server.close()
const s = server.stats()
const c = clientStats.requests
console.log(`   client: ${c.total} requests, ${c.succeeded} succeeded, ${c.failed} failed, p50 ${clientStats.latency.p50} ms`)
console.log(`   server: ${s.requests.total} requests, ${s.requests.succeeded} succeeded, ${s.requests.failed} failed, ${s.connections.total} connection(s), closed cleanly`)
// The server counts what reached its handlers; a command the session refused (the one sent
// before authenticating) never did.
const refused = c.total - s.requests.total
console.log(
  refused === 0
    ? '   the totals agree'
    : `   the totals differ by ${refused}: the session refused ${refused === 1 ? 'the command' : `${refused} commands`} sent before authenticating, before any handler saw ${refused === 1 ? 'it' : 'them'}`,
)
