#!/usr/bin/env node
/**
 * The `polycall` command: `serve`, `call`, `control`, `decode` and `keygen` (run `polycall --help`).
 *
 * `call --protocol pcr1` exits like the C runtime's client (docs/interop.md): 0 ok,
 * 3 request.malformed / input.invalid, 4 operation.unknown / *.unknown, 5 cannot connect or
 * connection dropped, 6 deadline.exceeded or no reply in time, 7 auth.denied, 1 otherwise.
 *
 * Only node built-ins and the error module load up front: `--help` and `--version` work even
 * where the native addon does not, and a command that needs the addon reports
 * `ERR_POLYCALL_NATIVE_UNAVAILABLE` like any other error.
 *
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { ClientTlsOptions } from './client/client.js'
import { ErrorCode, isPolyCallError } from './core/errors.js'

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** A mistake in how the command was called: printed with a pointer to the command's help. */
class UsageError extends Error {}

// A closed stdout or stderr (`polycall decode ... | head -1`, a parent that went away) is not a
// failure of the command: stop writing to it and carry on.
let stdoutOpen = true
let stderrOpen = true
process.stdout.on('error', () => {
  stdoutOpen = false
})
process.stderr.on('error', () => {
  stderrOpen = false
})
const out = (s: string) => {
  if (stdoutOpen) process.stdout.write(`${s}\n`)
}
const err = (s: string) => {
  if (stderrOpen) process.stderr.write(`${s}\n`)
}

type OptionSpec = { type: 'string' | 'boolean'; short?: string; multiple?: boolean; default?: string | boolean }

interface Command {
  summary: string
  usage: string
  details: string
  positionals: boolean
  options: Record<string, OptionSpec>
  run(values: Record<string, string | boolean | string[] | undefined>, positionals: string[]): Promise<number> | number
}

const HELP: OptionSpec = { type: 'boolean', short: 'h' }

/** Exit codes of the C runtime's `polycall call` (docs/interop.md). */
function pcr1ExitCode(code: string): number {
  if (code === 'request.malformed' || code === 'input.invalid') return 3
  // operation.unknown, and the operations' own not-found codes such as item.unknown.
  if (code === 'operation.unknown' || (code.endsWith('.unknown') && code !== 'control.unknown')) return 4
  if (code === ErrorCode.CONNECT_FAILED || code === ErrorCode.CONNECTION_LOST) return 5
  if (code === 'deadline.exceeded' || code === ErrorCode.TIMEOUT) return 6
  if (code === 'auth.denied') return 7
  return 1
}

function parseEndpoint(endpoint: string | undefined): { host: string; port: number } {
  if (endpoint === undefined) throw new UsageError('missing <host:port>')
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(endpoint)
  if (!m || Number(m[2]) > 65535) throw new UsageError(`expected <host:port> such as 127.0.0.1:8080, got ${endpoint}`)
  return { host: m[1]!, port: Number(m[2]) }
}

function portOption(value: unknown): number {
  const s = String(value)
  if (!/^\d+$/.test(s) || Number(s) > 65535) throw new UsageError(`--port must be a port number from 0 to 65535, not ${s}`)
  return Number(s)
}

function millisOption(name: string, value: unknown): number {
  const s = String(value)
  const n = Number(s)
  if (s.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number of milliseconds, not ${s}`)
  return n
}

function protocolOption(value: unknown): 'v1' | 'pcr1' {
  if (value !== 'v1' && value !== 'pcr1') throw new UsageError(`--protocol must be v1 or pcr1, not ${String(value)}`)
  return value
}

function stringOption(values: Record<string, unknown>, name: string): string | undefined {
  const v = values[name]
  return typeof v === 'string' ? v : undefined
}

/** An identity file for a flag: loaded, or a usage error naming the flag and the file. */
async function identityOption(flag: string, file: string): Promise<import('./secure/identity.js').Identity> {
  const { Identity } = await import('./secure/identity.js')
  try {
    return Identity.load(file)
  } catch (e) {
    throw new UsageError(`--${flag} ${file}: ${(e as Error).message}`)
  }
}

/** The message of a failed call, with a hint where the fix is a flag. */
function describeFailure(e: unknown, context: { credentials: boolean; secure?: boolean }): string {
  if (!isPolyCallError(e)) return `error: ${(e as Error)?.message ?? String(e)}`
  let line = `error ${e.code}: ${e.message}`
  if (e.code === ErrorCode.INSECURE_PEER) {
    line += context.secure
      ? '\nhint: the server runs no secure sessions; drop --server-key, or start it with --secure-key'
      : '\nhint: the server requires a secure session; pass --server-key with the key it printed'
  }
  else if (e.code === ErrorCode.HANDSHAKE_FAILED) line += "\nhint: check --server-key against the key the server printed (polycall serve --secure-key)"
  else if (e.code === ErrorCode.UNAUTHENTICATED) {
    line += context.credentials
      ? '\nhint: the server refused these credentials; check --user and --password'
      : '\nhint: the server requires authentication; pass --user NAME --password SECRET'
  }
  return line
}

function workersOption(value: unknown): number | undefined {
  if (value === undefined) return undefined
  const s = String(value)
  if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > 1024) throw new UsageError(`--workers must be an integer in 1..1024, not ${s}`)
  return Number(s)
}

/**
 * `serve --workers N`: the same service in N worker processes sharing the port (serveCluster).
 * This script runs in the primary and in every worker: a worker serves until the primary drains
 * it (its listening server keeps it alive, the drain exits it); the primary reports and lives on
 * its workers' channels; SIGTERM/SIGINT drain them all and exit, SIGHUP rolls them.
 */
async function serveWorkers(
  workers: number,
  port: number,
  host: string,
  protocol: 'v1' | 'pcr1',
  build: () => Promise<import('./server/server.js').PolyCallServer>,
  routes: (server: import('./server/server.js').PolyCallServer) => string,
  auth: boolean,
): Promise<number> {
  const { serveCluster } = await import('./cluster/serve.js')
  const handle = await serveCluster(() => build(), { workers, port, host, drainTimeout: 10_000 })
  if (handle.role === 'worker') return 0
  const primary = handle
  primary.on('exit', ({ worker, code, signal, expected }) => {
    if (!expected) err(`worker ${worker.id} (pid ${worker.pid}) exited (${signal ?? code}); replacing it`)
  })
  primary.on('restarted', (generation) => out(`rolled every worker (generation ${generation})`))
  primary.on('failure', (e) => err(`error ${(e as { code?: string }).code ?? ''}: ${e.message}`))
  // The routes are the workers' (the same factory); the primary builds one server to list them.
  const routesLine = routes(await build())
  out(
    `polycall ${protocol} demo service listening on ${primary.host}:${primary.port} with ${workers} worker${workers === 1 ? '' : 's'}` +
      `${auth ? ' (authentication required)' : ''}`,
  )
  out(routesLine)
  return 0
}

const commands: Record<string, Command> = {
  serve: {
    summary: 'run the demo service (v1) or the C runtime built-ins (PCR1)',
    usage: `polycall serve [--protocol v1|pcr1] [--port 8080] [--host 127.0.0.1] [--user NAME --password SECRET] [--token T]
                      [--workers N] [--secure-key FILE [--secure-required]]`,
    details: `Serves until SIGINT or SIGTERM (or, on PCR1, a shutdown control action with the token),
then finishes the requests in flight (at most 10 s) and says why it stopped. With --workers N
the service runs in N worker processes sharing the port (SIGHUP rolls them one by one,
SIGTERM/SIGINT drains them all, a worker that dies is replaced).

  --protocol v1|pcr1   wire protocol (default v1)
  --port N             port to listen on, 0 for any free one (default 8080)
  --host ADDRESS       address to listen on (default 127.0.0.1)
  --user NAME          v1: require authentication as NAME ...
  --password SECRET    ... with this password
  --token T            PCR1: the token the shutdown control action needs
  --workers N          serve from N processes on one port (1 to 1024)
  --secure-key FILE    v1: offer secure sessions as this identity (polycall keygen --out FILE);
                       the server's public key is printed for clients' --server-key
  --secure-required    refuse clients that do not run a secure session`,
    positionals: false,
    options: {
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      user: { type: 'string' },
      password: { type: 'string' },
      protocol: { type: 'string', default: 'v1' },
      token: { type: 'string' },
      workers: { type: 'string' },
      'secure-key': { type: 'string' },
      'secure-required': { type: 'boolean', default: false },
    },
    async run(values) {
      const protocol = protocolOption(values['protocol'])
      const port = portOption(values['port'])
      const user = stringOption(values, 'user')
      const password = stringOption(values, 'password')
      if (password !== undefined && user === undefined) throw new UsageError('--password needs --user')
      const auth = user !== undefined ? { user, password: password ?? '' } : undefined
      if (protocol === 'pcr1' && auth) throw new UsageError('PCR1 has no authentication step; use --token for shutdown')
      const token = stringOption(values, 'token')
      if (protocol === 'v1' && token !== undefined) throw new UsageError('--token applies to --protocol pcr1')
      const workers = workersOption(values['workers'])
      const keyFile = stringOption(values, 'secure-key')
      const required = values['secure-required'] === true
      if (required && keyFile === undefined) throw new UsageError('--secure-required needs --secure-key')
      if (protocol === 'pcr1' && keyFile !== undefined) throw new UsageError('PCR1 has no secure sessions; --secure-key applies to v1')
      // Every process loads the identity itself (its secret never leaves native memory); this
      // one prints the key clients pin.
      const identity = keyFile === undefined ? undefined : await identityOption('secure-key', keyFile)
      const build = async () => {
        const own = keyFile === undefined ? undefined : workers === undefined ? identity! : await identityOption('secure-key', keyFile)
        return protocol === 'pcr1'
          ? (await import('./demo/pcr1-service.js')).createPcr1DemoServer(token !== undefined ? { controlToken: token } : {})
          : (await import('./demo/service.js')).createDemoServer({ ...(auth ? { auth } : {}), ...(own ? { server: { secure: { identity: own, required } } } : {}) })
      }
      const routes = (server: Awaited<ReturnType<typeof build>>) =>
        `routes: ${server.router.routes().map((r) => `${r.method === '*' ? '' : `${r.method} `}${r.path}`).join(', ')}`
      const keyLine = identity ? `secure sessions${required ? ' required' : ''}: server key ${identity.toString()}` : undefined
      if (workers !== undefined) {
        if (keyLine) out(keyLine)
        return serveWorkers(workers, port, stringOption(values, 'host') ?? '127.0.0.1', protocol, build, routes, auth !== undefined)
      }
      const server = await build()
      const address = await server.listen(port, stringOption(values, 'host'))
      out(`polycall ${protocol} demo service listening on ${address.address}:${address.port}${auth ? ' (authentication required)' : ''}`)
      if (keyLine) out(keyLine)
      out(routes(server))
      let reason = 'a shutdown control action'
      const closed = new Promise<void>((resolve) => server.once('close', resolve))
      const stop = (signal: NodeJS.Signals) => {
        reason = signal
        out(`shutting down on ${signal}: finishing the requests in flight (at most 10 s)`)
        void server.close({ timeout: 10_000 })
      }
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
      await closed
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      identity?.destroy()
      const s = server.stats()
      out(`stopped (${reason}) after ${s.requests.total} requests on ${s.connections.total} connections`)
      return 0
    },
  },

  call: {
    summary: 'send one request and print the reply as JSON',
    usage: `polycall call [--protocol v1|pcr1] <host:port> <command> [json] [--timeout ms] [--user NAME --password SECRET]
                     [--tls] [--ca file] [--cert file] [--key file] [--pin sha256/BASE64]
                     [--server-key x25519:KEY [--identity FILE]]`,
    details: `Prints the reply on stdout; an error goes to stderr as "error <code>: <message>".
On v1 the exit code is 0 or 1; on PCR1 it follows the C runtime's client: 0 ok,
3 request.malformed/input.invalid, 4 operation.unknown or *.unknown, 5 cannot connect or
connection dropped, 6 deadline.exceeded or no reply in time, 7 auth.denied, 1 anything else.

  <command>            [METHOD ]path (v1, e.g. sum or "PUT /users/7") or service.operation (PCR1)
  [json]               the request data, as JSON
  --protocol v1|pcr1   wire protocol (default v1)
  --timeout ms         bound of the connection and of the request (default 5000)
  --user NAME          v1: authenticate as NAME ...
  --password SECRET    ... with this password
  --tls                connect with TLS (implied by --ca and --pin)
  --ca file            trust this CA certificate (PEM)
  --cert/--key file    client certificate and key for mutual TLS
  --pin sha256/BASE64  accept only a server key with this SPKI hash (repeatable)
  --server-key KEY     v1: run a secure session with the server of this key (x25519:...)
  --identity FILE      ... authenticated as this identity (polycall keygen --out FILE)`,
    positionals: true,
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
      'server-key': { type: 'string' },
      identity: { type: 'string' },
    },
    async run(values, positionals) {
      const protocol = protocolOption(values['protocol'])
      const timeout = millisOption('timeout', values['timeout'])
      const [endpoint, command, json, ...extra] = positionals
      const { host, port } = parseEndpoint(endpoint)
      if (!command) throw new UsageError('missing <command>')
      if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]} (quote the JSON data as one argument)`)
      const user = stringOption(values, 'user')
      const password = stringOption(values, 'password')
      if (password !== undefined && user === undefined) throw new UsageError('--password needs --user')
      if (protocol === 'pcr1' && user !== undefined) throw new UsageError('PCR1 has no authentication step; --user applies to v1')
      let data: unknown
      try {
        data = json === undefined ? undefined : JSON.parse(json)
      } catch {
        err(`error: the request data is not JSON: ${json}`)
        return protocol === 'pcr1' ? 3 : 1
      }
      let tls: ClientTlsOptions | undefined
      const pins = values['pin'] as string[] | undefined
      const ca = stringOption(values, 'ca')
      const cert = stringOption(values, 'cert')
      const key = stringOption(values, 'key')
      if (values['tls'] || ca || pins || cert || key) {
        tls = {}
        const read = (flag: string, file: string) => {
          try {
            return readFileSync(file)
          } catch (e) {
            throw new UsageError(`--${flag} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`)
          }
        }
        if (ca) tls.ca = read('ca', ca)
        if (cert) tls.cert = read('cert', cert)
        if (key) tls.key = read('key', key)
        if (pins) tls.pin = pins
      }
      const serverKey = stringOption(values, 'server-key')
      const identityFile = stringOption(values, 'identity')
      if (identityFile !== undefined && serverKey === undefined) throw new UsageError('--identity needs --server-key')
      if (protocol === 'pcr1' && serverKey !== undefined) throw new UsageError('PCR1 has no secure sessions; --server-key applies to v1')
      let secure: import('./secure/options.js').SecureClientOptions | undefined
      if (serverKey !== undefined) {
        const { parsePublicKey } = await import('./secure/identity.js')
        try {
          parsePublicKey(serverKey)
        } catch (e) {
          throw new UsageError(`--server-key ${serverKey}: ${(e as Error).message}`)
        }
        secure = { serverKey, identity: identityFile === undefined ? undefined : await identityOption('identity', identityFile) }
      }
      const { PolyCallClient } = await import('./client/client.js')
      const client = new PolyCallClient({
        host,
        port,
        tls,
        secure,
        protocol,
        reconnect: false,
        connectTimeout: timeout,
        credentials: user !== undefined ? { username: user, password: password ?? '' } : undefined,
      })
      try {
        const result = await client.request(command, data, { timeout })
        out(Buffer.isBuffer(result) ? result.toString('hex') : (JSON.stringify(result, null, 2) ?? 'undefined'))
        return 0
      } catch (e) {
        err(describeFailure(e, { credentials: user !== undefined, secure: secure !== undefined }))
        return protocol === 'pcr1' && isPolyCallError(e) ? pcr1ExitCode(e.code) : 1
      } finally {
        client.destroy()
        secure?.identity?.destroy()
      }
    },
  },

  control: {
    summary: 'send a PCR1 control action (ping, describe, health, shutdown)',
    usage: 'polycall control [--protocol pcr1] <host:port> <ping|describe|health|shutdown> [--token T] [--timeout ms]',
    details: `Prints the reply's data as JSON; exit codes as for call --protocol pcr1.

  --token T            the runtime's token (shutdown needs it)
  --timeout ms         bound of the connection and of the action (default 5000)`,
    positionals: true,
    options: {
      protocol: { type: 'string', default: 'pcr1' },
      timeout: { type: 'string', default: '5000' },
      token: { type: 'string' },
    },
    async run(values, positionals) {
      if (protocolOption(values['protocol']) !== 'pcr1') throw new UsageError('control actions exist on the PCR1 wire only')
      const timeout = millisOption('timeout', values['timeout'])
      const [endpoint, action, ...extra] = positionals
      const { host, port } = parseEndpoint(endpoint)
      if (!action) throw new UsageError('missing <action>: ping, describe, health or shutdown')
      if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}`)
      const { PolyCallClient } = await import('./client/client.js')
      const client = new PolyCallClient({ host, port, protocol: 'pcr1', reconnect: false, connectTimeout: timeout })
      try {
        out(JSON.stringify(await client.control(action, { authToken: stringOption(values, 'token'), timeout }), null, 2))
        return 0
      } catch (e) {
        err(describeFailure(e, { credentials: false }))
        return isPolyCallError(e) ? pcr1ExitCode(e.code) : 1
      } finally {
        client.destroy()
      }
    },
  },

  decode: {
    summary: 'explain a v1 frame given in hex: fields, checksum status, payload',
    usage: 'polycall decode <hex>...',
    details: `The hex may be split over several arguments and contain spaces, ':' or '|'.
Exits 0 for a valid frame, 2 when the frame has problems (listed), 1 when it cannot be read.

  example: polycall decode 01030800030000001e000000bb66e7ad7b22636f6d6d616e64223a22737461747573222c2264617461223a7b7d7d`,
    positionals: true,
    options: {},
    async run(_values, positionals) {
      const hex = positionals.join('').replace(/[\s:|]/g, '')
      if (hex.length === 0) throw new UsageError('missing <hex>')
      if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new UsageError('expected an even number of hex digits')
      const [{ inspectFrame }, { MessageType }] = await Promise.all([import('./protocol/inspect.js'), import('./protocol/constants.js')])
      const i = inspectFrame(Buffer.from(hex, 'hex'))
      const name = MessageType[i.type] ?? 'unknown'
      const sum = (n: number) => `0x${n.toString(16).padStart(8, '0')}`
      out(`version   ${i.version}`)
      out(`type      ${i.type} (${name.toUpperCase()})`)
      out(`flags     0x${i.flags.toString(16).padStart(4, '0')}`)
      out(`sequence  ${i.sequence}`)
      out(`length    ${i.payloadLength}${i.payload.length !== i.payloadLength ? ` (${i.payload.length} present)` : ''}`)
      // A frame of a secure session carries 0 here: its tag authenticates it (needs the key).
      const sealed = (i.flags & 1) !== 0 && i.checksum === 0
      out(
        `checksum  ${sum(i.checksum)} ${
          i.computedChecksum === undefined
            ? '(payload incomplete)'
            : i.computedChecksum === i.checksum
              ? 'ok'
              : sealed
                ? '(sealed frame: no checksum, its tag authenticates it)'
                : `MISMATCH: payload sums to ${sum(i.computedChecksum)}`
        }`,
      )
      const text = i.payload.toString('utf8')
      const printable = /^[\x09\x0a\x0d\x20-\x7e\u00a0-\uffff]*$/.test(text) && !text.includes('\ufffd')
      out(`payload   ${i.payload.length === 0 ? '(empty)' : printable ? text : i.payload.toString('hex')}`)
      if (i.trailing > 0) out(`trailing  ${i.trailing} bytes after the frame`)
      for (const p of i.problems) out(`problem   ${p.code}: ${p.message}`)
      return i.problems.length === 0 ? 0 : 2
    },
  },

  keygen: {
    summary: 'create an identity for secure sessions and print its public key',
    usage: 'polycall keygen [--out FILE] [--force]',
    details: `Writes a new identity file (mode 0600: it holds the secret seed) and prints its public
key on stdout, the x25519:... text clients pass as --server-key or list as allowed clients. The
signing key (for snapshot signatures) goes to stderr with the file name.

  --out FILE           where to write the identity (default polycall.key)
  --force              replace an existing file`,
    positionals: false,
    options: {
      out: { type: 'string', default: 'polycall.key' },
      force: { type: 'boolean', default: false },
    },
    async run(values) {
      const file = stringOption(values, 'out')!
      if (file.length === 0) throw new UsageError('--out needs a file name')
      const { Identity } = await import('./secure/identity.js')
      using identity = Identity.generate()
      try {
        identity.save(file, { overwrite: values['force'] === true })
      } catch (e) {
        if (isPolyCallError(e) && e.code === ErrorCode.IDENTITY_FILE && !values['force']) {
          throw new UsageError(`--out ${file}: ${e.message} (pass --force to replace it)`)
        }
        throw e
      }
      out(identity.toString())
      err(`wrote ${file} (mode 0600); signing key ${identity.toJSON().signingKey}`)
      return 0
    },
  },
}

const USAGE = `polycall ${VERSION}: LibPolyCall v1 and PCR1 from the command line

usage:
${Object.values(commands)
  .map((c) => `  ${c.usage.split('\n')[0]}`)
  .join('\n')}

commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(9)}${c.summary}`)
  .join('\n')}

Run polycall <command> --help for a command's options; polycall --version prints the version.`

function commandHelp(name: string, c: Command): string {
  return `usage: ${c.usage}\n\n${c.summary}.\n${c.details}`
}

/** parseArgs's own errors, in the user's terms: the flag as typed, and where help is. */
function usageFromParseError(e: unknown, name: string): UsageError | undefined {
  const code = (e as { code?: string }).code
  const message = (e as Error).message
  const flag = /'(-[^' ]+)/.exec(message)?.[1]
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new UsageError(`unknown option ${flag ?? message}`)
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return new UsageError(/argument missing/.test(message) ? `${flag ?? 'an option'} needs a value` : `${flag ?? 'an option'} takes no value`)
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new UsageError(`${name} takes no argument ${/'([^']+)'/.exec(message)?.[1] ?? ''}`.trim())
    default:
      return undefined
  }
}

async function runCommand(name: string, c: Command, argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options: { ...c.options, help: HELP }, allowPositionals: c.positionals, strict: true })
  } catch (e) {
    throw usageFromParseError(e, name) ?? e
  }
  if (parsed.values['help']) {
    out(commandHelp(name, c))
    return 0
  }
  return await c.run(parsed.values as Record<string, string | boolean | string[] | undefined>, parsed.positionals)
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    out(VERSION)
    return 0
  }
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    const topic = cmd === 'help' ? rest[0] : undefined
    const c = topic === undefined ? undefined : commands[topic]
    if (topic !== undefined && !c) {
      err(`polycall: unknown command ${topic}\n\n${USAGE}`)
      return 1
    }
    out(c ? commandHelp(topic!, c) : USAGE)
    return cmd === undefined ? 1 : 0
  }
  const c = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined
  if (!c) {
    err(cmd.startsWith('-') ? `polycall: unknown option ${cmd}\n\n${USAGE}` : `polycall: unknown command ${cmd}\n\n${USAGE}`)
    return 1
  }
  try {
    return await runCommand(cmd, c, rest)
  } catch (e) {
    if (e instanceof UsageError) err(`polycall ${cmd}: ${e.message}\nRun polycall ${cmd} --help for its options.`)
    else err(describeFailure(e, { credentials: false }))
    return 1
  }
}

process.exitCode = await main(process.argv.slice(2))
