/**
 * One socket speaking one wire format (v1 or PCR1): framing through the native decoder (one
 * crossing per chunk), a write queue that turns the frames produced in one tick into one socket
 * write, `write()` backpressure, read pausing, heartbeats with dead-peer detection, and the
 * session state. Client and server both drive one of these per connection; what a frame means is
 * theirs to decide.
 *
 * Bounds against a peer (each optional, set by the server): a frame must complete within
 * `frameTimeout` of its first byte and keep making progress within `stallTimeout`; past
 * `maxWriteBuffer` unsent bytes reading stops, and a peer that leaves them unread for
 * `drainTimeout` is destroyed; after `end()` a socket the peer does not close within
 * `lingerTimeout` is destroyed. While reading is paused for any reason, frames already decoded
 * from the last chunk wait (at most one chunk's worth) and are delivered on resume.
 *
 * Secure sessions ({@link Connection.secure}): the connection's decoder is the session's
 * channel, which decodes and opens each socket chunk in one native call. While the channel
 * holds at a handshake frame, the socket is paused and later bytes wait in the channel (at most
 * 64 KiB) until the owner's handshake step is done; once the owner calls
 * {@link Connection.seal}, frames are sealed in batches: small ones are written into the write
 * arena behind a provisional header, with room for the tag, and sealed there in place by one
 * native call when the arena's region is handed to the socket (where both peers agreed on sealed
 * batches, that call seals them a batch of up to 64 at a time); larger ones are staged and
 * sealed in one native call at flush time (or once a batch is big enough). Both keep the order
 * in which frames were queued, which is the order of their nonces. A connection without a
 * secure session does none of this work.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { Socket as NetSocket, type Socket } from 'node:net'
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import { now, unrefTimer } from '../core/abort.js'
import type { DecodeError } from '../protocol/codec.js'
import { DEFAULT_FLAGS } from '../protocol/constants.js'
import { writeHeaderJs } from '../protocol/fast-path.js'
import { jsonCodec, type PayloadCodec } from '../protocol/payload.js'
import { SEAL_BATCH_FRAMES, type SecureChannel } from '../secure/channel.js'
import { SessionMachine, type SessionRole } from '../state/session.js'
import { every, stop, type Ticking } from './ticker.js'
import { ARENA_FRAME_MAX, SecureDecoder, type Wire, type WireDecoder, type WireFrame } from './wire.js'

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
  /**
   * A partial frame made no progress for `stallTimeout` ms (`'stall'`), or was still incomplete
   * `frameTimeout` ms after its first byte arrived (`'frame'`).
   */
  stalled?(reason: 'stall' | 'frame'): void
  /** Queued frames were handed to the socket while reading was paused for `'dispatch'`. */
  flushed?(): void
  /**
   * Whether the peer has nothing left to do but wait for this tick's frames (`queued` of them
   * so far): then the first {@link FIRST_EARLY_WRITE} bytes of the tick leave at once, and the
   * peer works on them while this side produces the rest.
   */
  peerIdle?(queued: number): boolean
}

/**
 * Options of a connection. A server passes one object to all of its connections; every bound is
 * off when absent or 0.
 */
export interface ConnectionOptions {
  maxPayload: number
  wire: Wire
  /** Fail when a partial frame makes no progress for this long. */
  stallTimeout?: number
  /** Fail when a frame is not complete this long after its first byte arrived. */
  frameTimeout?: number
  /** Stop reading while more than this many bytes wait to be written. */
  maxWriteBuffer?: number
  /** Destroy the connection when it stays over `maxWriteBuffer` for this long. */
  drainTimeout?: number
  /** After `end()`, destroy the socket if it is not closed this long later. */
  lingerTimeout?: number
}

/**
 * Why reading is paused; reading resumes when no reason is left. `dispatch`: the owner's
 * requests in flight; `drain`: the socket refused more data; `write`: over `maxWriteBuffer`;
 * `replies`: the owner's reply queue; `owner`: anything else the owner decides.
 */
export type PauseReason = 'dispatch' | 'drain' | 'owner' | 'replies' | 'write'

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
function onReadTimer(c: Connection): void {
  Connection.listeners.readTimer(c)
}
function flushOf(c: Connection): void {
  Connection.listeners.flush(c)
}

/**
 * What a connection needs only in the middle of a frame or under pressure: made on first use, so
 * an idle connection carries one empty field instead of five.
 */
interface Watch {
  /** Watches the partial frame (stall and frame timeouts). */
  readTimer: NodeJS.Timeout | undefined
  /** Whole monotonic ms when the partial frame's first byte arrived. */
  frameStarted: number
  drainTimer: NodeJS.Timeout | undefined
  lingerTimer: NodeJS.Timeout | undefined
  /** The decode error that follows the held frames. */
  heldError: DecodeError | undefined
}

/** A connection's secure session: its channel, the hold in progress and the frames to seal. */
interface SecureLink {
  readonly channel: SecureChannel
  /** The frame the channel held after, until it has been delivered. */
  holdFrame: WireFrame | undefined
  /** The owner took the step of the held frame and will call {@link Connection.stepDone}. */
  claimed: boolean
  /** Three numbers per staged frame: `type | flags << 16`, sequence, payload length. */
  words: number[]
  /** The staged payloads, end to end (made on demand, dropped at each flush). */
  stage: Buffer | undefined
  pos: number
  count: number
  /** What the staged frames were counted as in `queuedBytes` (payloads plus 32 each). */
  estimate: number
}

const EMPTY = Buffer.alloc(0)
const wholeNow = (): number => Math.floor(now())

const SOLO_SMALL = 1
const FLUSH_SCHEDULED = 2
const NEED_DRAIN = 4
const CLOSED = 8
const ENDING = 16
/** Inside the loop that hands frames to the hooks (a nested resume must not start another). */
const DELIVERING = 32
/** `socket.pause()` was called and not yet undone. */
const READ_PAUSED = 64
/** The peer's side ended while frames were still held: its end comes after them. */
const END_HELD = 128
/** The secure channel holds at a handshake frame: the socket stays paused until the step is done. */
const HOLDING = 256
/** Outgoing frames are sealed. */
const SEALING = 512
/**
 * The socket is a `net.Socket` (TCP, TLS, a pipe): a write it reports complete was copied into
 * the kernel (or TLS), so the arena it came from may be reused. Other Duplex streams (an
 * in-memory pair, a user's dial) may still hold a written chunk after its callback.
 */
const KERNEL_WRITES = 1024
/** This tick already wrote its first part early: the rest waits for {@link EARLY_WRITE}. */
const SPLIT = 2048
/** First size of a secure connection's staging buffer (from Node's buffer pool). */
const SEAL_STAGE = 2048
/**
 * A sealed tick seals and writes what it queued once it reaches this much: one native call
 * seals the whole batch, so large frames go further than plaintext writes before they leave.
 */
const EARLY_SEAL = 16 * 1024
/**
 * ... or once it holds {@link EARLY_SEAL_FRAMES} frames and this many bytes: small frames leave
 * in batches of about 4 KiB, as plaintext ones do, so that the peer starts on the first part of
 * a busy tick while the rest is produced (at 128 in flight with 64-byte payloads, sealing at
 * 16 KiB only made the two sides take turns: about half the plaintext rate).
 */
const EARLY_SEAL_SMALL = 4 * 1024
const EARLY_SEAL_FRAMES = 16
/**
 * Room a sealed frame takes in the write arena beyond its body: the header, then the tag, which
 * the native call writes when it seals the arena's frames in place.
 */
const SEALED_ROOM = 32
/** Size of a sealed tick's first arena (from Node's buffer pool); later ones are {@link ARENA_SIZE}. */
const SEALED_FIRST_ARENA = 2048
const PAUSE_BIT: Record<PauseReason, number> = { dispatch: 1, drain: 2, owner: 4, replies: 8, write: 16 }
const DISPATCH = PAUSE_BIT.dispatch
const WRITE = PAUSE_BIT.write
const ARENA_SIZE = 8192
/**
 * A full-size arena whose bytes the kernel already took: a flush whose write completed at once
 * leaves its arena here, and the next tick that needs one (on any connection) takes it instead
 * of allocating 8 KiB. An arena still referenced by a pending write is never put here.
 */
let spareArena: Buffer | undefined

function freshArena(): Buffer {
  const spare = spareArena
  if (spare === undefined) return Buffer.allocUnsafe(ARENA_SIZE)
  spareArena = undefined
  return spare
}
/**
 * A tick that queues this many bytes writes them at once instead of at its end, so the peer
 * works on the first part while this side produces the rest.
 */
const EARLY_WRITE = 4096
/**
 * When the peer is idle (nothing this side sent before the tick is unanswered, see
 * {@link ConnectionHooks.peerIdle}), the first this-many bytes of a tick leave at once: the
 * peer starts on them while this side produces the rest, instead of the two sides taking turns
 * with whole ticks. Later parts of the tick wait for {@link EARLY_WRITE} as usual; a peer that
 * is still busy gets the tick in one write, since splitting would only cost it a read.
 */
const FIRST_EARLY_WRITE = 256

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
  #decoder: WireDecoder
  #secure: SecureLink | undefined
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
  /** Shared with every connection of the same owner. */
  readonly #options: ConnectionOptions
  /** Decoded frames not yet handed to the hooks (reading paused part-way through a chunk). */
  #held: WireFrame[] | undefined
  #heldAt = 0
  /** Frames queued since the last socket write. */
  #queuedFrames = 0
  /** What the socket still buffered after the last write it refused (0 once it drained). */
  #backlog = 0
  #watch: Watch | undefined

  get #w(): Watch {
    return (this.#watch ??= {
      readTimer: undefined,
      frameStarted: 0,
      drainTimer: undefined,
      lingerTimer: undefined,
      heldError: undefined,
    })
  }

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
    this.#options = options
    socket.setNoDelay(true)
    if (socket instanceof NetSocket) this.#bits |= KERNEL_WRITES
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
      c.#onDrain()
    },
    readTimer(c: Connection): void {
      c.#onReadTimer()
    },
    flush(c: Connection): void {
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

  /** Frames queued since the last socket write (replies produced but not yet written). */
  get queuedFrames(): number {
    return this.#queuedFrames
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
    if (this.#bits & SEALING) {
      if (body.length + SEALED_ROOM > ARENA_FRAME_MAX) return this.#stageSealed(type, sequence, body, flags)
      if (this.#secure!.count > 0 && !this.#sealStaged(true)) return
      const at = this.#sealedSlot(body.length + SEALED_ROOM)
      const arena = this.#arena!
      // A provisional header (checksum 0): the native call writes the real one when it seals.
      writeHeaderJs(arena, type, flags ?? DEFAULT_FLAGS[type]!, sequence, body.length, 0, at)
      arena.set(body, at + 16)
      this.#arenaWritten(body.length + SEALED_ROOM)
      this.#queued()
      return
    }
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
      this.#arenaWritten(written)
    } else {
      this.#takeArena()
      const bytes = this.#wire.encode(type, sequence, payload, flags)
      const queue = (this.#queue ??= [])
      queue.push(bytes)
      this.#queuedBytes += bytes.length
      this.#soloSmall = small && queue.length === 1
    }
    this.#queued()
  }

  /**
   * Queues one frame whose payload `write(target, offset, a, b, c)` writes straight into the
   * write arena (at most `bound` bytes; it returns the offset after them), with no payload buffer
   * in between. Only a tick that already has an arena (its second small frame on) takes this
   * path, so a lone frame is written as by {@link Connection.send}. Returns false, having queued
   * nothing, when the frame must go through `send` instead: no arena yet, too large, a legacy
   * peer, a sealed session, or a wire without {@link Wire.headerInto}.
   *
   * @param type - the frame type
   * @param sequence - the frame's sequence number
   * @param bound - the most bytes `write` writes (-1: it cannot write this payload)
   * @param write - writes the payload from `a`, `b`, `c` at `offset`; returns the offset after it
   * @returns whether the frame was queued
   */
  sendInto<A, B, C>(
    type: number,
    sequence: number,
    bound: number,
    write: (target: Buffer, offset: number, a: A, b: B, c: C) => number,
    a: A,
    b: B,
    c: C,
  ): boolean {
    if (!this.canSendInto(bound)) return false
    if ((this.#bits & SEALING) !== 0) {
      // Sealed: the payload goes into the arena behind a provisional header, and the arena's
      // frames are sealed in place, all in one native call, when the region is handed on.
      if (this.#secure!.count > 0 && !this.#sealStaged(true)) return true
      const at = this.#sealedSlot(bound + SEALED_ROOM)
      const arena = this.#arena!
      const len = write(arena, at + 16, a, b, c) - at - 16
      writeHeaderJs(arena, type, DEFAULT_FLAGS[type]!, sequence, len, 0, at)
      this.#arenaWritten(len + SEALED_ROOM)
      this.#queued()
      return true
    }
    const header = this.#wire.headerInto!
    if (!this.#arena) {
      // A second small frame in this tick: move the first into a fresh arena.
      const first = this.#queue!.pop()!
      this.#newArena()
      this.#arena!.set(first, 0)
      this.#arenaPos = first.length
      this.#soloSmall = false
    } else if (this.#arena.length - this.#arenaPos < ARENA_FRAME_MAX) this.#newArena()
    const arena = this.#arena!
    const at = this.#arenaPos
    const end = write(arena, at + 16, a, b, c)
    header(arena, at, type, sequence, end - at - 16)
    this.#arenaWritten(end - at)
    this.#queued()
    return true
  }

  /**
   * Whether {@link Connection.sendInto} would take a frame whose payload is at most `bound`
   * bytes now (-1: never). True only between the first small frame of a tick and its flush.
   *
   * @param bound - the payload's largest size
   * @returns whether `sendInto` would queue it now
   */
  canSendInto(bound: number): boolean {
    if ((this.#bits & SEALING) !== 0) return bound >= 0 && bound + SEALED_ROOM <= ARENA_FRAME_MAX && (this.#bits & (CLOSED | ENDING)) === 0
    return (
      bound >= 0 &&
      bound + 16 <= ARENA_FRAME_MAX &&
      (this.#arena !== undefined || (this.#bits & SOLO_SMALL) !== 0) &&
      (this.#bits & (SEALING | CLOSED | ENDING)) === 0 &&
      !this.legacy &&
      this.#wire.headerInto !== undefined
    )
  }

  /** A frame of `written` bytes went into the arena: early write once a tick reaches {@link EARLY_WRITE}. */
  #arenaWritten(written: number): void {
    this.#arenaPos += written
    this.#queuedBytes += written
    const q = this.#queuedBytes
    if (this.#needDrain || q < FIRST_EARLY_WRITE) return
    if (q < EARLY_WRITE) {
      // Below EARLY_WRITE only the tick's first part leaves early, and only to an idle peer.
      if ((this.#bits & SPLIT) !== 0) return
      this.#bits |= SPLIT
      if (this.#hooks.peerIdle?.(this.#queuedFrames + 1) !== true) return
    }
    this.#bits |= SPLIT
    this.#takeArena()
    this.#write()
  }

  /** A frame was queued: bounds, and the flush at the end of the tick. */
  #queued(): void {
    this.#queuedFrames++
    const max = this.#options.maxWriteBuffer
    if (max !== undefined && this.#queuedBytes + this.#backlog > max) this.#overfull()
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(flushOf, this)
    }
  }

  /**
   * Makes `channel` this connection's decoder: a secure session's channel, still handshaking.
   * Call it before any byte arrives (right after construction, or before sending a hello).
   */
  secure(channel: SecureChannel): void {
    this.#decoder.free()
    this.#decoder = new SecureDecoder(channel)
    this.#secure = { channel, holdFrame: undefined, claimed: false, words: [], stage: undefined, pos: 0, count: 0, estimate: 0 }
  }

  /** The secure session's channel, while the connection has one. */
  get channel(): SecureChannel | undefined {
    return this.#secure?.channel
  }

  /** True once outgoing frames are sealed. */
  get sealing(): boolean {
    return (this.#bits & SEALING) !== 0
  }

  /**
   * From now on every frame sent is sealed: call it at the switch point (after writing the
   * server's RESPONSE, after reading it on the client, after XX's third message). Frames queued
   * before still leave first, as they are.
   */
  seal(): void {
    if (this.#secure === undefined) return
    // What the arena holds so far leaves as it is; the frames after it are sealed.
    this.#takeArena()
    this.#bits = (this.#bits | SEALING) & ~SOLO_SMALL
  }

  /**
   * Called from the frame hook of a frame the channel held at: the owner's handshake step will
   * finish later, with {@link Connection.stepDone}. A held frame nobody claims lets reading go
   * on as soon as its hook returns.
   */
  claimStep(): void {
    if (this.#secure !== undefined && (this.#bits & HOLDING) !== 0) this.#secure.claimed = true
  }

  /** The owner's handshake step is done: read what the channel held back, in the session's new mode. */
  stepDone(): void {
    const link = this.#secure
    if (link !== undefined) link.claimed = false
    this.#continue()
  }

  /**
   * The peer speaks no secure hello: drop the channel and read on with the plain decoder (the
   * bytes the channel held back go through it). Only at a hold, before any step was taken.
   */
  plain(): void {
    const link = this.#secure
    if (link === undefined) return
    const chunks = link.channel.detach()
    this.#secure = undefined
    this.#bits &= ~(HOLDING | SEALING)
    this.#decoder = this.#wire.decoder(this.#options.maxPayload)
    for (const chunk of chunks) this.#take(chunk)
    this.#readOn()
  }

  /**
   * Pauses reading for `reason` (reasons stack; reading resumes when none is left). Frames of
   * the current chunk not yet delivered wait for the resume.
   */
  pause(reason: PauseReason): void {
    this.#pauses |= PAUSE_BIT[reason]
    if ((this.#bits & READ_PAUSED) === 0 && !this.#closed) {
      this.#bits |= READ_PAUSED
      this.socket.pause()
    }
  }

  /** Drops `reason`; with none left, delivers the frames that waited, then reads on. */
  resume(reason: PauseReason): void {
    const bit = PAUSE_BIT[reason]
    if ((this.#pauses & bit) === 0) return
    this.#pauses &= ~bit
    if (this.#pauses === 0) this.#deliver()
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
    // While this side is not reading, the peer's silence proves nothing.
    if (t - this.lastReceived > 3 * interval && this.#pauses === 0) {
      // Decide after the poll phase (setImmediate): after a stall of this event loop, bytes the
      // peer sent may be waiting in the socket, unread.
      setImmediate(destroyIfSilent, this)
      return
    }
    if (t - this.lastSent >= interval * 0.9) this.#beat!(this)
  }

  /** @internal The heartbeat's dead-peer verdict, re-checked after the poll phase. */
  silentFor(): number {
    return this.#closed || this.#pauses !== 0 || !this.#beat ? 0 : now() - this.lastReceived - 3 * this.#heartbeatPeriod
  }

  /**
   * Hands everything queued to the socket, then closes the sending side. A socket that is not
   * closed `linger` ms later (the peer neither reads nor closes) is destroyed.
   *
   * @param linger - ms; 0 waits for the peer however long it takes @defaultValue the `lingerTimeout` option
   * @param error - why the connection ends, for the `close` hook @defaultValue none (a clean end)
   */
  end(linger = this.#options.lingerTimeout ?? 0, error?: PolyCallError): void {
    if (this.#closed || this.#ending) return
    if (error) this.#error ??= error
    // Even while waiting for 'drain': the socket buffers it, and nothing is written after end().
    this.#bits |= ENDING
    this.#flushScheduled = false
    this.#takeArena()
    this.#arena = undefined
    this.#soloSmall = false
    if ((this.#bits & SEALING) !== 0 && !this.#sealStaged()) return
    this.#write()
    this.#stopHeartbeat()
    this.socket.end()
    if (linger > 0) this.#w.lingerTimer = unrefTimer(() => this.destroy(), linger)
  }

  /** Tears the socket down now. */
  destroy(error?: PolyCallError): void {
    if (this.#closed) return
    if (error) this.#error ??= error
    this.#stopHeartbeat()
    this.socket.destroy()
  }

  /**
   * Moves the arena's filled, unsent region onto the queue (keeping frame order), sealing it
   * first on a sealed connection. Returns false when it could not be sealed (the connection is
   * destroyed).
   */
  #takeArena(): boolean {
    const arena = this.#arena
    if (arena && this.#arenaPos > this.#arenaStart) {
      const end = (this.#bits & SEALING) !== 0 ? this.#sealArena(arena) : this.#arenaPos
      if (end < 0) return false
      ;(this.#queue ??= []).push(arena.subarray(this.#arenaStart, end))
      this.#arenaStart = this.#arenaPos
    }
    return true
  }

  /**
   * Seals the arena's unsent frames in place (one native call) and returns where they end, or
   * -1 when the session can no longer seal: the connection is destroyed and drops what it queued.
   */
  #sealArena(arena: Buffer): number {
    const start = this.#arenaStart
    const end = this.#arenaPos
    try {
      const sealed = this.#secure!.channel.sealInPlace(arena, start, end)
      this.#queuedBytes -= end - sealed
      return sealed
    } catch (e) {
      this.#arena = undefined
      this.#arenaStart = this.#arenaPos = 0
      this.#queue = undefined
      this.#queuedBytes = 0
      this.destroy(isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INTERNAL, 'sealing failed', { cause: e }))
      return -1
    }
  }

  /**
   * Makes room for a sealed frame of `need` bytes in the arena and returns its offset. A tick's
   * first arena is a small pooled buffer; when it fills up, its unsent frames move into a
   * full-size arena (they are not sealed yet, so they can move).
   */
  #sealedSlot(need: number): number {
    const arena = this.#arena
    if (arena === undefined) {
      this.#arena = need > SEALED_FIRST_ARENA || spareArena !== undefined ? freshArena() : Buffer.allocUnsafe(SEALED_FIRST_ARENA)
      this.#arenaStart = this.#arenaPos = 0
    } else if (arena.length - this.#arenaPos < need) {
      const used = this.#arenaPos - this.#arenaStart
      if (arena.length < ARENA_SIZE && used + need <= ARENA_SIZE) {
        const grown = freshArena()
        arena.copy(grown, 0, this.#arenaStart, this.#arenaPos)
        this.#arena = grown
        this.#arenaStart = 0
        this.#arenaPos = used
      } else this.#newArena()
    }
    return this.#arenaPos
  }

  #newArena(): void {
    this.#takeArena()
    this.#arena = freshArena()
    this.#arenaStart = 0
    this.#arenaPos = 0
  }

  #flush(): void {
    this.#flushScheduled = false
    this.#bits &= ~SPLIT
    if (this.#closed || this.#needDrain || this.#ending) return
    if (!this.#takeArena()) return
    const arena = this.#arena
    this.#arena = undefined
    this.#soloSmall = false
    if ((this.#bits & SEALING) !== 0 && !this.#sealStaged()) return
    this.#write()
    // Everything went to the kernel (no write pending, nothing buffered): no view of the arena
    // is referenced any more, so its memory can serve the next tick.
    if (arena !== undefined && arena.length === ARENA_SIZE && (this.#bits & KERNEL_WRITES) !== 0 && this.socket.writableLength === 0 && !this.closed) {
      spareArena = arena
    }
  }

  /** Stages one frame to seal at flush time (payloads copied, as the arena copies them). */
  #stageSealed(type: number, sequence: number, body: Uint8Array, flags: number | undefined): void {
    const link = this.#secure!
    const len = body.length
    let stage = link.stage
    // Small frames start in a pooled 2 KiB buffer; large ones in one that holds a whole early batch.
    if (stage === undefined) stage = link.stage = Buffer.allocUnsafe(len < SEAL_STAGE >>> 1 ? SEAL_STAGE : EARLY_SEAL + len)
    else if (stage.length - link.pos < len) {
      const grown = Buffer.allocUnsafe(Math.max(stage.length * 2, link.pos + len + EARLY_SEAL))
      stage.copy(grown, 0, 0, link.pos)
      stage = link.stage = grown
    }
    stage.set(body, link.pos)
    link.pos += len
    link.words.push(type | ((flags ?? DEFAULT_FLAGS[type]!) << 16), sequence, len)
    link.count++
    link.estimate += len + 32
    this.#queuedBytes += len + 32
    this.#queuedFrames++
    const early = this.#queuedBytes >= EARLY_SEAL || (this.#queuedBytes >= EARLY_SEAL_SMALL && link.count >= EARLY_SEAL_FRAMES)
    if (link.count >= SEAL_BATCH_FRAMES || (early && !this.#needDrain)) {
      // The stage is reused for the rest of the tick; the flush lets it go.
      if (!this.#sealStaged(true)) return
      if (!this.#needDrain) this.#write()
    }
    const max = this.#options.maxWriteBuffer
    if (max !== undefined && this.#queuedBytes + this.#backlog > max) this.#overfull()
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      process.nextTick(() => this.#flush())
    }
  }

  /**
   * Seals the staged frames in one native call and queues the result behind what is queued
   * already. A session that can no longer seal (it failed) destroys the connection.
   */
  #sealStaged(keepStage = false): boolean {
    const link = this.#secure
    if (link === undefined) return true
    if (link.count === 0) {
      if (!keepStage) link.stage = undefined
      return true
    }
    // Arena frames queued before the staged ones take their nonces first.
    if (!this.#takeArena()) return false
    const { count, words, pos, estimate } = link
    const stage = link.stage!
    link.words = []
    if (!keepStage) link.stage = undefined
    link.pos = link.count = link.estimate = 0
    let bytes: Buffer
    try {
      bytes = link.channel.sealStaged(count, words, stage.subarray(0, pos))
    } catch (e) {
      this.#queuedBytes -= estimate
      this.destroy(isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INTERNAL, 'sealing failed', { cause: e }))
      return false
    }
    ;(this.#queue ??= []).push(bytes)
    this.#queuedBytes += bytes.length - estimate
    return true
  }

  #write(): void {
    const queue = this.#queue
    if (queue === undefined || queue.length === 0) return
    const bytes = this.#queuedBytes
    this.#queue = undefined
    this.#queuedBytes = 0
    this.#queuedFrames = 0
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
      this.#backlog = this.socket.writableLength
      this.pause('drain')
    } else {
      this.#backlog = 0
      if (this.#pauses & WRITE) this.#relieved()
    }
    if ((this.#pauses & DISPATCH) !== 0 && !this.#ending) this.#hooks.flushed?.()
  }

  /** Over `maxWriteBuffer`: stop reading and give the peer `drainTimeout` to catch up. */
  #overfull(): void {
    if (this.#pauses & WRITE) return
    this.pause('write')
    this.#armDrainTimer()
  }

  #armDrainTimer(): void {
    const ms = this.#options.drainTimeout ?? 0
    if (ms <= 0) return
    const w = this.#w
    w.drainTimer = unrefTimer(() => {
      w.drainTimer = undefined
      this.destroy(
        new PolyCallError(
          ErrorCode.DRAIN_TIMEOUT,
          `the peer left more than ${this.#options.maxWriteBuffer} bytes unread for ${ms} ms (${this.pendingBytes} queued)`,
        ),
      )
    }, ms)
  }

  /** Back under `maxWriteBuffer`. */
  #relieved(): void {
    const w = this.#watch
    if (w?.drainTimer) clearTimeout(w.drainTimer)
    if (w) w.drainTimer = undefined
    this.resume('write')
  }

  #onDrain(): void {
    this.#needDrain = false
    this.#backlog = 0
    this.#flush()
    if (this.#pauses & WRITE) {
      if (this.#queuedBytes + this.#backlog <= this.#options.maxWriteBuffer!) this.#relieved()
      else if (this.#watch?.drainTimer) {
        // The peer read everything the socket had; what waited behind it gets a fresh timeout.
        clearTimeout(this.#watch.drainTimer)
        this.#armDrainTimer()
      }
    }
    if (!this.#needDrain) this.resume('drain')
  }

  #onData(chunk: Buffer): void {
    this.lastReceived = wholeNow()
    this.bytesIn += chunk.length
    this.#take(chunk)
  }

  /** Decodes one chunk and hands its frames on (or queues them behind frames still held). */
  #take(chunk: Buffer): void {
    let frames: WireFrame[]
    let error: DecodeError | undefined
    try {
      frames = this.#decoder.push(chunk)
    } catch (e) {
      error = e as DecodeError
      frames = error.frames ?? []
    }
    if (this.#secure !== undefined) this.#checkHold(frames)
    const watched = this.#options.stallTimeout || this.#options.frameTimeout
    if (error === undefined && watched) this.#watchRead(frames.length)
    this.#enqueue(frames, error)
  }

  /** After a push or resume of the channel: a hold pauses the socket until its step is done. */
  #checkHold(frames: WireFrame[]): void {
    const link = this.#secure!
    // A chunk that arrives during a hold only queues in the channel: the hold goes on.
    if (!link.channel.held || (this.#bits & HOLDING) !== 0) return
    this.#bits |= HOLDING
    link.holdFrame = frames[frames.length - 1]
    link.claimed = false
    if ((this.#bits & READ_PAUSED) === 0 && !this.#closed) {
      this.#bits |= READ_PAUSED
      this.socket.pause()
    }
  }

  /** Reads what the channel held back once the hold's step is done (or nobody took it). */
  #continue(): void {
    const link = this.#secure
    this.#bits &= ~HOLDING
    if (link !== undefined && !this.#closed) {
      link.holdFrame = undefined
      let frames: WireFrame[] = []
      let error: DecodeError | undefined
      if (!link.channel.destroyed) {
        try {
          frames = link.channel.resume()
        } catch (e) {
          error = e as DecodeError
          frames = error.frames ?? []
        }
        this.#checkHold(frames)
      }
      this.#enqueue(frames, error)
    }
    this.#readOn()
  }

  /** Resumes the socket when nothing holds or pauses reading and no frame waits. */
  #readOn(): void {
    if (this.#held !== undefined || this.#closed || (this.#bits & (HOLDING | DELIVERING)) !== 0) return
    if (this.#pauses === 0 && (this.#bits & READ_PAUSED) !== 0) {
      this.#bits &= ~READ_PAUSED
      this.socket.resume()
    }
  }

  /** Hands decoded frames to the hooks, or queues them behind frames still held. */
  #enqueue(frames: WireFrame[], error: DecodeError | undefined): void {
    if (this.#held !== undefined) {
      // A chunk the socket had read before it paused: its frames queue behind the held ones.
      if (this.#watch?.heldError === undefined) {
        this.#held = this.#held.slice(this.#heldAt).concat(frames)
        this.#heldAt = 0
        if (error !== undefined) this.#w.heldError = error
      }
      return
    }
    if (frames.length === 0 && error === undefined) return
    this.#held = frames
    this.#heldAt = 0
    // With nothing held there is no held error either: only a new one needs storing.
    if (error !== undefined) this.#w.heldError = error
    this.#deliver()
  }

  /**
   * Hands the held frames (then their decode error, if any) to the hooks until none is left or
   * reading pauses; resumes the socket once everything went out and nothing pauses it.
   */
  #deliver(): void {
    if (this.#bits & DELIVERING) return
    this.#bits |= DELIVERING
    try {
      while (this.#held !== undefined && this.#pauses === 0 && !this.#closed) {
        const held = this.#held
        const at = this.#heldAt
        if (at < held.length) {
          this.#heldAt = at + 1
          // Let go of the chunk before its last frame runs (nothing is left to hold).
          if (at + 1 === held.length && this.#watch?.heldError === undefined) this.#held = undefined
          const f = held[at]!
          this.#hooks.frame(f)
          if ((this.#bits & HOLDING) !== 0 && f === this.#secure?.holdFrame) this.#heldFrameDone()
        } else {
          const w = this.#w
          const error = w.heldError
          this.#held = undefined
          w.heldError = undefined
          if (error !== undefined) this.#hooks.decodeError(error)
        }
      }
    } finally {
      this.#bits &= ~DELIVERING
    }
    if (this.#held !== undefined || this.#closed) return
    if (this.#bits & END_HELD) {
      this.#bits &= ~END_HELD
      this.#onEnd()
    } else if (this.#pauses === 0 && (this.#bits & (READ_PAUSED | HOLDING)) === READ_PAUSED) {
      this.#bits &= ~READ_PAUSED
      this.socket.resume()
    }
  }

  /** The held frame's hook returned: unless the owner took its step, read on now. */
  #heldFrameDone(): void {
    const link = this.#secure!
    link.holdFrame = undefined
    if (!link.claimed) this.#continue()
  }

  /**
   * While a frame is incomplete one timer watches it; it is not re-armed per chunk but checks
   * on firing what is left of the stall and frame timeouts.
   */
  #watchRead(completed: number): void {
    if (!this.#decoder.pending) {
      const w = this.#watch
      if (w?.readTimer) {
        clearTimeout(w.readTimer)
        w.readTimer = undefined
      }
      return
    }
    const w = this.#w
    // A chunk that completed frames and still ends inside one started that frame.
    if (completed > 0 || w.readTimer === undefined) w.frameStarted = this.lastReceived
    if (w.readTimer === undefined) this.#armRead(this.#readDelay())
  }

  /** The shorter of the stall and frame timeouts that are on. */
  #readDelay(): number {
    return Math.min(this.#options.stallTimeout || Infinity, this.#options.frameTimeout || Infinity)
  }

  #armRead(ms: number): void {
    const timer = setTimeout(onReadTimer, Math.max(1, Math.ceil(ms)), this)
    timer.unref()
    this.#w.readTimer = timer
  }

  #onReadTimer(): void {
    const w = this.#w
    w.readTimer = undefined
    if (this.#closed || !this.#decoder.pending) return
    const stall = this.#options.stallTimeout || 0
    const frame = this.#options.frameTimeout || 0
    if (this.#pauses !== 0) {
      // This side stopped reading, not the peer: its clocks start again.
      w.frameStarted = wholeNow()
      this.#armRead(this.#readDelay())
      return
    }
    const t = now()
    const frameLeft = frame > 0 ? w.frameStarted + frame - t : Infinity
    const stallLeft = stall > 0 ? Math.max(this.lastReceived, w.frameStarted) + stall - t : Infinity
    if (frameLeft <= 0) this.#hooks.stalled?.('frame')
    else if (stallLeft <= 0) this.#hooks.stalled?.('stall')
    else this.#armRead(Math.min(frameLeft, stallLeft))
  }

  #onEnd(): void {
    if (this.#held !== undefined) {
      // The socket saw the end while frames sent before it still wait here.
      this.#bits |= END_HELD
      return
    }
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
    const w = this.#watch
    if (w) {
      if (w.readTimer) clearTimeout(w.readTimer)
      if (w.drainTimer) clearTimeout(w.drainTimer)
      if (w.lingerTimer) clearTimeout(w.lingerTimer)
      w.readTimer = w.drainTimer = w.lingerTimer = w.heldError = undefined
    }
    this.#held = undefined
    this.#queue = undefined
    this.#queuedBytes = 0
    this.#arena = undefined
    this.#decoder.free()
    if (this.#secure !== undefined) this.#secure.stage = undefined
    this.#hooks.close(this.#error)
  }

  #stopHeartbeat(): void {
    if (this.#beat) stop(this.#heartbeatPeriod, this)
    this.#beat = undefined
  }
}

function destroyIfSilent(c: Connection): void {
  const over = c.silentFor()
  if (over > 0) c.destroy(new PolyCallError(ErrorCode.CONNECTION_LOST, `peer sent nothing for ${Math.round(now() - c.lastReceived)} ms`))
}
