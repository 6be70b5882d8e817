/**
 * Scale-out benchmark: a polycall server as a cluster of 1 or 2 workers (serveCluster), reached
 * directly or through nginx `stream`, over one connection per client process or a pool of
 * connections (the multi-endpoint client's `connectionsPerEndpoint`), at 128 requests in
 * flight; and the cost of idempotency keys per call.
 *
 * Two client processes share the 128 calls in flight (64 each), so on a 2-core machine the
 * client is not what limits two workers. Every configuration runs `--reps` times (default 3),
 * interleaved (rep 1 of every configuration, then rep 2, ...), and the table gives the median
 * with min-max, and the ratio of medians to one worker on the same path.
 *
 * Run: npm run bench:scale [-- --quick] [-- --write]
 *   --quick   short cells, one repetition: a smoke run; never writes
 *   --write   update benchmarks/results/scale.md (a complete, non-quick run only)
 *   --reps N  repetitions (default 3)
 *   --only A,B  only the configurations named A, B (e.g. '1w direct 1 conn'); never writes
 * Environment, for trying nginx settings: POLYCALL_BENCH_NGINX_WORKERS (worker_processes, with
 * `reuseport` above 1), POLYCALL_BENCH_NGINX_MAIN and POLYCALL_BENCH_NGINX_SERVER (extra lines of
 * the main context and of the stream `server` block, separated by `;`).
 * Needs nginx with the stream module for the nginx rows (skipped with a note otherwise).
 * @packageDocumentation
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import cluster from 'node:cluster'
import { fileURLToPath } from 'node:url'
import { MemoryIdempotencyStore, PolyCallClient, PolyCallServer, serveCluster } from '../ts/index.js'
import { nginxBuild, nginxSkipReason, startNginx, type Nginx } from '../__test__/helpers/nginx.js'
import { fmt, machine, table, writeResult } from './common.js'

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const opt = (name: string) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const quick = flag('--quick')
const WARMUP_MS = quick ? 300 : 1500
const MEASURE_MS = quick ? 700 : 4000
const REPS = Number(opt('--reps') ?? (quick ? 1 : 3))
const IN_FLIGHT = 128
const CLIENTS = 2
const POOL = 4
/** The calls' own timeout: idempotency records live for it plus a second. */
const CALL_TIMEOUT = 1000
const PAYLOAD = Buffer.alloc(32, 7)
const self = fileURLToPath(import.meta.url)
/** Extra nginx lines (main context; stream `server` block), separated by `;` in the environment. */
const lines = (v: string | undefined) => (v ? v.split(';').map((l) => l.trim()).filter(Boolean).map((l) => `${l};`) : [])
const NGINX_MAIN = lines(process.env['POLYCALL_BENCH_NGINX_MAIN'])
const NGINX_SERVER = lines(process.env['POLYCALL_BENCH_NGINX_SERVER'])
const NGINX_WORKERS = Number(process.env['POLYCALL_BENCH_NGINX_WORKERS'] ?? 1)
const NGINX_SETUP = [`${NGINX_WORKERS === 1 ? 'one nginx worker' : `${NGINX_WORKERS} nginx workers, reuseport`}`, ...NGINX_MAIN, ...NGINX_SERVER].join(', ')
/** `--only a,b`: the configurations with these names (never writes). */
const ONLY = opt('--only')?.split(',')

type Message = { type: 'ready'; port: number } | { type: 'result'; count: number; ms: number; errors: Record<string, number> } | { type: 'go' }

// ---- child roles -------------------------------------------------------------------------

async function serverRole(workers: number): Promise<void> {
  const c = await serveCluster(
    () => {
      // Records live for the call's timeout and a second: at a few hundred thousand keyed calls
      // per second that is more than the default bound of 100,000 records, so this store has
      // room for all of them (the default would refuse the excess with ERR_POLYCALL_BUSY).
      const store = new MemoryIdempotencyStore({ maxEntries: 4_000_000, maxBytes: 2 ** 31 })
      const server = new PolyCallServer({ maxConnections: 1000, idempotency: { store } })
      server.route('echo', (ctx) => ctx.data)
      return server
    },
    { workers, port: 0, signals: true, execArgv: process.execArgv, args: argv },
  )
  if (c.role === 'primary') process.send?.({ type: 'ready', port: c.port } satisfies Message)
}

async function clientRole(port: number, connections: number, idempotent: boolean, inFlight: number): Promise<void> {
  const client =
    connections === 1
      ? new PolyCallClient({ host: '127.0.0.1', port, timeout: CALL_TIMEOUT })
      : new PolyCallClient({ endpoints: [`127.0.0.1:${port}`], connectionsPerEndpoint: connections, timeout: CALL_TIMEOUT })
  await client.connect()
  // Every connection of a pool up before the clock starts.
  for (let i = 0; i < 50 && connections > 1 && (client.stats().endpoints?.[0]?.connections ?? 0) < connections; i++) {
    await Promise.all(Array.from({ length: connections * 2 }, () => client.request('echo', PAYLOAD)))
  }
  await new Promise<void>((resolve) => {
    process.once('message', () => resolve())
    process.send?.({ type: 'ready', port: 0 } satisfies Message)
  })
  let counting = false
  let stop = false
  let count = 0
  const errors: Record<string, number> = {}
  const options = { idempotent }
  await Promise.all([
    ...Array.from({ length: inFlight }, async () => {
      while (!stop) {
        try {
          await client.request('echo', PAYLOAD, options)
          if (counting) count++
        } catch (e) {
          const code = (e as { code?: string }).code ?? 'unknown'
          errors[code] = (errors[code] ?? 0) + 1
        }
      }
    }),
    (async () => {
      await new Promise((r) => setTimeout(r, WARMUP_MS))
      counting = true
      const t0 = performance.now()
      await new Promise((r) => setTimeout(r, MEASURE_MS))
      counting = false
      const ms = performance.now() - t0
      stop = true
      process.send?.({ type: 'result', count, ms, errors } satisfies Message)
    })(),
  ])
  await client.close()
  process.exit(0)
}

// ---- orchestration -----------------------------------------------------------------------

function child(args: string[]): { proc: ChildProcess; next: () => Promise<Message> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', self, ...args, ...(quick ? ['--quick'] : [])], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const queue: Message[] = []
  const waiters: ((m: Message) => void)[] = []
  proc.on('message', (m: Message) => {
    const w = waiters.shift()
    if (w) w(m)
    else queue.push(m)
  })
  return {
    proc,
    next: () =>
      new Promise<Message>((resolve, reject) => {
        const m = queue.shift()
        if (m) return resolve(m)
        const timer = setTimeout(() => reject(new Error(`no message from ${args.join(' ')}`)), 60_000)
        waiters.push((msg) => {
          clearTimeout(timer)
          resolve(msg)
        })
      }),
  }
}

async function stopChild(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise((r) => proc.once('exit', r))
  proc.kill('SIGTERM')
  const killer = setTimeout(() => proc.kill('SIGKILL'), 15_000)
  await exited
  clearTimeout(killer)
}

interface Config {
  name: string
  workers: number
  path: 'direct' | 'nginx'
  connections: number
  idempotent: boolean
}

/** utime + stime of each live process, in clock ticks (Linux /proc; empty elsewhere). */
function processTimes(): Map<number, { ppid: number; ticks: number }> {
  const out = new Map<number, { ppid: number; ticks: number }>()
  let names: string[]
  try {
    names = readdirSync('/proc')
  } catch {
    return out
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1')
      // Fields after the command name, which is in parentheses and may hold spaces.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(Number(name), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) })
    } catch {
      // The process ended meanwhile.
    }
  }
  return out
}

/** CPU seconds of each group: a process and its descendants. */
function groupCpu(roots: Record<string, number[]>): Record<string, number> {
  const times = processTimes()
  const children = new Map<number, number[]>()
  for (const [pid, t] of times) children.set(t.ppid, [...(children.get(t.ppid) ?? []), pid])
  const out: Record<string, number> = {}
  for (const [group, pids] of Object.entries(roots)) {
    let ticks = 0
    const stack = [...pids]
    while (stack.length) {
      const pid = stack.pop()!
      ticks += times.get(pid)?.ticks ?? 0
      stack.push(...(children.get(pid) ?? []))
    }
    out[group] = ticks / 100
  }
  return out
}

const teardowns: (() => Promise<void> | void)[] = []
const fakeT = { teardown: (fn: () => Promise<void> | void) => teardowns.push(fn) } as unknown as Parameters<typeof startNginx>[0]

/** One cell's outcome; `cpu` is CPU µs per request of each group over the measured window. */
interface CellResult {
  rps: number
  errors: Record<string, number>
  cpu: Record<string, number>
}

async function runOnce(config: Config): Promise<CellResult> {
  const server = child(['--role', 'server', '--workers', String(config.workers)])
  let nginx: Nginx | undefined
  const clients: ReturnType<typeof child>[] = []
  try {
    const ready = await server.next()
    if (ready.type !== 'ready') throw new Error('server did not start')
    let port = ready.port
    if (config.path === 'nginx') {
      nginx = await startNginx(fakeT, { upstreams: [port], main: NGINX_MAIN, server: NGINX_SERVER, workers: NGINX_WORKERS })
      port = nginx.port
    }
    for (let i = 0; i < CLIENTS; i++) {
      clients.push(child(['--role', 'client', '--port', String(port), '--connections', String(config.connections), '--in-flight', String(IN_FLIGHT / CLIENTS), ...(config.idempotent ? ['--idempotent'] : [])]))
    }
    for (const c of clients) await c.next()
    for (const c of clients) c.proc.send({ type: 'go' } satisfies Message)
    // CPU of each side over the clients' measured window (they start counting WARMUP_MS after go).
    const roots = {
      clients: clients.map((c) => c.proc.pid!),
      server: [server.proc.pid!],
      ...(nginx ? { nginx: [nginx.child.pid!] } : {}),
    }
    const window = (async () => {
      await new Promise((r) => setTimeout(r, WARMUP_MS))
      const before = groupCpu(roots)
      await new Promise((r) => setTimeout(r, MEASURE_MS))
      const after = groupCpu(roots)
      return Object.fromEntries(Object.keys(before).map((k) => [k, after[k]! - before[k]!]))
    })()
    let rps = 0
    const errors: Record<string, number> = {}
    for (const c of clients) {
      const m = await c.next()
      if (m.type !== 'result') throw new Error('client sent no result')
      rps += (m.count / m.ms) * 1000
      for (const [k, v] of Object.entries(m.errors)) errors[k] = (errors[k] ?? 0) + v
    }
    const seconds = await window
    const requests = rps * (MEASURE_MS / 1000)
    const cpu = Object.fromEntries(Object.entries(seconds).map(([k, v]) => [k, (v * 1e6) / requests]))
    return { rps, errors, cpu }
  } finally {
    await Promise.all(clients.map((c) => stopChild(c.proc)))
    if (nginx) await nginx.stop()
    await stopChild(server.proc)
    for (const fn of teardowns.splice(0)) await fn()
  }
}

/** `clients / server / nginx = total` CPU µs per request. */
function cpuText(cpu: Record<string, number>): string {
  const parts = [cpu['clients'], cpu['server'], cpu['nginx']].filter((v): v is number => v !== undefined)
  if (parts.length === 0 || parts.some((v) => !Number.isFinite(v))) return '-'
  return `${parts.map((v) => v.toFixed(2)).join(' / ')} = ${parts.reduce((a, b) => a + b, 0).toFixed(2)}`
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

async function main(): Promise<void> {
  const configs: Config[] = []
  for (const path of ['direct', 'nginx'] as const) {
    if (path === 'nginx' && !nginxBuild) continue
    for (const connections of [1, POOL]) {
      for (const workers of [1, 2]) configs.push({ name: `${workers}w ${path} ${connections === 1 ? '1 conn' : `pool ${connections}`}`, workers, path, connections, idempotent: false })
    }
  }
  configs.push({ name: '1w direct 1 conn, idempotent', workers: 1, path: 'direct', connections: 1, idempotent: true })
  configs.push({ name: '2w direct 1 conn, idempotent', workers: 2, path: 'direct', connections: 1, idempotent: true })
  if (ONLY) configs.splice(0, configs.length, ...configs.filter((c) => ONLY.some((o) => c.name === o)))
  console.log(
    `scale benchmark${quick ? ' (quick)' : ''}: ${WARMUP_MS} ms warm-up + ${MEASURE_MS} ms per cell, ${REPS} interleaved repetitions, ` +
      `${IN_FLIGHT} in flight over ${CLIENTS} client processes${nginxBuild ? '' : `; nginx rows skipped: ${nginxSkipReason}`}`,
  )
  const results = new Map<string, number[]>()
  const cpus = new Map<string, Record<string, number>[]>()
  const errors = new Map<string, Record<string, number>>()
  for (let rep = 0; rep < REPS; rep++) {
    for (const c of configs) {
      const r = await runOnce(c)
      results.set(c.name, [...(results.get(c.name) ?? []), r.rps])
      cpus.set(c.name, [...(cpus.get(c.name) ?? []), r.cpu])
      const e = errors.get(c.name) ?? {}
      for (const [k, v] of Object.entries(r.errors)) e[k] = (e[k] ?? 0) + v
      errors.set(c.name, e)
      console.log(
        `  rep ${rep + 1} ${c.name}: ${fmt(r.rps, 0)} req/s, CPU µs/req ${cpuText(r.cpu)}${Object.keys(r.errors).length ? ` errors ${JSON.stringify(r.errors)}` : ''}`,
      )
    }
  }
  const med = (name: string) => median(results.get(name) ?? [Number.NaN])
  /** Median CPU µs per request of each group of a configuration. */
  const medCpu = (name: string) => {
    const runs = cpus.get(name) ?? []
    return Object.fromEntries(Object.keys(runs[0] ?? {}).map((k) => [k, median(runs.map((r) => r[k]!))]))
  }
  if (ONLY) {
    for (const c of configs) console.log(`${c.name}: median ${fmt(med(c.name), 0)} req/s, CPU µs/req ${cpuText(medCpu(c.name))}`)
    return
  }
  const rows = configs.map((c) => {
    const xs = results.get(c.name)!
    const base = c.idempotent ? `1w direct 1 conn, idempotent` : `1w ${c.path} ${c.connections === 1 ? '1 conn' : `pool ${c.connections}`}`
    const direct = `${c.workers}w direct ${c.connections === 1 ? '1 conn' : `pool ${c.connections}`}`
    const e = errors.get(c.name) ?? {}
    return [
      c.name,
      fmt(med(c.name), 0),
      `${fmt(Math.min(...xs), 0)}-${fmt(Math.max(...xs), 0)}`,
      `${(med(c.name) / med(base)).toFixed(2)}x`,
      c.path === 'nginx' ? `${(med(c.name) / med(direct)).toFixed(2)}x` : '',
      cpuText(medCpu(c.name)),
      Object.keys(e).length ? JSON.stringify(e) : '0',
    ]
  })
  const keyCost = (w: number) => {
    const plain = med(`${w}w direct 1 conn`)
    const keyed = med(`${w}w direct 1 conn, idempotent`)
    return [`${w} worker${w > 1 ? 's' : ''}`, fmt(plain, 0), fmt(keyed, 0), `${(keyed / plain).toFixed(2)}x`, fmt((1e6 / keyed - 1e6 / plain) * w, 2)]
  }
  const markdown = [
    '# Scale-out benchmark',
    '',
    'Written by `npm run bench:scale -- --write` (benchmarks/scale.bench.ts).',
    '',
    machine(),
    '',
    `Echo of 32 bytes, ${IN_FLIGHT} calls in flight shared by ${CLIENTS} client processes (one connection each, or a pool of ${POOL}),`,
    `the server a serveCluster of 1 or 2 workers, reached directly or through nginx \`stream\` (${NGINX_SETUP}).`,
    `${WARMUP_MS} ms warm-up and ${MEASURE_MS} ms measured per cell; ${REPS} repetitions, interleaved. Median req/s with min-max;`,
    'ratios of medians: to one worker on the same path and connections, and (nginx rows) to the same setup without nginx.',
    'CPU per request: user + system time of the client processes, of the server (primary and workers) and of nginx (master and',
    'worker), from /proc over the measured window, divided by the requests answered in it; the machine has 2 cores, 2,000,000 µs per second.',
    '',
    table(['setup', 'req/s (median)', 'min-max', '/ 1 worker', '/ direct', 'CPU µs/req clients / server / nginx = total', 'errors'], rows),
    '',
    '## Idempotency keys',
    '',
    `Every call \`idempotent: true\` (a 128-bit key per call, recorded by the server's memory store for the call's ${CALL_TIMEOUT} ms timeout and a second;`,
    'the store is sized for the rate: 4,000,000 records, 2 GiB):',
    '',
    table(['server', 'req/s plain', 'req/s with keys', 'ratio', 'server µs per call added (× workers)'], [keyCost(1), keyCost(2)]),
    '',
  ].join('\n')
  console.log(`\n${markdown}`)
  console.log(writeResult('scale.md', markdown))
}

const role = opt('--role')
if (role === 'server' || cluster.isWorker) {
  await serverRole(Number(opt('--workers') ?? 1))
} else if (role === 'client') {
  await clientRole(Number(opt('--port')), Number(opt('--connections') ?? 1), flag('--idempotent'), Number(opt('--in-flight') ?? 64))
} else {
  await main()
}
