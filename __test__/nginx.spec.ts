// polycall servers behind a real nginx `stream` balancer on loopback (v1 and PCR1).
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { PolyCallClient, PolyCallServer } from '../ts/index.js'
import { nginxBuild, nginxSkipReason, startNginx } from './helpers/nginx.js'

// Chosen at load time: without nginx (and its stream module) every test here is a visible, passing skip.
const test: TestFn = nginxBuild ? anyTest : (anyTest.skip as TestFn)
if (!nginxBuild) {
  anyTest('nginx specs skipped', (t) => {
    t.log(nginxSkipReason)
    t.pass()
  })
}

async function backends(t: ExecutionContext, protocol: 'v1' | 'pcr1', count: number) {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const server = new PolyCallServer({ protocol })
      const tag = `backend-${i}`
      if (protocol === 'pcr1') {
        server.route('demo.whoami', () => ({ tag }))
        server.route('demo.echo', (ctx) => ctx.data)
      } else {
        server.route('whoami', () => tag)
        server.route('/echo/:n', (ctx) => ({ n: ctx.params.n, data: ctx.data }))
      }
      const { port } = await server.listen(0, '127.0.0.1')
      t.teardown(() => server.close({ timeout: 1000 }))
      return { server, port, tag }
    }),
  )
}

function client(t: ExecutionContext, port: number, protocol: 'v1' | 'pcr1' = 'v1'): PolyCallClient {
  const c = new PolyCallClient({ port, protocol, reconnect: false, timeout: 5000 })
  t.teardown(() => c.destroy())
  return c
}

test('v1 through nginx stream: connections are spread over both servers, calls and pipelining work', async (t) => {
  const servers = await backends(t, 'v1', 2)
  const nginx = await startNginx(t, { upstreams: servers.map((s) => s.port) })
  t.log(`nginx ${nginxBuild!.version} on ${nginx.port}`)
  const tags = new Map<string, number>()
  for (let i = 0; i < 10; i++) {
    const c = client(t, nginx.port)
    const tag = (await c.request('whoami')) as string
    tags.set(tag, (tags.get(tag) ?? 0) + 1)
    await c.close()
  }
  // nginx's round robin alternates the upstream per connection.
  t.deepEqual([...tags.keys()].sort(), ['backend-0', 'backend-1'])
  t.is(tags.get('backend-0'), 5)

  const c = client(t, nginx.port)
  const big = Buffer.alloc(200_000, 7)
  const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => c.request(`/echo/${i}`, i % 8 === 0 ? big : { i })))
  replies.forEach((r, i) => t.deepEqual(r, { n: String(i), data: i % 8 === 0 ? big : { i } }))
  const stats = servers.map((s) => s.server.stats().requests.total)
  t.is(stats[0]! + stats[1]!, 10 + 64)
})

test('PCR1 through nginx stream: both servers answer the runtime wire', async (t) => {
  const servers = await backends(t, 'pcr1', 2)
  const nginx = await startNginx(t, { upstreams: servers.map((s) => s.port) })
  const seen = new Set<string>()
  for (let i = 0; i < 6; i++) {
    const c = client(t, nginx.port, 'pcr1')
    seen.add(((await c.request('demo.whoami', {})) as { tag: string }).tag)
    t.deepEqual(await c.request('demo.echo', { i, text: 'é' }), { i, text: 'é' })
    await c.close()
  }
  t.deepEqual([...seen].sort(), ['backend-0', 'backend-1'])
})

test('nginx skips an upstream that refuses connections, and a reload changes the set', async (t) => {
  const servers = await backends(t, 'v1', 2)
  const nginx = await startNginx(t, { upstreams: servers.map((s) => s.port) })
  await servers[0]!.server.close()
  // Every new connection still lands: a refused connect moves on to the next upstream.
  for (let i = 0; i < 6; i++) {
    const c = client(t, nginx.port)
    t.is(await c.request('whoami'), 'backend-1')
    await c.close()
  }
  t.regex(await nginx.log(), /connect\(\) failed \(111: Connection refused\)/)

  const third = await backends(t, 'v1', 1)
  await nginx.reload([third[0]!.port])
  for (let i = 0; i < 4; i++) {
    const c = client(t, nginx.port)
    t.is(await c.request('whoami'), 'backend-0') // the new server (its own index 0)
    t.is(third[0]!.server.stats().connections.total, i + 1)
    await c.close()
  }
  // Stopping the balancer closes what it proxied: the client sees the connection go.
  const held = client(t, nginx.port)
  t.is(await held.request('whoami'), 'backend-0')
  const gone = new Promise((r) => held.once('disconnect', r))
  await nginx.stop()
  await gone
  t.false(held.connected)
})
