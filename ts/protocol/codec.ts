/**
 * Frame-level API: checksum, encodeFrame and the streaming FrameDecoder (docs/protocol.md §1-§7).
 * Byte work happens in the Rust core; this module validates arguments, batches the boundary
 * crossing (one native call per pushed chunk) and hands out zero-copy payload views.
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { markAsUntransferable } from 'node:worker_threads'
import { checkOptionKeys, optionKeys } from '../core/options.js'
import { fromNative, native } from '../native.js'
import { DEFAULT_FLAGS, HEADER_SIZE, MAX_PAYLOAD, type MessageType } from './constants.js'
import {
  JS_CHECKSUM_MAX,
  JS_DECODE_MAX,
  JS_DECODE_TINY_MIN_CHUNK,
  JS_DECODE_TINY_PAYLOAD,
  JS_ENCODE_MAX,
  checksumJs,
  decodeValidPrefixJs,
  writeHeaderJs,
} from './fast-path.js'

/** A decoded frame. `payload` is a view into the pushed chunk whenever the frame arrived whole. */
export interface Frame {
  /** Always 1. */
  version: number
  /** Message type, 1..6. */
  type: MessageType
  /** Flag bits (advisory, passed through unchanged). */
  flags: number
  /** Sequence / correlation number, u32. */
  sequence: number
  /** The header's checksum field, verified against the payload. */
  checksum: number
  /** Payload bytes. Copy them (`Buffer.from(payload)`) to keep them beyond the chunk's life. */
  payload: Buffer
}

/** What {@link encodeFrame} takes. */
export interface FrameInit {
  /** Message type, 1..6. */
  type: MessageType
  /**
   * Flag bits, 0..0xffff.
   * @defaultValue the reference value for the type: HANDSHAKE/COMMAND `0x0008`, AUTH `0x0009`, others `0`
   */
  flags?: number | undefined
  /** Sequence number, 0..0xffffffff. */
  sequence: number
  /** Payload bytes, at most 1 048 576. @defaultValue empty */
  payload?: Uint8Array | undefined
}

/** Options of {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * Largest payload accepted, at most the protocol's 1 048 576 bytes. A header announcing more
   * fails with `ERR_POLYCALL_PAYLOAD_TOO_LARGE` before any payload byte is buffered.
   * @defaultValue 1048576
   */
  maxPayload?: number
  /**
   * @internal The owner frees the decoder on every path (a connection does, when its socket
   * closes), so no finalizer is registered: that saves a weak cell per idle connection.
   */
  ownerFrees?: boolean
}

/** @internal Every key of {@link FrameDecoderOptions}: others are refused. */
const FRAME_DECODER_OPTION_KEYS = optionKeys<FrameDecoderOptions>()(['maxPayload', 'ownerFrees'])

/** A {@link PolyCallError} raised by {@link FrameDecoder.push}, with the frames decoded before it. */
export interface DecodeError extends PolyCallError {
  /** Frames of the same chunk that completed before the bad one. */
  frames: Frame[]
}

const EMPTY = Buffer.alloc(0)
// Imported bindings are live and re-checked on every access; the hot paths read local copies.
const MAX = MAX_PAYLOAD
const HEADER = HEADER_SIZE
const JS_ENCODE_LIMIT = JS_ENCODE_MAX
const JS_CHECKSUM_LIMIT = JS_CHECKSUM_MAX
const JS_DECODE_LIMIT = JS_DECODE_MAX
const JS_TINY_LIMIT = JS_DECODE_TINY_PAYLOAD
const JS_TINY_MIN_CHUNK = JS_DECODE_TINY_MIN_CHUNK
const DEFAULTS = DEFAULT_FLAGS

function isU32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff
}


/**
 * Checksum of a payload (docs/protocol.md §2): 32-bit rotate-left-5-and-add, as an unsigned number.
 *
 * @param data - payload bytes
 * @returns the u32 checksum
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when `data` is not a Uint8Array
 * @example
 * ```ts
 * checksum(Buffer.from('hello')) // 0x06b43def
 * ```
 */
export function checksum(data: Uint8Array): number {
  if (!(data instanceof Uint8Array)) throw invalidArgument('checksum(data): data must be a Uint8Array')
  if (data.length <= JS_CHECKSUM_LIMIT) return checksumJs(data)
  try {
    return native.checksum(data)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Encodes one frame: the 16-byte header followed by the payload, in a new Buffer.
 *
 * Small frames come from Node's shared Buffer pool, as `Buffer.allocUnsafe` gives them: the
 * returned Buffer may be a view of a larger ArrayBuffer (`byteOffset` not 0). To write many
 * frames into one buffer of your own, use {@link encodeFrameInto}.
 *
 * @param frame - type, sequence, optional flags and payload
 * @returns the frame bytes
 * @throws `ERR_POLYCALL_UNKNOWN_MESSAGE_TYPE` for a type outside 1..6,
 *   `ERR_POLYCALL_PAYLOAD_TOO_LARGE` for a payload over 1 MiB,
 *   `ERR_POLYCALL_INVALID_ARGUMENT` for a bad flags, sequence or payload value
 * @example
 * ```ts
 * const bytes = encodeFrame({ type: MessageType.Command, sequence: 3, payload: Buffer.from('{}') })
 * ```
 */
export function encodeFrame(frame: FrameInit): Buffer {
  // Messages are built off the hot path, in encodeError, so this function stays small.
  if (frame === null || typeof frame !== 'object') throw encodeError(frame)
  const { type, sequence } = frame
  const flags = frame.flags ?? DEFAULTS[type & 7]!
  const payload = frame.payload ?? EMPTY
  if (!validFrame(type, flags, sequence, payload)) throw encodeError(frame)
  const len = payload.length
  const size = HEADER + len
  const out = size < SLAB_MIN ? Buffer.allocUnsafe(size) : slabBuffer(size)
  if (len > JS_ENCODE_LIMIT) return encodeNative(out, type, flags, sequence, payload)
  let sum: number
  if (len <= FUSED_COPY_MAX) sum = copyAndSum(out, HEADER, payload, len)
  else {
    sum = checksumJs(payload, 0, len, 0)
    out.set(payload, HEADER)
  }
  // Written out rather than through writeHeaderJs: measurably faster for small frames.
  // Typed-array stores keep the low 8 bits, so no masks are needed.
  out[0] = 1
  out[1] = type
  out[2] = flags
  out[3] = flags >>> 8
  out[4] = sequence
  out[5] = sequence >>> 8
  out[6] = sequence >>> 16
  out[7] = sequence >>> 24
  out[8] = len
  out[9] = len >>> 8
  out[10] = len >>> 16
  out[11] = len >>> 24
  out[12] = sum
  out[13] = sum >>> 8
  out[14] = sum >>> 16
  out[15] = sum >>> 24
  return out
}

// Frames from SLAB_MIN to SLAB_MAX bytes are cut from slabs of our own, larger than Node's 8 KiB
// Buffer pool: Buffer.allocUnsafe refills its pool every few frames of that size, and a refill
// costs more than the frame. Smaller frames take Node's pool, which is cheaper per Buffer. As with
// the pool, a slab stays alive while any frame cut from it does; slabs cannot be transferred to
// another thread (that would detach the frames sharing them).
const SLAB_SIZE = 32 * 1024
const SLAB_MIN = 256
const SLAB_MAX = JS_ENCODE_MAX + HEADER_SIZE
let slab = newSlab()
let slabUsed = 0

function newSlab(): ArrayBuffer {
  const ab = Buffer.allocUnsafeSlow(SLAB_SIZE).buffer as ArrayBuffer
  markAsUntransferable(ab)
  return ab
}

function slabBuffer(size: number): Buffer {
  if (size > SLAB_MAX) return Buffer.allocUnsafe(size)
  if (size > SLAB_SIZE - slabUsed) {
    slab = newSlab()
    slabUsed = 0
  }
  const out = Buffer.from(slab, slabUsed, size)
  // 8-byte aligned like Node's pool, so typed-array views of a frame stay possible.
  slabUsed = (slabUsed + size + 7) & ~7
  return out
}

/**
 * Encodes one frame into `target` at `offset`, without allocating: for callers that batch many
 * frames into one buffer (a write arena, a file). Writes exactly `16 + payload.length` bytes and
 * nothing else.
 *
 * @param target - the buffer to write into
 * @param offset - where the frame starts in `target`
 * @param frame - type, sequence, optional flags and payload
 * @returns the offset just past the frame (`offset + 16 + payload.length`)
 * @throws the codes of {@link encodeFrame}; `ERR_POLYCALL_INVALID_ARGUMENT` also when `target`
 *   is not a Uint8Array, `offset` is not an integer, or the frame does not fit in
 *   `target[offset..]` (nothing is written then)
 * @example
 * ```ts
 * const arena = Buffer.allocUnsafe(64 * 1024)
 * let end = 0
 * for (const reply of replies) end = encodeFrameInto(arena, end, { type: MessageType.Response, sequence: reply.seq, payload: reply.bytes })
 * socket.write(arena.subarray(0, end))
 * ```
 */
export function encodeFrameInto(target: Uint8Array, offset: number, frame: FrameInit): number {
  if (frame === null || typeof frame !== 'object') throw encodeError(frame)
  const { type, sequence } = frame
  const flags = frame.flags ?? DEFAULTS[type & 7]!
  const payload = frame.payload ?? EMPTY
  if (!validFrame(type, flags, sequence, payload)) throw encodeError(frame)
  const len = payload.length
  const end = offset + HEADER + len
  if (!(target instanceof Uint8Array) || (offset | 0) !== offset || offset < 0 || end > target.length) {
    throw intoError(target, offset, HEADER + len)
  }
  if (len > JS_ENCODE_LIMIT) {
    encodeNative(Buffer.from(target.buffer, target.byteOffset + offset, HEADER + len), type, flags, sequence, payload)
    return end
  }
  let sum: number
  if (len <= FUSED_COPY_MAX) sum = copyAndSum(target, offset + HEADER, payload, len)
  else {
    sum = checksumJs(payload, 0, len, 0)
    target.set(payload, offset + HEADER)
  }
  writeHeaderJs(target, type, flags, sequence, len, sum, offset)
  return end
}

/**
 * True when the fields make a valid frame: the checks of `encodeError`, written with integer
 * operations. `(x & m) === x` holds only for an integer number in `0..m` (a string, a fraction,
 * NaN or a negative number compares unequal), and `x >>> 0 === x` only for one in `0..2^32-1`.
 */
function validFrame(type: number, flags: number, sequence: number, payload: Uint8Array): boolean {
  return (
    (type & 7) === type &&
    type !== 0 &&
    type !== 7 &&
    (flags & 0xffff) === flags &&
    sequence >>> 0 === sequence &&
    payload instanceof Uint8Array &&
    payload.length <= MAX
  )
}

/** Payloads up to this many bytes are copied in the checksum loop; longer ones by `set`. */
const FUSED_COPY_MAX = 16

/**
 * Copies a small payload byte by byte inside the checksum loop: the loop waits on its
 * rotate-and-add chain anyway, so the stores cost nothing, and a `set` call costs more than it
 * copies at these sizes.
 */
function copyAndSum(out: Uint8Array, at: number, payload: Uint8Array, len: number): number {
  let sum = 0
  let i = 0
  // Four bytes per iteration: loads first, then the stores and the chain (about 10% faster at
  // 16 bytes than one byte per iteration).
  for (const stop = len & ~3; i < stop; i += 4) {
    const b0 = payload[i]!
    const b1 = payload[i + 1]!
    const b2 = payload[i + 2]!
    const b3 = payload[i + 3]!
    out[at + i] = b0
    out[at + i + 1] = b1
    out[at + i + 2] = b2
    out[at + i + 3] = b3
    sum = (((sum << 5) | (sum >>> 27)) + b0) | 0
    sum = (((sum << 5) | (sum >>> 27)) + b1) | 0
    sum = (((sum << 5) | (sum >>> 27)) + b2) | 0
    sum = (((sum << 5) | (sum >>> 27)) + b3) | 0
  }
  for (; i < len; i++) {
    const b = payload[i]!
    out[at + i] = b
    sum = (((sum << 5) | (sum >>> 27)) + b) | 0
  }
  return sum
}

function encodeNative(out: Buffer, type: number, flags: number, sequence: number, payload: Uint8Array): Buffer {
  try {
    native.encodeInto(out, type, flags, sequence, payload)
  } catch (e) {
    throw fromNative(e)
  }
  return out
}

/** Builds the error for a target or offset `encodeFrameInto` refused (kept out of the hot function). */
function intoError(target: unknown, offset: unknown, size: number): PolyCallError {
  if (!(target instanceof Uint8Array)) return invalidArgument('encodeFrameInto(target): target must be a Uint8Array')
  if (!Number.isInteger(offset) || (offset as number) < 0) return invalidArgument(`offset ${String(offset)} is not a non-negative integer`)
  return invalidArgument(`a ${size}-byte frame does not fit at offset ${String(offset)} of a ${target.length}-byte buffer`)
}

/** Builds the error for arguments `encodeFrame` refused (kept out of the hot function). */
function encodeError(frame: unknown): PolyCallError {
  if (frame === null || typeof frame !== 'object') return invalidArgument('encodeFrame(frame): frame must be an object')
  const { type, flags, sequence, payload } = frame as Record<string, unknown>
  if (!Number.isInteger(type) || (type as number) < 1 || (type as number) > 6) {
    return new PolyCallError(ErrorCode.UNKNOWN_MESSAGE_TYPE, `message type ${String(type)} is not one of 1..6`)
  }
  if (flags !== undefined && (!Number.isInteger(flags) || (flags as number) < 0 || (flags as number) > 0xffff)) {
    return invalidArgument(`flags ${String(flags)} is not an integer in 0..0xffff`)
  }
  if (!isU32(sequence)) return invalidArgument(`sequence ${String(sequence)} is not an integer in 0..0xffffffff`)
  if (payload !== undefined && !(payload instanceof Uint8Array)) return invalidArgument('payload must be a Uint8Array')
  const len = (payload as Uint8Array | undefined)?.length ?? 0
  return new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `payload of ${len} bytes exceeds the ${MAX}-byte limit`)
}

// Header fields of decoded frames come back through one metadata array registered with the
// addon: five u32 per frame slot (type | flags << 16, sequence, checksum, payload start or
// ASSEMBLED, payload length), then one tail word: the bytes of the chunk the last push consumed.
// A push reads the slots right after the native call, so every decoder of
// this thread shares the array; it lives on globalThis so two copies of the package in one
// process (which share one loaded addon) also share it. A frame handler may push into any
// decoder, which overwrites the slots: see `interrupts` below.
const META_WORDS = 5
const META_FRAMES = 4096
const META_TAIL = 1
const META_LENGTH = META_FRAMES * META_WORDS + META_TAIL
const CONSUMED = META_LENGTH - 1
const META_KEY = Symbol.for('polycall.decoder.meta.v2')
const META: Uint32Array = ((globalThis as Record<symbol, unknown>)[META_KEY] as Uint32Array | undefined) ??
  ((globalThis as Record<symbol, unknown>)[META_KEY] = new Uint32Array(META_LENGTH))
native.decoderSetMeta(META)
/** @internal Payload-start marker of a frame assembled across chunks. */
export const ASSEMBLED = 0xffffffff
const MORE = 1 << 30
const FAILED = 1 << 29
const PARTIAL = 1 << 28
const COUNT = PARTIAL - 1
const FREED = -1
/** @internal The metadata words of decoded frames, shared by every decoder of this thread. */
export { META as DECODER_META, META_WORDS as DECODER_META_WORDS }
/** @internal Frames written by a native push. */
export const statusCount = (status: number): number => status & COUNT
/** @internal The push stopped at a bad frame (call `fail`). */
export const statusFailed = (status: number): boolean => (status & FAILED) !== 0
/** @internal The metadata array filled up; push the rest of the chunk again. */
export const statusMore = (status: number): boolean => (status & MORE) !== 0

/**
 * Receives one frame from {@link FrameDecoder.push} (the callback form), as numbers and a
 * zero-copy payload location: the payload is `bytes.subarray(start, start + length)`.
 *
 * `bytes` is the chunk that was pushed, unless the frame began in an earlier chunk: then its
 * payload was assembled into a Buffer of its own (`start` is 0) that the handler may keep. The
 * handler must not write into `bytes`, and a view of the chunk is valid for as long as the chunk's
 * memory is: copy the payload (`Buffer.from(bytes.subarray(start, start + length))`) to keep it
 * after reusing the chunk. The checksum has been verified before the handler runs.
 *
 * @param type - message type, 1..6
 * @param flags - flag bits, 0..0xffff
 * @param sequence - sequence number, u32
 * @param bytes - the Uint8Array that holds the payload
 * @param start - offset of the first payload byte in `bytes`
 * @param length - payload length in bytes
 */
export type FrameHandler = (
  type: MessageType,
  flags: number,
  sequence: number,
  bytes: Uint8Array,
  start: number,
  length: number,
) => void

// Frame handlers running right now (callback pushes nest when a handler pushes into another
// decoder), and a count of the events that a running handler loop must notice: a native push
// (it overwrites the metadata slots the loop is reading) and a free (the loop's own decoder may
// be the one freed). The loop compares the count once per frame; both are module state so the
// check is one load, and nothing is counted while no handler runs.
let delivering = 0
let interrupts = 0

// Safety net only: decoders are freed explicitly by free(), dispose, end() and errors.
const finalizer = new FinalizationRegistry<number>((handle) => native.decoderFree(handle))

/**
 * The base of {@link FrameDecoder}: the native half of a stream decoder (handle lifetime, the
 * push/status protocol, the sticky failure) and the members every decoder shares: `end()`,
 * `free()`, `pending`, `buffered`. It cannot be constructed on its own.
 */
export abstract class NativeStreamDecoder {
  #handle: number
  #error: PolyCallError | undefined
  /** @internal The native side holds an unfinished frame. */
  protected partial = false
  /** @internal The native state was released (by `free`, `end`, a failure or a throwing handler). */
  protected freed = false
  /** The payload limit in force. */
  readonly maxPayload: number

  protected constructor(options: FrameDecoderOptions, format: 0 | 1) {
    const max = options.maxPayload ?? MAX_PAYLOAD
    if (!Number.isInteger(max) || max < 0 || max > MAX_PAYLOAD) {
      throw invalidArgument(`maxPayload ${String(max)} is not an integer in 0..${MAX_PAYLOAD}`)
    }
    this.maxPayload = max
    try {
      this.#handle = native.decoderNew(max, format)
    } catch (e) {
      throw fromNative(e)
    }
    if (options.ownerFrees !== true) finalizer.register(this, this.#handle, this)
  }

  /**
   * Runs one native push of `view`; returns the status word: the frame count written to the
   * metadata array ({@link statusCount}), and whether decoding failed ({@link statusFailed}) or
   * must continue with `view.subarray(this.consumed())` ({@link statusMore}).
   * @internal
   */
  protected nativePush(view: Uint8Array): number {
    // Every push into the addon comes through here, so a handler loop learns of it.
    if (delivering !== 0) interrupts++
    const status = native.decoderPush(this.live(), view)
    if (!(status & (MORE | FAILED))) this.partial = (status & PARTIAL) !== 0
    return status
  }

  /** @internal The payload of the frame reported with {@link ASSEMBLED}. */
  protected takeAssembled(): Buffer {
    return native.decoderTakeAssembled(this.#handle)!
  }

  /** @internal How far the last push read `view` when it returned `more` (valid until the next push). */
  protected consumed(): number {
    return META[CONSUMED]!
  }

  /**
   * Declares the end of the stream and releases the native state.
   *
   * @throws the format's truncation error when a frame was cut short, or the error that
   *   already stopped this decoder
   */
  end(): void {
    const handle = this.live()
    try {
      native.decoderEnd(handle)
    } catch (e) {
      throw this.fail([], e)
    }
    this.free()
  }

  /** True while the start of a frame is buffered (free to read: no native call). */
  get pending(): boolean {
    return this.partial
  }

  /** Bytes held for a frame that has not completed yet (0 once freed). */
  get buffered(): number {
    return this.#handle === FREED ? 0 : native.decoderBuffered(this.#handle)
  }

  /** Releases the native state now. Idempotent; later pushes throw `ERR_POLYCALL_CLOSED`. */
  free(): void {
    if (this.#handle === FREED) return
    native.decoderFree(this.#handle)
    finalizer.unregister(this)
    this.#handle = FREED
    this.partial = false
    this.freed = true
    // A frame handler running for this decoder stops after its current frame.
    if (delivering !== 0) interrupts++
  }

  /** Same as `free()`, for `using decoder = ...`. */
  [Symbol.dispose](): void {
    this.free()
  }

  /** @internal */
  protected live(): number {
    if (this.#error) throw this.#error
    if (this.#handle === FREED) throw new PolyCallError(ErrorCode.CLOSED, 'the decoder was freed')
    return this.#handle
  }

  /** @internal Makes the decoder's failure sticky, frees the native state and returns the error. */
  protected fail<T>(frames: T[], thrown?: unknown): PolyCallError & { frames: T[] } {
    let err: PolyCallError
    if (thrown !== undefined) err = fromNative(thrown)
    else {
      try {
        native.decoderRaise(this.#handle)
        err = new PolyCallError(ErrorCode.INTERNAL, 'decoder reported a failure without an error')
      } catch (e) {
        err = fromNative(e)
      }
    }
    this.#error = err
    this.free()
    const withFrames = err as PolyCallError & { frames: T[] }
    withFrames.frames = frames
    return withFrames
  }

  /**
   * @internal A frame handler threw: the stream position it saw is the last one this decoder
   * vouches for, so it closes, and every later call throws `ERR_POLYCALL_CLOSED` with the
   * handler's error as its cause.
   */
  protected closeAfterHandler(cause: unknown): void {
    this.#error = new PolyCallError(ErrorCode.CLOSED, 'the decoder was closed because its frame handler threw', { cause })
    this.free()
  }
}

/**
 * Incremental decoder for one byte stream. Push every chunk as it arrives; get back every frame
 * it completed, in order, either as an array of {@link Frame} objects or, faster, one call of a
 * {@link FrameHandler} per frame with the header fields as numbers and the payload's location
 * (no object per frame). A bad frame throws, and the decoder stays failed (the v1 stream has no
 * resynchronisation point), so close the connection.
 *
 * The native state is released by {@link FrameDecoder.free} (also `using decoder = ...`), and
 * otherwise when the decoder is garbage-collected.
 *
 * @example
 * ```ts
 * const decoder = new FrameDecoder()
 * socket.on('data', (chunk) => {
 *   for (const frame of decoder.push(chunk)) handle(frame)
 * })
 * socket.on('end', () => decoder.end())
 * ```
 * @example
 * ```ts
 * // The callback form: no Frame object and no Buffer per frame.
 * socket.on('data', (chunk) => {
 *   decoder.push(chunk, (type, flags, sequence, bytes, start, length) => {
 *     if (type === MessageType.Heartbeat) return
 *     handle(sequence, bytes.subarray(start, start + length))
 *   })
 * })
 * ```
 */
export class FrameDecoder extends NativeStreamDecoder {
  #delivering = false

  /**
   * @param options - `maxPayload` (at most 1 048 576)
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad `maxPayload`
   */
  constructor(options: FrameDecoderOptions = {}) {
    checkOptionKeys(options, FRAME_DECODER_OPTION_KEYS, 'FrameDecoderOptions')
    super(options, 0)
  }

  /**
   * Decodes a chunk into {@link Frame} objects.
   *
   * @param chunk - the next bytes of the stream
   * @returns every frame completed by this chunk, in arrival order (often empty)
   * @throws a {@link DecodeError}: `ERR_POLYCALL_VERSION_MISMATCH`, `ERR_POLYCALL_UNKNOWN_MESSAGE_TYPE`,
   *   `ERR_POLYCALL_PAYLOAD_TOO_LARGE` (all from the header) or `ERR_POLYCALL_CHECKSUM_MISMATCH`; its
   *   `frames` holds the frames of this chunk that came before the bad one. After a failure every
   *   call throws the same error; after {@link FrameDecoder.free}, `ERR_POLYCALL_CLOSED`.
   *   `ERR_POLYCALL_INVALID_ARGUMENT` for a chunk that is not a Uint8Array, or a push from inside
   *   this decoder's own frame handler.
   */
  push(chunk: Uint8Array): Frame[]
  /**
   * Decodes a chunk and calls `onFrame` once per completed frame, in arrival order, before it
   * returns. No object is created per frame: the handler gets the header fields as numbers and
   * the payload's location in `bytes` (see {@link FrameHandler} for how long a view stays valid).
   *
   * The handler may push into other decoders. If it throws, the error propagates out of `push`
   * unchanged, the frames after it in this chunk are not delivered, and the decoder closes: later
   * calls throw `ERR_POLYCALL_CLOSED` with the handler's error as `cause`. If it calls `free()` or
   * `end()` on this decoder, delivery stops after its frame.
   *
   * @param chunk - the next bytes of the stream
   * @param onFrame - called for every frame this chunk completes
   * @returns the number of frames delivered
   * @throws the same {@link DecodeError} codes as the other form, after the frames before the bad
   *   one were delivered (its `frames` is empty); `ERR_POLYCALL_INVALID_ARGUMENT` for a chunk that
   *   is not a Uint8Array, an `onFrame` that is not a function, or a push from inside this
   *   decoder's own handler; `ERR_POLYCALL_CLOSED` after `free()`, or after a handler threw
   */
  push(chunk: Uint8Array, onFrame: FrameHandler): number
  push(chunk: Uint8Array, onFrame?: FrameHandler): Frame[] | number {
    if (!(chunk instanceof Uint8Array)) throw invalidArgument('push(chunk): chunk must be a Uint8Array')
    if (this.#delivering) throw invalidArgument('push() was called from inside this decoder\'s own frame handler')
    if (onFrame === undefined) return this.#frames(chunk)
    if (typeof onFrame !== 'function') throw invalidArgument('push(chunk, onFrame): onFrame must be a function')
    this.live()
    this.#delivering = true
    delivering++
    try {
      return this.#each(chunk, 0, onFrame)
    } catch (e) {
      // Decoding errors have already failed (and freed) the decoder; anything else came from
      // the handler.
      if (!this.freed) this.closeAfterHandler(e)
      throw e
    } finally {
      delivering--
      this.#delivering = false
    }
  }

  #frames(chunk: Uint8Array): Frame[] {
    this.live()
    const frames: Frame[] = []
    let view = chunk
    if (!this.partial && chunk.length <= JS_DECODE_LIMIT) {
      const used = decodeValidPrefixJs(chunk, this.maxPayload, frames)
      if (used === chunk.length) return frames
      view = chunk.subarray(used)
    }
    for (;;) {
      const status = this.nativePush(view)
      const count = status & COUNT
      const ab = view.buffer
      const base = view.byteOffset
      for (let i = 0, o = 0; i < count; i++, o += META_WORDS) {
        const head = META[o]!
        const start = META[o + 3]!
        frames.push({
          version: 1,
          type: head & 0xff,
          flags: head >>> 16,
          sequence: META[o + 1]!,
          checksum: META[o + 2]!,
          payload: start === ASSEMBLED ? this.takeAssembled() : Buffer.from(ab, base + start, META[o + 4]!),
        })
      }
      if (status & FAILED) throw this.fail(frames)
      if (!(status & MORE)) return frames
      view = view.subarray(META[CONSUMED]!)
    }
  }

  /**
   * The callback form of push from `chunk[from..]` (argument checks done, `#delivering` set by
   * the caller). Returns the frames delivered.
   */
  #each(chunk: Uint8Array, from: number, onFrame: FrameHandler): number {
    let delivered = 0
    let base = from
    if (!this.partial) {
      const left = chunk.length - from
      if (left <= JS_DECODE_LIMIT) base = this.#eachJs(chunk, from, onFrame)
      else if (left >= JS_TINY_MIN_CHUNK && tinyAt(chunk, from)) base = this.#eachTiny(chunk, from, onFrame)
      if (base !== from) {
        delivered = eachDelivered
        if (base === chunk.length || this.freed) return delivered
      }
    }
    for (;;) {
      const status = this.nativePush(base === 0 ? chunk : chunk.subarray(base))
      const count = status & COUNT
      const consumed = META[CONSUMED]!
      const mark = interrupts
      let i = 0
      let o = 0
      if (count !== 0 && META[3] === ASSEMBLED) {
        // Only the first frame of a push can have been assembled across chunks.
        const head = META[0]!
        const next = count > 1 ? base + META[8]! - HEADER : 0
        onFrame(head & 0xff, head >>> 16, META[1]!, this.takeAssembled(), 0, META[4]!)
        i = 1
        o = META_WORDS
        if (interrupts !== mark) return delivered + 1 + this.#resume(chunk, next, count - 1, onFrame, status)
      }
      for (; i < count; i++, o += META_WORDS) {
        const head = META[o]!
        const start = base + META[o + 3]!
        const length = META[o + 4]!
        onFrame(head & 0xff, head >>> 16, META[o + 1]!, chunk, start, length)
        if (interrupts !== mark) return delivered + i + 1 + this.#resume(chunk, start + length, count - i - 1, onFrame, status)
      }
      delivered += count
      if (status & FAILED) throw this.fail([])
      if (!(status & MORE)) return delivered
      base += consumed
    }
  }

  /**
   * The handler pushed into a decoder (or freed this one) while a batch was being delivered, so
   * the metadata slots may hold another push's frames. The `left` frames still owed lie back to
   * back in `chunk` from `at`, already validated by the native decoder, so they are read from the
   * chunk; then decoding goes on where the interrupted push stopped. Returns the frames delivered.
   */
  #resume(chunk: Uint8Array, at: number, left: number, onFrame: FrameHandler, status: number): number {
    if (this.freed) return 0
    let delivered = 0
    let pos = at
    while (delivered < left) {
      const flags = chunk[pos + 2]! | (chunk[pos + 3]! << 8)
      const sequence = (chunk[pos + 4]! | (chunk[pos + 5]! << 8) | (chunk[pos + 6]! << 16) | (chunk[pos + 7]! << 24)) >>> 0
      const length = (chunk[pos + 8]! | (chunk[pos + 9]! << 8) | (chunk[pos + 10]! << 16) | (chunk[pos + 11]! << 24)) >>> 0
      onFrame(chunk[pos + 1]!, flags, sequence, chunk, pos + HEADER, length)
      delivered++
      pos += HEADER + length
      if (this.freed) return delivered
    }
    if (status & FAILED) throw this.fail([])
    if (!(status & MORE)) return delivered
    // The interrupted push stopped at a full batch of slots: the rest of the chunk starts at `pos`.
    return delivered + this.#each(chunk, pos, onFrame)
  }

  /**
   * Delivers the complete, valid frames of `chunk[from..]` from TypeScript, up to the first
   * partial, invalid or oversized one, and returns the offset of the first byte it did not take
   * (the native decoder goes on from there, so errors always come from one place). The count of
   * frames delivered goes to `eachDelivered`.
   */
  #eachJs(chunk: Uint8Array, from: number, onFrame: FrameHandler): number {
    const n = chunk.length
    const max = this.maxPayload
    let pos = from
    let count = 0
    while (n - pos >= HEADER) {
      const type = chunk[pos + 1]!
      if (chunk[pos] !== 1 || type < 1 || type > 6) break
      const length = (chunk[pos + 8]! | (chunk[pos + 9]! << 8) | (chunk[pos + 10]! << 16) | (chunk[pos + 11]! << 24)) >>> 0
      const start = pos + HEADER
      if (length > max || n - start < length) break
      const sum = (chunk[pos + 12]! | (chunk[pos + 13]! << 8) | (chunk[pos + 14]! << 16) | (chunk[pos + 15]! << 24)) >>> 0
      if (checksumJs(chunk, start, start + length) !== sum) break
      const flags = chunk[pos + 2]! | (chunk[pos + 3]! << 8)
      const sequence = (chunk[pos + 4]! | (chunk[pos + 5]! << 8) | (chunk[pos + 6]! << 16) | (chunk[pos + 7]! << 24)) >>> 0
      pos = start + length
      count++
      onFrame(type, flags, sequence, chunk, start, length)
      if (this.freed) break
    }
    eachDelivered = count
    return pos
  }

  /**
   * Like `#eachJs`, for a large chunk that starts with frames of at most
   * {@link JS_DECODE_TINY_PAYLOAD} payload bytes, where reading the header costs more than the
   * checksum: delivers those frames from TypeScript, through a DataView (cheaper per field
   * than byte reads once its creation is spread over many frames), and stops at the first
   * frame that is larger, partial or invalid.
   */
  #eachTiny(chunk: Uint8Array, from: number, onFrame: FrameHandler): number {
    const n = chunk.length
    const max = this.maxPayload
    const view = new DataView(chunk.buffer, chunk.byteOffset, n)
    let pos = from
    let count = 0
    while (n - pos >= HEADER) {
      const w0 = view.getUint32(pos, true)
      const type = (w0 >>> 8) & 0xff
      if ((w0 & 0xff) !== 1 || type < 1 || type > 6) break
      const length = view.getUint32(pos + 8, true)
      const start = pos + HEADER
      const end = start + length
      if (length > JS_TINY_LIMIT || length > max || end > n) break
      let sum = 0
      let i = start
      for (const stop = start + (length & ~3); i < stop; i += 4) {
        sum = (((sum << 5) | (sum >>> 27)) + chunk[i]!) | 0
        sum = (((sum << 5) | (sum >>> 27)) + chunk[i + 1]!) | 0
        sum = (((sum << 5) | (sum >>> 27)) + chunk[i + 2]!) | 0
        sum = (((sum << 5) | (sum >>> 27)) + chunk[i + 3]!) | 0
      }
      for (; i < end; i++) sum = (((sum << 5) | (sum >>> 27)) + chunk[i]!) | 0
      if (sum !== view.getInt32(pos + 12, true)) break
      count++
      onFrame(type, w0 >>> 16, view.getUint32(pos + 4, true), chunk, start, length)
      pos = end
      if (this.freed) break
    }
    eachDelivered = count
    return pos
  }
}

/** The frame at `chunk[at..]` has a whole header announcing a payload small enough for `#eachTiny`. */
function tinyAt(chunk: Uint8Array, at: number): boolean {
  const length = (chunk[at + 8]! | (chunk[at + 9]! << 8) | (chunk[at + 10]! << 16) | (chunk[at + 11]! << 24)) >>> 0
  return length <= JS_TINY_LIMIT
}

/** Frames delivered by the last `#eachJs` run (a second return value without an allocation). */
let eachDelivered = 0
