/** A loopback client socket that turns received bytes into frames and hands them out in order. */
import type { ExecutionContext } from 'ava'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'

/** Connects to 127.0.0.1:`port`; the socket is destroyed when the test ends. */
export async function dial(t: ExecutionContext, port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  await once(socket, 'connect')
  t.teardown(() => socket.destroy())
  return socket
}

/** Frames of type `F` read from a socket by `decode`, queued until a test asks for them. */
export abstract class SocketPeer<F> {
  readonly socket: Socket
  readonly closed: Promise<void>
  readonly #frames: F[] = []
  #waiters: ((f: F | undefined) => void)[] = []

  /** @param what - names the frames in the timeout message */
  protected constructor(
    socket: Socket,
    private readonly what: string,
  ) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.decode(chunk)) {
        const w = this.#waiters.shift()
        if (w) w(f)
        else this.#frames.push(f)
      }
    })
    socket.on('error', () => {})
    this.closed = once(socket, 'close').then(() => {
      for (const w of this.#waiters.splice(0)) w(undefined)
    })
  }

  /** The frames a chunk completes. */
  protected abstract decode(chunk: Buffer): Iterable<F>

  /** The next frame, or undefined when the socket closes first; rejects after `ms`. */
  next(ms = 5000): Promise<F | undefined> {
    const f = this.#frames.shift()
    if (f) return Promise.resolve(f)
    if (this.socket.destroyed) return Promise.resolve(undefined)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${this.what} within ${ms} ms`)), ms)
      this.#waiters.push((frame) => {
        clearTimeout(timer)
        resolve(frame)
      })
    })
  }
}
