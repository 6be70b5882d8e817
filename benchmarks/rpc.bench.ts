/**
 * End-to-end RPC benchmark: polycall against a raw node:net echo (the ceiling) and @grpc/grpc-js,
 * in the same run. Client and server run in separate processes on 127.0.0.1; the client keeps
 * 1, 16 or 128 requests in flight on one connection (that many workers, each awaiting its
 * response before sending the next), with 32-byte payloads echoed back and checked; each cell is
 * reported as the median of its repetitions with their range. A second
 * part opens 1,000 idle connections and measures the server's RSS growth per connection.
 *
 * The secure section measures the same way, with 64-byte and 4 KiB payloads: polycall with a
 * sealed session (Noise IK), polycall over TLS, plaintext polycall, raw net and
 * @hyperswarm/secret-stream (Noise XX over libsodium, length-prefixed frames inside its
 * messages), reporting the median and range of the repetitions; then sequential handshakes per
 * second (connect, handshake, close) for sealed polycall, polycall over TLS, raw node:tls and
 * secret-stream, with plaintext polycall and raw net as references.
 *
 * Run: npm run bench:rpc; with --write it updates benchmarks/results/rpc.md and rpc.svg.
 * Options (--quick and the subset options print results but write nothing):
 *   --write              update the committed results (a complete, non-quick run only)
 *   --quick              ~0.5 s per cell, 100 idle connections: a smoke run for CI
 *   --only polycall,raw  a subset of polycall, pcr1, raw, grpc (main); sealed, tls, polycall, raw,
 *                        secretstream (secure); nodetls too (handshakes)
 *   --section main,secure,handshake  which parts run (default all three)
 *   --in-flight 1,128    other concurrencies
 *   --no-load / --no-idle  skip the throughput or the idle-connection part
 *   --dist               run the compiled dist/ build (npm run build:ts) instead of ts/ via tsx
 *   --cpu-prof DIR       every child process writes a V8 CPU profile into DIR
 * Exits non-zero when a request failed or a step did not finish in time.
 *
 * This one file plays every role: without --role it orchestrates; with --role it is a child
 * (server, load client, or idle-connection client) talking to the orchestrator over IPC.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { getHeapSpaceStatistics } from 'node:v8'
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls'
import { createRequire } from 'node:module'
import * as grpc from '@grpc/grpc-js'
import { fmt, machine, table, writeResult } from './common.js'

const ALL_SYSTEMS = ['polycall', 'pcr1', 'raw', 'grpc', 'sealed', 'tls', 'secretstream', 'nodetls'] as const
type System = (typeof ALL_SYSTEMS)[number]
/** The main section's systems (32-byte echo, idle memory). */
const SYSTEMS = ['polycall', 'pcr1', 'raw', 'grpc'] as const satisfies readonly System[]
/** The secure section's systems. */
const SECURE_SYSTEMS = ['sealed', 'tls', 'polycall', 'raw', 'secretstream'] as const satisfies readonly System[]
/** The handshake section's systems. */
const HANDSHAKE_SYSTEMS = ['sealed', 'tls', 'nodetls', 'secretstream', 'polycall', 'raw'] as const satisfies readonly System[]
const LABEL: Record<System, string> = {
  polycall: 'polycall',
  pcr1: 'polycall PCR1',
  raw: 'raw net',
  grpc: 'grpc-js',
  sealed: 'polycall sealed',
  tls: 'polycall over TLS',
  secretstream: 'secret-stream',
  nodetls: 'node:tls',
}
const COLOR: Record<(typeof SYSTEMS)[number], string> = { polycall: '#2b6cb0', pcr1: '#38a169', raw: '#718096', grpc: '#dd6b20' }
const DEFAULT_CONCURRENCY = [1, 16, 128]
const DEFAULT_SECURE_PAYLOADS = [64, 4096]
const SECTIONS = ['main', 'secure', 'handshake'] as const
const REQUEST_TIMEOUT = 5000

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
function opt(name: string): string | undefined {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}

/** Bytes per request: 32 in the main section; children get theirs from --payload. */
const PAYLOAD = Number(opt('--payload') ?? 32)
if (!Number.isInteger(PAYLOAD) || PAYLOAD < 8 || PAYLOAD > 65536) throw new Error(`bad --payload ${PAYLOAD}`)
/** Payload sizes of the secure section (--payloads 64,4096). */
const SECURE_PAYLOADS = opt('--payloads')?.split(',').map(Number) ?? DEFAULT_SECURE_PAYLOADS
if (!SECURE_PAYLOADS.every((p) => Number.isInteger(p) && p >= 8 && p <= 65536)) throw new Error(`bad --payloads ${opt('--payloads')}`)
const inFlightArg = opt('--in-flight')
const CONCURRENCY = inFlightArg ? inFlightArg.split(',').map(Number) : DEFAULT_CONCURRENCY
if (!CONCURRENCY.every((c) => Number.isInteger(c) && c >= 1 && c <= 256)) throw new Error(`bad --in-flight ${inFlightArg}`)
const quick = flag('--quick')
// --dist runs the compiled build (npm run build:ts) instead of ts/ through tsx, so that CPU
// profiles (--cpu-prof DIR: every child writes one there) map to ts/ through dist's source maps.
const dist = flag('--dist')
const cpuProfDir = opt('--cpu-prof')
const { PolyCallClient, PolyCallServer } = (await import(dist ? '../dist/index.js' : '../ts/index.js')) as typeof import('../ts/index.js')
const WARMUP_MS = quick ? 200 : 1000
const MEASURE_MS = quick ? 500 : 4000
const REPS = quick ? 2 : 3
const IDLE_CONNECTIONS = quick ? 100 : 1000
const MEM_REPS = quick ? 1 : 5
/** Repetitions of the secure and handshake sections (medians with their range). */
const SECURE_REPS = quick ? 2 : 5
const HANDSHAKE_MS = quick ? 1000 : 4000

const now = () => performance.now()
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Rejects after `ms` unless `p` settles first. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    p.then(
      (v) => {
        clearTimeout(t)
        resolve(v)
      },
      (e: unknown) => {
        clearTimeout(t)
        reject(e instanceof Error ? e : new Error(String(e)))
      },
    )
  })
}

// ---- memory --------------------------------------------------------------------------------

interface MemSample {
  rss: number
  /** Resident pages of V8's young generation (new space). */
  young: number
  heapTotal: number
  heapUsed: number
  external: number
  fds: number
}

/**
 * Memory after forced full GCs. Native memory behind collected objects (sockets' handles, for
 * one) is released by callbacks that run after the GC, and the allocator hands pages back
 * later still, so GC passes repeat, 50 ms apart, until RSS moves by less than 64 KiB (at
 * least three passes, at most twenty).
 */
async function memSample(): Promise<MemSample> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  let last = -Infinity
  for (let i = 0; i < 20; i++) {
    gc()
    await sleep(50)
    const rss = process.memoryUsage.rss()
    if (i >= 2 && Math.abs(rss - last) < 64 * 1024) break
    last = rss
  }
  let fds = -1
  try {
    fds = readdirSync('/proc/self/fd').length
  } catch {
    // not Linux: the connection count check is skipped
  }
  const m = process.memoryUsage()
  const young = getHeapSpaceStatistics().find((sp) => sp.space_name === 'new_space')?.physical_space_size ?? NaN
  return { rss: m.rss, young, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, fds }
}

/** Soft limit of open files, from /proc (Linux), or undefined. */
function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === undefined ? undefined : soft === 'unlimited' ? Infinity : Number(soft)
  } catch {
    return undefined
  }
}

// ---- the three systems -----------------------------------------------------------------------

/** One request: send `payload`, resolve with the echoed bytes. */
type Call = (payload: Buffer) => Promise<Uint8Array>

interface ClientHandle {
  call: Call
  close(): Promise<void>
}

interface ServerHandle {
  port: number
  /** The server's public key, where the client pins one (sealed, secret-stream). */
  key?: string
  close(): void
  /** Open connections as the server counts them (-1 where it does not say). */
  connections(): number
}

// Raw net: a 4-byte little-endian length prefix, then the payload. Both sides coalesce what one
// tick produced into one write (as polycall does, short of its early writes of 4 KiB ticks).
// Responses come back in request order, so the client correlates them with a FIFO.

function parseLengthPrefixed(state: { rest: Buffer | undefined }, chunk: Buffer, onFrame: (payload: Buffer) => void): void {
  let buf = chunk
  if (state.rest) {
    buf = Buffer.concat([state.rest, chunk])
    state.rest = undefined
  }
  let o = 0
  while (buf.length - o >= 4) {
    const len = buf.readUInt32LE(o)
    if (buf.length - o - 4 < len) break
    onFrame(buf.subarray(o + 4, o + 4 + len))
    o += 4 + len
  }
  if (o < buf.length) state.rest = Buffer.from(buf.subarray(o))
}

function frameOf(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(4 + payload.length)
  frame.writeUInt32LE(payload.length, 0)
  frame.set(payload, 4)
  return frame
}

/** Collects buffers written in one tick and hands them to the socket as one write. */
function batchedWriter(socket: Socket): (b: Buffer) => void {
  let queue: Buffer[] = []
  let bytes = 0
  const flush = () => {
    const q = queue
    queue = []
    const n = bytes
    bytes = 0
    if (!socket.destroyed) socket.write(q.length === 1 ? q[0]! : Buffer.concat(q, n))
  }
  return (b) => {
    if (queue.length === 0) process.nextTick(flush)
    queue.push(b)
    bytes += b.length
  }
}

async function rawServer(): Promise<ServerHandle> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.setNoDelay(true)
    const state: { rest: Buffer | undefined } = { rest: undefined }
    const write = batchedWriter(socket)
    socket.on('data', (chunk: Buffer) => parseLengthPrefixed(state, chunk, (payload) => write(frameOf(payload))))
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
    connections: () => sockets.size,
  }
}

async function rawClient(port: number): Promise<ClientHandle> {
  const socket = netConnect({ host: '127.0.0.1', port })
  await within(
    new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    }),
    10_000,
    'raw connect',
  )
  socket.setNoDelay(true)
  const waiting: { resolve(b: Uint8Array): void; reject(e: Error): void }[] = []
  let head = 0
  let failure: Error | undefined
  const state: { rest: Buffer | undefined } = { rest: undefined }
  socket.on('data', (chunk: Buffer) =>
    parseLengthPrefixed(state, chunk, (payload) => {
      const w = waiting[head++]
      if (!w) return fail(new Error('raw net: a response nobody asked for'))
      if (head === waiting.length) {
        waiting.length = 0
        head = 0
      } else if (head >= 1024 && head * 2 >= waiting.length) {
        waiting.splice(0, head)
        head = 0
      }
      w.resolve(payload)
    }),
  )
  function fail(e: Error): void {
    failure ??= e
    for (let i = head; i < waiting.length; i++) waiting[i]!.reject(e)
    waiting.length = 0
    head = 0
    socket.destroy()
  }
  socket.on('error', fail)
  socket.on('close', () => fail(new Error('raw connection closed')))
  const write = batchedWriter(socket)
  return {
    call: (payload) =>
      new Promise<Uint8Array>((resolve, reject) => {
        if (failure) return reject(failure)
        waiting.push({ resolve, reject })
        write(frameOf(payload))
      }),
    close: async () => {
      socket.end()
      await within(new Promise<void>((r) => (socket.destroyed ? r() : socket.once('close', () => r()))), 5000, 'raw close').catch(() =>
        socket.destroy(),
      )
    },
  }
}

// gRPC: one unary method whose (de)serializers pass the bytes through (no protobuf).

const identity = (b: Buffer) => b
const echoService: grpc.ServiceDefinition = {
  Echo: {
    path: '/polycall.bench.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
}
const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo')
type UnaryEcho = (req: Buffer, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Buffer) => void) => grpc.ClientUnaryCall

async function grpcServer(): Promise<ServerHandle> {
  const server = new grpc.Server()
  server.addService(echoService, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  )
  return { port, close: () => server.forceShutdown(), connections: () => -1 }
}

async function grpcClient(port: number): Promise<ClientHandle> {
  // A local subchannel pool gives every client its own HTTP/2 connection (the idle test needs that).
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
  await within(
    new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve()))),
    11_000,
    'grpc connect',
  )
  const echo = (client as unknown as { Echo: UnaryEcho }).Echo.bind(client)
  return {
    call: (payload) =>
      new Promise<Uint8Array>((resolve, reject) => {
        echo(payload, { deadline: Date.now() + REQUEST_TIMEOUT }, (err, res) => (err ? reject(err) : res ? resolve(res) : reject(new Error('empty response'))))
      }),
    close: async () => client.close(),
  }
}

async function polycallServer(): Promise<ServerHandle> {
  const server = new PolyCallServer({ maxInFlight: 256 })
  server.route('echo', (ctx) => ctx.data)
  const { port } = await server.listen(0, '127.0.0.1')
  return { port, close: () => server.destroy(), connections: () => server.stats().connections.current }
}

async function polycallClient(port: number): Promise<ClientHandle> {
  const client = new PolyCallClient({ host: '127.0.0.1', port, maxInFlight: 1024, reconnect: false })
  await client.connect({ timeout: 10_000 })
  return {
    call: (payload) => client.request<Uint8Array>('echo', payload, { timeout: REQUEST_TIMEOUT }),
    close: () => client.close({ timeout: 5000 }),
  }
}

// PCR1 carries JSON: the 32 request bytes travel as a hex string and are turned back into bytes,
// so the echo check is the same as for the other systems.
async function pcr1Server(): Promise<ServerHandle> {
  const server = new PolyCallServer({ protocol: 'pcr1', maxInFlight: 256 })
  server.route('bench.echo', (ctx) => ctx.data)
  const { port } = await server.listen(0, '127.0.0.1')
  return { port, close: () => server.destroy(), connections: () => server.stats().connections.current }
}

async function pcr1Client(port: number): Promise<ClientHandle> {
  const client = new PolyCallClient({ host: '127.0.0.1', port, protocol: 'pcr1', maxInFlight: 1024, reconnect: false })
  await client.connect({ timeout: 10_000 })
  return {
    call: async (payload) => {
      const echoed = await client.request<string>('bench.echo', Buffer.from(payload).toString('hex'), { timeout: REQUEST_TIMEOUT })
      return Buffer.from(echoed, 'hex')
    },
    close: () => client.close({ timeout: 5000 }),
  }
}

// ---- the secure systems ------------------------------------------------------------------

const { Identity, preferredCipher } = (await import(dist ? '../dist/index.js' : '../ts/index.js')) as typeof import('../ts/index.js')
const fixture = (name: string) => readFileSync(new URL(`../__test__/fixtures/tls/${name}`, import.meta.url))
const require = createRequire(import.meta.url)

/** polycall with a sealed session: Noise IK (the client has an identity and pins the server key). */
async function sealedServer(): Promise<ServerHandle> {
  const identity = Identity.generate()
  const server = new PolyCallServer({ maxInFlight: 256, secure: { identity } })
  server.route('echo', (ctx) => ctx.data)
  const { port } = await server.listen(0, '127.0.0.1')
  return { port, key: identity.toString(), close: () => server.destroy(), connections: () => server.stats().connections.current }
}

const clientIdentity = Identity.generate()
/**
 * The sealed client's cipher: this machine's preferred one, unless POLYCALL_BENCH_CIPHER
 * (inherited by the child processes) names `AESGCM` or `ChaChaPoly`, to compare the two.
 */
const sealedCipher = (process.env.POLYCALL_BENCH_CIPHER ?? 'auto') as 'auto' | 'AESGCM' | 'ChaChaPoly'

async function sealedClient(port: number, key: string): Promise<ClientHandle> {
  const client = new PolyCallClient({
    host: '127.0.0.1',
    port,
    maxInFlight: 1024,
    reconnect: false,
    secure: { serverKey: key, identity: clientIdentity, cipher: sealedCipher },
  })
  await client.connect({ timeout: 10_000 })
  return {
    call: (payload) => client.request<Uint8Array>('echo', payload, { timeout: REQUEST_TIMEOUT }),
    close: () => client.close({ timeout: 5000 }),
  }
}

/** polycall over TLS (the test certificates, TLS 1.3 as negotiated by default). */
async function tlsServer(): Promise<ServerHandle> {
  const server = new PolyCallServer({ maxInFlight: 256, tls: { key: fixture('server.key'), cert: fixture('server.crt') } })
  server.route('echo', (ctx) => ctx.data)
  const { port } = await server.listen(0, '127.0.0.1')
  return { port, close: () => server.destroy(), connections: () => server.stats().connections.current }
}

async function tlsClient(port: number): Promise<ClientHandle> {
  const client = new PolyCallClient({ host: '127.0.0.1', port, maxInFlight: 1024, reconnect: false, tls: { ca: fixture('ca.crt'), servername: 'localhost' } })
  await client.connect({ timeout: 10_000 })
  return {
    call: (payload) => client.request<Uint8Array>('echo', payload, { timeout: REQUEST_TIMEOUT }),
    close: () => client.close({ timeout: 5000 }),
  }
}

interface SecretStream extends NodeJS.EventEmitter {
  write(b: Buffer): boolean
  end(): void
  destroy(): void
  destroyed: boolean
}
type SecretStreamClass = {
  new (initiator: boolean, raw: Socket, options?: { keyPair?: unknown; remotePublicKey?: Buffer }): SecretStream
  keyPair(): { publicKey: Buffer; secretKey: Buffer }
}
const loadSecretStream = (): SecretStreamClass => require('@hyperswarm/secret-stream') as SecretStreamClass

/** Collects what one tick wrote into one message of the stream. */
function batchedStreamWriter(stream: SecretStream): (b: Buffer) => void {
  let queue: Buffer[] = []
  const flush = () => {
    const q = queue
    queue = []
    if (!stream.destroyed) stream.write(q.length === 1 ? q[0]! : Buffer.concat(q))
  }
  return (b) => {
    if (queue.length === 0) process.nextTick(flush)
    queue.push(b)
  }
}

/** @hyperswarm/secret-stream: length-prefixed frames (as raw net) inside its encrypted messages. */
async function secretStreamServer(): Promise<ServerHandle> {
  const SecretStream = loadSecretStream()
  const keyPair = SecretStream.keyPair()
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.setNoDelay(true)
    const stream = new SecretStream(false, socket, { keyPair })
    const state: { rest: Buffer | undefined } = { rest: undefined }
    const write = batchedStreamWriter(stream)
    stream.on('data', (chunk: Buffer) => parseLengthPrefixed(state, chunk, (payload) => write(frameOf(payload))))
    stream.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return {
    port: (server.address() as AddressInfo).port,
    key: keyPair.publicKey.toString('hex'),
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
    connections: () => sockets.size,
  }
}

async function secretStreamOpen(port: number, key: string): Promise<SecretStream> {
  const SecretStream = loadSecretStream()
  const socket = netConnect({ host: '127.0.0.1', port })
  socket.setNoDelay(true)
  const stream = new SecretStream(true, socket, { remotePublicKey: Buffer.from(key, 'hex') })
  await within(
    new Promise<void>((resolve, reject) => {
      stream.once('connect', () => resolve())
      stream.once('error', reject)
    }),
    10_000,
    'secret-stream connect',
  )
  return stream
}

async function secretStreamClient(port: number, key: string): Promise<ClientHandle> {
  const stream = await secretStreamOpen(port, key)
  const waiting: { resolve(b: Uint8Array): void; reject(e: Error): void }[] = []
  let failure: Error | undefined
  const state: { rest: Buffer | undefined } = { rest: undefined }
  stream.on('data', (chunk: Buffer) =>
    parseLengthPrefixed(state, chunk, (payload) => {
      const w = waiting.shift()
      if (!w) return fail(new Error('secret-stream: a response nobody asked for'))
      w.resolve(payload)
    }),
  )
  function fail(e: Error): void {
    failure ??= e
    for (const w of waiting.splice(0)) w.reject(e)
    stream.destroy()
  }
  stream.on('error', fail)
  stream.on('close', () => fail(new Error('secret-stream closed')))
  const write = batchedStreamWriter(stream)
  return {
    call: (payload) =>
      new Promise<Uint8Array>((resolve, reject) => {
        if (failure) return reject(failure)
        waiting.push({ resolve, reject })
        write(frameOf(payload))
      }),
    close: async () => stream.destroy(),
  }
}

/** Raw node:tls with the same length-prefixed echo as raw net (the handshake section's anchor). */
async function nodeTlsServer(): Promise<ServerHandle> {
  const sockets = new Set<Socket>()
  const server = createTlsServer({ key: fixture('server.key'), cert: fixture('server.crt') }, (socket) => {
    sockets.add(socket)
    const state: { rest: Buffer | undefined } = { rest: undefined }
    const write = batchedWriter(socket)
    socket.on('data', (chunk: Buffer) => parseLengthPrefixed(state, chunk, (payload) => write(frameOf(payload))))
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
    connections: () => sockets.size,
  }
}

function startServerOf(system: System): Promise<ServerHandle> {
  switch (system) {
    case 'polycall':
      return polycallServer()
    case 'pcr1':
      return pcr1Server()
    case 'raw':
      return rawServer()
    case 'grpc':
      return grpcServer()
    case 'sealed':
      return sealedServer()
    case 'tls':
      return tlsServer()
    case 'secretstream':
      return secretStreamServer()
    case 'nodetls':
      return nodeTlsServer()
  }
}

const openClient = (system: System, port: number, key = opt('--key') ?? ''): Promise<ClientHandle> => {
  switch (system) {
    case 'polycall':
      return polycallClient(port)
    case 'pcr1':
      return pcr1Client(port)
    case 'raw':
      return rawClient(port)
    case 'grpc':
      return grpcClient(port)
    case 'sealed':
      return sealedClient(port, key)
    case 'tls':
      return tlsClient(port)
    case 'secretstream':
      return secretStreamClient(port, key)
    case 'nodetls':
      throw new Error('node:tls is measured for handshakes only')
  }
}

/**
 * One connection set up and torn down, for the handshake section: TCP connect, the system's
 * handshake (polycall's includes its v1 HANDSHAKE exchange), then close; resolves once the
 * connection is ready for requests.
 */
async function handshakeOnce(system: System, port: number, key: string): Promise<void> {
  switch (system) {
    case 'sealed':
    case 'tls':
    case 'polycall': {
      const client = new PolyCallClient({
        host: '127.0.0.1',
        port,
        reconnect: false,
        ...(system === 'sealed' ? { secure: { serverKey: key, identity: clientIdentity, cipher: sealedCipher } } : {}),
        ...(system === 'tls' ? { tls: { ca: fixture('ca.crt'), servername: 'localhost' } } : {}),
      })
      await client.connect({ timeout: 10_000 })
      client.destroy()
      return
    }
    case 'nodetls': {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: fixture('ca.crt'), servername: 'localhost' })
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve())
        socket.once('error', reject)
      })
      socket.destroy()
      return
    }
    case 'secretstream': {
      const stream = await secretStreamOpen(port, key)
      stream.destroy()
      return
    }
    case 'raw': {
      const socket = netConnect({ host: '127.0.0.1', port })
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve())
        socket.once('error', reject)
      })
      socket.destroy()
      return
    }
    default:
      throw new Error(`no handshake measurement for ${system}`)
  }
}

// ---- load generation --------------------------------------------------------------------------

interface Cell {
  system: System
  /** Request bytes. */
  payload: number
  concurrency: number
  rep: number
  requests: number
  rps: number
  p50: number
  p99: number
  errors: number
  mismatches: number
  firstError: string | undefined
  /** CPU time per request in the measured window, µs (client process, server process). */
  clientCpu: number
  serverCpu: number
}

interface CpuMark {
  t: number
  cpu: NodeJS.CpuUsage
}

/** CPU µs spent per request between two marks, at `rps` requests per second. */
function cpuPerRequest(a: CpuMark | undefined, b: CpuMark | undefined, rps: number): number {
  if (!a || !b || b.t <= a.t || rps <= 0) return NaN
  const us = b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system
  return us / ((b.t - a.t) / 1000) / rps
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

/**
 * `concurrency` workers, each sending a fresh 32-byte payload (worker id and counter in the
 * first 8 bytes) and awaiting its echo. Requests completing in the measurement window count
 * towards req/s and latency; errors and mismatches count from the first warm-up request on.
 */
async function runCell(call: Call, concurrency: number): Promise<Omit<Cell, 'system' | 'rep' | 'serverCpu' | 'payload'>> {
  const template = Buffer.alloc(PAYLOAD)
  for (let i = 8; i < PAYLOAD; i++) template[i] = (i * 37 + 11) & 0xff
  const start = now()
  const measureFrom = start + WARMUP_MS
  const measureTo = measureFrom + MEASURE_MS
  let latencies = new Float64Array(1 << 16)
  let count = 0
  let errors = 0
  let mismatches = 0
  let firstError: string | undefined
  // Marks at both ends of the window, set by the first completion past each end: our CPU time
  // here, the server's through the orchestrator.
  const marks: CpuMark[] = []
  const mark = () => {
    marks.push({ t: now(), cpu: process.cpuUsage() })
    send({ ev: 'mark' })
  }
  const worker = async (id: number) => {
    let n = 0
    for (;;) {
      const payload = Buffer.allocUnsafe(PAYLOAD)
      template.copy(payload)
      payload.writeUInt32LE(id, 0)
      payload.writeUInt32LE(n++, 4)
      const t0 = now()
      let t1: number
      try {
        const out = await call(payload)
        t1 = now()
        if (!(out instanceof Uint8Array) || !equalBytes(out, payload)) {
          mismatches++
          firstError ??= 'response differs from its request'
        } else if (t1 >= measureFrom && t1 < measureTo) {
          if (count === latencies.length) {
            const grown = new Float64Array(latencies.length * 2)
            grown.set(latencies)
            latencies = grown
          }
          latencies[count++] = t1 - t0
        }
      } catch (e) {
        t1 = now()
        errors++
        firstError ??= e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e)
        // A broken connection fails at once: do not spin.
        if (errors > 1000) return
      }
      if (marks.length === 0 && t1 >= measureFrom) mark()
      if (t1 >= measureTo) {
        if (marks.length === 1) mark()
        return
      }
    }
  }
  await within(
    Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i))),
    WARMUP_MS + MEASURE_MS + REQUEST_TIMEOUT + 10_000,
    `cell with ${concurrency} in flight`,
  )
  const sorted = latencies.subarray(0, count).sort()
  const rps = count / (MEASURE_MS / 1000)
  return {
    concurrency,
    requests: count,
    rps,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    errors,
    mismatches,
    firstError,
    clientCpu: cpuPerRequest(marks[0], marks[1], rps),
  }
}

// ---- child roles --------------------------------------------------------------------------------

type Message = { ev: string; [k: string]: unknown }

function send(msg: Message): void {
  process.send?.(msg)
}

/** Sends the last message, then exits normally (so --cpu-prof can write its profile). */
function sendAndExit(msg: Message): void {
  if (!process.send) process.exit(0)
  process.send(msg, () => process.exit(0))
}

async function childMain(role: string): Promise<void> {
  // Never outlive the orchestrator.
  process.on('disconnect', () => process.exit(0))
  setTimeout(() => process.exit(3), 15 * 60_000).unref()
  const system = opt('--kind') as System
  if (!ALL_SYSTEMS.includes(system)) throw new Error(`unknown --kind ${String(system)}`)

  if (role === 'server') {
    const server = await startServerOf(system)
    process.on('message', (m: { op?: string }) => {
      if (m.op === 'mem') {
        void memSample().then((mem) => send({ ev: 'mem', mem, connections: server.connections() }))
      } else if (m.op === 'cpu') {
        send({ ev: 'cpu', mark: { t: now(), cpu: process.cpuUsage() } })
      } else if (m.op === 'exit') {
        server.close()
        process.exit(0)
      }
    })
    send({ ev: 'ready', port: server.port, key: server.key })
    return
  }

  const port = Number(opt('--port'))
  if (role === 'load') {
    const client = await openClient(system, port)
    for (const c of CONCURRENCY) send({ ev: 'cell', cell: await runCell(client.call, c) })
    await within(client.close(), 10_000, 'client close').catch(() => {})
    sendAndExit({ ev: 'done' })
    return
  }

  if (role === 'handshake') {
    const key = opt('--key') ?? ''
    // Warm-up: compile the paths before measuring.
    const warmTo = now() + Math.min(WARMUP_MS, 500)
    while (now() < warmTo) await handshakeOnce(system, port, key)
    const times: number[] = []
    const cpu0 = process.cpuUsage()
    const t0 = now()
    const end = t0 + HANDSHAKE_MS
    let errors = 0
    while (now() < end) {
      const s = now()
      try {
        await handshakeOnce(system, port, key)
        times.push(now() - s)
      } catch {
        if (++errors > 100) break
      }
    }
    const elapsed = now() - t0
    const cpu = process.cpuUsage(cpu0)
    times.sort((a, b) => a - b)
    sendAndExit({
      ev: 'handshakes',
      count: times.length,
      perSecond: times.length / (elapsed / 1000),
      median: times[Math.floor(times.length / 2)] ?? NaN,
      clientCpu: times.length > 0 ? (cpu.user + cpu.system) / times.length : NaN,
      errors,
    })
    return
  }

  if (role === 'idle') {
    const count = Number(opt('--count'))
    const check = async (h: ClientHandle) => {
      const p = Buffer.alloc(PAYLOAD, 0x5a)
      if (!equalBytes(await h.call(p), p)) throw new Error('idle connection: echo mismatch')
    }
    const openMany = async (n: number) => {
      const handles: ClientHandle[] = []
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(50, n - i) }, async () => {
            const h = await openClient(system, port)
            await check(h)
            return h
          }),
        )
        handles.push(...batch)
      }
      return handles
    }
    const closeAll = async (handles: ClientHandle[]) => {
      await Promise.all(handles.map((h) => within(h.close(), 10_000, 'close').catch(() => {})))
      await sleep(500)
    }
    const order = () => new Promise<void>((resolve) => process.once('message', () => resolve()))
    // Warm the server's code paths with a few connections first, so the baseline includes them.
    await closeAll(await within(openMany(20), 60_000, 'warm-up connections'))
    send({ ev: 'warmed' })
    // Two rounds: open `count`, report, close them all, report.
    for (let round = 0; round < 2; round++) {
      await order()
      const before = await memSample()
      const t0 = now()
      const handles = await within(openMany(count), 300_000, `opening ${count} connections`)
      const openMs = now() - t0
      await sleep(500)
      const after = await memSample()
      send({ ev: 'opened', before, after, openMs })
      await order()
      await closeAll(handles)
      if (round === 1) sendAndExit({ ev: 'closed' })
      else send({ ev: 'closed' })
    }
    return
  }
  throw new Error(`unknown --role ${role}`)
}

// ---- orchestration ------------------------------------------------------------------------------

const self = fileURLToPath(import.meta.url)
const children = new Set<Child>()

class Child {
  readonly proc: ChildProcess
  readonly #queue: Message[] = []
  #waiter: ((m: Message) => void) | undefined
  #exit: Error | undefined
  #onExit: ((e: Error) => void) | undefined

  constructor(args: string[]) {
    const node = ['--expose-gc', ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []), '--import', 'tsx']
    const extra = [...(quick ? ['--quick'] : []), ...(dist ? ['--dist'] : []), ...(inFlightArg ? ['--in-flight', inFlightArg] : [])]
    this.proc = spawn(process.execPath, [...node, self, ...args, ...extra], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.add(this)
    this.proc.on('message', (m: Message) => {
      if (this.#waiter) this.#waiter(m)
      else this.#queue.push(m)
    })
    this.proc.on('exit', (code, signal) => {
      children.delete(this)
      this.#exit = new Error(`child ${args.join(' ')} exited (${signal ?? code})`)
      this.#onExit?.(this.#exit)
    })
    this.proc.on('error', (e) => {
      this.#exit = e
      this.#onExit?.(e)
    })
  }

  /** The next message, which must be `ev` if given (an `error` message or an exit rejects). */
  next(ev: string | undefined, ms: number): Promise<Message> {
    const got = (m: Message): Message => {
      if (m.ev === 'error') throw new Error(`child failed: ${String(m.message)}`)
      if (ev !== undefined && m.ev !== ev) throw new Error(`expected ${ev} from child, got ${m.ev}`)
      return m
    }
    const queued = this.#queue.shift()
    if (queued) return Promise.resolve().then(() => got(queued))
    if (this.#exit) return Promise.reject(this.#exit)
    return within(
      new Promise<Message>((resolve, reject) => {
        this.#waiter = (m) => {
          this.#waiter = undefined
          this.#onExit = undefined
          try {
            resolve(got(m))
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)))
          }
        }
        this.#onExit = (e) => {
          this.#waiter = undefined
          this.#onExit = undefined
          reject(e)
        }
      }),
      ms,
      `waiting for ${ev ?? 'a message'}`,
    )
  }

  /** Resolves once the process exited, or after `ms`. */
  exited(ms: number): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve()
    return within(
      new Promise<void>((r) => this.proc.once('exit', () => r())),
      ms,
      'child exit',
    ).catch(() => {})
  }

  send(msg: { op: string }): void {
    if (this.proc.connected) this.proc.send(msg)
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
    children.delete(this)
  }
}

function killAll(): void {
  for (const c of [...children]) c.kill()
}

async function withServer<T>(system: System, fn: (server: Child, port: number, key: string) => Promise<T>): Promise<T> {
  const server = new Child(['--role', 'server', '--kind', system])
  try {
    const ready = await server.next('ready', 30_000)
    return await fn(server, Number(ready.port), typeof ready.key === 'string' ? ready.key : '')
  } finally {
    server.send({ op: 'exit' })
    await server.exited(5000)
    server.kill()
  }
}

async function throughput(system: System, rep: number, payload = 32): Promise<Cell[]> {
  return withServer(system, async (server, port, key) => {
    const client = new Child(['--role', 'load', '--kind', system, '--port', String(port), '--payload', String(payload), ...(key ? ['--key', key] : [])])
    try {
      const cells: Cell[] = []
      for (let i = 0; i < CONCURRENCY.length; i++) {
        const serverMarks: CpuMark[] = []
        let m: Message
        for (;;) {
          m = await client.next(undefined, WARMUP_MS + MEASURE_MS + REQUEST_TIMEOUT + 60_000)
          if (m.ev !== 'mark') break
          server.send({ op: 'cpu' })
          serverMarks.push((await server.next('cpu', 10_000)).mark as CpuMark)
        }
        if (m.ev !== 'cell') throw new Error(`expected cell from the load client, got ${m.ev}`)
        const measured = m.cell as Omit<Cell, 'system' | 'rep' | 'serverCpu' | 'payload'>
        // JSON carries NaN as null.
        for (const k of ['p50', 'p99', 'clientCpu'] as const) measured[k] = typeof measured[k] === 'number' ? measured[k] : NaN
        const cell: Cell = { ...measured, system, rep, payload, serverCpu: cpuPerRequest(serverMarks[0], serverMarks[1], measured.rps) }
        cells.push(cell)
        const failed = cell.errors + cell.mismatches
        console.log(
          `rep ${rep + 1}  ${LABEL[system].padEnd(9)} ${payload === 32 ? '' : `${payload} B `}${String(cell.concurrency).padStart(3)} in flight  ${fmt(cell.rps, 0).padStart(9)} req/s  ` +
            `p50 ${num(cell.p50, 3)} ms  p99 ${num(cell.p99, 3)} ms  CPU µs/req client ${num(cell.clientCpu)} server ${num(cell.serverCpu)}  ` +
            `failed ${failed}${cell.firstError ? ` (${cell.firstError})` : ''}`,
        )
      }
      await client.next('done', 30_000)
      await client.exited(5000)
      return cells
    } finally {
      client.kill()
    }
  })
}

interface IdleResult {
  system: System
  serverRss: number
  /** The same after all connections closed and as many opened again. */
  serverRss2: number
  serverHeapTotal: number
  serverYoung: number
  serverHeap: number
  clientRss: number
  fds: number
  connections: number
  openMs: number
}

async function idleMemory(system: System): Promise<IdleResult> {
  return withServer(system, async (server, port) => {
    const client = new Child(['--role', 'idle', '--kind', system, '--port', String(port), '--count', String(IDLE_CONNECTIONS)])
    const serverMem = async () => {
      server.send({ op: 'mem' })
      const m = await server.next('mem', 30_000)
      return { mem: m.mem as MemSample, connections: Number(m.connections) }
    }
    try {
      await client.next('warmed', 120_000)
      const rounds = []
      for (let round = 0; round < 2; round++) {
        const before = await serverMem()
        client.send({ op: 'open' })
        const opened = await client.next('opened', 330_000)
        const after = await serverMem()
        client.send({ op: 'close' })
        await client.next('closed', 60_000)
        if (round === 1) await client.exited(5000)
        rounds.push({ before: before.mem, after: after.mem, connections: after.connections, client: opened })
      }
      const perConn = (a: number, b: number) => (a - b) / IDLE_CONNECTIONS
      const [first, second] = rounds as [(typeof rounds)[0], (typeof rounds)[0]]
      const cBefore = first.client.before as MemSample
      const cAfter = first.client.after as MemSample
      const r: IdleResult = {
        system,
        serverRss: perConn(first.after.rss, first.before.rss),
        serverRss2: perConn(second.after.rss, second.before.rss),
        serverHeapTotal: perConn(first.after.heapTotal, first.before.heapTotal),
        serverYoung: perConn(first.after.young, first.before.young),
        serverHeap: perConn(first.after.heapUsed + first.after.external, first.before.heapUsed + first.before.external),
        clientRss: perConn(cAfter.rss, cBefore.rss),
        fds: first.before.fds >= 0 ? first.after.fds - first.before.fds : NaN,
        connections: first.connections,
        openMs: Number(first.client.openMs),
      }
      console.log(
        `idle      ${LABEL[system].padEnd(9)} ${IDLE_CONNECTIONS} connections, KiB/conn: server RSS +${fmt(r.serverRss / 1024, 1)} ` +
          `(second round +${fmt(r.serverRss2 / 1024, 1)}), heap used+external +${fmt(r.serverHeap / 1024, 1)}, ` +
          `heap committed +${fmt(r.serverHeapTotal / 1024, 1)}, young generation resident +${num(r.serverYoung / 1024)}, client RSS +${fmt(r.clientRss / 1024, 1)}; server fds +${r.fds}`,
      )
      return r
    } finally {
      client.kill()
    }
  })
}

// ---- report ---------------------------------------------------------------------------------------

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const num = (n: number, digits = 1) => (Number.isFinite(n) ? fmt(n, digits) : 'n/a')
const kilo = (n: number) =>
  n >= 1e6 ? `${fmt(n / 1e6, 2)}M` : n >= 1e5 ? `${fmt(n / 1e3, 0)}k` : n >= 1e3 ? `${fmt(n / 1e3, 1)}k` : fmt(n, 0)

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}

/** Grouped bars: the median req/s per concurrency, one bar per system. */
function svgChart(medians: Map<string, Cell>, title: string, subtitle: string): string {
  const W = 760
  const H = 440
  const left = 86
  const right = 170
  const top = 56
  const bottom = 70
  const plotW = W - left - right
  const plotH = H - top - bottom
  const values = [...medians.values()].map((c) => c.rps)
  const yMax = niceMax(Math.max(1, ...values))
  const y = (v: number) => top + plotH - (v / yMax) * plotH
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${left + plotW / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`)
  out.push(`<text x="${left + plotW / 2}" y="40" text-anchor="middle" font-size="11" fill="#4a5568">${esc(subtitle)}</text>`)
  const ticks = 5
  for (let i = 0; i <= ticks; i++) {
    const v = (yMax * i) / ticks
    const yy = y(v).toFixed(1)
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${yy}" y2="${yy}" stroke="${i === 0 ? '#333' : '#e2e8f0'}"/>`)
    out.push(`<text x="${left - 8}" y="${yy}" dy="4" text-anchor="end">${esc(kilo(v))}</text>`)
  }
  out.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333"/>`)
  const groupW = plotW / CONCURRENCY.length
  const barW = Math.min(56, (groupW * 0.75) / SYSTEMS.length)
  CONCURRENCY.forEach((c, g) => {
    const gx = left + g * groupW + (groupW - barW * SYSTEMS.length) / 2
    SYSTEMS.forEach((s, k) => {
      const cell = medians.get(`${s}:${c}`)
      if (!cell) return
      const x = gx + k * barW
      const yy = y(cell.rps)
      out.push(
        `<rect x="${(x + 2).toFixed(1)}" y="${yy.toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${(top + plotH - yy).toFixed(1)}" fill="${COLOR[s]}">` +
          `<title>${esc(`${LABEL[s]}, ${c} in flight: ${fmt(cell.rps, 0)} req/s`)}</title></rect>`,
      )
      out.push(`<text x="${(x + barW / 2).toFixed(1)}" y="${(yy - 5).toFixed(1)}" text-anchor="middle" font-size="11">${esc(kilo(cell.rps))}</text>`)
    })
    out.push(`<text x="${(left + g * groupW + groupW / 2).toFixed(1)}" y="${top + plotH + 20}" text-anchor="middle">${c}</text>`)
  })
  out.push(`<text x="${left + plotW / 2}" y="${H - 22}" text-anchor="middle" font-size="13">requests in flight on one connection (32-byte echo)</text>`)
  out.push(
    `<text transform="translate(22 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" font-size="13">requests per second (higher is better)</text>`,
  )
  const lx = left + plotW + 24
  SYSTEMS.forEach((s, k) => {
    const ly = top + 10 + k * 24
    out.push(`<rect x="${lx}" y="${ly}" width="14" height="14" fill="${COLOR[s]}"/>`)
    out.push(`<text x="${lx + 22}" y="${ly + 11}">${esc(LABEL[s])}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

async function main(): Promise<void> {
  const sections = opt('--section')?.split(',') ?? [...SECTIONS]
  if (!sections.every((x) => (SECTIONS as readonly string[]).includes(x))) throw new Error(`--section takes ${SECTIONS.join(', ')}`)
  const only = opt('--only')?.split(',')
  const pick = (list: readonly System[]) => (only ? list.filter((s) => only.includes(s)) : [...list])
  const failed: number[] = []
  if (sections.includes('main') && pick(SYSTEMS).length > 0) failed.push(await mainSection(pick(SYSTEMS)))
  if (sections.includes('secure') && pick(SECURE_SYSTEMS).length > 0) failed.push(await secureSection(pick(SECURE_SYSTEMS)))
  if (sections.includes('handshake') && pick(HANDSHAKE_SYSTEMS).length > 0) failed.push(await handshakeSection(pick(HANDSHAKE_SYSTEMS)))
  if (failed.length === 0) throw new Error(`--only names none of the systems of the sections run (${ALL_SYSTEMS.join(', ')})`)
  const total = failed.reduce((a, b) => a + b, 0)
  if (total > 0) {
    console.error(`${total} requests or handshakes failed`)
    process.exitCode = 1
  }
}

/** The main section: 32-byte echo against raw net and grpc-js, idle memory; returns the failures. */
async function mainSection(active: System[]): Promise<number> {
  const complete = active.length === SYSTEMS.length && CONCURRENCY.join() === DEFAULT_CONCURRENCY.join()
  const limit = openFileLimit()
  const need = IDLE_CONNECTIONS + 256
  if (limit !== undefined && limit < need) {
    throw new Error(`the open-file limit (ulimit -n) is ${limit}; the idle-connection test needs about ${need}`)
  }
  const started = now()
  console.log(
    `RPC benchmark${quick ? ' (quick)' : ''}: ${WARMUP_MS} ms warm-up + ${MEASURE_MS} ms per cell, ${REPS} repetitions, ` +
      `${IDLE_CONNECTIONS} idle connections; open-file limit ${limit ?? 'unknown'}`,
  )
  const rotated = (rep: number) => active.map((_, i) => active[(i + rep) % active.length]!)
  const cells: Cell[] = []
  if (!flag('--no-load')) for (let rep = 0; rep < REPS; rep++) for (const system of rotated(rep)) cells.push(...(await throughput(system, rep)))
  const idle: IdleResult[] = []
  if (!flag('--no-idle')) for (let rep = 0; rep < MEM_REPS; rep++) for (const system of rotated(rep)) idle.push(await idleMemory(system))
  const elapsed = (now() - started) / 1000

  // The median of each cell over its repetitions (req/s, latencies and CPU times each on their
  // own), with the range of req/s: a best-of figure would select the luckiest repetition.
  const med = new Map<string, Cell & { min: number; max: number }>()
  for (const s of active) {
    for (const c of CONCURRENCY) {
      const of = cells.filter((x) => x.system === s && x.concurrency === c)
      if (of.length === 0) continue
      const rps = spread(of.map((x) => x.rps))
      const m = (k: 'p50' | 'p99' | 'clientCpu' | 'serverCpu') => spread(of.map((x) => x[k])).median
      med.set(`${s}:${c}`, { ...of[0]!, rps: rps.median, min: rps.min, max: rps.max, p50: m('p50'), p99: m('p99'), clientCpu: m('clientCpu'), serverCpu: m('serverCpu') })
    }
  }
  const failedOf = (s: System, c: number) =>
    cells.filter((x) => x.system === s && x.concurrency === c).reduce((n, x) => n + x.errors + x.mismatches, 0)
  const totalFailed = cells.reduce((n, x) => n + x.errors + x.mismatches, 0)
  const rows = active.flatMap((s) =>
    (cells.length > 0 ? CONCURRENCY : []).map((c) => {
      const b = med.get(`${s}:${c}`)!
      const runs = cells.filter((x) => x.system === s && x.concurrency === c).map((x) => fmt(x.rps, 0))
      return [LABEL[s], c, `**${fmt(b.rps, 0)}**`, `${fmt(b.min, 0)}-${fmt(b.max, 0)}`, num(b.p50, 3), num(b.p99, 3), failedOf(s, c), `${num(b.clientCpu)} / ${num(b.serverCpu)}`, runs.join(' / ')]
    }),
  )
  const mainTable = table(['system', 'in flight', 'req/s (median)', 'min-max', 'p50 ms', 'p99 ms', 'failed', 'CPU µs/req client / server', 'req/s per repetition'], rows)
  if (cells.length > 0) console.log(`\n${mainTable}\n`)

  const has = (s: System) => active.includes(s)
  /** Ratio of the medians. */
  const ratio = (a: System, b: System, c: number) => med.get(`${a}:${c}`)!.rps / med.get(`${b}:${c}`)!.rps
  /** Range of the ratios of the same repetition (the two systems ran next to each other). */
  const ratioRange = (a: System, b: System, c: number): string => {
    const per = (s: System) => cells.filter((x) => x.system === s && x.concurrency === c)
    const ys = per(b)
    const r = spread(per(a).flatMap((x) => ys.filter((y) => y.rep === x.rep).map((y) => x.rps / y.rps)))
    return `${fmt(r.min, 2)}-${fmt(r.max, 2)}`
  }
  const ratioText = (a: System, b: System, c: number) => `${fmt(ratio(a, b, c), 2)}x (${ratioRange(a, b, c)})`
  if (cells.length > 0 && has('polycall') && has('raw')) {
    console.log(CONCURRENCY.map((c) => `polycall/raw at ${c}: ${ratioText('polycall', 'raw', c)}`).join('   '))
  }

  const meanOf = (s: System, f: (r: IdleResult) => number) => {
    const rs = idle.filter((r) => r.system === s)
    return rs.reduce((n, r) => n + f(r), 0) / rs.length
  }
  const kib = (s: System, f: (r: IdleResult) => number) => num(meanOf(s, f) / 1024)
  const idleRows = active.map((s) => [
    LABEL[s],
    `**${kib(s, (r) => r.serverRss)}**`,
    idle.filter((r) => r.system === s).map((r) => num(r.serverRss / 1024)).join(' / '),
    kib(s, (r) => r.serverYoung),
    kib(s, (r) => r.serverHeap),
    kib(s, (r) => r.serverRss2),
    kib(s, (r) => r.clientRss),
    idle.filter((r) => r.system === s).map((r) => String(r.fds)).join(' / '),
    fmt(meanOf(s, (r) => r.openMs) / 1000, 2),
  ])
  const idleTable = table(
    [
      'system',
      'server RSS',
      'per run',
      'of which young generation',
      'JS heap used + external',
      'second round RSS',
      'client RSS',
      'server fds opened',
      'open time s',
    ],
    idleRows,
  )
  if (idle.length > 0) console.log(`\n${idleTable}\n`)
  console.log(`all systems: ${totalFailed} failed requests; ${fmt(elapsed, 0)} s`)

  if (quick || !complete || idle.length === 0 || cells.length === 0) {
    console.log(`${quick ? 'quick mode' : 'partial run'}: results not written`)
  } else {
    const ratioRows = CONCURRENCY.map((c) => [
      c,
      `**${ratioText('polycall', 'raw', c)}**`,
      `**${ratioText('polycall', 'grpc', c)}**`,
      ratioText('pcr1', 'raw', c),
      ratioText('pcr1', 'polycall', c),
      ratioText('grpc', 'raw', c),
    ])
    const ratioTable = table(
      ['in flight', 'polycall / raw net', 'polycall / grpc-js', 'PCR1 / raw net', 'PCR1 / polycall v1', 'grpc-js / raw net'],
      ratioRows,
    )
    const r128 = ratio('polycall', 'raw', 128)
    const r16 = ratio('polycall', 'raw', 16)
    const r1 = ratio('polycall', 'raw', 1)
    const pcFailed = CONCURRENCY.reduce((n, c) => n + failedOf('polycall', c), 0)
    const rawRss = meanOf('raw', (r) => r.serverRss)
    const idleRatio = meanOf('polycall', (r) => r.serverRss) / rawRss
    // Below half a KiB per connection raw net's growth is lost in RSS noise: no ratio to judge by.
    const idleClear = rawRss >= 512
    const verdict = (ok: boolean, miss: string) => (ok ? '**met**' : `**missed**: ${miss}`)
    const short = (r: number, target: number) => `${fmt(r, 2)}x instead of ${fmt(target, 2)}x, ${fmt((1 - r / target) * 100, 0)}% short`
    const targets = table(
      ['target', 'measured', 'verdict'],
      [
        ['polycall ≥ 1.0x raw net at 1 in flight (medians)', `${fmt(r1, 2)}x`, verdict(r1 >= 1, short(r1, 1))],
        ['polycall ≥ 0.85x raw net at 16 in flight (medians)', `${fmt(r16, 2)}x`, verdict(r16 >= 0.85, short(r16, 0.85))],
        ['polycall ≥ 0.90x raw net at 128 in flight (medians)', `${fmt(r128, 2)}x`, verdict(r128 >= 0.9, short(r128, 0.9))],
        ['zero failed polycall requests', String(pcFailed), verdict(pcFailed === 0, `${pcFailed} failed`)],
        [
          'polycall idle server RSS/conn ≤ 2x raw net',
          idleClear ? `${fmt(idleRatio, 2)}x` : 'n/a',
          idleClear ? verdict(idleRatio <= 2, `${fmt(idleRatio, 2)}x instead of at most 2x`) : `**inconclusive**: raw net grew by ${num(rawRss / 1024)} KiB/conn, within RSS noise`,
        ],
      ],
    )
    console.log(`\n${ratioTable}\n\n${targets}`)
    const young = (s: System) => meanOf(s, (r) => r.serverYoung) / 1024
    const heapOf = (s: System) => meanOf(s, (r) => r.serverHeap) / 1024
    const memoryNote =
      `For polycall, ${num(young('polycall'))} of its ${num(meanOf('polycall', (r) => r.serverRss) / 1024)} KiB/conn are ` +
      `young-generation pages (raw net: ${num(young('raw'))} of ${num(meanOf('raw', (r) => r.serverRss) / 1024)}): while ` +
      `${IDLE_CONNECTIONS.toLocaleString('en-US')} connections are set up, V8 grows its new space and touches more of it. ` +
      `That part is bounded by the new space's maximum size, not proportional to the connections. What the ` +
      `connections keep alive is the JS heap column: ${num(heapOf('polycall'))} KiB/conn for polycall against ` +
      `${num(heapOf('raw'))} for raw net (${fmt(heapOf('polycall') / heapOf('raw'), 2)}x) and ${num(heapOf('grpc'))} for grpc-js.`
    const missed = r128 < 0.9 || r16 < 0.85 || r1 < 1 || pcFailed > 0 || !idleClear || idleRatio > 2
    const targetsNote = missed
      ? 'Where the time and memory go, and what would close the gaps: [rpc-profile.md](rpc-profile.md).'
      : 'Every target is met in this run.'
    const md = `# RPC benchmark

\`npm run bench:rpc\` (benchmarks/rpc.bench.ts). polycall against a raw \`node:net\` echo (the
ceiling) and \`@grpc/grpc-js\`, measured in the same run. The machine is shared with other
workloads and noisy: repeat runs move single cells by 10-30%, so read the ratios, not the
third digit.

${machine()}
- Open-file limit (soft): ${limit ?? 'unknown'}

## Method

- Client and server are separate Node processes on 127.0.0.1 (the server listens on port 0);
  an orchestrating process spawns them, collects results over IPC and kills them at the end.
- One connection. A fixed number of workers (1, 16, 128 = requests in flight) each send a
  32-byte payload (worker id and counter in the first 8 bytes, so every request is distinct),
  await the echo, compare it byte for byte with the request and send the next.
- Each cell: ${WARMUP_MS} ms warm-up, then ${MEASURE_MS} ms measured. req/s counts the requests
  that completed in the measured window; p50/p99 are exact percentiles of their client-side
  latencies (request call to resolved promise). *failed* counts rejected requests plus responses
  that differ from their request, over warm-up and measurement of every repetition. *CPU µs/req*
  is the user + system CPU time of each process over the measured window divided by the
  requests completed in it.
- ${REPS} repetitions; the order of the systems rotates between them
  (${Array.from({ length: REPS }, (_, r) => rotated(r).map((x) => LABEL[x]).join(', ')).join('; ')}).
  The table shows the **median** of each cell's repetitions (req/s, p50, p99 and CPU times, each
  the median of its own column) and the range of req/s; the last column lists every repetition.
  Ratios are ratios of the medians; the range next to each is that of the ratios within one
  repetition, where the two systems ran one after the other under the same neighbours' load.
- Each system runs in fresh server and client processes per repetition; one client process runs
  the three concurrencies in order.
- **polycall**: \`PolyCallServer({ maxInFlight: 256 })\` with \`route('echo', (ctx) => ctx.data)\`;
  \`PolyCallClient({ maxInFlight: 1024, reconnect: false })\`, \`request('echo', payload, { timeout: ${REQUEST_TIMEOUT} })\`
  (msgpack payloads, the payload travels as binary).
- **polycall PCR1**: the same server and client with \`protocol: 'pcr1'\` and a
  \`bench.echo\` route; PCR1 payloads are JSON, so the 32 bytes travel as a 64-character hex string
  (converted back to bytes and checked like the others). PCR1 replies in request order per connection.
- **raw net**: a 4-byte little-endian length prefix and the payload. The server parses every
  frame and writes one response frame per request; both sides coalesce what one tick produced
  into one \`socket.write\`, the client correlates responses in order with a FIFO. No timeouts,
  no validation. polycall writes the same way, except that a tick which has queued 4 KiB writes
  it at once (at 128 in flight), and a client tick whose earlier requests are all answered
  writes its first 256 bytes at once (at 16 in flight), which raw net does not do.
- **grpc-js** ${grpcVersion()}: a unary \`Echo\` method from a \`ServiceDefinition\` with identity
  (de)serializers (no protobuf), \`makeGenericClientConstructor\`, insecure credentials, a
  ${REQUEST_TIMEOUT} ms deadline per call (as polycall's timeout).

## Throughput and latency

![req/s per system and requests in flight](rpc.svg)

${mainTable}

Ratios of the median req/s (range of the per-repetition ratios):

${ratioTable}

## Idle memory per connection

KiB per connection. A fresh server process per system and run; a client process first opens and
closes 20 connections (so the server's code paths are compiled before the baseline), then opens
${IDLE_CONNECTIONS.toLocaleString('en-US')} connections and leaves them idle. Every connection completes its handshake
(polycall's HANDSHAKE exchange, the TCP handshake for raw net, the HTTP/2 preface and SETTINGS
for grpc-js) and one echo round trip. The server's RSS is read after \`gc()\` (\`--expose-gc\`,
repeated 50 ms apart until RSS settles) before and after; the growth divided by ${IDLE_CONNECTIONS.toLocaleString('en-US')} is **server RSS**, the
mean of ${MEM_REPS} run${MEM_REPS > 1 ? 's' : ''} (rotated order; *per run* lists each). The other columns explain it:
*of which young generation* is the growth of the resident pages of V8's new space, *JS heap used +
external* what the connections' live objects take, *second round RSS* the growth when as many
connections are opened again after the first ones closed, *client RSS* the client process's
growth. *server fds opened* checks that the server really holds the connections. RSS moves in
pages and allocator arenas, so differences below about 1 KiB/conn are noise.

${idleTable}

${memoryNote}

## Targets

${targets}

${targetsNote}

All systems together: ${totalFailed} failed requests. The whole run took ${fmt(elapsed, 0)} s.
`
    console.log(`\n${writeResult('rpc.md', md)}`)
    console.log(`${writeResult('rpc.svg', svgChart(med, 'Echo RPC over loopback, 32-byte payloads', `medians of ${REPS} repetitions; client and server in separate processes; see rpc.md`))}`)
  }
  return totalFailed
}

/** Median and range of some numbers. */
function spread(xs: number[]): { median: number; min: number; max: number } {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN }
  const mid = v.length >> 1
  return { median: v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2, min: v[0]!, max: v[v.length - 1]! }
}

const rotate = <T>(list: readonly T[], rep: number): T[] => list.map((_, i) => list[(i + rep) % list.length]!)

/**
 * The secure section: 64-byte and 4 KiB echoes through sealed polycall, polycall over TLS,
 * plaintext polycall, raw net and secret-stream; medians of the repetitions with their range.
 */
async function secureSection(active: System[]): Promise<number> {
  const started = now()
  console.log(
    `\nsecure section${quick ? ' (quick)' : ''}: ${SECURE_PAYLOADS.join(' B and ')} B payloads, ${WARMUP_MS} ms warm-up + ${MEASURE_MS} ms per cell, ` +
      `${SECURE_REPS} repetitions: ${active.map((s) => LABEL[s]).join(', ')}`,
  )
  const cells: Cell[] = []
  for (const payload of SECURE_PAYLOADS) {
    for (let rep = 0; rep < SECURE_REPS; rep++) for (const system of rotate(active, rep)) cells.push(...(await throughput(system, rep, payload)))
  }
  const of = (s: System, payload: number, c: number) => cells.filter((x) => x.system === s && x.payload === payload && x.concurrency === c)
  const med = (s: System, payload: number, c: number) => spread(of(s, payload, c).map((x) => x.rps)).median
  const has = (s: System) => active.includes(s)
  const r = (a: System, b: System, payload: number, c: number) => (has(a) && has(b) ? med(a, payload, c) / med(b, payload, c) : NaN)
  const x = (v: number) => (Number.isFinite(v) ? `${fmt(v, 2)}x` : 'n/a')
  const tables: string[] = []
  for (const payload of SECURE_PAYLOADS) {
    const rows = active.flatMap((sys) =>
      CONCURRENCY.map((c) => {
        const rps = spread(of(sys, payload, c).map((y) => y.rps))
        const p50 = spread(of(sys, payload, c).map((y) => y.p50)).median
        const cpu = (k: 'clientCpu' | 'serverCpu') => num(spread(of(sys, payload, c).map((y) => y[k])).median)
        const failures = of(sys, payload, c).reduce((n, y) => n + y.errors + y.mismatches, 0)
        return [LABEL[sys], c, `**${fmt(rps.median, 0)}**`, `${fmt(rps.min, 0)}-${fmt(rps.max, 0)}`, x(r(sys, 'raw', payload, c)), num(p50, 3), `${cpu('clientCpu')} / ${cpu('serverCpu')}`, failures]
      }),
    )
    const t = table(['system', 'in flight', 'req/s (median)', 'min-max', '/ raw net', 'p50 ms', 'CPU µs/req client / server', 'failed'], rows)
    tables.push(`### ${payload === 4096 ? '4 KiB' : `${payload} B`} payloads\n\n${t}`)
    console.log(`\n${payload} B payloads\n${t}`)
  }
  const ratioRows = SECURE_PAYLOADS.flatMap((payload) =>
    CONCURRENCY.map((c) => [
      payload === 4096 ? '4 KiB' : `${payload} B`,
      c,
      `**${x(r('sealed', 'polycall', payload, c))}**`,
      `**${x(r('sealed', 'tls', payload, c))}**`,
      `**${x(r('sealed', 'secretstream', payload, c))}**`,
      x(r('tls', 'raw', payload, c)),
      x(r('secretstream', 'raw', payload, c)),
    ]),
  )
  const ratioTable = table(['payload', 'in flight', 'sealed / plaintext polycall', 'sealed / polycall over TLS', 'sealed / secret-stream', 'polycall TLS / raw', 'secret-stream / raw'], ratioRows)
  console.log(`\nratios of the medians\n${ratioTable}`)
  const failed = cells.reduce((n, y) => n + y.errors + y.mismatches, 0)
  const complete = SECURE_SYSTEMS.every(has) && CONCURRENCY.join() === DEFAULT_CONCURRENCY.join() && SECURE_PAYLOADS.join() === DEFAULT_SECURE_PAYLOADS.join()
  if (complete) {
    const ahead = SECURE_PAYLOADS.every((p) => CONCURRENCY.every((c) => r('sealed', 'tls', p, c) > 1 && r('sealed', 'secretstream', p, c) > 1))
    const verdict = (ok: boolean) => (ok ? '**met**' : '**missed**')
    const t1 = r('sealed', 'polycall', 64, 128)
    const t2 = [16, 128].map((c) => r('sealed', 'tls', 4096, c))
    const targets = table(
      ['target', 'measured', 'verdict'],
      [
        ['sealed ≥ 0.8x plaintext polycall, 128 in flight, 64 B', x(t1), verdict(t1 >= 0.8)],
        ['sealed ≥ 1.3x polycall over TLS, 4 KiB, 16 and 128 in flight', t2.map(x).join(' / '), verdict(t2.every((v) => v >= 1.3))],
        ['sealed ahead of polycall over TLS and secret-stream at every level', ahead ? 'yes' : 'no', verdict(ahead)],
      ],
    )
    console.log(`\n${targets}`)
    const md = `# Secure RPC benchmark

\`npm run bench:rpc -- --section secure\` (benchmarks/rpc.bench.ts): the method of [rpc.md](rpc.md)
(separate client and server processes on 127.0.0.1, one connection, 1, 16 and 128 requests in
flight, every echo checked), with ${SECURE_PAYLOADS.join(' B and ')} B payloads. Each cell ran ${SECURE_REPS} times
in rotated order; the tables give the **median** and the range.

${machine()}

- **polycall sealed**: a secure session, Noise IK (the client has an identity and pins the
  server key), the client's preferred cipher (${sealedCipher === 'auto' ? `${preferredCipher() === 'AESGCM' ? 'AES-256-GCM' : 'ChaCha20-Poly1305'} on this machine` : sealedCipher}),
  small frames written into the write arena and sealed there in place, one native call per
  write, as sealed batches of up to 64 frames (one AEAD call each; a frame alone in its write is
  sealed on its own), larger ones staged and sealed in one native call per tick. Sealed frames
  carry no v1 checksum (the tag covers them).
- **polycall over TLS**: the same client and server with node:tls underneath (the test
  certificates, TLS 1.3).
- **polycall**: plaintext, as in rpc.md.
- **raw net**: length-prefixed frames, one write per tick (the ceiling).
- **secret-stream**: @hyperswarm/secret-stream (Noise XX, libsodium secretstream) over node:net,
  the raw net framing inside its messages, one message per tick.

${tables.join('\n\n')}

Ratios of the medians:

${ratioTable}

## Targets

${targets}

${failed} failed requests in this section; it took ${fmt((now() - started) / 1000, 0)} s.
`
    if (!quick) console.log(writeResult('rpc-secure.md', md))
  }
  return failed
}

interface HandshakeResult {
  system: System
  perSecond: number
  median: number
  clientCpu: number
  errors: number
}

/** Sequential handshakes per second, each in a fresh client process against a fresh server. */
async function handshakeSection(active: System[]): Promise<number> {
  console.log(`\nhandshake section${quick ? ' (quick)' : ''}: sequential connect + handshake + close for ${HANDSHAKE_MS} ms, ${SECURE_REPS} repetitions`)
  const results: HandshakeResult[] = []
  for (let rep = 0; rep < SECURE_REPS; rep++) {
    for (const system of rotate(active, rep)) {
      const res = await withServer(system, async (_server, port, key) => {
        const client = new Child(['--role', 'handshake', '--kind', system, '--port', String(port), ...(key ? ['--key', key] : [])])
        try {
          const m = await client.next('handshakes', HANDSHAKE_MS + 60_000)
          await client.exited(5000)
          return m
        } finally {
          client.kill()
        }
      })
      const r: HandshakeResult = {
        system,
        perSecond: Number(res.perSecond),
        median: typeof res.median === 'number' ? res.median : NaN,
        clientCpu: typeof res.clientCpu === 'number' ? res.clientCpu : NaN,
        errors: Number(res.errors),
      }
      results.push(r)
      console.log(
        `rep ${rep + 1}  ${LABEL[system].padEnd(18)} ${fmt(r.perSecond, 0).padStart(7)} handshakes/s  median ${num(r.median, 3)} ms  client CPU ${num(r.clientCpu, 0)} µs each  errors ${r.errors}`,
      )
    }
  }
  const of = (s: System) => results.filter((y) => y.system === s)
  const med = (s: System) => spread(of(s).map((y) => y.perSecond)).median
  const rows = active.map((sys) => {
    const hs = spread(of(sys).map((y) => y.perSecond))
    return [
      LABEL[sys],
      `**${fmt(hs.median, 0)}**`,
      `${fmt(hs.min, 0)}-${fmt(hs.max, 0)}`,
      num(spread(of(sys).map((y) => y.median)).median, 3),
      num(spread(of(sys).map((y) => y.clientCpu)).median, 0),
      active.includes('nodetls') ? `${fmt(med(sys) / med('nodetls'), 2)}x` : 'n/a',
    ]
  })
  const t = table(['system', 'handshakes/s (median)', 'min-max', 'ms each (median)', 'client CPU µs each', '/ node:tls'], rows)
  console.log(`\n${t}`)
  const failed = results.reduce((n, y) => n + y.errors, 0)
  if (HANDSHAKE_SYSTEMS.every((s) => active.includes(s))) {
    const ratio = med('sealed') / med('nodetls')
    const targets = table(['target', 'measured', 'verdict'], [['sealed handshakes/s ≥ 2x node:tls', `${fmt(ratio, 2)}x`, ratio >= 2 ? '**met**' : '**missed**']])
    console.log(`\n${targets}`)
    const md = `# Handshakes per second

\`npm run bench:rpc -- --section handshake\` (benchmarks/rpc.bench.ts). A client process opens a
connection, completes the handshake and closes it, sequentially, for ${HANDSHAKE_MS} ms, against a
server in its own process on 127.0.0.1; ${SECURE_REPS} repetitions in rotated order, median and range.
For polycall a handshake is a new \`PolyCallClient\` until \`connect()\` resolves (TCP, TLS where
on, the v1 HANDSHAKE exchange with its Noise IK messages for the sealed client), then
\`destroy()\`; node:tls is \`tls.connect\` until \`secureConnect\`; secret-stream is its Noise XX
over node:net until \`connect\`; raw net is the TCP connect alone.

${machine()}

${t}

${targets}
`
    if (!quick) console.log(writeResult('rpc-handshakes.md', md))
  }
  return failed
}

function grpcVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../node_modules/@grpc/grpc-js/package.json', import.meta.url), 'utf8')) as { version?: string }
    return pkg.version ?? ''
  } catch {
    return ''
  }
}

const role = opt('--role')
if (role) {
  childMain(role).catch((e: unknown) => {
    const message = e instanceof Error ? (e.stack ?? e.message) : String(e)
    console.error(message)
    send({ ev: 'error', message })
    setTimeout(() => process.exit(1), 100)
  })
} else {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      killAll()
      process.exit(130)
    })
  }
  process.on('exit', killAll)
  try {
    await main()
  } catch (e) {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e)
    process.exitCode = 1
  } finally {
    killAll()
  }
}
