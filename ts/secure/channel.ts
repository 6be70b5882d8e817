/**
 * A low-level, sans-I/O secure channel over the Rust core's secure session: the handshake
 * steps of both roles, {@link SecureChannel.push} (decode and open a socket chunk in one native
 * call) and {@link SecureChannel.seal} (seal every frame queued in a tick in one native call).
 * Connections, clients and servers wire it to sockets; tests and benchmarks drive it in memory.
 *
 * Wire layout: docs/protocol-extensions.md, "Secure sessions". Threat model: docs/security.md.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'
import type { Frame } from '../protocol/codec.js'
import { MAX_PAYLOAD, type MessageType } from '../protocol/constants.js'
import { Identity, toPublicKey } from './identity.js'

/** @internal Capability bit of the long-form hello that offers or accepts a secure session. */
export const SECURE_CAPABILITY = 0x0008
/** @internal Capability bit of lz4 payload compression. */
export const COMPRESSION_CAPABILITY = 0x0010

/** A Noise handshake pattern: `IK` and `NK` need the server key beforehand, `XX` does not. */
export type SecurePattern = 'IK' | 'NK' | 'XX'

/** @internal Every pattern. */
export const SECURE_PATTERNS: readonly SecurePattern[] = ['IK', 'NK', 'XX']

/**
 * The cipher of a secure session's handshake and sealed frames: `AESGCM` (AES-256-GCM, fastest
 * on CPUs with AES and carry-less multiplication instructions) or `ChaChaPoly`
 * (ChaCha20-Poly1305, fast everywhere in software). The client chooses; the server accepts it or
 * refuses the handshake.
 */
export type SecureCipher = 'AESGCM' | 'ChaChaPoly'

/** @internal Every cipher. */
export const SECURE_CIPHERS: readonly SecureCipher[] = ['AESGCM', 'ChaChaPoly']

let preferred: SecureCipher | undefined

/**
 * The cipher a client chooses when not told otherwise, on this machine: `AESGCM` where the CPU
 * has AES and carry-less multiplication instructions (detected at run time), `ChaChaPoly`
 * elsewhere.
 *
 * @returns `'AESGCM'` or `'ChaChaPoly'`
 */
export function preferredCipher(): SecureCipher {
  return (preferred ??= native.securePreferredCipher() as SecureCipher)
}

/**
 * @internal Checks a cipher name.
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for anything but `'AESGCM'` and `'ChaChaPoly'`
 */
export function cipherOf(c: unknown, name = 'cipher'): SecureCipher {
  if (c === 'AESGCM' || c === 'ChaChaPoly') return c
  throw invalidArgument(`${name} ${String(c)} is not one of 'AESGCM', 'ChaChaPoly'`)
}

/** Limits and intervals of a secure session. */
export interface SecureLimits {
  /**
   * Largest plaintext payload accepted from the peer, at most 1 048 576; a compressed payload
   * may announce at most this much (`ERR_POLYCALL_DECOMPRESSION_LIMIT` beyond it).
   * @defaultValue 1048576
   */
  maxPayload?: number | undefined
  /**
   * Rekey this side's sending direction after this many frames; 0 never rekeys by count.
   * @defaultValue 1048576
   */
  rekeyFrames?: number | undefined
  /**
   * Rekey this side's sending direction after this many sealed bytes; 0 never rekeys by volume.
   * @defaultValue 1073741824
   */
  rekeyBytes?: number | undefined
  /**
   * Compress payloads of at least this many bytes, once both peers negotiated compression.
   * @defaultValue 512
   */
  compressThreshold?: number | undefined
}

/** @internal How a client channel starts. */
export interface InitiatorOptions extends SecureLimits {
  /** The pattern. */
  pattern: SecurePattern
  /** The client's identity (IK, XX); none for NK. */
  identity?: Identity | undefined
  /** The server's public key (IK, NK): bytes, `x25519:` text or an identity. */
  serverKey?: Uint8Array | string | Identity | undefined
  /**
   * Capability bits to offer besides Secure (`0x0008`, always added).
   * @defaultValue 0
   */
  flags?: number | undefined
  /**
   * The client's own limit of requests in flight, stated in its hello (0: not stated).
   * @defaultValue 0
   */
  maxInFlight?: number | undefined
  /**
   * The cipher.
   * @defaultValue {@link preferredCipher}()
   */
  cipher?: SecureCipher | undefined
}

/** @internal How a server channel waits for a hello. */
export interface ResponderOptions extends SecureLimits {
  /** The server's identity. */
  identity: Identity
  /**
   * The patterns the server accepts.
   * @defaultValue all of IK, NK and XX
   */
  patterns?: readonly SecurePattern[] | undefined
  /**
   * The ciphers the server accepts (the client chooses one).
   * @defaultValue both, AESGCM and ChaChaPoly
   */
  ciphers?: readonly SecureCipher[] | undefined
}

/** @internal What a client's hello offered. */
export interface SecureHello {
  /** The hello's capability flags (0 for a legacy hello). */
  flags: number
  /** The client's stated limit of requests in flight. */
  maxInFlight?: number
  /** Whether the hello offers a secure session. */
  secure: boolean
  /** The offered pattern. */
  pattern?: SecurePattern
  /** The client's cipher. */
  cipher?: SecureCipher
  /** IK: the client's public key, already authenticated by message 1. */
  clientKey?: Buffer
}

/** @internal A server's reply, as the client read it. */
export interface SecureReply {
  /** The capability flags the server accepted (Secure included). */
  flags: number
  /** The server's limit of requests in flight. */
  maxInFlight: number
  /** The server's public key (XX: check it before {@link SecureChannel.finish}). */
  serverKey: Buffer
  /** Whether frames are sealed from here on (IK, NK); XX needs {@link SecureChannel.finish}. */
  established: boolean
}

/** @internal A frame to seal. */
export interface SealFrame {
  /** Message type, 1..6. */
  type: MessageType
  /** Sequence number, u32. */
  sequence: number
  /** Flag bits (ENCRYPTED and COMPRESSED are set by the channel). @defaultValue 0 */
  flags?: number | undefined
  /** Payload. @defaultValue empty */
  payload?: Uint8Array | undefined
}

/** @internal What a channel knows about itself. */
export interface SecureChannelState {
  /** How frames are read and written. */
  mode: 'handshaking' | 'plain' | 'sealed'
  /** The pattern, once known. */
  pattern?: SecurePattern
  /** The cipher, once known. */
  cipher?: SecureCipher
  /** The peer's public key, once known (never for an NK client, on the server side). */
  remoteKey?: Buffer
  /** A value unique to this session, once established (channel binding). */
  handshakeHash?: Buffer
  /** The capability flags both sides agreed on. */
  agreedFlags: number
  /** Rekeys of the sending direction so far. */
  rekeysSent: number
  /** Rekeys of the receiving direction so far. */
  rekeysReceived: number
}

/** @internal Bytes a channel buffers while a handshake step is pending. */
export const HOLD_LIMIT = 64 * 1024

const DEFAULT_REKEY_FRAMES = 1 << 20
const DEFAULT_REKEY_BYTES = 2 ** 30
const DEFAULT_COMPRESS_THRESHOLD = 512
const OPEN_WORDS = 5
const SEAL_WORDS = 3
const META_FRAMES = 4096
/** Frames per native seal call: the metadata array holds this many 3-word entries. */
const SEAL_BATCH = Math.floor((META_FRAMES * OPEN_WORDS) / SEAL_WORDS)
/** @internal Most frames one {@link SecureChannel.sealStaged} call takes. */
export const SEAL_BATCH_FRAMES = SEAL_BATCH
const OWNED = 0x80000000
const MORE = 1 << 30
const FAILED = 1 << 29
const PARTIAL = 1 << 28
const HELD = 1 << 27
const COUNT = HELD - 1
const FREED = -1
const EMPTY = Buffer.alloc(0)

// One metadata array per thread, shared by every channel (push and seal read it out before
// returning); on globalThis so two copies of the package share it, as they share the addon.
const META_KEY = Symbol.for('polycall.secure.meta.v1')
const META: Uint32Array = ((globalThis as Record<symbol, unknown>)[META_KEY] as Uint32Array | undefined) ??
  ((globalThis as Record<symbol, unknown>)[META_KEY] = new Uint32Array(META_FRAMES * OPEN_WORDS))
native.secureSetMeta(META)

/**
 * Where {@link SecureChannel.seal} lays a batch's payloads end to end: one per thread, shared by
 * every channel (sealing is synchronous), grown on demand; a batch over 1 MiB gets its own.
 */
let sharedStage = Buffer.allocUnsafe(16 * 1024)
const STAGE_KEEP = 1024 * 1024

function stageFor(bytes: number): Buffer {
  if (bytes <= sharedStage.length) return sharedStage
  const grown = Buffer.allocUnsafe(Math.max(bytes, Math.min(sharedStage.length * 2, STAGE_KEEP)))
  if (grown.length <= STAGE_KEEP) sharedStage = grown
  return grown
}

// Safety net only: channels are freed explicitly by destroy(), dispose, end() and errors.
const finalizer = new FinalizationRegistry<number>((handle) => native.secureFree(handle))

function isInt(n: unknown, max: number): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= max
}

/**
 * @internal Checks and completes a limits object.
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a limit out of range
 */
export function limitsOf(o: SecureLimits): { maxPayload: number; rekeyFrames: number; rekeyBytes: number; compressThreshold: number } {
  const maxPayload = o.maxPayload ?? MAX_PAYLOAD
  const rekeyFrames = o.rekeyFrames ?? DEFAULT_REKEY_FRAMES
  const rekeyBytes = o.rekeyBytes ?? DEFAULT_REKEY_BYTES
  const compressThreshold = o.compressThreshold ?? DEFAULT_COMPRESS_THRESHOLD
  if (!isInt(maxPayload, MAX_PAYLOAD)) throw invalidArgument(`maxPayload must be an integer in 0..${MAX_PAYLOAD}`)
  if (!isInt(rekeyFrames, 0xffffffff)) throw invalidArgument('rekeyFrames must be an integer in 0..2^32-1')
  if (!isInt(rekeyBytes, Number.MAX_SAFE_INTEGER)) throw invalidArgument('rekeyBytes must be a non-negative safe integer')
  if (!isInt(compressThreshold, 0xffffffff)) throw invalidArgument('compressThreshold must be a u32')
  return { maxPayload, rekeyFrames, rekeyBytes, compressThreshold }
}

function patternOf(p: unknown): SecurePattern {
  if (p === 'IK' || p === 'NK' || p === 'XX') return p
  throw invalidArgument(`pattern ${String(p)} is not one of 'IK', 'NK', 'XX'`)
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
}

/**
 * @internal One connection's secure session, sans I/O. The handshake frames themselves are
 * plain v1 frames the caller encodes and sends (HANDSHAKE for {@link SecureChannel.initiator}'s
 * hello and {@link SecureChannel.finish}, RESPONSE for {@link SecureChannel.accept}); every
 * frame after the switch point goes through {@link SecureChannel.seal} and comes back out of
 * {@link SecureChannel.push}.
 *
 * `push` decrypts sealed payloads **in place**: the chunk's bytes are overwritten, and the
 * returned frames' payloads are views of it (copy a chunk first to keep its ciphertext).
 *
 * @example
 * ```ts
 * const { channel: client, hello } = SecureChannel.initiator({ pattern: 'NK', serverKey })
 * const server = SecureChannel.responder({ identity })
 * server.push(encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }))
 * const offer = server.readHello(hello)
 * const reply = server.accept(offer.flags & ~0x0008, 256)
 * client.readReply(reply)
 * const wire = client.seal([{ type: MessageType.Command, sequence: 2, payload }])
 * server.push(wire) // [{ type: 3, sequence: 2, payload, ... }]
 * ```
 */
export class SecureChannel {
  #handle: number
  #error: PolyCallError | undefined
  #held = false
  #pending: Buffer[] = []
  #pendingBytes = 0
  #sealed = false
  /** The last native push left an unfinished frame buffered. */
  #partial = false

  private constructor(handle: number) {
    this.#handle = handle
    finalizer.register(this, handle, this)
  }

  /**
   * Starts a client session.
   *
   * @param options - pattern, keys, offered capabilities, limits
   * @returns the channel, and the payload of the client's first HANDSHAKE frame
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when the pattern's keys are missing or superfluous
   *   or a limit is out of range; `ERR_POLYCALL_INVALID_KEY` for a bad server key;
   *   `ERR_POLYCALL_CLOSED` for a destroyed identity
   */
  static initiator(options: InitiatorOptions): { channel: SecureChannel; hello: Buffer } {
    const pattern = patternOf(options.pattern)
    const flags = options.flags ?? 0
    const maxInFlight = options.maxInFlight ?? 0
    if (!isInt(flags, 0xffff)) throw invalidArgument('flags must be an integer in 0..0xffff')
    if (!isInt(maxInFlight, 0xffffffff)) throw invalidArgument('maxInFlight must be a u32')
    const limits = limitsOf(options)
    const identity = options.identity === undefined ? undefined : Identity.bindingOf(options.identity)
    const serverKey = options.serverKey === undefined ? undefined : toPublicKey(options.serverKey, 'serverKey')
    const cipher = options.cipher === undefined ? undefined : cipherOf(options.cipher)
    try {
      const start = native.secureInitiator(pattern, identity, serverKey, flags, maxInFlight, limits, cipher)
      return { channel: new SecureChannel(start.handle), hello: start.hello }
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * Starts a server session waiting for a client's hello.
   *
   * @param options - the server's identity, accepted patterns and ciphers, limits
   * @returns the channel
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for no pattern or cipher, or a limit out of range;
   *   `ERR_POLYCALL_CLOSED` for a destroyed identity
   */
  static responder(options: ResponderOptions): SecureChannel {
    const patterns = (options.patterns ?? SECURE_PATTERNS).map(patternOf)
    const ciphers = options.ciphers?.map((c) => cipherOf(c))
    const limits = limitsOf(options)
    const identity = Identity.bindingOf(options.identity)
    try {
      return new SecureChannel(native.secureResponder(identity, patterns, limits, ciphers))
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * Server: reads the payload of the client's first HANDSHAKE. A hello without the secure offer
   * returns `secure: false`; then call {@link SecureChannel.plain} (or refuse the peer).
   *
   * @param payload - the HANDSHAKE frame's payload
   * @returns what the hello offered
   * @throws `ERR_POLYCALL_HANDSHAKE_FAILED` for a broken secure block, a pattern the server does
   *   not accept, or a first message that does not authenticate (wrong server key, altered hello);
   *   `ERR_POLYCALL_HANDSHAKE_PAYLOAD_TOO_SHORT` / `ERR_POLYCALL_HANDSHAKE_BAD_MAGIC`
   */
  readHello(payload: Uint8Array): SecureHello {
    const h = this.#step(() => native.secureReadHello(this.#live(), payload))
    const out: SecureHello = { flags: h.flags, secure: h.secure }
    if (h.maxInFlight != null) out.maxInFlight = h.maxInFlight
    if (h.pattern != null) out.pattern = h.pattern as SecurePattern
    if (h.cipher != null) out.cipher = h.cipher as SecureCipher
    if (h.clientKey != null) out.clientKey = h.clientKey
    return out
  }

  /**
   * Server: accepts the offer; IK and NK sessions are sealed from here on.
   *
   * @param flags - the accepted capability bits, a subset of the offer (Secure is added)
   * @param maxInFlight - the server's limit of requests in flight
   * @returns the payload of the RESPONSE frame (echoing the hello's sequence)
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for bits outside the offer;
   *   `ERR_POLYCALL_HANDSHAKE_FAILED` out of order
   */
  accept(flags: number, maxInFlight: number): Buffer {
    if (!isInt(flags, 0xffff)) throw invalidArgument('flags must be an integer in 0..0xffff')
    if (!isInt(maxInFlight, 0xffffffff)) throw invalidArgument('maxInFlight must be a u32')
    const reply = this.#step(() => native.secureAccept(this.#live(), flags, maxInFlight))
    this.#refresh()
    return reply
  }

  /**
   * Client: reads the payload of the server's RESPONSE to the hello. IK and NK sessions are
   * sealed from here on; for XX, check {@link SecureReply.serverKey}, then call
   * {@link SecureChannel.finish}.
   *
   * @param payload - the RESPONSE frame's payload
   * @returns the server's reply
   * @throws `ERR_POLYCALL_INSECURE_PEER` when the server does not accept a secure session;
   *   `ERR_POLYCALL_HANDSHAKE_FAILED` for a reply that does not authenticate (impostor server,
   *   altered hello or reply) or is malformed
   */
  readReply(payload: Uint8Array): SecureReply {
    const r = this.#step(() => native.secureReadReply(this.#live(), payload))
    this.#refresh()
    return { flags: r.flags, maxInFlight: r.maxInFlight, serverKey: r.serverKey, established: r.established }
  }

  /**
   * Client (XX): after the server key was accepted, returns the payload of the second
   * HANDSHAKE frame. Sealed frames may follow it at once (in the same write).
   *
   * @returns the payload (handshake message 3)
   * @throws `ERR_POLYCALL_HANDSHAKE_FAILED` out of order
   */
  finish(): Buffer {
    const payload = this.#step(() => native.secureFinish(this.#live()))
    this.#refresh()
    return payload
  }

  /**
   * Server (XX): reads the client's second HANDSHAKE payload; sealed from here on.
   *
   * @param payload - the second HANDSHAKE frame's payload
   * @returns the client's public key
   * @throws `ERR_POLYCALL_HANDSHAKE_FAILED` for an altered, malformed or unexpected message
   */
  readFinish(payload: Uint8Array): Buffer {
    const key = this.#step(() => native.secureReadFinish(this.#live(), payload))
    this.#refresh()
    return key
  }

  /**
   * Continues without a secure session: frames stay plain v1 frames both ways (with lz4
   * compression after {@link SecureChannel.setCompression}). Only before the secure handshake.
   *
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` once a secure handshake is under way
   */
  plain(): void {
    this.#step(() => native.securePlain(this.#live()))
  }

  /**
   * Turns lz4 compression of outgoing payloads (of at least `threshold` bytes) and of incoming
   * COMPRESSED frames on, or off with `false`. Sealed sessions turn it on themselves when both
   * peers offered the compression capability.
   *
   * @param threshold - the smallest payload compressed, or `false`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad threshold
   */
  setCompression(threshold: number | false): void {
    if (threshold !== false && !isInt(threshold, 0xffffffff)) throw invalidArgument('threshold must be a u32 or false')
    this.#step(() => native.secureSetCompression(this.#live(), threshold === false ? undefined : threshold))
  }

  /** True after a push stopped at a frame that can carry a handshake message; see {@link SecureChannel.resume}. */
  get held(): boolean {
    return this.#held
  }

  /** True once frames are sealed in both directions. */
  get established(): boolean {
    return this.#sealed
  }

  /** True once the session was released (by {@link SecureChannel.destroy}, `end()` or a failure). */
  get destroyed(): boolean {
    return this.#handle === FREED
  }

  /** True while an unfinished frame is buffered (after the last push that reached native code). */
  get partial(): boolean {
    return this.#partial
  }

  /**
   * Takes the bytes held back since the last hold and releases the session: for a connection
   * whose peer turned out to speak no secure hello and that reads on with the plain decoder.
   * Only right after a hold, where no unfinished frame is buffered.
   *
   * @returns the held chunks, in order
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when a frame is unfinished (not at a hold)
   */
  detach(): Buffer[] {
    this.#live()
    if (this.#partial) throw invalidArgument('detach() only at a hold, with no unfinished frame')
    const pending = this.#pending
    this.#pending = []
    this.#pendingBytes = 0
    this.destroy()
    return pending
  }

  /**
   * Declares the end of the incoming stream, keeping the session for what this side still sends
   * (replies to requests read before the end).
   *
   * @throws `ERR_POLYCALL_TRUNCATED_HEADER` / `..._PAYLOAD` when a frame was cut short (the
   *   session is then over), or the error that ended the session
   */
  endInput(): void {
    const handle = this.#live()
    if (this.#pendingBytes > 0) {
      throw this.#fail([], new PolyCallError(ErrorCode.TRUNCATED_PAYLOAD, 'the stream ended while a handshake step was pending'))
    }
    try {
      native.secureEnd(handle)
    } catch (e) {
      throw this.#fail([], fromNative(e))
    }
  }

  /**
   * Decodes a socket chunk, opening sealed frames in place, in one native call (more only for
   * over 4096 frames). Before the handshake completes the channel stops after each frame that
   * can carry a handshake message and keeps the rest (see {@link SecureChannel.held}); run
   * the step, then {@link SecureChannel.resume}. While held, chunks are queued, up to 64 KiB.
   *
   * @param chunk - the next bytes of the stream (overwritten where sealed payloads are opened)
   * @returns every frame completed, in order
   * @throws `ERR_POLYCALL_TAMPERED` for a sealed frame that does not open, a bad checksum or a
   *   plaintext frame after the switch; `ERR_POLYCALL_DECOMPRESSION_LIMIT` /
   *   `..._FAILED`; `ERR_POLYCALL_PAYLOAD_TOO_LARGE`; the decoder's header codes;
   *   `ERR_POLYCALL_HANDSHAKE_FAILED` past 64 KiB held. The error carries `frames`, those
   *   before the bad one, and every later call throws it again.
   */
  push(chunk: Uint8Array): Frame[] {
    if (!(chunk instanceof Uint8Array)) throw invalidArgument('push(chunk): chunk must be a Uint8Array')
    this.#live()
    const buf = asBuffer(chunk)
    if (this.#held) {
      this.#queue(buf, false)
      return []
    }
    const frames: Frame[] = []
    this.#decode(buf, frames)
    return frames
  }

  /**
   * After the handshake step that follows a hold, decodes what was held back.
   *
   * @returns the frames it completed (empty when the channel holds again at once)
   * @throws what {@link SecureChannel.push} throws
   */
  resume(): Frame[] {
    this.#live()
    this.#held = false
    const frames: Frame[] = []
    while (!this.#held && this.#pending.length > 0) {
      const next = this.#pending.shift()!
      this.#pendingBytes -= next.length
      this.#decode(next, frames)
    }
    return frames
  }

  #queue(buf: Buffer, front: boolean): void {
    if (buf.length === 0) return
    if (this.#pendingBytes + buf.length > HOLD_LIMIT) {
      throw this.#fail(
        [],
        new PolyCallError(ErrorCode.HANDSHAKE_FAILED, `the peer sent more than ${HOLD_LIMIT} bytes before the handshake completed`),
      )
    }
    this.#pendingBytes += buf.length
    if (front) this.#pending.unshift(buf)
    else this.#pending.push(buf)
  }

  #decode(buf: Buffer, frames: Frame[]): void {
    let view = buf
    const handle = this.#handle
    for (;;) {
      const status = native.securePush(handle, view)
      this.#partial = (status & PARTIAL) !== 0
      const count = status & COUNT
      let owned: Buffer[] | undefined
      const ab = view.buffer
      const base = view.byteOffset
      for (let i = 0, o = 0; i < count; i++, o += OPEN_WORDS) {
        const head = META[o]!
        const start = META[o + 3]!
        let payload: Buffer
        if (start >= OWNED) {
          owned ??= native.secureTakeOwned(handle)
          payload = owned[start - OWNED]!
        } else payload = Buffer.from(ab, base + start, META[o + 4]!)
        frames.push({ version: 1, type: head & 0xff, flags: head >>> 16, sequence: META[o + 1]!, checksum: META[o + 2]!, payload })
      }
      if (status & FAILED) throw this.#fail(frames)
      if (status & HELD) {
        this.#held = true
        this.#queue(view.subarray(native.secureConsumed(handle)), true)
        return
      }
      if (!(status & MORE)) return
      view = view.subarray(native.secureConsumed(handle))
    }
  }

  /**
   * Seals every frame of a batch (in a plain session: encodes them) in one native call per
   * 6826 frames, compressing first where that is on and pays.
   *
   * @param frames - the frames, in order
   * @returns the wire bytes of the whole batch
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` before the session is established or turned plain,
   *   or for a bad type, sequence, flags or payload; `ERR_POLYCALL_PAYLOAD_TOO_LARGE` for a
   *   payload over 1 048 560 bytes (1 048 576 in a plain session)
   */
  seal(frames: readonly SealFrame[]): Buffer {
    if (!Array.isArray(frames)) throw invalidArgument('seal(frames): frames must be an array')
    this.#live()
    if (frames.length <= SEAL_BATCH) return this.#sealSome(frames, 0, frames.length)
    const parts: Buffer[] = []
    for (let i = 0; i < frames.length; i += SEAL_BATCH) parts.push(this.#sealSome(frames, i, Math.min(frames.length, i + SEAL_BATCH)))
    return Buffer.concat(parts)
  }

  #sealSome(frames: readonly SealFrame[], from: number, to: number): Buffer {
    let total = 0
    for (let i = from; i < to; i++) {
      const f = frames[i]!
      const payload = f.payload ?? EMPTY
      const flags = f.flags ?? 0
      if (!isInt(f.type, 6) || f.type < 1) throw invalidArgument(`frame ${i}: type must be 1..6`)
      if (!isInt(f.sequence, 0xffffffff)) throw invalidArgument(`frame ${i}: sequence must be a u32`)
      if (!isInt(flags, 0xffff)) throw invalidArgument(`frame ${i}: flags must be in 0..0xffff`)
      if (!(payload instanceof Uint8Array)) throw invalidArgument(`frame ${i}: payload must be a Uint8Array`)
      if (payload.length > MAX_PAYLOAD) {
        throw new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `frame ${i}: payload of ${payload.length} bytes exceeds the limit`)
      }
      total += payload.length
    }
    const stage = stageFor(total)
    let pos = 0
    for (let i = from, o = 0; i < to; i++, o += SEAL_WORDS) {
      const f = frames[i]!
      const payload = f.payload ?? EMPTY
      META[o] = f.type | ((f.flags ?? 0) << 16)
      META[o + 1] = f.sequence
      META[o + 2] = payload.length
      stage.set(payload, pos)
      pos += payload.length
    }
    const out = Buffer.allocUnsafe((to - from) * 32 + total)
    try {
      const n = native.secureSeal(this.#handle, to - from, stage.subarray(0, total), out)
      return out.subarray(0, n)
    } catch (e) {
      const err = fromNative(e)
      if (err.code !== ErrorCode.INVALID_ARGUMENT && err.code !== ErrorCode.PAYLOAD_TOO_LARGE) throw this.#fail([], err)
      throw err
    }
  }

  /**
   * @internal Seals a batch a connection staged itself, without per-frame checks (it only
   * stages frames it built): `words` holds three numbers per frame (`type | flags << 16`,
   * sequence, payload length) and `payloads` the payloads end to end. One native call.
   *
   * @param count - frames in the batch, at most {@link SEAL_BATCH_FRAMES}
   * @param words - 3 × `count` numbers
   * @param payloads - the payloads, end to end
   * @returns the wire bytes
   * @throws what {@link SecureChannel.seal} throws; any failure but an argument error ends the session
   */
  sealStaged(count: number, words: readonly number[], payloads: Buffer): Buffer {
    const handle = this.#live()
    for (let i = 0, n = count * SEAL_WORDS; i < n; i++) META[i] = words[i]!
    const out = Buffer.allocUnsafe(count * 32 + payloads.length)
    try {
      const n = native.secureSeal(handle, count, payloads, out)
      return n === out.length ? out : out.subarray(0, n)
    } catch (e) {
      const err = fromNative(e)
      if (err.code !== ErrorCode.INVALID_ARGUMENT && err.code !== ErrorCode.PAYLOAD_TOO_LARGE) throw this.#fail([], err)
      throw err
    }
  }

  /**
   * @internal Seals in place the frames a connection laid out in `buf[start..end]`: each is a
   * provisional 16-byte header (the v1 layout, with the body's length; version and checksum
   * ignored), the body, and 16 bytes left for the tag. Frames are compressed first where that is
   * on and pays, and closed up over the room they no longer need. One native call.
   *
   * @param buf - the buffer holding the frames (overwritten)
   * @param start - where the first frame starts
   * @param end - where the last frame's reserved room ends
   * @returns where the sealed frames end (at most `end`)
   * @throws what {@link SecureChannel.seal} throws; any failure but an argument error ends the session
   */
  sealInPlace(buf: Buffer, start: number, end: number): number {
    const handle = this.#live()
    try {
      return native.secureSealInPlace(handle, buf, start, end)
    } catch (e) {
      const err = fromNative(e)
      if (err.code !== ErrorCode.INVALID_ARGUMENT && err.code !== ErrorCode.PAYLOAD_TOO_LARGE) throw this.#fail([], err)
      throw err
    }
  }

  /** What the session knows about itself (one native call). */
  get state(): SecureChannelState {
    const s = native.secureState(this.#live())
    const out: SecureChannelState = {
      mode: s.mode as SecureChannelState['mode'],
      agreedFlags: s.agreedFlags,
      rekeysSent: s.rekeysSent,
      rekeysReceived: s.rekeysReceived,
    }
    if (s.pattern != null) out.pattern = s.pattern as SecurePattern
    if (s.cipher != null) out.cipher = s.cipher as SecureCipher
    if (s.remoteKey != null) out.remoteKey = s.remoteKey
    if (s.handshakeHash != null) out.handshakeHash = s.handshakeHash
    return out
  }

  /**
   * Declares the end of the stream and releases the session.
   *
   * @throws `ERR_POLYCALL_TRUNCATED_HEADER` / `..._PAYLOAD` when a frame was cut short, or the
   *   error that ended the session
   */
  end(): void {
    const handle = this.#live()
    try {
      native.secureEnd(handle)
    } catch (e) {
      throw this.#fail([], fromNative(e))
    }
    this.destroy()
  }

  /** Releases the session (its keys are zeroed) now. Idempotent; later calls throw `ERR_POLYCALL_CLOSED`. */
  destroy(): void {
    if (this.#handle === FREED) return
    native.secureFree(this.#handle)
    finalizer.unregister(this)
    this.#handle = FREED
    this.#pending = []
    this.#pendingBytes = 0
  }

  /** Same as {@link SecureChannel.destroy}, for `using channel = ...`. */
  [Symbol.dispose](): void {
    this.destroy()
  }

  #live(): number {
    if (this.#error) throw this.#error
    if (this.#handle === FREED) throw new PolyCallError(ErrorCode.CLOSED, 'the secure channel was destroyed')
    return this.#handle
  }

  #refresh(): void {
    this.#sealed = native.secureState(this.#handle).mode === 'sealed'
  }

  /** Runs a handshake step; any failure but an argument error ends the session. */
  #step<T>(f: () => T): T {
    try {
      return f()
    } catch (e) {
      const err = e instanceof PolyCallError && e.code === ErrorCode.CLOSED ? e : fromNative(e)
      if (err.code === ErrorCode.INVALID_ARGUMENT || err.code === ErrorCode.CLOSED) throw err
      throw this.#fail([], err)
    }
  }

  /** Makes the failure sticky, releases the native state and returns the error. */
  #fail<T>(frames: T[], err?: PolyCallError): PolyCallError & { frames: T[] } {
    let error = err
    if (error === undefined) {
      try {
        native.secureRaise(this.#handle)
        error = new PolyCallError(ErrorCode.INTERNAL, 'secure session reported a failure without an error')
      } catch (e) {
        error = fromNative(e)
      }
    }
    this.#error = error
    this.destroy()
    const withFrames = error as PolyCallError & { frames: T[] }
    withFrames.frames = frames
    return withFrames
  }
}
