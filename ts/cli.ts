#!/usr/bin/env node
/**
 * The `polycall` command.
 *
 *   polycall serve [--protocol v1|pcr1] [--port 8080] [--host 127.0.0.1] [--user NAME --password SECRET] [--token T]
 *                  [--workers N]
 *   polycall call [--protocol v1|pcr1] <host:port> <command> [json] [--timeout ms] [--user NAME --password SECRET]
 *                 [--tls] [--ca file] [--cert file] [--key file] [--pin sha256/...]
 *   polycall control --protocol pcr1 <host:port> <ping|describe|health|shutdown> [--token T]
 *   polycall decode <hex>
 *
 * `call --protocol pcr1` exits like the C runtime's client (PROTOCOL-PCR1.md §4): 0 ok,
 * 3 request.malformed / input.invalid, 4 operation.unknown / *.unknown, 5 cannot connect or
 * connection dropped, 6 deadline.exceeded or no reply in time, 7 auth.denied, 1 otherwise.
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { PolyCallClient, type ClientTlsOptions } from './client/client.js'
import { serveCluster } from './cluster/serve.js'
import { ErrorCode, isPolyCallError } from './core/errors.js'
import { createPcr1DemoServer } from './demo/pcr1-service.js'
import { createDemoServer } from './demo/service.js'
import { MessageType } from './protocol/constants.js'
import { inspectFrame } from './protocol/inspect.js'

const USAGE = `usage:
  polycall serve [--protocol v1|pcr1] [--port 8080] [--host 127.0.0.1] [--user NAME --password SECRET] [--token T]
                 [--workers N]
  polycall call [--protocol v1|pcr1] <host:port> <command> [json] [--timeout ms] [--user NAME --password SECRET]
                [--tls] [--ca file] [--cert file] [--key file] [--pin sha256/BASE64]
  polycall control --protocol pcr1 <host:port> <ping|describe|health|shutdown> [--token T]
  polycall decode <hex>`

/** Exit codes of the C runtime's \`polycall call\` (PROTOCOL-PCR1.md §4). */
export function pcr1ExitCode(code: string): number {
  if (code === 'request.malformed' || code === 'input.invalid') return 3
  // operation.unknown, and the operations' own not-found codes such as item.unknown.
  if (code === 'operation.unknown' || (code.endsWith('.unknown') && code !== 'control.unknown')) return 4
  if (code === ErrorCode.CONNECT_FAILED || code === ErrorCode.CONNECTION_LOST) return 5
  if (code === 'deadline.exceeded' || code === ErrorCode.TIMEOUT) return 6
  if (code === 'auth.denied') return 7
  return 1
}

const out = (s: string) => process.stdout.write(`${s}\n`)
const err = (s: string) => process.stderr.write(`${s}\n`)

function parseEndpoint(endpoint: string | undefined): { host: string; port: number } {
  const m = endpoint ? /^\[?([^\]]+?)\]?:(\d+)$/.exec(endpoint) : null
  if (!m) throw new Error(`expected <host:port>, got ${endpoint ?? 'nothing'}`)
  return { host: m[1]!, port: Number(m[2]) }
}

async function serve(argv: string[]): Promise<number> {
  // A closed stdout (the parent went away) must not stop the service.
  process.stdout.on('error', () => {})
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      user: { type: 'string' },
      password: { type: 'string' },
      protocol: { type: 'string', default: 'v1' },
      token: { type: 'string' },
      workers: { type: 'string' },
    },
  })
  const protocol = checkProtocol(values.protocol)
  const auth = values.user !== undefined ? { user: values.user, password: values.password ?? '' } : undefined
  if (protocol === 'pcr1' && auth) throw new Error('PCR1 has no authentication step; use --token for shutdown')
  const build = () =>
    protocol === 'pcr1'
      ? createPcr1DemoServer(values.token !== undefined ? { controlToken: values.token } : {})
      : createDemoServer(auth ? { auth } : {})
  const routes = (server: ReturnType<typeof build>) =>
    `routes: ${server.router.routes().map((r) => `${r.method === '*' ? '' : `${r.method} `}${r.path}`).join(', ')}`
  if (values.workers !== undefined) return serveWorkers(values.workers, Number(values.port), values.host, protocol, build, routes, auth !== undefined)
  const server = build()
  const address = await server.listen(Number(values.port), values.host)
  out(`polycall ${protocol} demo service listening on ${address.address}:${address.port}${auth ? ' (authentication required)' : ''}`)
  out(routes(server))
  await new Promise<void>((resolve) => {
    const stop = () => {
      out('shutting down: finishing requests in flight')
      void server.close({ timeout: 10_000 }).then(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  return 0
}

/**
 * `serve --workers N`: the same service in N worker processes sharing the port (serveCluster).
 * This script runs in the primary and in every worker; the primary prints and waits, a worker
 * serves until the primary drains it. SIGHUP rolls the workers, SIGTERM/SIGINT drain them.
 */
async function serveWorkers(
  count: string,
  port: number,
  host: string,
  protocol: 'v1' | 'pcr1',
  build: () => ReturnType<typeof createDemoServer>,
  routes: (server: ReturnType<typeof createDemoServer>) => string,
  auth: boolean,
): Promise<number> {
  const workers = Number(count)
  if (!/^\d+$/.test(count) || !Number.isInteger(workers) || workers < 1 || workers > 1024) {
    throw new Error(`--workers must be an integer in 1..1024, not ${count}`)
  }
  const handle = await serveCluster(() => build(), { workers, port, host, drainTimeout: 10_000 })
  // A worker serves (its listening server keeps it alive) until the primary drains it.
  if (handle.role === 'worker') return 0
  const primary = handle
  out(
    `polycall ${protocol} demo service listening on ${primary.host}:${primary.port} with ${workers} worker${workers === 1 ? '' : 's'}` +
      `${auth ? ' (authentication required)' : ''}`,
  )
  out(routes(build()))
  primary.on('exit', ({ worker, code, signal, expected }) => {
    if (!expected) err(`worker ${worker.id} (pid ${worker.pid}) exited (${signal ?? code}); replacing it`)
  })
  primary.on('restarted', (generation) => out(`rolled every worker (generation ${generation})`))
  primary.on('failure', (e) => err(`error ${(e as { code?: string }).code ?? ''}: ${e.message}`))
  // The workers keep the primary alive; SIGTERM/SIGINT drain them and exit (serveCluster).
  return 0
}

function checkProtocol(p: string | undefined): 'v1' | 'pcr1' {
  if (p !== 'v1' && p !== 'pcr1') throw new Error(`--protocol must be v1 or pcr1, not ${p}`)
  return p
}

async function control(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      protocol: { type: 'string', default: 'pcr1' },
      timeout: { type: 'string', default: '5000' },
      token: { type: 'string' },
    },
  })
  if (checkProtocol(values.protocol) !== 'pcr1') throw new Error('control actions exist on the PCR1 wire only')
  const [endpoint, action] = positionals
  const { host, port } = parseEndpoint(endpoint)
  if (!action) throw new Error('missing <action>')
  const timeout = Number(values.timeout)
  const client = new PolyCallClient({ host, port, protocol: 'pcr1', reconnect: false, connectTimeout: timeout })
  try {
    out(JSON.stringify(await client.control(action, { authToken: values.token, timeout }), null, 2))
    return 0
  } catch (e) {
    if (!isPolyCallError(e)) throw e
    err(`error ${e.code}: ${e.message}`)
    return pcr1ExitCode(e.code)
  } finally {
    client.destroy()
  }
}

async function call(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      protocol: { type: 'string', default: 'v1' },
      timeout: { type: 'string', default: '5000' },
      user: { type: 'string' },
      password: { type: 'string' },
      tls: { type: 'boolean', default: false },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      pin: { type: 'string', multiple: true },
    },
  })
  const protocol = checkProtocol(values.protocol)
  const [endpoint, command, json] = positionals
  const { host, port } = parseEndpoint(endpoint)
  if (!command) throw new Error('missing <command>')
  let data: unknown
  try {
    data = json === undefined ? undefined : JSON.parse(json)
  } catch {
    err(`error: the input is not JSON: ${json}`)
    return protocol === 'pcr1' ? 3 : 1
  }
  let tls: ClientTlsOptions | undefined
  if (values.tls || values.ca || values.pin) {
    tls = {}
    if (values.ca) tls.ca = readFileSync(values.ca)
    if (values.cert) tls.cert = readFileSync(values.cert)
    if (values.key) tls.key = readFileSync(values.key)
    if (values.pin) tls.pin = values.pin
  }
  const timeout = Number(values.timeout)
  const client = new PolyCallClient({
    host,
    port,
    tls,
    protocol,
    reconnect: false,
    connectTimeout: timeout,
    credentials: values.user !== undefined && protocol === 'v1' ? { username: values.user, password: values.password ?? '' } : undefined,
  })
  try {
    const result = await client.request(command, data, { timeout })
    out(Buffer.isBuffer(result) ? result.toString('hex') : JSON.stringify(result, null, 2) ?? 'undefined')
    return 0
  } catch (e) {
    if (protocol !== 'pcr1' || !isPolyCallError(e)) throw e
    err(`error ${e.code}: ${e.message}`)
    return pcr1ExitCode(e.code)
  } finally {
    client.destroy()
  }
}

function decode(argv: string[]): number {
  const hex = argv.join('').replace(/[\s:|]/g, '')
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new Error('expected an even number of hex digits')
  const i = inspectFrame(Buffer.from(hex, 'hex'))
  const name = MessageType[i.type] ?? 'unknown'
  const sum = (n: number) => `0x${n.toString(16).padStart(8, '0')}`
  out(`version   ${i.version}`)
  out(`type      ${i.type} (${name.toUpperCase()})`)
  out(`flags     0x${i.flags.toString(16).padStart(4, '0')}`)
  out(`sequence  ${i.sequence}`)
  out(`length    ${i.payloadLength}${i.payload.length !== i.payloadLength ? ` (${i.payload.length} present)` : ''}`)
  out(
    `checksum  ${sum(i.checksum)} ${
      i.computedChecksum === undefined ? '(payload incomplete)' : i.computedChecksum === i.checksum ? 'ok' : `MISMATCH: payload sums to ${sum(i.computedChecksum)}`
    }`,
  )
  const text = i.payload.toString('utf8')
  const printable = /^[\x09\x0a\x0d\x20-\x7e\u00a0-\uffff]*$/.test(text) && !text.includes('\ufffd')
  out(`payload   ${i.payload.length === 0 ? '(empty)' : printable ? text : i.payload.toString('hex')}`)
  if (i.trailing > 0) out(`trailing  ${i.trailing} bytes after the frame`)
  for (const p of i.problems) out(`problem   ${p.code}: ${p.message}`)
  return i.problems.length === 0 ? 0 : 2
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  try {
    switch (cmd) {
      case 'serve':
        return await serve(rest)
      case 'call':
        return await call(rest)
      case 'control':
        return await control(rest)
      case 'decode':
        return decode(rest)
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        out(USAGE)
        return cmd === undefined ? 1 : 0
      default:
        err(`unknown command ${cmd}\n${USAGE}`)
        return 1
    }
  } catch (e) {
    if (isPolyCallError(e)) err(`error ${e.code}: ${e.message}`)
    else err(`error: ${(e as Error).message}`)
    return 1
  }
}

process.exitCode = await main(process.argv.slice(2))
