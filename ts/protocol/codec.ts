/**
 * Frame-level API: checksum, encodeFrame and the streaming FrameDecoder (docs/protocol.md §1-§7).
 * Byte work happens in the Rust core; this module validates arguments, batches the boundary
 * crossing (one native call per pushed chunk) and hands out zero-copy payload views.
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { checkOptionKeys, optionKeys } from '../core/options.js'
import { fromNative, native } from '../native.js'
import { DEFAULT_FLAGS, HEADER_SIZE, MAX_PAYLOAD, type MessageType } from './constants.js'
import { JS_CHECKSUM_MAX, JS_DECODE_MAX, JS_ENCODE_MAX, checksumJs, decodeValidPrefixJs } from './fast-path.js'

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
  if (!Number.isInteger(type) || type < 1 || type > 6) throw encodeError(frame)
  const flags = frame.flags ?? DEFAULTS[type]!
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) throw encodeError(frame)
  if (!Number.isInteger(sequence) || sequence < 0 || sequence > 0xffffffff) throw encodeError(frame)
  const payload = frame.payload ?? EMPTY
  if (!(payload instanceof Uint8Array) || payload.length > MAX) throw encodeError(frame)
  const len = payload.length
  if (len > JS_ENCODE_LIMIT) return encodeNative(Buffer.allocUnsafe(HEADER + len), type, flags, sequence, payload)
  // Written out rather than through writeHeaderJs: measurably faster for small frames.
  const sum = checksumJs(payload, 0, len, 0)
  const out = Buffer.allocUnsafe(HEADER + len)
  out[0] = 1
  out[1] = type
  out[2] = flags & 0xff
  out[3] = flags >>> 8
  out[4] = sequence & 0xff
  out[5] = (sequence >>> 8) & 0xff
  out[6] = (sequence >>> 16) & 0xff
  out[7] = sequence >>> 24
  out[8] = len & 0xff
  out[9] = (len >>> 8) & 0xff
  out[10] = (len >>> 16) & 0xff
  out[11] = len >>> 24
  out[12] = sum & 0xff
  out[13] = (sum >>> 8) & 0xff
  out[14] = (sum >>> 16) & 0xff
  out[15] = sum >>> 24
  out.set(payload, HEADER)
  return out
}

function encodeNative(out: Buffer, type: number, flags: number, sequence: number, payload: Uint8Array): Buffer {
  try {
    native.encodeInto(out, type, flags, sequence, payload)
  } catch (e) {
    throw fromNative(e)
  }
  return out
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
// addon: five u32 per frame (type | flags << 16, sequence, checksum, payload start or ASSEMBLED,
// payload length). push() is synchronous and reads the array before returning, so every decoder
// of this thread shares it; it lives on globalThis so two copies of the package in one process
// (which share one loaded addon) also share it.
const META_WORDS = 5
const META_FRAMES = 4096
const META_KEY = Symbol.for('polycall.decoder.meta.v1')
const META: Uint32Array = ((globalThis as Record<symbol, unknown>)[META_KEY] as Uint32Array | undefined) ??
  ((globalThis as Record<symbol, unknown>)[META_KEY] = new Uint32Array(META_FRAMES * META_WORDS))
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
    const status = native.decoderPush(this.live(), view)
    if (!(status & (MORE | FAILED))) this.partial = (status & PARTIAL) !== 0
    return status
  }

  /** @internal The payload of the frame reported with {@link ASSEMBLED}. */
  protected takeAssembled(): Buffer {
    return native.decoderTakeAssembled(this.#handle)!
  }

  /** @internal How far the last push read `view` when it returned `more`. */
  protected consumed(): number {
    return native.decoderConsumed(this.#handle)
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
}

/**
 * Incremental decoder for one byte stream. Push every chunk as it arrives; get back every frame
 * it completed, in order. A bad frame throws, and the decoder stays failed (the v1 stream has
 * no resynchronisation point), so close the connection.
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
 */
export class FrameDecoder extends NativeStreamDecoder {
  /**
   * @param options - `maxPayload` (at most 1 048 576)
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad `maxPayload`
   */
  constructor(options: FrameDecoderOptions = {}) {
    checkOptionKeys(options, FRAME_DECODER_OPTION_KEYS, 'FrameDecoderOptions')
    super(options, 0)
  }

  /**
   * Decodes a chunk.
   *
   * @param chunk - the next bytes of the stream
   * @returns every frame completed by this chunk, in arrival order (often empty)
   * @throws a {@link DecodeError}: `ERR_POLYCALL_VERSION_MISMATCH`, `ERR_POLYCALL_UNKNOWN_MESSAGE_TYPE`,
   *   `ERR_POLYCALL_PAYLOAD_TOO_LARGE` (all from the header) or `ERR_POLYCALL_CHECKSUM_MISMATCH`; its
   *   `frames` holds the frames of this chunk that came before the bad one. After a failure every
   *   call throws the same error; after {@link FrameDecoder.free}, `ERR_POLYCALL_CLOSED`.
   */
  push(chunk: Uint8Array): Frame[] {
    if (!(chunk instanceof Uint8Array)) throw invalidArgument('push(chunk): chunk must be a Uint8Array')
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
      view = view.subarray(this.consumed())
    }
  }
}
