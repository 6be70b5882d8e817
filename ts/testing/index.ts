/**
 * Testing aids, imported from `polycall/testing`: connect a {@link PolyCallClient} to a
 * {@link PolyCallServer} in one process without sockets, through an in-memory link that keeps
 * the real framing, session and error behaviour (the bytes go through the same decoder as TCP),
 * and inject faults into it: drop the connection, delay frames, corrupt a byte.
 *
 * @example
 * ```ts
 * import { connectInMemory } from 'polycall/testing'
 * const { client, link } = await connectInMemory(server)
 * link.corrupt({ direction: 'toServer' })        // the next chunk reaches the server damaged
 * await assert.rejects(client.request('ping'))   // the server answers ERROR and closes
 * ```
 * @packageDocumentation
 */
import { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import { PolyCallClient, type ClientOptions } from '../client/client.js'
import { invalidArgument } from '../core/errors.js'
import { acceptSocket, type PolyCallServer } from '../server/server.js'

/** Which way bytes travel on a link. */
export type Direction = 'toServer' | 'toClient'

/** Options of {@link MemoryLink.corrupt}. */
export interface CorruptOptions {
  /** Which way the damaged chunk travels. @defaultValue 'toServer' */
  direction?: Direction
  /** Byte of the next chunk to damage. @defaultValue 0 (a frame's version byte) */
  offset?: number
  /** XOR mask applied to that byte. @defaultValue 0xff */
  xor?: number
}

/** One end of an in-memory connection: the subset of net.Socket polycall uses. */
class MemorySocket extends Duplex {
  peer: MemorySocket | undefined
  readonly remoteAddress = 'memory'
  readonly remotePort = 0
  readonly #send: (chunk: Buffer, done: () => void) => void

  constructor(send: (chunk: Buffer, done: () => void) => void) {
    super({ allowHalfOpen: true })
    this.#send = send
  }

  setNoDelay(): this {
    return this
  }

  setKeepAlive(): this {
    return this
  }

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#send(Buffer.from(chunk), () => callback())
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#send(END, () => callback())
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Like a reset TCP connection: the other end sees its stream end and close.
    const peer = this.peer
    this.peer = undefined
    if (peer && !peer.destroyed) {
      peer.peer = undefined
      peer.push(null)
      peer.destroy()
    }
    callback(error)
  }
}

const END = Buffer.alloc(0)

/**
 * The link between a client and a server. Faults apply to the current connection and to the
 * ones the client makes after a reconnect.
 */
export class MemoryLink {
  readonly #server: PolyCallServer
  #delay = 0
  #corrupt: Required<CorruptOptions> | undefined
  #current: MemorySocket[] = []
  /** Bytes carried so far, per direction. */
  readonly bytes: {
    /** Bytes the client sent. */
    toServer: number
    /** Bytes the server sent. */
    toClient: number
  } = { toServer: 0, toClient: 0 }
  /** Connections opened through this link. */
  connections = 0

  /** @internal */
  constructor(server: PolyCallServer) {
    this.#server = server
  }

  /** @internal Opens one in-memory connection and hands its server end to the server. */
  open(): Promise<Socket> {
    let clientEnd!: MemorySocket
    let serverEnd!: MemorySocket
    const carry = (direction: Direction, target: () => MemorySocket | undefined) => (chunk: Buffer, done: () => void) => {
      const deliver = () => {
        const to = target()
        if (!to || to.destroyed) return
        if (chunk === END) to.push(null)
        else {
          this.bytes[direction] += chunk.length
          to.push(this.#damage(direction, chunk))
        }
      }
      // Not unref'd: bytes in transit keep the process alive, as a socket would.
      if (this.#delay > 0) setTimeout(deliver, this.#delay)
      else queueMicrotask(deliver)
      done()
    }
    clientEnd = new MemorySocket(carry('toServer', () => serverEnd))
    serverEnd = new MemorySocket(carry('toClient', () => clientEnd))
    clientEnd.peer = serverEnd
    serverEnd.peer = clientEnd
    this.#current = [clientEnd, serverEnd]
    this.connections++
    this.#server[acceptSocket](serverEnd as unknown as Socket)
    return Promise.resolve(clientEnd as unknown as Socket)
  }

  /** Drops the current connection at once, as a network failure would (both ends close). */
  drop(): void {
    for (const end of this.#current) end.destroy()
    this.#current = []
  }

  /** Delays every chunk, both ways, by `ms` (0 delivers at once again). Order is kept. */
  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw invalidArgument('delay must be a number of milliseconds ≥ 0')
    this.#delay = ms
  }

  /** Damages one byte of the next chunk going `direction`. */
  corrupt(options: CorruptOptions = {}): void {
    this.#corrupt = { direction: options.direction ?? 'toServer', offset: options.offset ?? 0, xor: options.xor ?? 0xff }
  }

  #damage(direction: Direction, chunk: Buffer): Buffer {
    const c = this.#corrupt
    if (!c || c.direction !== direction || c.offset >= chunk.length) return chunk
    this.#corrupt = undefined
    const copy = Buffer.from(chunk)
    copy[c.offset] = copy[c.offset]! ^ c.xor
    return copy
  }
}

/**
 * Connects a new client to `server` through an in-memory link and waits for the handshake.
 *
 * @param server - a server (it need not listen)
 * @param options - client options (host, port, tls and protocol do not apply; the protocol
 *   follows the server's)
 * @returns the connected client and the link to inject faults into
 * @example
 * ```ts
 * const { client, link } = await connectInMemory(server, { timeout: 500 })
 * link.drop()
 * ```
 */
export async function connectInMemory(
  server: PolyCallServer,
  options: Partial<Omit<ClientOptions, 'host' | 'port' | 'tls' | 'protocol'>> = {},
): Promise<{
  /** The connected client. */
  client: PolyCallClient
  /** Its link to the server, for fault injection. */
  link: MemoryLink
}> {
  const link = new MemoryLink(server)
  const client = new PolyCallClient({
    reconnect: false,
    ...options,
    port: 0,
    protocol: server.protocol,
    dial: () => link.open(),
  })
  try {
    await client.connect()
  } catch (e) {
    client.destroy()
    throw e
  }
  return { client, link }
}
