// A capturing TCP relay for the secure-session specs: it sits between a client and a server on
// loopback, records every byte in both directions, splits each direction into v1 frames (by the
// header's length field only, so damaged frames pass through as they are) and lets a test drop,
// repeat, reorder, splice or rewrite frames on the way.
import type { ExecutionContext } from 'ava'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { checksum } from '../../ts/index.js'

export type Direction = 'toServer' | 'toClient'

/** What a rewrite hook sees: the frame (header and payload), its index in its direction, its link. */
export type Rewrite = (frame: Buffer, index: number, link: RelayLink) => Buffer | readonly Buffer[] | undefined

export interface RelayOptions {
  /** The real server's port (127.0.0.1). */
  target: number
  /** Per frame towards the server: return the bytes to forward (undefined: as is; []: drop). */
  toServer?: Rewrite
  /** Per frame towards the client. */
  toClient?: Rewrite
}

export interface RelayLink {
  /** Link number, from 0, in accept order. */
  readonly id: number
  /** Every byte the relay received, per direction. */
  readonly captured: Record<Direction, Buffer[]>
  /** The frames seen per direction, as received (before any rewrite). */
  readonly frames: Record<Direction, Buffer[]>
  /** Injects raw bytes into one direction. */
  inject(direction: Direction, bytes: Buffer): void
  readonly closed: Promise<void>
}

export interface Relay {
  readonly port: number
  readonly links: RelayLink[]
  /** Every byte captured on every link, one direction or both. */
  wire(direction?: Direction): Buffer
  close(): Promise<void>
}

/**
 * A frame with its checksum field made right for its kind (a relay that edits bytes keeps frames
 * well formed): 0 for a sealed frame (ENCRYPTED), the v1 checksum of the payload otherwise.
 */
export function refreshChecksum(frame: Buffer): Buffer {
  const out = Buffer.from(frame)
  out.writeUInt32LE((out[2]! & 1) === 1 ? 0 : checksum(out.subarray(16)), 12)
  return out
}

/** Splits a byte stream into frames by their length field. */
class Splitter {
  #rest = Buffer.alloc(0)
  push(chunk: Buffer): Buffer[] {
    let buf = this.#rest.length > 0 ? Buffer.concat([this.#rest, chunk]) : chunk
    const frames: Buffer[] = []
    while (buf.length >= 16) {
      const size = 16 + buf.readUInt32LE(8)
      if (buf.length < size) break
      frames.push(Buffer.from(buf.subarray(0, size)))
      buf = buf.subarray(size)
    }
    this.#rest = Buffer.from(buf)
    return frames
  }
}

export async function startRelay(t: ExecutionContext, options: RelayOptions): Promise<Relay> {
  const links: RelayLink[] = []
  const sockets = new Set<Socket>()
  const server = createServer({ allowHalfOpen: false }, (client) => {
    const upstream = connect({ host: '127.0.0.1', port: options.target })
    sockets.add(client)
    sockets.add(upstream)
    client.on('error', () => {})
    upstream.on('error', () => {})
    let done!: () => void
    const closed = new Promise<void>((resolve) => (done = resolve))
    let open = 2
    const gone = () => {
      if (--open === 0) done()
    }
    const link: RelayLink = {
      id: links.length,
      captured: { toServer: [], toClient: [] },
      frames: { toServer: [], toClient: [] },
      inject: (direction, bytes) => {
        const out = direction === 'toServer' ? upstream : client
        if (!out.destroyed) out.write(bytes)
      },
      closed,
    }
    links.push(link)
    const pipe = (from: Socket, to: Socket, direction: Direction) => {
      const splitter = new Splitter()
      const rewrite = options[direction]
      from.on('data', (chunk: Buffer) => {
        link.captured[direction].push(Buffer.from(chunk))
        const out: Buffer[] = []
        for (const frame of splitter.push(chunk)) {
          const index = link.frames[direction].push(frame) - 1
          const r = rewrite?.(frame, index, link)
          if (r === undefined) out.push(frame)
          else if (Buffer.isBuffer(r)) out.push(r)
          else out.push(...r)
        }
        if (out.length > 0 && !to.destroyed) to.write(Buffer.concat(out))
      })
      from.on('end', () => to.end())
      from.on('close', () => {
        sockets.delete(from)
        to.destroy()
        gone()
      })
    }
    pipe(client, upstream, 'toServer')
    pipe(upstream, client, 'toClient')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await Promise.all(links.map((l) => l.closed))
  }
  t.teardown(close)
  return {
    port: (server.address() as AddressInfo).port,
    links,
    wire: (direction) =>
      Buffer.concat(links.flatMap((l) => (direction ? l.captured[direction] : [...l.captured.toServer, ...l.captured.toClient]))),
    close,
  }
}
