/**
 * A PCR1 peer written from the byte layouts of docs/protocol.md §P1-§P5, independent of
 * polycall's own codec: it builds headers with Buffer.writeUInt32BE and parses them by hand, so
 * the specs check polycall against the spec rather than against itself.
 */
import type { ExecutionContext } from 'ava'
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { SocketPeer, dial } from './peer.js'

export const REQUEST = 1
export const RESPONSE = 2
export const CONTROL = 3
export const CONTROL_REPLY = 4

export interface RawPcr1Frame {
  type: number
  flags: number
  reserved: number
  corr: number
  body: unknown
  raw: Buffer
}

/** Header + JSON body exactly as §1 lays it out. `override` bends fields to make bad frames. */
export function pcr1Frame(
  type: number,
  corr: number,
  body: unknown,
  override: { magic?: string; flags?: number; reserved?: number; length?: number } = {},
): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body) : Buffer.from(JSON.stringify(body))
  const head = Buffer.alloc(16)
  head.write(override.magic ?? 'PCR1', 0, 'latin1')
  head.writeUInt8(type, 4)
  head.writeUInt8(override.flags ?? 0, 5)
  head.writeUInt16BE(override.reserved ?? 0, 6)
  head.writeUInt32BE(corr, 8)
  head.writeUInt32BE(override.length ?? payload.length, 12)
  return Buffer.concat([head, payload])
}

/** Splits a byte stream into PCR1 frames (whole frames only; the rest stays buffered). */
export class Pcr1Reader {
  #buf = Buffer.alloc(0)
  push(chunk: Buffer): RawPcr1Frame[] {
    this.#buf = Buffer.concat([this.#buf, chunk])
    const out: RawPcr1Frame[] = []
    while (this.#buf.length >= 16) {
      const length = this.#buf.readUInt32BE(12)
      if (this.#buf.length < 16 + length) break
      const raw = this.#buf.subarray(0, 16 + length)
      const text = raw.subarray(16).toString('utf8')
      let body: unknown = text
      try {
        body = JSON.parse(text)
      } catch {
        // keep the text
      }
      out.push({
        type: raw.readUInt8(4),
        flags: raw.readUInt8(5),
        reserved: raw.readUInt16BE(6),
        corr: raw.readUInt32BE(8),
        body,
        raw: Buffer.from(raw),
      })
      if (raw.subarray(0, 4).toString('latin1') !== 'PCR1') throw new Error('peer received a frame without the PCR1 magic')
      this.#buf = this.#buf.subarray(16 + length)
    }
    return out
  }
}

/** A client-side PCR1 peer over a real socket. */
export class Pcr1Peer extends SocketPeer<RawPcr1Frame> {
  readonly #reader = new Pcr1Reader()

  private constructor(socket: Socket) {
    super(socket, 'PCR1 frame')
  }

  static async connect(t: ExecutionContext, port: number): Promise<Pcr1Peer> {
    return new Pcr1Peer(await dial(t, port))
  }

  protected decode(chunk: Buffer): RawPcr1Frame[] {
    return this.#reader.push(chunk)
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes)
  }
}

export interface Pcr1ServerOptions {
  /**
   * A polycall client's extension offer (a CONTROL `polycall.extensions`, sent right after it
   * connects): `'unknown'` answers it as the C runtime does (`control.unknown`) without calling
   * the handler; `'handler'` hands it to the handler like any frame. @defaultValue 'unknown'
   */
  offer?: 'unknown' | 'handler'
}

/** A server-side PCR1 peer that answers with `handler` (a stand-in for the C runtime). */
export async function pcr1Server(
  t: ExecutionContext,
  handler: (frame: RawPcr1Frame, socket: Socket) => void,
  options: Pcr1ServerOptions = {},
): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    const reader = new Pcr1Reader()
    socket.on('data', (chunk: Buffer) => {
      for (const f of reader.push(chunk)) {
        const action = (f.body as { action?: unknown } | null)?.action
        if (options.offer !== 'handler' && f.type === CONTROL && action === 'polycall.extensions') {
          socket.write(pcr1Frame(CONTROL_REPLY, f.corr, { ok: false, error: { code: 'control.unknown', message: 'unknown control action' } }))
        } else handler(f, socket)
      }
    })
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  return { server, port: (server.address() as { port: number }).port }
}
