/** Loopback helpers for the network specs: real servers, real clients, raw frame peers. */
import type { ExecutionContext } from 'ava'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import {
  FrameDecoder,
  PolyCallClient,
  PolyCallServer,
  encodeFrame,
  type ClientOptions,
  type Frame,
  type MessageType,
  type ServerOptions,
} from '../../ts/index.js'

export async function startServer(
  t: ExecutionContext,
  options: ServerOptions = {},
  setup?: (server: PolyCallServer) => void,
): Promise<{ server: PolyCallServer; port: number }> {
  const server = new PolyCallServer(options)
  setup?.(server)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => server.destroy())
  return { server, port }
}

export function newClient(t: ExecutionContext, port: number, options: Partial<ClientOptions> = {}): PolyCallClient {
  const client = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false, ...options })
  t.teardown(() => client.destroy())
  return client
}

/** A peer that speaks frames byte by byte, the way another implementation would. */
export class RawPeer {
  readonly socket: Socket
  readonly #decoder = new FrameDecoder()
  readonly #frames: Frame[] = []
  #waiters: ((f: Frame | undefined) => void)[] = []
  closed: Promise<void>

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.#decoder.push(chunk)) {
        const copy = { ...f, payload: Buffer.from(f.payload) }
        const w = this.#waiters.shift()
        if (w) w(copy)
        else this.#frames.push(copy)
      }
    })
    socket.on('error', () => {})
    this.closed = once(socket, 'close').then(() => {
      for (const w of this.#waiters.splice(0)) w(undefined)
    })
  }

  static async connect(t: ExecutionContext, port: number): Promise<RawPeer> {
    const socket = connect({ host: '127.0.0.1', port })
    await once(socket, 'connect')
    t.teardown(() => socket.destroy())
    return new RawPeer(socket)
  }

  send(type: MessageType, sequence: number, payload?: Uint8Array, flags?: number): void {
    this.socket.write(encodeFrame({ type, sequence, payload, flags }))
  }

  /** The next frame, or undefined when the socket closes first; rejects after `ms`. */
  next(ms = 5000): Promise<Frame | undefined> {
    const f = this.#frames.shift()
    if (f) return Promise.resolve(f)
    if (this.socket.destroyed) return Promise.resolve(undefined)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no frame within ${ms} ms`)), ms)
      this.#waiters.push((frame) => {
        clearTimeout(timer)
        resolve(frame)
      })
    })
  }
}

/** Resolves after `ms` (only for letting a peer act; never used to assert timing). */
export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms))
