/** Loopback helpers for the network specs: real servers, real clients, raw frame peers. */
import type { ExecutionContext } from 'ava'
import type { Socket } from 'node:net'
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
import { SocketPeer, dial } from './peer.js'

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
export class RawPeer extends SocketPeer<Frame> {
  readonly #decoder = new FrameDecoder()

  private constructor(socket: Socket) {
    super(socket, 'frame')
  }

  static async connect(t: ExecutionContext, port: number): Promise<RawPeer> {
    return new RawPeer(await dial(t, port))
  }

  protected decode(chunk: Buffer): Frame[] {
    // Copies: the decoder's payloads are views of the chunk.
    return this.#decoder.push(chunk).map((f) => ({ ...f, payload: Buffer.from(f.payload) }))
  }

  send(type: MessageType, sequence: number, payload?: Uint8Array, flags?: number): void {
    this.socket.write(encodeFrame({ type, sequence, payload, flags }))
  }
}

/** Resolves after `ms` (only for letting a peer act; never used to assert timing). */
export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms))
