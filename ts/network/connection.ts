/**
 * One socket speaking one wire format (v1 or PCR1): framing through the native decoder (one
 * crossing per chunk), a write queue that turns the frames produced in one tick into one socket
 * write, `write()` backpressure, read pausing, heartbeats with dead-peer detection, and the
 * session state. Client and server both drive one of these per connection; what a frame means is
 * theirs to decide.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import type { Socket } from 'node:net'
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import { now } from '../core/abort.js'
import type { DecodeError } from '../protocol/codec.js'
import { jsonCodec, type PayloadCodec } from '../protocol/payload.js'
import { SessionMachine, type SessionRole } from '../state/session.js'
import { every, stop, type Ticking } from './ticker.js'
import { ARENA_FRAME_MAX, type Wire, type WireDecoder, type WireFrame } from './wire.js'

/** What the owner of a connection hears. */
export interface ConnectionHooks {
  /** A complete, validated frame. */
  frame(frame: WireFrame): void
  /** The peer sent bytes that are not a valid frame stream; the connection is failing. */
  decodeError(error: PolyCallError): void
  /** The peer closed its sending side. */
  end(): void
  /** The socket is gone. `error` is set when it did not close cleanly. */
  close(error: PolyCallError | undefined): void
  /** The peer stopped in the middle of a frame for `stallTimeout` ms. */
  stalled?(): void
}

export interface ConnectionOptions {
  maxPayload: number
  wire: Wire
  /** Fail when a partial frame makes no progress for this long; 0 or absent disables. */
  stallTimeout?: number
}

/** Why reading is paused; reading resumes when no reason is left. */
export type PauseReason = 'dispatch' | 'drain' | 'owner'

const OWNER = Symbol('polycall.connection')
type OwnedSocket = Socket & { [OWNER]: Connection }

function onData(this: OwnedSocket, chunk: Buffer): void {
  Connection.listeners.data(this[OWNER], chunk)
}
function onEnd(this: OwnedSocket): void {
  Connection.listeners.end(this[OWNER])
}
function onError(this: OwnedSocket, err: Error): void {
  Connection.listeners.error(this[OWNER], err)
}
function onClose(this: OwnedSocket): void {
  Connection.listeners.close(this[OWNER])
}
function onDrain(this: OwnedSocket): void {
  Connection.listeners.drain(this[OWNER])
}

const EMPTY = Buffer.alloc(0)
const wholeNow = (): number => Math.floor(now())
const SOLO_SMALL = 1
const FLUSH_SCHEDULED = 2
const NEED_DRAIN = 4
const CLOSED = 8
const ENDING = 16
const PAUSE_BIT: Record<PauseReason, number> = { dispatch: 1, drain: 2, owner: 4 }
const ARENA_SIZE = 8192
/**
 * A tick that queues this many bytes writes them at once instead of at its end, so the peer
 * works on the first part while this side produces the rest.
 */
const EARLY_WRITE = 4096

export class Connection implements Ticking {
  readonly socket: Socket
  readonly session: SessionMachine
  /** Payload conventions negotiated by the handshake (JSON until then). */
  codec: PayloadCodec = jsonCodec
  /** Capability bits both sides agreed on. */
  capabilities = 0
  /**
   * A legacy peer reads one frame per `read()`: send one frame per write (docs/protocol.md §10.1).
   * Starts as the wire says; a v1 handshake settles it.
   */
  legacy: boolean
  /**
   * Monotonic ms (whole: small integers live in the object, fractions would be boxed) of the last
   * byte received and sent.
   */
  lastReceived = wholeNow()
  lastSent = wholeNow()
  bytesIn = 0
  bytesOut = 0

  readonly #hooks: ConnectionHooks
  readonly #wire: Wire
  readonly #decoder: WireDecoder
  /** Frames waiting for the flush (created on demand: an idle connection holds none). */
  #queue: Buffer[] | undefined
  #queuedBytes = 0
  // Small frames are written straight into this arena; a write hands the filled region to the
  // socket and the flush drops the arena, so no region is written twice and an idle connection
  // holds no buffer.
  #arena: Buffer | undefined
  #arenaStart = 0
  #arenaPos = 0
  /** Boolean states as bits (see the accessors below): fewer fields per idle connection. */
  #bits = 0
  /** Bit set of pause reasons. */
  #pauses = 0
  #sequence = 0
  #beat: ((conn: Connection) => void) | undefined
  #heartbeatPeriod = 0
  #error: PolyCallError | undefined
  #stallTimeout: number
  #stallTimer: NodeJS.Timeout | undefined

  /** The queue holds exactly one small frame in its own buffer. */
  get #soloSmall(): boolean {
    return (this.#bits & SOLO_SMALL) !== 0
  }
  set #soloSmall(on: boolean) {
    this.#bits = on ? this.#bits | SOLO_SMALL : this.#bits & ~SOLO_SMALL
  }
  get #flushScheduled(): boolean {
    return (this.#bits & FLUSH_SCHEDULED) !== 0
  }
  set #flushScheduled(on: boolean) {
    this.#bits = on ? this.#bits | FLUSH_SCHEDULED : this.#bits & ~FLUSH_SCHEDULED
  }
  /** The socket refused more data: wait for 'drain'. */
  get #needDrain(): boolean {
    return (this.#bits & NEED_DRAIN) !== 0
  }
  set #needDrain(on: boolean) {
    this.#bits = on ? this.#bits | NEED_DRAIN : this.#bits & ~NEED_DRAIN
  }
  get #closed(): boolean {
    return (this.#bits & CLOSED) !== 0
  }
  get #ending(): boolean {
    return (this.#bits & ENDING) !== 0
  }

  constructor(socket: Socket, role: SessionRole, hooks: ConnectionHooks, options: ConnectionOptions) {
    this.socket = socket
    this.session = new SessionMachine(role)
    this.#hooks = hooks
    this.#wire = options.wire
    this.legacy = options.wire.startsLegacy
    this.#decoder = options.wire.decoder(options.maxPayload)
    this.#stallTimeout = options.stallTimeout ?? 0
    socket.setNoDelay(true)
    // Shared listeners that find their connection on the socket: no closures per connection.
    ;(socket as OwnedSocket)[OWNER] = this
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.on('drain', onDrain)
  }

  /** @internal */
  static listeners = {
    data(c: Connection, chunk: Buffer): void {
      c.#onData(chunk)
    },
    end(c: Connection): void {
      c.#onEnd()
    },
    error(c: Connection, err: Error): void {
      c.#error ??= isPolyCallError(err)
        ? err
        : new PolyCallError(ErrorCode.CONNECTION_LOST, `socket error: ${err.message}`, { cause: err })
    },
    close(c: Connection): void {
      c.#onClose()
    },
    drain(c: Connection): void {
      c.#needDrain = false
      c.resume('drain')
      c.#flush()
    },
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
   * for which `inUse` says a reply is still awaited (docs/protocol.md §5).
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

  /**
   * Queues one frame; frames queued in the same tick leave in one write. The first frame of a
   * tick gets its own small buffer; when a second one follows, both go into an 8 KiB arena that
   * is handed to the socket whole, so a busy tick costs one buffer and one write, and an idle
   * connection holds nothing. Once a tick has queued {@link EARLY_WRITE} bytes they are written
   * at once, so the peer works on them while this side produces the rest.
   */
  send(type: number, sequence: number, payload?: Uint8Array, flags?: number): void {
    if (this.#closed || this.#ending) return
    const body = payload ?? EMPTY
    const small = this.#wire.encodeInto !== undefined && !this.legacy && body.length + 16 <= ARENA_FRAME_MAX
    if (small && (this.#arena || this.#soloSmall)) {
      if (!this.#arena) {
        // A second small frame in this tick: move the first into a fresh arena.
        const first = this.#queue!.pop()!
        this.#newArena()
        this.#arena!.set(first, 0)
        this.#arenaPos = first.length
        this.#soloSmall = false
      } else if (this.#arena.length - this.#arenaPos < ARENA_FRAME_MAX) this.#newArena()
      const written = this.#wire.encodeInto!(this.#arena!, this.#arenaPos, type, sequence, body, flags)
      this.#arenaPos += written
      this.#queuedBytes += written
      if (this.#queuedBytes >= EARLY_WRITE && !this.#needDrain) {
        this.#takeArena()
        this.#write()
      }
    } else {
      this.#takeArena()
      const bytes = this.#wire.encode(type, sequence, payload, flags)
      const queue = (this.#queue ??= [])
      queue.push(bytes)
      this.#queuedBytes += bytes.length
      this.#soloSmall = small && queue.length === 1
    }
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(() => this.#flush())
    }
  }

  /** Pauses reading for `reason` (reasons stack; reading resumes when none is left). */
  pause(reason: PauseReason): void {
    if (this.#pauses === 0 && !this.#closed) this.socket.pause()
    this.#pauses |= PAUSE_BIT[reason]
  }

  resume(reason: PauseReason): void {
    const bit = PAUSE_BIT[reason]
    if (this.#pauses & bit) {
      this.#pauses &= ~bit
      if (this.#pauses === 0 && !this.#closed) this.socket.resume()
    }
  }

  get paused(): boolean {
    return this.#pauses !== 0
  }

  /**
   * Calls `beat(this)` (which sends a heartbeat) whenever nothing was sent for `interval` ms, and
   * fails the connection when nothing was received for three intervals. Only for peers that
   * advertised heartbeats. `beat` should be a shared function: an idle connection then carries no
   * closure for it.
   */
  startHeartbeat(interval: number, beat: (conn: Connection) => void): void {
    if (interval <= 0 || this.#beat || this.#closed) return
    // One shared interval per period visits every connection that uses it.
    this.#heartbeatPeriod = interval
    this.#beat = beat
    every(interval, this)
  }

  /** @internal A heartbeat period passed (see {@link startHeartbeat}). */
  tick(): void {
    const interval = this.#heartbeatPeriod
    const t = now()
    if (t - this.lastReceived > 3 * interval) {
      this.destroy(new PolyCallError(ErrorCode.CONNECTION_LOST, `peer sent nothing for ${Math.round(t - this.lastReceived)} ms`))
      return
    }
    if (t - this.lastSent >= interval * 0.9) this.#beat!(this)
  }

  /** Flushes what is queued, then closes the sending side. */
  end(): void {
    if (this.#closed || this.#ending) return
    this.#flush()
    this.#bits |= ENDING
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

  /** Moves the arena's filled, unsent region onto the queue (keeping frame order). */
  #takeArena(): void {
    if (this.#arena && this.#arenaPos > this.#arenaStart) {
      ;(this.#queue ??= []).push(this.#arena.subarray(this.#arenaStart, this.#arenaPos))
      this.#arenaStart = this.#arenaPos
    }
  }

  #newArena(): void {
    this.#takeArena()
    this.#arena = Buffer.allocUnsafe(ARENA_SIZE)
    this.#arenaStart = 0
    this.#arenaPos = 0
  }

  #flush(): void {
    this.#flushScheduled = false
    if (this.#closed || this.#needDrain) return
    this.#takeArena()
    this.#arena = undefined
    this.#soloSmall = false
    this.#write()
  }

  #write(): void {
    const queue = this.#queue
    if (queue === undefined || queue.length === 0) return
    const bytes = this.#queuedBytes
    this.#queue = undefined
    this.#queuedBytes = 0
    let ok = true
    if (this.legacy) {
      for (const frame of queue) ok = this.socket.write(frame) && ok
    } else {
      ok = this.socket.write(queue.length === 1 ? queue[0]! : Buffer.concat(queue, bytes))
    }
    this.bytesOut += bytes
    this.lastSent = wholeNow()
    if (!ok) {
      this.#needDrain = true
      this.pause('drain')
    }
  }

  #onData(chunk: Buffer): void {
    this.lastReceived = wholeNow()
    this.bytesIn += chunk.length
    let frames: WireFrame[]
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
    if (this.#stallTimeout > 0) this.#watchStall()
    for (let i = 0; i < frames.length; i++) {
      if (this.#closed) return
      this.#hooks.frame(frames[i]!)
    }
  }

  /** Arms (or re-arms) the stall timer while a frame is incomplete; disarms it otherwise. */
  #watchStall(): void {
    if (this.#decoder.pending) {
      if (this.#stallTimer) this.#stallTimer.refresh()
      else {
        this.#stallTimer = setTimeout(() => {
          this.#stallTimer = undefined
          if (!this.#closed && this.#decoder.pending) this.#hooks.stalled?.()
        }, this.#stallTimeout)
        this.#stallTimer.unref()
      }
    } else if (this.#stallTimer) {
      clearTimeout(this.#stallTimer)
      this.#stallTimer = undefined
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
    this.#bits |= CLOSED
    this.#stopHeartbeat()
    if (this.#stallTimer) clearTimeout(this.#stallTimer)
    this.#queue = undefined
    this.#queuedBytes = 0
    this.#arena = undefined
    this.#decoder.free()
    this.#hooks.close(this.#error)
  }

  #stopHeartbeat(): void {
    if (this.#beat) stop(this.#heartbeatPeriod, this)
    this.#beat = undefined
  }
}
