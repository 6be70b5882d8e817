#!/usr/bin/env node
/**
 * The `polycall` command.
 *
 *   polycall serve [--port 8080] [--host 127.0.0.1] [--user NAME --password SECRET]
 *   polycall call <host:port> <command> [json] [--timeout ms] [--user NAME --password SECRET]
 *                 [--tls] [--ca file] [--cert file] [--key file] [--pin sha256/...]
 *   polycall decode <hex>
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { PolyCallClient, type ClientTlsOptions } from './client/client.js'
import { isPolyCallError } from './core/errors.js'
import { createDemoServer } from './demo/service.js'
import { MessageType } from './protocol/constants.js'
import { inspectFrame } from './protocol/inspect.js'

const USAGE = `usage:
  polycall serve [--port 8080] [--host 127.0.0.1] [--user NAME --password SECRET]
  polycall call <host:port> <command> [json] [--timeout ms] [--user NAME --password SECRET]
                [--tls] [--ca file] [--cert file] [--key file] [--pin sha256/BASE64]
  polycall decode <hex>`

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
    },
  })
  const auth = values.user !== undefined ? { user: values.user, password: values.password ?? '' } : undefined
  const server = createDemoServer(auth ? { auth } : {})
  const address = await server.listen(Number(values.port), values.host)
  out(`polycall demo service listening on ${address.address}:${address.port}${auth ? ' (authentication required)' : ''}`)
  out(`routes: ${server.router.routes().map((r) => `${r.method === '*' ? '' : `${r.method} `}${r.path}`).join(', ')}`)
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

async function call(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
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
  const [endpoint, command, json] = positionals
  const { host, port } = parseEndpoint(endpoint)
  if (!command) throw new Error('missing <command>')
  const data: unknown = json === undefined ? undefined : JSON.parse(json)
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
    reconnect: false,
    connectTimeout: timeout,
    credentials: values.user !== undefined ? { username: values.user, password: values.password ?? '' } : undefined,
  })
  try {
    const result = await client.request(command, data, { timeout })
    out(Buffer.isBuffer(result) ? result.toString('hex') : JSON.stringify(result, null, 2) ?? 'undefined')
    return 0
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
