import { fork } from 'node:child_process'
import { PolyCallClient, PolyCallServer } from '../ts/index.js'
if (process.argv[2] === 'server') {
  const { MemoryIdempotencyStore } = await import('../ts/index.js')
  const s = new PolyCallServer({ idempotency: { store: new MemoryIdempotencyStore({ maxEntries: 5_000_000, maxBytes: 2 ** 31 }) } })
  s.route('echo', (ctx) => ctx.data)
  const { port } = await s.listen(0, '127.0.0.1')
  process.send!(port)
  process.on('message', () => process.exit(0))
} else {
  const child = fork(new URL(import.meta.url).pathname, ['server'], { execArgv: ['--import', 'tsx', '--cpu-prof', '--cpu-prof-dir=/tmp/prof'] })
  const port = await new Promise<number>((r) => child.once('message', (m) => r(m as number)))
  const P = Buffer.alloc(32, 7)
  const c = new PolyCallClient({ host: '127.0.0.1', port, timeout: 1000 })
  await c.connect()
  let n = 0, stop = false
  setTimeout(() => (stop = true), 4000)
  await Promise.all(Array.from({ length: 128 }, async () => { while (!stop) { await c.request('echo', P, { idempotent: true }); n++ } }))
  console.log(n / 4, 'req/s')
  child.send('stop')
  await c.close()
}
