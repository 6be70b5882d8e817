/**
 * One socket speaking the v1 wire: framing through the native decoder (one crossing per chunk),
 * a write queue that turns the frames produced in one tick into one socket write, `write()`
 * backpressure, read pausing, heartbeats with dead-peer detection, and the session state.
 * Client and server both drive one of these per connection; what a frame means is theirs to
 * decide.
 * @internal
 * @packageDocumentation
 */
import type { Socket } from 'node:net'
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import { now } from '../core/abort.js'
import { FrameDecoder, encodeFrame, type DecodeError, type Frame } from '../protocol/codec.js'
import { MessageType, ProtocolFlag } from '../protocol/constants.js'
import { heartbeatPayload, jsonCodec, type PayloadCodec } from '../protocol/payload.js'
import { SessionMachine, type SessionRole } from '../state/session.js'

/** What the owner of a connection hears. */
export interface ConnectionHooks {
  /** A complete, checksum-verified frame. */
  frame(frame: Frame): void
  /** The peer sent bytes that are not a valid frame stream; the connection is failing. */
  decodeError(error: PolyCallError): void
  /** The peer closed its sending side. */
  end(): void
  /** The socket is gone. `error` is set when it did not close cleanly. */
  close(error: PolyCallError | undefined): void
}

export interface ConnectionOptions {
  maxPayload: number
}

/** Why reading is paused; reading resumes when no reason is left. */
export type PauseReason = 'dispatch' | 'drain' | 'owner'

export class Connection {
  readonly socket: Socket
  readonly session: SessionMachine
  /** Payload conventions negotiated by the handshake (JSON until then). */
  codec: PayloadCodec = jsonCodec
  /** Capability bits both sides agreed on. */
  capabilities = 0
  /** A legacy peer reads one frame per `read()`: send one frame per write (PROTOCOL.md §10.1). */
  legacy = true
  /** Monotonic ms of the last byte received and sent. */
  lastReceived = now()
  lastSent = now()
  bytesIn = 0
  bytesOut = 0

  readonly #hooks: ConnectionHooks
  readonly #decoder: FrameDecoder
  #queue: Buffer[] = []
  #queuedBytes = 0
  #flushScheduled = false
  #needDrain = false
  #pauses = new Set<PauseReason>()
  #sequence = 0
  #heartbeat: NodeJS.Timeout | undefined
  #error: PolyCallError | undefined
  #closed = false
  #ending = false

  constructor(socket: Socket, role: SessionRole, hooks: ConnectionHooks, options: ConnectionOptions) {
    this.socket = socket
    this.session = new SessionMachine(role)
    this.#hooks = hooks
    this.#decoder = new FrameDecoder({ maxPayload: options.maxPayload })
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('end', () => this.#onEnd())
    socket.on('error', (err: Error) => {
      this.#error ??= isPolyCallError(err)
        ? err
        : new PolyCallError(ErrorCode.CONNECTION_LOST, `socket error: ${err.message}`, { cause: err })
    })
    socket.on('close', () => this.#onClose())
    socket.on('drain', () => {
      this.#needDrain = false
      this.resume('drain')
      this.#flush()
    })
  }

  /** True once the socket closed or was destroyed. */
  get closed(): boolean {
    return this.#closed || this.socket.destroyed
  }

  /** Frames queued but not yet handed to the socket, plus bytes the socket buffers. */
  get pendingBytes(): number {
    return this.#queuedBytes + this.socket.writableLength
  }

  /**
   * The next sequence number of this side: starts at 1, wraps modulo 2^32, and skips numbers
   * for which `inUse` says a reply is still awaited (PROTOCOL.md §5).
   */
  nextSequence(inUse?: (n: number) => boolean): number {
    for (let i = 0; i < 1000; i++) {
      this.#sequence = (this.#sequence + 1) >>> 0
      if (!inUse?.(this.#sequence)) return this.#sequence
    }
    throw new PolyCallError(ErrorCode.BUSY, 'no free sequence number')
  }

  /** Sets the counter so the next number is `next` (tests use it to cross the 2^32 wrap). */
  startSequence(next: number): void {
    this.#sequence = (next - 1) >>> 0
  }

  /** Queues one frame; frames queued in the same tick leave in one write. */
  send(type: MessageType, sequence: number, payload?: Uint8Array, flags?: number): void {
    if (this.#closed || this.#ending) return
    const bytes = encodeFrame({ type, sequence, payload, flags })
    this.#queue.push(bytes)
    this.#queuedBytes += bytes.length
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(() => this.#flush())
    }
  }

  /** Pauses reading for `reason` (reasons stack; reading resumes when none is left). */
  pause(reason: PauseReason): void {
    if (this.#pauses.size === 0 && !this.#closed) this.socket.pause()
    this.#pauses.add(reason)
  }

  resume(reason: PauseReason): void {
    if (this.#pauses.delete(reason) && this.#pauses.size === 0 && !this.#closed) this.socket.resume()
  }

  get paused(): boolean {
    return this.#pauses.size > 0
  }

  /**
   * Sends a HEARTBEAT whenever nothing was sent for `interval` ms, and fails the connection when
   * nothing was received for three intervals. Only for peers that advertised heartbeats.
   */
  startHeartbeat(interval: number): void {
    if (interval <= 0 || this.#heartbeat || this.#closed) return
    this.#heartbeat = setInterval(() => {
      const t = now()
      if (t - this.lastReceived > 3 * interval) {
        this.destroy(new PolyCallError(ErrorCode.CONNECTION_LOST, `peer sent nothing for ${Math.round(t - this.lastReceived)} ms`))
        return
      }
      if (t - this.lastSent >= interval * 0.9) this.send(MessageType.Heartbeat, this.nextSequence(), heartbeatPayload(), ProtocolFlag.None)
    }, interval)
    this.#heartbeat.unref()
  }

  /** Flushes what is queued, then closes the sending side. */
  end(): void {
    if (this.#closed || this.#ending) return
    this.#flush()
    this.#ending = true
    this.#stopHeartbeat()
    this.socket.end()
  }

  /** Tears the socket down now. */
  destroy(error?: PolyCallError): void {
    if (this.#closed) return
    if (error) this.#error ??= error
    this.#stopHeartbeat()
    this.socket.destroy()
  }

  #flush(): void {
    this.#flushScheduled = false
    if (this.#queue.length === 0 || this.#closed || this.#needDrain) return
    const queue = this.#queue
    const bytes = this.#queuedBytes
    this.#queue = []
    this.#queuedBytes = 0
    let ok = true
    if (this.legacy) {
      for (const frame of queue) ok = this.socket.write(frame) && ok
    } else {
      ok = this.socket.write(queue.length === 1 ? queue[0]! : Buffer.concat(queue, bytes))
    }
    this.bytesOut += bytes
    this.lastSent = now()
    if (!ok) {
      this.#needDrain = true
      this.pause('drain')
    }
  }

  #onData(chunk: Buffer): void {
    this.lastReceived = now()
    this.bytesIn += chunk.length
    let frames: Frame[]
    try {
      frames = this.#decoder.push(chunk)
    } catch (e) {
      const err = e as DecodeError
      for (const f of err.frames ?? []) {
        if (this.#closed) return
        this.#hooks.frame(f)
      }
      if (!this.#closed) this.#hooks.decodeError(err)
      return
    }
    for (let i = 0; i < frames.length; i++) {
      if (this.#closed) return
      this.#hooks.frame(frames[i]!)
    }
  }

  #onEnd(): void {
    try {
      this.#decoder.end()
    } catch (e) {
      if (!this.#closed) this.#hooks.decodeError(e as PolyCallError)
      return
    }
    if (!this.#closed) this.#hooks.end()
  }

  #onClose(): void {
    if (this.#closed) return
    this.#closed = true
    this.#stopHeartbeat()
    this.#queue = []
    this.#queuedBytes = 0
    this.#decoder.free()
    this.#hooks.close(this.#error)
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat)
    this.#heartbeat = undefined
  }
}
