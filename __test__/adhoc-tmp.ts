import { fork } from 'node:child_process'
import { PolyCallClient, PolyCallServer } from '../ts/index.js'
if (process.argv[2] === 'server') {
  const s = new PolyCallServer({ idempotency: process.argv[3] === 'noidem' ? false : {} })
  s.route('echo', (ctx) => ctx.data)
  const { port } = await s.listen(0, '127.0.0.1')
  process.send!(port)
} else {
  const child = fork(new URL(import.meta.url).pathname, ['server'], { execArgv: ['--import', 'tsx'] })
  const port = await new Promise<number>((r) => child.once('message', (m) => r(m as number)))
  const P = Buffer.alloc(32, 7)
  async function run(name: string, c: PolyCallClient, idempotent = false) {
    await c.connect()
    await Promise.all(Array.from({ length: 200 }, () => c.request('echo', P)))
    let n = 0, stop = false
    const cpu0 = process.cpuUsage(); const t0 = performance.now()
    setTimeout(() => (stop = true), 1500)
    await Promise.all(Array.from({ length: 128 }, async () => { while (!stop) { await c.request('echo', P, { idempotent }); n++ } }))
    const ms = performance.now() - t0; const cpu = process.cpuUsage(cpu0)
    console.log(name, Math.round(n / ms * 1000), 'req/s', ((cpu.user + cpu.system) / n).toFixed(2), 'client µs/call')
    await c.close()
  }
  for (let i = 0; i < 2; i++) {
    await run('single', new PolyCallClient({ host: '127.0.0.1', port }))
    await run('pool1 ', new PolyCallClient({ endpoints: [`127.0.0.1:${port}`] }))
    await run('pool4 ', new PolyCallClient({ endpoints: [`127.0.0.1:${port}`], connectionsPerEndpoint: 4 }))
    await run('single idem', new PolyCallClient({ host: '127.0.0.1', port }), true)
  }
  child.kill()
}
