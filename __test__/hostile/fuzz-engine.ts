/**
 * A model-checked frame fuzzer over real sockets, for the v1 wire (PROTOCOL.md) and PCR1
 * (PROTOCOL-PCR1.md). Each session is one loopback connection to a real PolyCallServer: the
 * engine generates valid and mutated frames from a seeded PRNG (bad version, type, length,
 * checksum, magic, reserved bits; truncated and oversized frames; frames not allowed in the
 * session's state; garbage and malformed payloads), writes them in random chunk sizes, and
 * checks every frame the server sends, and when it closes, against what the model says the
 * server must answer:
 *
 * - v1: a frame the session accepts gets exactly one RESPONSE or ERROR echoing its sequence
 *   (its content predicted where the model can: a handshake reply carries the magic, an echo
 *   carries the data back, a refusal carries its code); a HEARTBEAT gets nothing; a frame not
 *   allowed in the session state gets an ERROR echoing it and the connection stays open; a
 *   header-level error, a bad hello or a stream that ends mid-frame gets one coded ERROR, then
 *   the connection closes, and nothing else arrives.
 * - PCR1: every REQUEST and CONTROL (and every RESPONSE or CONTROL_REPLY a client must not
 *   send) gets one reply, in arrival order, with the same corr; a framing error gets one
 *   corr-0 CONTROL_REPLY `frame.invalid`, then the connection closes.
 *
 * Every reply must itself be a valid frame (checked with a reader written here from the spec,
 * not with polycall's codec). A control client keeps calling the server meanwhile, and every
 * one of its calls must succeed. The frames are independent of polycall's encoder as well.
 */
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { isDeepStrictEqual } from 'node:util'
import { pack, unpack } from 'msgpackr'
import { PolyCallClient, PolyCallError, PolyCallServer } from '../../ts/index.js'

// ---- PRNG -----------------------------------------------------------------------------------

/** sfc32, seeded from one u32: small, fast, and the same sequence everywhere. */
export class Rng {
  #a: number
  #b: number
  #c: number
  #d: number

  constructor(seed: number) {
    this.#a = 0x9e3779b9
    this.#b = 0x243f6a88
    this.#c = 0xb7e15162
    this.#d = seed >>> 0
    for (let i = 0; i < 12; i++) this.u32()
  }

  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0
    this.#d = (this.#d + 1) | 0
    this.#a = this.#b ^ (this.#b >>> 9)
    this.#b = (this.#c + (this.#c << 3)) | 0
    this.#c = (this.#c << 21) | (this.#c >>> 11)
    this.#c = (this.#c + t) | 0
    return t >>> 0
  }

  /** An integer in lo..hi, inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 0x1_0000_0000) * (hi - lo + 1))
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!
  }

  /** One of `choices`, with probability proportional to its weight. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    let total = 0
    for (const [w] of choices) total += w
    let at = this.int(0, total - 1)
    for (const [w, v] of choices) {
      if (at < w) return v
      at -= w
    }
    return choices[choices.length - 1]![1]
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff
    return b
  }
}

const WORDS = ['a', 'zé', '😀', 'quote"', 'back\\slash', 'line\nbreak', 'tab\t', '', 'x'.repeat(40), '中文']

/** A JSON- and msgpack-safe value (no -0, no lone surrogates, small integers, .5 fractions). */
function value(rng: Rng, depth = 0): unknown {
  const kind = rng.int(0, depth > 2 ? 4 : 7)
  switch (kind) {
    case 0:
      return rng.int(-2_000_000_000, 2_000_000_000) || 1
    case 1:
      return rng.int(-1000, 1000) + 0.5
    case 2:
      return rng.pick(WORDS) + String(rng.int(0, 99))
    case 3:
      return rng.chance(0.5)
    case 4:
      return null
    case 5:
    case 6: {
      const out: unknown[] = []
      for (let i = rng.int(0, 4); i > 0; i--) out.push(value(rng, depth + 1))
      return out
    }
    default: {
      const out: Record<string, unknown> = {}
      for (let i = rng.int(0, 4); i > 0; i--) out[`k${rng.int(0, 20)}`] = value(rng, depth + 1)
      return out
    }
  }
}

// ---- frames, written and read from the specs' byte layouts -------------------------------------

/** PROTOCOL.md §2. */
export function v1Checksum(payload: Uint8Array): number {
  let acc = 0
  for (const b of payload) acc = (((acc << 5) | (acc >>> 27)) + b) >>> 0
  return acc
}

interface V1Bend {
  version?: number
  type?: number
  flags?: number
  length?: number
  checksum?: number
}

/** A v1 frame (§1), with fields bent by `bend` to make bad ones. */
export function v1Frame(type: number, sequence: number, payload: Uint8Array, bend: V1Bend = {}): Buffer {
  const head = Buffer.alloc(16)
  head.writeUInt8(bend.version ?? 1, 0)
  head.writeUInt8(bend.type ?? type, 1)
  head.writeUInt16LE(bend.flags ?? (type === 1 || type === 3 ? 8 : type === 2 ? 9 : 0), 2)
  head.writeUInt32LE(sequence >>> 0, 4)
  head.writeUInt32LE(bend.length ?? payload.length, 8)
  head.writeUInt32LE(bend.checksum ?? v1Checksum(payload), 12)
  return Buffer.concat([head, payload])
}

interface Pcr1Bend {
  magic?: string
  type?: number
  flags?: number
  reserved?: number
  length?: number
}

/** A PCR1 frame (PROTOCOL-PCR1.md §1), with fields bent by `bend`. */
export function pcr1Frame(type: number, corr: number, payload: Uint8Array, bend: Pcr1Bend = {}): Buffer {
  const head = Buffer.alloc(16)
  head.write(bend.magic ?? 'PCR1', 0, 'latin1')
  head.writeUInt8(bend.type ?? type, 4)
  head.writeUInt8(bend.flags ?? 0, 5)
  head.writeUInt16BE(bend.reserved ?? 0, 6)
  head.writeUInt32BE(corr >>> 0, 8)
  head.writeUInt32BE(bend.length ?? payload.length, 12)
  return Buffer.concat([head, payload])
}

/** A frame the server sent. */
export interface Reply {
  type: number
  sequence: number
  payload: Buffer
}

/** Splits what the server sends into frames, and fails on anything that is not a valid frame. */
class ReplyReader {
  #buf: Buffer = Buffer.alloc(0)
  constructor(private readonly wire: 'v1' | 'pcr1') {}

  push(chunk: Buffer): Reply[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk])
    const out: Reply[] = []
    while (this.#buf.length >= 16) {
      const b = this.#buf
      let length: number
      let reply: Omit<Reply, 'payload'>
      if (this.wire === 'v1') {
        if (b[0] !== 1) throw new Error(`the server sent version ${b[0]}`)
        if (b[1]! < 1 || b[1]! > 6) throw new Error(`the server sent type ${b[1]}`)
        length = b.readUInt32LE(8)
        reply = { type: b[1]!, sequence: b.readUInt32LE(4) }
      } else {
        if (b.toString('latin1', 0, 4) !== 'PCR1') throw new Error('the server sent a frame without the PCR1 magic')
        if (b[4] !== 2 && b[4] !== 4) throw new Error(`the server sent PCR1 type ${b[4]}`)
        if (b[5] !== 0 || b.readUInt16BE(6) !== 0) throw new Error('the server set PCR1 flags or reserved bits')
        length = b.readUInt32BE(12)
        reply = { type: b[4]!, sequence: b.readUInt32BE(8) }
      }
      if (length > 1_048_576) throw new Error(`the server announced ${length} payload bytes`)
      if (b.length < 16 + length) break
      const payload = Buffer.from(b.subarray(16, 16 + length))
      if (this.wire === 'v1' && v1Checksum(payload) !== b.readUInt32LE(12)) throw new Error('the server sent a bad checksum')
      out.push({ ...reply, payload })
      this.#buf = b.subarray(16 + length)
    }
    return out
  }

  get pending(): number {
    return this.#buf.length
  }
}

// ---- the server under test ------------------------------------------------------------------

/** The server the model describes: echo, async echo, a failing route; one good credential. */
export async function startFuzzServer(protocol: 'v1' | 'pcr1'): Promise<{ server: PolyCallServer; port: number }> {
  const v1 = protocol === 'v1'
  const server = new PolyCallServer({
    protocol,
    maxPayload: MAX_PAYLOAD,
    maxInFlight: MAX_IN_FLIGHT,
    ...(v1
      ? {
          authenticate: (c: unknown) => {
            const creds = c as { username?: unknown; password?: unknown } | null
            if (creds?.username === 'fuzz' && creds.password === 'ok') return { user: 'fuzz' }
            throw new PolyCallError('ERR_POLYCALL_UNAUTHENTICATED', 'wrong credentials')
          },
        }
      : {}),
  })
  const name = (op: string) => (v1 ? op : `fuzz.${op}`)
  server.route(name('echo'), (ctx) => ctx.data)
  server.route(name('later'), (ctx) => new Promise((resolve) => setImmediate(() => resolve(ctx.data))))
  server.route(name('fail'), () => {
    throw new PolyCallError(v1 ? 'ERR_APP_FUZZ' : 'fuzz.failed', 'refused on purpose')
  })
  const { port } = await server.listen(0, '127.0.0.1')
  return { server, port }
}

/** The fuzz server's payload limit: low, so oversized frames are cheap to send. */
export const MAX_PAYLOAD = 64 * 1024
/**
 * How long anything the model expects may take: a reply, a close, a control call. Generous, for
 * loaded CI machines; the report gives the times actually seen.
 */
export const BOUND_MS = 10_000
/** The fuzz server's limit of requests in flight per connection: low, so it is reached. */
export const MAX_IN_FLIGHT = 8

// ---- the model ------------------------------------------------------------------------------

/** What the server must send for one frame. */
interface Expectation {
  /** The sequence (v1) or corr (PCR1) the reply echoes; 0 for a connection-level notice. */
  sequence: number
  what: string
  /** Checks a reply; returns why it is wrong, or undefined. */
  check: (r: Reply) => string | undefined
  /** May be missing when the connection fails first (async handlers) or was cancelled. */
  droppable: boolean
  cancelled?: boolean
}

/** One violation of the model. */
export interface Violation {
  session: number
  message: string
}

interface SessionResult {
  frames: number
  bytes: number
  replies: number
  ending: Ending
  closeMs?: number
}

type Ending = 'fatal' | 'truncated' | 'clean' | 'abrupt'

interface Counters {
  sessions: number
  frames: number
  bytes: number
  replies: number
  endings: Record<Ending, number>
  kinds: Record<string, number>
  closeMs: number[]
}

const V1 = { HANDSHAKE: 1, AUTH: 2, COMMAND: 3, RESPONSE: 4, ERROR: 5, HEARTBEAT: 6 } as const
const P = { REQUEST: 1, RESPONSE: 2, CONTROL: 3, CONTROL_REPLY: 4 } as const
const MAGIC = Buffer.from('434c5000', 'hex')
const CODED = /^ERR_[A-Z0-9_]+$/

/** A connection to the fuzz server with its reply stream and model bookkeeping. */
class Session {
  readonly socket: Socket
  readonly reader: ReplyReader
  replies = 0
  closed = false
  /** Set when this side tore the connection down (a frame may then be cut short). */
  aborted = false
  #waiters: (() => boolean)[] = []
  readonly closedAt: Promise<number>

  constructor(
    readonly id: number,
    wire: 'v1' | 'pcr1',
    port: number,
    readonly violation: (message: string) => void,
    readonly onReply: (r: Reply) => void,
  ) {
    this.reader = new ReplyReader(wire)
    this.socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
    this.socket.setNoDelay(true)
    this.socket.on('data', (chunk: Buffer) => {
      let frames: Reply[]
      try {
        frames = this.reader.push(chunk)
      } catch (e) {
        this.violation((e as Error).message)
        this.socket.destroy()
        return
      }
      for (const f of frames) {
        this.replies++
        this.onReply(f)
      }
      this.#wake()
    })
    this.socket.on('error', () => {})
    this.closedAt = once(this.socket, 'close').then(() => {
      this.closed = true
      if (this.reader.pending > 0 && !this.aborted) this.violation(`the server closed after ${this.reader.pending} bytes of an unfinished frame`)
      this.#wake()
      return performance.now()
    })
  }

  /** Resolves when `done()` holds (checked after every reply and at close), or after `ms`. */
  until(done: () => boolean, ms: number): Promise<boolean> {
    if (done()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const at = this.#waiters.indexOf(check)
        if (at >= 0) this.#waiters.splice(at, 1)
        resolve(done())
      }, ms)
      const check = () => {
        if (!done()) return false
        clearTimeout(timer)
        resolve(true)
        return true
      }
      this.#waiters.push(check)
    })
  }

  #wake(): void {
    this.#waiters = this.#waiters.filter((w) => !w())
  }

  /** Writes `bytes` in random chunk sizes, sometimes letting the event loop turn between them. */
  async write(rng: Rng, bytes: Buffer): Promise<void> {
    let at = 0
    while (at < bytes.length && !this.socket.destroyed) {
      const size = rng.weighted([
        [3, 1],
        [3, rng.int(2, 15)],
        [2, 16],
        [4, rng.int(17, 200)],
        [2, rng.int(201, 5000)],
        [2, bytes.length - at],
      ] as const)
      const piece = bytes.subarray(at, at + Math.max(1, size))
      at += piece.length
      this.socket.write(piece)
      if (rng.chance(0.3)) await new Promise<void>((r) => setImmediate(r))
    }
  }
}

function errorCodeOf(payload: Buffer, codec: 'json' | 'msgpack'): string | undefined {
  if (codec === 'msgpack') {
    try {
      const v = unpack(payload) as { code?: unknown } | null
      return typeof v?.code === 'string' ? v.code : undefined
    } catch {
      return undefined
    }
  }
  const m = /^([A-Z][A-Z0-9_]*): /.exec(payload.toString('utf8'))
  return m?.[1]
}

function decodeValue(payload: Buffer, codec: 'json' | 'msgpack'): { ok: true; value: unknown } | { ok: false } {
  try {
    if (codec === 'msgpack') return { ok: true, value: payload.length === 0 ? undefined : unpack(payload) }
    return { ok: true, value: JSON.parse(payload.toString('utf8')) }
  } catch {
    return { ok: false }
  }
}

const describe = (v: unknown) => {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 120 ? `${s.slice(0, 117)}...` : s
}

/** Expects an ERROR echoing `sequence` with one of `codes` (any coded error when empty). */
function expectError(sequence: number, what: string, codec: 'json' | 'msgpack', codes: string[], droppable = false): Expectation {
  return {
    sequence,
    what,
    droppable,
    check: (r) => {
      if (r.type !== V1.ERROR) return `expected ERROR, got type ${r.type}`
      const code = errorCodeOf(r.payload, codec)
      if (code === undefined || !CODED.test(code)) return `ERROR without a code: ${describe(r.payload.toString('utf8'))}`
      if (codes.length > 0 && !codes.includes(code)) return `expected ${codes.join(' or ')}, got ${code}`
      return undefined
    },
  }
}

function expectValue(sequence: number, what: string, codec: 'json' | 'msgpack', value: unknown, alsoCodes: string[] = [], droppable = false): Expectation {
  return {
    sequence,
    what,
    droppable,
    check: (r) => {
      if (r.type === V1.ERROR && alsoCodes.length > 0) {
        const code = errorCodeOf(r.payload, codec)
        return code !== undefined && alsoCodes.includes(code) ? undefined : `expected a RESPONSE or ${alsoCodes.join('/')}, got ERROR ${code}`
      }
      if (r.type !== V1.RESPONSE) return `expected RESPONSE, got type ${r.type}`
      const got = decodeValue(r.payload, codec)
      if (!got.ok) return 'RESPONSE payload does not decode'
      return isDeepStrictEqual(got.value, value) ? undefined : `expected ${describe(value)}, got ${describe(got.value)}`
    },
  }
}

/** `e`, or an ERROR BUSY: for frames sent while the connection may be at its in-flight limit. */
function busyAllowed(e: Expectation, codec: 'json' | 'msgpack'): Expectation {
  return { ...e, check: (r) => (r.type === V1.ERROR && errorCodeOf(r.payload, codec) === 'ERR_POLYCALL_BUSY' ? undefined : e.check(r)) }
}

/** Any coded reply: a RESPONSE, or an ERROR with a code. */
function expectAnswer(sequence: number, what: string, codec: 'json' | 'msgpack', droppable = false): Expectation {
  return {
    sequence,
    what,
    droppable,
    check: (r) => {
      if (r.type === V1.RESPONSE) return undefined
      if (r.type !== V1.ERROR) return `expected RESPONSE or ERROR, got type ${r.type}`
      const code = errorCodeOf(r.payload, codec)
      return code !== undefined && CODED.test(code) ? undefined : 'ERROR without a code'
    },
  }
}

// ---- v1 sessions ----------------------------------------------------------------------------

interface V1State {
  ready: boolean
  codec: 'json' | 'msgpack'
  authFailures: number
  /** Sequences of async COMMANDs whose replies are outstanding (for cancellation notices). */
  async: Set<number>
  /** A session that mostly sends slow requests in long bursts, to reach the in-flight limit. */
  flood: boolean
}

/** A frame to send: its bytes, the reply it must get, and what it does to the session. */
interface Planned {
  bytes: Buffer
  kind: string
  expect?: Expectation
  /** A connection-level notice follows, then the close. */
  fatal?: Expectation
  /** Wait for the reply before sending more (AUTH is answered asynchronously). */
  waits?: boolean
  /** The server closes after replying. */
  closes?: boolean
  /** A cancellation notice for this sequence. */
  cancels?: number
}

function commandPayload(st: V1State, command: string, data: unknown, timeout?: number): Buffer {
  if (st.codec === 'msgpack') return pack(timeout === undefined ? [command, data] : [command, data, timeout])
  return Buffer.from(JSON.stringify({ command, data }))
}

/** A long-form hello with one byte of the magic changed. */
function badMagic(rng: Rng): Buffer {
  const out = Buffer.from([...MAGIC, 1, 0, 0, 0])
  out[rng.int(0, 3)]! ^= rng.int(1, 255)
  return out
}

/** One frame the session sends next, and what the server must answer (the state moves on). */
function planV1(rng: Rng, st: V1State, seq: () => number): Planned {
  const kind = rng.weighted([
    [st.ready ? 2 : 10, 'handshake'],
    [st.ready ? 20 : 3, 'command'],
    [st.ready ? (st.flood ? 60 : 8) : 1, 'later'],
    [3, 'fail'],
    [3, 'missing'],
    [4, 'garbage-command'],
    [3, 'auth'],
    [1, 'bad-auth'],
    [5, 'heartbeat'],
    [2, 'cancel'],
    [3, 'client-reply'],
    [1, 'big-command'],
    [2, 'fatal'],
  ] as const)
  const n = seq()
  const notAllowed = (what: string): Planned => ({
    kind: `${kind} (not allowed)`,
    bytes: Buffer.alloc(0),
    expect: expectError(n, `${what} before the handshake`, st.codec, ['ERR_POLYCALL_PROTOCOL']),
  })
  switch (kind) {
    case 'handshake': {
      const form = rng.weighted([
        [4, 'caps'],
        [2, 'long'],
        [2, 'short'],
        [2, 'empty'],
        [1, 'extra'],
        [1, 'too-short'],
        [1, 'bad-magic'],
      ] as const)
      const caps = rng.pick([1, 3, 7, 2, 8])
      const payload =
        form === 'caps'
          ? Buffer.from([...MAGIC, 1, rng.int(0, 255), caps & 0xff, 0])
          : form === 'long'
            ? Buffer.from([...MAGIC, 1, rng.int(0, 255), 0, 0])
            : form === 'short'
              ? Buffer.from(MAGIC)
              : form === 'empty'
                ? Buffer.alloc(0)
                : form === 'extra'
                  ? Buffer.concat([MAGIC, Buffer.from([1, 0, 1, 0]), rng.bytes(rng.int(1, 12))])
                  : form === 'too-short'
                    ? rng.bytes(rng.int(1, 3))
                    : badMagic(rng)
      const bytes = v1Frame(V1.HANDSHAKE, n, payload)
      if (st.ready) {
        // HANDSHAKE is not allowed once the session is past INIT; its payload is not even read.
        return { kind: 'handshake (again)', bytes, expect: expectError(n, 'a second HANDSHAKE', st.codec, ['ERR_POLYCALL_PROTOCOL']) }
      }
      if (form === 'too-short' || form === 'bad-magic') {
        const code = form === 'too-short' ? 'ERR_POLYCALL_HANDSHAKE_PAYLOAD_TOO_SHORT' : 'ERR_POLYCALL_HANDSHAKE_BAD_MAGIC'
        return { kind: `handshake (${form})`, bytes, fatal: expectError(n, `a ${form} hello`, 'json', [code]), closes: true }
      }
      const flags = payload.length >= 8 ? payload.readUInt16LE(6) : 0
      st.ready = true
      st.codec = payload.length >= 8 && flags & 1 ? 'msgpack' : 'json'
      return {
        kind: `handshake (${form})`,
        bytes,
        expect: {
          sequence: n,
          what: `a ${form} hello`,
          droppable: false,
          check: (r) => {
            if (r.type !== V1.RESPONSE) return `expected the handshake RESPONSE, got type ${r.type}`
            if (r.payload.length < 8 || !r.payload.subarray(0, 4).equals(MAGIC) || r.payload[4] !== 1) return 'the handshake reply is not a long-form hello'
            const agreed = r.payload.readUInt16LE(6)
            return agreed === (flags & 7) ? undefined : `the reply agreed on capabilities ${agreed}, the hello offered ${flags}`
          },
        },
      }
    }
    case 'command':
    case 'later':
    case 'fail':
    case 'missing':
    case 'big-command': {
      if (!st.ready) {
        const p = notAllowed('COMMAND')
        p.bytes = v1Frame(V1.COMMAND, n, commandPayload(st, 'echo', 1))
        return p
      }
      const data = kind === 'big-command' ? 'x'.repeat(rng.int(8_000, MAX_PAYLOAD - 100)) : value(rng)
      const route = kind === 'command' || kind === 'big-command' ? 'echo' : kind === 'missing' ? `nope/${rng.int(0, 9)}` : kind
      const timeout = st.codec === 'msgpack' && kind === 'later' && rng.chance(0.3) ? rng.int(0, 50) : undefined
      const bytes = v1Frame(V1.COMMAND, n, commandPayload(st, route, data, timeout))
      // The server counts no more requests in flight than this session has sent and not seen
      // answered: below the limit, BUSY is not a possible answer.
      const full = st.async.size >= MAX_IN_FLIGHT
      const planned = (expect: Expectation): Planned => ({ kind: full ? `${kind} (at the limit)` : kind, bytes, expect: full ? busyAllowed(expect, st.codec) : expect })
      if (kind === 'fail') return planned(expectError(n, 'COMMAND fail', st.codec, ['ERR_APP_FUZZ']))
      if (kind === 'missing') return planned(expectError(n, 'COMMAND to no route', st.codec, ['ERR_POLYCALL_NOT_FOUND']))
      if (kind === 'later') {
        st.async.add(n)
        return planned(expectValue(n, 'COMMAND later', st.codec, data, ['ERR_POLYCALL_DEADLINE_EXCEEDED'], true))
      }
      return planned(expectValue(n, `COMMAND echo (${bytes.length} bytes)`, st.codec, data))
    }
    case 'garbage-command': {
      const payload = rng.chance(0.5) ? rng.bytes(rng.int(0, 64)) : Buffer.from(`{"command":${rng.pick(['1', '"echo"', '[', 'null', '"x'])}`)
      const bytes = v1Frame(V1.COMMAND, n, payload)
      if (!st.ready) return { kind: 'garbage-command (not allowed)', bytes, expect: expectError(n, 'COMMAND before the handshake', st.codec, ['ERR_POLYCALL_PROTOCOL']) }
      // Any coded answer will do (BUSY included).
      return { kind, bytes, expect: expectAnswer(n, `a COMMAND with garbage ${describe(payload.toString('hex'))}`, st.codec) }
    }
    case 'auth':
    case 'bad-auth': {
      const good = kind === 'auth'
      const creds = good ? { username: 'fuzz', password: 'ok' } : rng.chance(0.5) ? { username: 'fuzz', password: 'no' } : rng.bytes(rng.int(0, 20))
      const bytes = v1Frame(V1.AUTH, n, Buffer.isBuffer(creds) ? creds : Buffer.from(JSON.stringify(creds)))
      if (!st.ready) return { kind: `${kind} (not allowed)`, bytes, expect: expectError(n, 'AUTH before the handshake', st.codec, ['ERR_POLYCALL_PROTOCOL']) }
      if (good) {
        st.authFailures = 0
        return { kind, bytes, waits: true, expect: expectValue(n, 'AUTH', st.codec, { authenticated: true }) }
      }
      // The third failure in a row closes the connection.
      const closes = ++st.authFailures >= 3
      return { kind, bytes, waits: true, closes, expect: expectError(n, 'AUTH with wrong credentials', st.codec, ['ERR_POLYCALL_UNAUTHENTICATED']) }
    }
    case 'heartbeat':
      return { kind, bytes: v1Frame(V1.HEARTBEAT, n, rng.chance(0.5) ? Buffer.alloc(0) : rng.bytes(8)) }
    case 'cancel': {
      // A cancellation notice: a HEARTBEAT naming a sequence. No reply to it; an async
      // COMMAND it names may go unanswered.
      const pending = [...st.async]
      const target = pending.length > 0 && rng.chance(0.7) ? rng.pick(pending) : rng.u32()
      const payload = Buffer.alloc(8)
      payload.write('CNCL', 0, 'latin1')
      payload.writeUInt32LE(target >>> 0, 4)
      return { kind, bytes: v1Frame(V1.HEARTBEAT, n, payload, { flags: 4 }), cancels: target }
    }
    case 'client-reply': {
      const type = rng.pick([V1.RESPONSE, V1.ERROR])
      return { kind, bytes: v1Frame(type, n, rng.bytes(rng.int(0, 32))), expect: expectError(n, `type ${type} from a client`, st.codec, ['ERR_POLYCALL_PROTOCOL']) }
    }
    default: {
      const f = rng.weighted([
        [2, 'version'],
        [2, 'type'],
        [2, 'length'],
        [3, 'checksum'],
      ] as const)
      const payload = commandPayload(st, 'echo', value(rng))
      const bend: V1Bend =
        f === 'version'
          ? { version: rng.pick([0, 2, 3, 0x7f, 0xff]) }
          : f === 'type'
            ? { type: rng.pick([0, 7, 8, 0x40, 0xff]) }
            : f === 'length'
              ? { length: rng.pick([MAX_PAYLOAD + 1, MAX_PAYLOAD + 1000, 0x100000, 0x100001, 0xffffffff]) }
              : { checksum: (v1Checksum(payload) ^ (1 << rng.int(0, 31))) >>> 0 }
      let bytes = v1Frame(V1.COMMAND, n, payload, bend)
      // An oversized header is refused before its payload: send the header and a little.
      if (f === 'length') bytes = bytes.subarray(0, 16 + rng.int(0, Math.min(payload.length, 8)))
      const code = { version: 'ERR_POLYCALL_VERSION_MISMATCH', type: 'ERR_POLYCALL_UNKNOWN_MESSAGE_TYPE', length: 'ERR_POLYCALL_PAYLOAD_TOO_LARGE', checksum: 'ERR_POLYCALL_CHECKSUM_MISMATCH' }[f]
      return { kind: `fatal (${f})`, bytes, fatal: expectError(0, `the notice for a bad ${f}`, st.codec, [code]), closes: true }
    }
  }
}

interface Run {
  rng: Rng
  port: number
  counters: Counters
  violations: Violation[]
  /** Frames left to send across all sessions. */
  budget: { left: number }
}

async function v1Session(run: Run, id: number): Promise<SessionResult> {
  const { rng } = run
  const expected = new Map<number, Expectation>()
  let fatal: Expectation | undefined
  let fatalSeen = false
  let closeExpected = false
  const violation = (message: string) => run.violations.push({ session: id, message })
  const onReply = (r: Reply) => {
    // A server may send heartbeats to a peer that offered them; they answer nothing.
    if (r.type === V1.HEARTBEAT) return
    if (fatalSeen) return void violation(`a frame (type ${r.type}, sequence ${r.sequence}) after the connection-level ERROR`)
    if (fatal && r.sequence === fatal.sequence && r.type === V1.ERROR && (fatal.sequence !== 0 || !expected.has(0))) {
      const wrong = fatal.check(r)
      if (wrong) violation(`${fatal.what}: ${wrong}`)
      fatalSeen = true
      return
    }
    const e = expected.get(r.sequence)
    if (!e) return void violation(`an unexpected frame: type ${r.type}, sequence ${r.sequence}, ${describe(r.payload.toString('utf8'))}`)
    expected.delete(r.sequence)
    st.async.delete(r.sequence)
    const wrong = e.check(r)
    if (wrong) violation(`${e.what} (sequence ${r.sequence}): ${wrong}`)
  }
  const s = new Session(id, 'v1', run.port, violation, onReply)
  await once(s.socket, 'connect')
  const st: V1State = { ready: false, codec: 'json', authFailures: 0, async: new Set(), flood: rng.chance(0.15) }
  let next = rng.chance(0.1) ? 0xffffff00 + rng.int(0, 0xf0) : rng.int(1, 1000)
  const seq = () => {
    const n = next
    next = (next + 1) >>> 0 || 1
    return n
  }
  const outstanding = () => [...expected.values()].filter((e) => !e.droppable)
  const settled = () => s.closed || outstanding().length === 0
  let frames = 0
  let bytes = 0
  let ending: Ending | undefined
  const perSession = rng.int(1, 40)

  while (frames < perSession && run.budget.left > 0 && ending === undefined) {
    const burst: Buffer[] = []
    let waits = false
    for (let i = rng.int(1, st.flood ? 24 : 8); i > 0 && frames < perSession && run.budget.left > 0; i--) {
      const p = planV1(rng, st, seq)
      run.budget.left--
      frames++
      run.counters.kinds[p.kind] = (run.counters.kinds[p.kind] ?? 0) + 1
      burst.push(p.bytes)
      if (p.cancels !== undefined) {
        const e = expected.get(p.cancels)
        if (e) e.droppable = e.cancelled = true
        st.async.delete(p.cancels)
      }
      if (p.expect) {
        if (expected.has(p.expect.sequence)) violation(`the fuzzer reused sequence ${p.expect.sequence}`)
        expected.set(p.expect.sequence, p.expect)
      }
      if (p.fatal) {
        fatal = p.fatal
        ending = 'fatal'
        break
      }
      if (p.closes) {
        closeExpected = true
        ending = 'fatal'
      }
      if (p.waits) {
        waits = true
        break
      }
    }
    const all = Buffer.concat(burst)
    bytes += all.length
    await s.write(rng, all)
    if (waits || (ending === undefined && rng.chance(0.25))) {
      if (!(await s.until(settled, BOUND_MS))) violation(`no reply within ${BOUND_MS} ms to ${outstanding().map((e) => e.what).join(', ')}`)
      for (const n of [...st.async]) if (!expected.has(n)) st.async.delete(n)
    }
    if (s.closed && ending === undefined) {
      violation('the server closed a connection that broke no rule')
      break
    }
  }

  let writtenAt = performance.now()
  if (ending === undefined) {
    ending = rng.weighted([
      [5, 'clean'],
      [3, 'truncated'],
      [1, 'abrupt'],
    ] as const)
    if (ending === 'truncated') {
      // A frame cut short, then the end of the stream: TRUNCATED_HEADER or TRUNCATED_PAYLOAD.
      const whole = v1Frame(V1.HEARTBEAT, seq(), rng.bytes(rng.int(1, 40)))
      const cut = rng.int(1, whole.length - 1)
      await s.write(rng, whole.subarray(0, cut))
      const code = cut < 16 ? 'ERR_POLYCALL_TRUNCATED_HEADER' : 'ERR_POLYCALL_TRUNCATED_PAYLOAD'
      fatal = expectError(0, `the notice for a stream that ended ${cut} bytes into a frame`, st.codec, [code])
      frames++
      run.budget.left--
    }
    writtenAt = performance.now()
  }
  if (ending === 'abrupt') {
    s.aborted = true
    s.socket.destroy()
  } else s.socket.end()
  const closedAt = await Promise.race([s.closedAt, new Promise<undefined>((r) => setTimeout(() => r(undefined), BOUND_MS).unref())])
  if (closedAt === undefined) {
    violation(`the connection was still open ${BOUND_MS} ms after a ${ending} ending`)
    s.socket.destroy()
    await s.closedAt
  }
  if (fatal && !fatalSeen && ending !== 'abrupt') violation(`no ${fatal.what} before the close`)
  const failed = fatal !== undefined || closeExpected
  for (const e of expected.values()) {
    if (ending === 'abrupt' || e.cancelled || (failed && e.droppable)) continue
    violation(`no reply to ${e.what} (sequence ${e.sequence}) before a ${ending} close`)
  }
  return { frames, bytes, replies: s.replies, ending, ...(closedAt === undefined ? {} : { closeMs: closedAt - writtenAt }) }
}

// ---- PCR1 sessions --------------------------------------------------------------------------

interface Outcome {
  ok?: boolean
  output?: unknown
  data?: Record<string, unknown>
  error?: { code?: unknown; message?: unknown }
}

function parseOutcome(r: Reply): Outcome | string {
  try {
    const v = JSON.parse(r.payload.toString('utf8')) as unknown
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'a reply payload that is not a JSON object'
    const o = v as Outcome
    if (o.ok === true) return o
    if (o.ok !== false || typeof o.error?.code !== 'string' || typeof o.error.message !== 'string') return 'a reply without ok and a coded error'
    return o
  } catch {
    return 'a reply payload that is not JSON'
  }
}

/** Expects a reply of `type` and corr; `good(outcome)` judges it; `server.busy` is always allowed. */
function expectPcr1(corr: number, type: number, what: string, good: (o: Outcome) => string | undefined, droppable = false): Expectation {
  return {
    sequence: corr,
    what,
    droppable,
    check: (r) => {
      if (r.sequence !== corr) return `expected corr ${corr}, got ${r.sequence} (replies must come in request order)`
      if (r.type !== type) return `expected type ${type}, got ${r.type}`
      const o = parseOutcome(r)
      if (typeof o === 'string') return o
      if (o.ok === false && o.error?.code === 'server.busy') return undefined
      return good(o)
    },
  }
}

const okWith = (value: unknown) => (o: Outcome) =>
  o.ok === true && isDeepStrictEqual(o.output, value) ? undefined : `expected ok ${describe(value)}, got ${describe(o)}`
const failsWith = (...codes: string[]) => (o: Outcome) =>
  o.ok === false && codes.includes(o.error?.code as string) ? undefined : `expected ${codes.join(' or ')}, got ${describe(o)}`

function planPcr1(rng: Rng, corr: number, flood: boolean): Planned {
  const kind = rng.weighted([
    [20, 'echo'],
    [flood ? 60 : 6, 'later'],
    [3, 'fail'],
    [3, 'unknown-op'],
    [4, 'malformed'],
    [6, 'control'],
    [2, 'client-reply'],
    [1, 'big'],
    [2, 'fatal'],
  ] as const)
  const request = (service: string, operation: string, input: unknown, deadline = rng.chance(0.05) ? 0 : rng.int(1000, 600_000)) =>
    Buffer.from(JSON.stringify({ service, operation, deadline_ms: deadline, input }))
  switch (kind) {
    case 'echo':
    case 'big': {
      const input = kind === 'big' ? 'y'.repeat(rng.int(8_000, MAX_PAYLOAD - 200)) : value(rng)
      return { kind, bytes: pcr1Frame(P.REQUEST, corr, request('fuzz', 'echo', input)), expect: expectPcr1(corr, P.RESPONSE, 'REQUEST fuzz.echo', okWith(input)) }
    }
    case 'later': {
      const input = value(rng)
      const deadline = rng.chance(0.2) ? 0 : rng.int(1000, 600_000)
      const good = (o: Outcome) => (o.ok === false && o.error?.code === 'deadline.exceeded' ? undefined : okWith(input)(o))
      return { kind, bytes: pcr1Frame(P.REQUEST, corr, request('fuzz', 'later', input, deadline)), expect: expectPcr1(corr, P.RESPONSE, 'REQUEST fuzz.later', good, true) }
    }
    case 'fail':
      return { kind, bytes: pcr1Frame(P.REQUEST, corr, request('fuzz', 'fail', value(rng))), expect: expectPcr1(corr, P.RESPONSE, 'REQUEST fuzz.fail', failsWith('fuzz.failed')) }
    case 'unknown-op':
      return { kind, bytes: pcr1Frame(P.REQUEST, corr, request('nope', `op${rng.int(0, 9)}`, null)), expect: expectPcr1(corr, P.RESPONSE, 'REQUEST to no operation', failsWith('operation.unknown')) }
    case 'malformed': {
      const payload = rng.pick([
        () => rng.bytes(rng.int(0, 40)),
        () => Buffer.from('[1,2]'),
        () => Buffer.from('"text"'),
        () => Buffer.from(JSON.stringify({ service: 'fuzz', operation: 'echo', deadline_ms: rng.pick([-1, 600_001, 1.5, '10', null]), input: 1 })),
        () => Buffer.from(JSON.stringify({ service: '', operation: 'echo', deadline_ms: 10 })),
        () => Buffer.from(JSON.stringify({ operation: 'echo', deadline_ms: 10 })),
        () => Buffer.from('{"service":"fuzz",'),
      ])()
      // Random bytes are very unlikely to be a valid request; if they are JSON at all they are not one.
      return { kind, bytes: pcr1Frame(P.REQUEST, corr, payload), expect: expectPcr1(corr, P.RESPONSE, `malformed REQUEST ${describe(payload.toString('utf8'))}`, failsWith('request.malformed')) }
    }
    case 'control': {
      const action = rng.pick(['ping', 'describe', 'health', 'shutdown', 'nope', 'malformed'] as const)
      const payload = action === 'malformed' ? rng.pick([Buffer.from('{'), Buffer.from('{"action":5}'), rng.bytes(6)]) : Buffer.from(JSON.stringify({ action }))
      const good = (o: Outcome): string | undefined => {
        switch (action) {
          case 'ping':
            return o.ok === true && isDeepStrictEqual(o.data, { pong: true, abi: 1 }) ? undefined : `ping answered ${describe(o)}`
          case 'describe':
            return o.ok === true && Array.isArray(o.data?.['operations']) ? undefined : `describe answered ${describe(o)}`
          case 'health':
            return o.ok === true && typeof o.data?.['status'] === 'string' ? undefined : `health answered ${describe(o)}`
          case 'shutdown':
            return failsWith('auth.denied')(o)
          case 'nope':
            return failsWith('control.unknown')(o)
          default:
            return failsWith('request.malformed')(o)
        }
      }
      return { kind: `control ${action}`, bytes: pcr1Frame(P.CONTROL, corr, payload), expect: expectPcr1(corr, P.CONTROL_REPLY, `CONTROL ${action}`, good) }
    }
    case 'client-reply': {
      const type = rng.pick([P.RESPONSE, P.CONTROL_REPLY])
      return { kind, bytes: pcr1Frame(type, corr, Buffer.from('{"ok":true}')), expect: expectPcr1(corr, P.CONTROL_REPLY, `type ${type} from a client`, failsWith('frame.type')) }
    }
    default: {
      const f = rng.pick(['magic', 'type', 'flags', 'reserved', 'length'] as const)
      const bend: Pcr1Bend =
        f === 'magic'
          ? { magic: rng.pick(['PCR2', 'pcr1', '\x01\x03\x08\x00', 'GET ']) }
          : f === 'type'
            ? { type: rng.pick([0, 5, 9, 0xff]) }
            : f === 'flags'
              ? { flags: rng.pick([1, 0x80, 0xff]) }
              : f === 'reserved'
                ? { reserved: rng.pick([1, 0x100, 0xffff]) }
                : { length: rng.pick([MAX_PAYLOAD + 1, 0x100001, 0xffffffff]) }
      let bytes = pcr1Frame(P.REQUEST, corr, request('fuzz', 'echo', 1), bend)
      if (f === 'length') bytes = bytes.subarray(0, 16 + rng.int(0, 8))
      return { kind: `fatal (${f})`, bytes, fatal: expectPcr1(0, P.CONTROL_REPLY, `the notice for a bad ${f}`, failsWith('frame.invalid')), closes: true }
    }
  }
}

async function pcr1Session(run: Run, id: number): Promise<SessionResult> {
  const { rng } = run
  const order: Expectation[] = []
  let fatal: Expectation | undefined
  let fatalSeen = false
  const violation = (message: string) => run.violations.push({ session: id, message })
  const onReply = (r: Reply) => {
    if (fatalSeen) return void violation(`a frame (type ${r.type}, corr ${r.sequence}) after the connection-level notice`)
    const head = order[0]
    // The connection-level notice is outside the reply order.
    if (fatal && r.sequence === 0 && r.type === P.CONTROL_REPLY && head?.sequence !== 0) {
      const wrong = fatal.check(r)
      if (wrong) violation(`${fatal.what}: ${wrong}`)
      fatalSeen = true
      return
    }
    if (!head) return void violation(`an unexpected frame: type ${r.type}, corr ${r.sequence}, ${describe(r.payload.toString('utf8'))}`)
    order.shift()
    const wrong = head.check(r)
    if (wrong) violation(`${head.what} (corr ${head.sequence}): ${wrong}`)
  }
  const s = new Session(id, 'pcr1', run.port, violation, onReply)
  await once(s.socket, 'connect')
  let corr = rng.chance(0.1) ? 0xffffff00 + rng.int(0, 0xf0) : rng.int(1, 1000)
  const nextCorr = () => {
    const n = corr
    corr = (corr + 1) >>> 0 || 1
    return n
  }
  const settled = () => s.closed || order.every((e) => e.droppable)
  const flood = rng.chance(0.15)
  let frames = 0
  let bytes = 0
  let ending: Ending | undefined
  const perSession = rng.int(1, 40)
  while (frames < perSession && run.budget.left > 0 && ending === undefined) {
    const burst: Buffer[] = []
    for (let i = rng.int(1, flood ? 24 : 8); i > 0 && frames < perSession && run.budget.left > 0; i--) {
      const p = planPcr1(rng, nextCorr(), flood)
      run.budget.left--
      frames++
      run.counters.kinds[p.kind] = (run.counters.kinds[p.kind] ?? 0) + 1
      burst.push(p.bytes)
      if (p.expect) order.push(p.expect)
      if (p.fatal) {
        fatal = p.fatal
        ending = 'fatal'
        break
      }
    }
    const all = Buffer.concat(burst)
    bytes += all.length
    await s.write(rng, all)
    if (ending === undefined && rng.chance(0.25)) {
      if (!(await s.until(settled, BOUND_MS))) violation(`no reply within ${BOUND_MS} ms to ${order.map((e) => e.what).join(', ')}`)
    }
    if (s.closed && ending === undefined) {
      violation('the server closed a connection that broke no rule')
      break
    }
  }
  let writtenAt = performance.now()
  if (ending === undefined) {
    ending = rng.weighted([
      [5, 'clean'],
      [3, 'truncated'],
      [1, 'abrupt'],
    ] as const)
    if (ending === 'truncated') {
      const whole = pcr1Frame(P.CONTROL, nextCorr(), Buffer.from('{"action":"ping"}'))
      const cut = rng.int(1, whole.length - 1)
      await s.write(rng, whole.subarray(0, cut))
      fatal = expectPcr1(0, P.CONTROL_REPLY, `the notice for a stream that ended ${cut} bytes into a frame`, failsWith('frame.invalid'))
      frames++
      run.budget.left--
    }
    writtenAt = performance.now()
  }
  if (ending === 'abrupt') {
    s.aborted = true
    s.socket.destroy()
  } else s.socket.end()
  const closedAt = await Promise.race([s.closedAt, new Promise<undefined>((r) => setTimeout(() => r(undefined), BOUND_MS).unref())])
  if (closedAt === undefined) {
    violation(`the connection was still open ${BOUND_MS} ms after a ${ending} ending`)
    s.socket.destroy()
    await s.closedAt
  }
  if (ending !== 'abrupt') {
    if (fatal && !fatalSeen) violation(`no ${fatal.what} before the close`)
    // After a framing error, replies stop at the first request still running (the rest were
    // cancelled); on a clean end every reply arrives.
    const missing = fatal ? order.filter((e, i) => !e.droppable && order.slice(0, i).every((p) => !p.droppable)) : order
    for (const e of missing) violation(`no reply to ${e.what} (corr ${e.sequence}) before a ${ending} close`)
  }
  return { frames, bytes, replies: s.replies, ending, ...(closedAt === undefined ? {} : { closeMs: closedAt - writtenAt }) }
}

// ---- the run --------------------------------------------------------------------------------

/** Options of {@link fuzzWire}. */
export interface WireFuzzOptions {
  protocol: 'v1' | 'pcr1'
  /** Frames to send in all. */
  frames: number
  seed: number
  /** Sessions open at once. @defaultValue 8 */
  concurrency?: number
  /** A server from {@link startFuzzServer} to fuzz; the caller closes it. Else one is started and closed. */
  target?: { server: PolyCallServer; port: number }
}

/** What a run did and found. */
export interface WireFuzzReport {
  protocol: 'v1' | 'pcr1'
  seed: number
  sessions: number
  frames: number
  bytes: number
  replies: number
  endings: Record<Ending, number>
  kinds: Record<string, number>
  /** Time from the last byte written to the close, for sessions that ended by a rule break or an end of stream. */
  closeMs: { max: number; p50: number }
  control: { calls: number; failures: number }
  serverAfter: { connections: number; inFlight: number }
  violations: Violation[]
  ms: number
}

/** Runs sessions against the server until `frames` frames were sent; never throws for a finding. */
export async function fuzzWire(options: WireFuzzOptions): Promise<WireFuzzReport> {
  const started = performance.now()
  const target = options.target ?? (await startFuzzServer(options.protocol))
  const port = target.port
  const run: Run = {
    rng: new Rng(options.seed),
    port,
    counters: { sessions: 0, frames: 0, bytes: 0, replies: 0, endings: { fatal: 0, truncated: 0, clean: 0, abrupt: 0 }, kinds: {}, closeMs: [] },
    violations: [],
    budget: { left: options.frames },
  }
  // The control client: a well-behaved caller that must be served throughout.
  const control = new PolyCallClient({ host: '127.0.0.1', port, protocol: options.protocol, reconnect: false })
  const route = options.protocol === 'v1' ? 'echo' : 'fuzz.echo'
  let fuzzing = true
  const controlStats = { calls: 0, failures: 0 }
  const controlLoop = (async () => {
    while (fuzzing) {
      const n = controlStats.calls++
      try {
        const got = await control.request(route, { n }, { timeout: BOUND_MS })
        if (!isDeepStrictEqual(got, { n })) throw new Error(`echoed ${describe(got)}`)
      } catch (e) {
        controlStats.failures++
        run.violations.push({ session: -1, message: `the control client's call ${n} failed: ${(e as Error).message}` })
      }
      await new Promise((r) => setTimeout(r, 2))
    }
  })()
  const session = options.protocol === 'v1' ? v1Session : pcr1Session
  let nextId = 0
  const worker = async () => {
    while (run.budget.left > 0) {
      const id = nextId++
      try {
        const r = await session(run, id)
        const c = run.counters
        c.sessions++
        c.frames += r.frames
        c.bytes += r.bytes
        c.replies += r.replies
        c.endings[r.ending]++
        if (r.closeMs !== undefined && r.ending !== 'abrupt') c.closeMs.push(r.closeMs)
      } catch (e) {
        run.violations.push({ session: id, message: `the session failed: ${(e as Error).stack ?? String(e)}` })
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker))
  fuzzing = false
  await controlLoop
  await control.close()
  // Every fuzz connection is gone: the server must hold none of them, nor any request.
  let after = { connections: -1, inFlight: -1 }
  const until = performance.now() + BOUND_MS
  while (performance.now() < until) {
    const stats = target.server.stats()
    after = { connections: stats.connections.current, inFlight: stats.requests.inFlight }
    if (after.connections === 0 && after.inFlight === 0) break
    await new Promise((r) => setTimeout(r, 20))
  }
  if (after.connections !== 0 || after.inFlight !== 0) {
    run.violations.push({ session: -1, message: `the server still holds ${after.connections} connections, ${after.inFlight} requests` })
  }
  if (!options.target) await target.server.close({ timeout: 5000 })
  const sorted = [...run.counters.closeMs].sort((a, b) => a - b)
  return {
    protocol: options.protocol,
    seed: options.seed,
    sessions: run.counters.sessions,
    frames: run.counters.frames,
    bytes: run.counters.bytes,
    replies: run.counters.replies,
    endings: run.counters.endings,
    kinds: run.counters.kinds,
    closeMs: { max: sorted.at(-1) ?? 0, p50: sorted[Math.floor(sorted.length / 2)] ?? 0 },
    control: controlStats,
    serverAfter: after,
    violations: run.violations,
    ms: performance.now() - started,
  }
}

/** A report in a few lines, for logs. */
export function summary(r: WireFuzzReport): string {
  const kinds = Object.entries(r.kinds)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ')
  return [
    `${r.protocol}: seed ${r.seed}, ${r.frames} frames (${(r.bytes / 1024).toFixed(0)} KiB) in ${r.sessions} sessions, ${r.replies} replies, ${(r.ms / 1000).toFixed(1)} s`,
    `endings: ${Object.entries(r.endings).map(([k, n]) => `${k} ${n}`).join(', ')}; close after the last byte: p50 ${r.closeMs.p50.toFixed(1)} ms, max ${r.closeMs.max.toFixed(1)} ms`,
    `control client: ${r.control.calls} calls, ${r.control.failures} failed; server afterwards: ${r.serverAfter.connections} connections, ${r.serverAfter.inFlight} requests`,
    `frames: ${kinds}`,
    `violations: ${r.violations.length}`,
    ...r.violations.slice(0, 20).map((v) => `  session ${v.session}: ${v.message}`),
  ].join('\n')
}
