/**
 * Codec benchmark: polycall's native-backed codec against a careful pure-TS codec
 * (benchmarks/pure-ts-codec.ts) and, where it applies, node-polycall's ProtocolHandler; same data,
 * outputs asserted identical before anything is timed. Every row runs in a fresh Node process,
 * three times (`--reps N` for more), the repetitions interleaved across the rows; inside a run the
 * sides alternate (A B ... then ... B A). Tables give the median and the min-max of the runs.
 * node-polycall rows need `POLYCALL_BENCH_NODE_POLYCALL` (the path of a node-polycall checkout)
 * and are skipped, with the reason printed, without it.
 * Run: npm run bench (add --quick for a short smoke run); with --write (not with --quick) it
 * updates benchmarks/results/codec.md.
 */
import { deepStrictEqual, strictEqual } from 'node:assert'
import { fileURLToPath } from 'node:url'
import { Bench } from 'tinybench'
import { FrameDecoder, checksum, encodeFrame, encodeFrameInto, type Frame } from '../ts/index.js'
import { native } from '../ts/native.js'
import { JS_CHECKSUM_MAX, JS_DECODE_MAX, JS_ENCODE_MAX } from '../ts/protocol/fast-path.js'
import { fmt, fmtSpread, loadNodePolycall, machine, randomBytes, repetitions, runRowsInterleaved, spreadOf, table, writeResult } from './common.js'
import { DecoderTs, DecoderTsEach, checksumTs, encodeTs } from './pure-ts-codec.js'

const SIZES = [0, 16, 256, 4096, 65536]
const quick = process.argv.includes('--quick')
const TIME = quick ? 40 : 250
const WARMUP = quick ? 20 : 100

/** What a row process prints: label cells, then nanoseconds per unit of work for every side. */
interface RunResult {
  cells: string[]
  ns: Record<string, number>
  note?: string
}

interface NodePolycallHandler {
  sequence: number
  createMessage(type: number, payload: Uint8Array, flags: number): Buffer
  validateHeader(header: Buffer): { type: number; flags: number; sequence: number; payloadLength: number; checksum: number }
  calculateChecksum(data: Buffer): number
}
const np = loadNodePolycall<{ ProtocolHandler: new () => NodePolycallHandler }>('ProtocolHandler')
const npSkip = 'module' in np ? undefined : np.reason

/**
 * Times every task, in two rounds: the listed order, then reversed. Returns nanoseconds per call
 * of each task (the mean of the two rounds).
 */
async function measure(tasks: [string, () => unknown][]): Promise<Record<string, number>> {
  const sums: Record<string, number> = {}
  for (const round of [tasks, [...tasks].reverse()]) {
    const bench = new Bench({ time: TIME, iterations: 5, warmup: true, warmupTime: WARMUP, warmupIterations: 3 })
    for (const [name, fn] of round) bench.add(name, fn)
    await bench.run()
    for (const task of bench.tasks) {
      const r = task.result as { period?: number; error?: unknown }
      if (!r.period) throw new Error(`task ${task.name} did not complete`, { cause: r.error })
      sums[task.name] = (sums[task.name] ?? 0) + (r.period * 1e6) / 2
    }
  }
  return sums
}

const frameKey = (f: Frame) => [f.type, f.flags, f.sequence, f.checksum, Buffer.from(f.payload).toString('hex')].join(':')

function chunksOf(frames: Buffer[], chunkBytes: number): Buffer[] {
  const chunks: Buffer[] = []
  let current: Buffer[] = []
  let bytes = 0
  for (const f of frames) {
    if (bytes + f.length > chunkBytes && current.length) {
      chunks.push(Buffer.concat(current))
      current = []
      bytes = 0
    }
    current.push(f)
    bytes += f.length
  }
  if (current.length) chunks.push(Buffer.concat(current))
  return chunks
}

async function encodeRow(size: number): Promise<RunResult> {
  const payload = randomBytes(size)
  const batch = Math.max(1, Math.floor(65536 / (size + 16)))
  const arena = Buffer.allocUnsafe(batch * (size + 16))
  const forcedNative = (seq: number) => {
    const out = Buffer.allocUnsafe(16 + payload.length)
    native.encodeInto(out, 3, 8, seq, payload)
    return out
  }
  const want = encodeTs({ type: 3, flags: 8, sequence: 7, payload })
  deepStrictEqual(encodeFrame({ type: 3, flags: 8, sequence: 7, payload }), want)
  deepStrictEqual(forcedNative(7), want)
  strictEqual(encodeFrameInto(arena, 0, { type: 3, flags: 8, sequence: 7, payload }), want.length)
  deepStrictEqual(arena.subarray(0, want.length), want)
  const tasks: [string, () => unknown][] = [
    [
      'polycall',
      () => {
        for (let i = 0; i < batch; i++) encodeFrame({ type: 3, flags: 8, sequence: i, payload })
      },
    ],
    [
      'ts',
      () => {
        for (let i = 0; i < batch; i++) encodeTs({ type: 3, flags: 8, sequence: i, payload })
      },
    ],
    [
      'into',
      () => {
        let at = 0
        for (let i = 0; i < batch; i++) at = encodeFrameInto(arena, at, { type: 3, flags: 8, sequence: i, payload })
      },
    ],
    [
      'forced',
      () => {
        for (let i = 0; i < batch; i++) forcedNative(i)
      },
    ],
  ]
  if ('module' in np) {
    // node-polycall numbers frames itself (a sequence counter on the handler), takes the flags
    // as an argument and copies the payload; the bytes it writes are the same.
    const h = new np.module.ProtocolHandler()
    h.sequence = 7
    deepStrictEqual(h.createMessage(3, payload, 8), want)
    tasks.push([
      'np',
      () => {
        for (let i = 0; i < batch; i++) h.createMessage(3, payload, 8)
      },
    ])
  }
  const ns = await measure(tasks)
  for (const k of Object.keys(ns)) ns[k]! /= batch
  const path = size <= JS_ENCODE_MAX ? 'TS fast path' : 'native'
  return { cells: [`${size} B`, path], ns }
}

let sink = 0
const onFrame = (_type: number, _flags: number, sequence: number, _bytes: Uint8Array, start: number, length: number): void => {
  sink = (sink + sequence + start + length) | 0
}

async function decodeRow(size: number, coalesced: boolean): Promise<RunResult> {
  const payload = randomBytes(size)
  const chunkBytes = 1 << 20
  // About 2 MiB of frames coalesced, fewer when each frame is its own chunk.
  const count = coalesced ? Math.max(32, Math.floor((2 << 20) / (size + 16))) : Math.max(16, Math.min(4096, Math.floor((1 << 20) / (size + 16))))
  const frames = Array.from({ length: count }, (_, i) => encodeFrame({ type: 3, flags: 8, sequence: i, payload }))
  const chunks = coalesced ? chunksOf(frames, chunkBytes) : frames.map((f) => Buffer.from(f))
  // Same frames from every side first.
  const a: Frame[] = []
  const b: Frame[] = []
  const c: string[] = []
  const e: string[] = []
  const d1 = new FrameDecoder()
  const d2 = new DecoderTs()
  const d3 = new FrameDecoder()
  const d4 = new DecoderTsEach()
  const key = (type: number, flags: number, sequence: number, bytes: Uint8Array, start: number, length: number) =>
    [type, flags, sequence, checksumTs(bytes, start, start + length), Buffer.from(bytes.subarray(start, start + length)).toString('hex')].join(':')
  for (const chunk of chunks) {
    a.push(...d1.push(chunk))
    b.push(...d2.push(chunk))
    d3.push(chunk, (...f) => c.push(key(...f)))
    d4.push(chunk, (...f) => e.push(key(...f)))
  }
  d1.free()
  d3.free()
  const want = b.map(frameKey)
  strictEqual(want.length, frames.length)
  deepStrictEqual(a.map(frameKey), want)
  deepStrictEqual(c, want)
  deepStrictEqual(e, want)
  const tasks: [string, () => unknown][] = [
    [
      'polycall',
      () => {
        const d = new FrameDecoder()
        let n = 0
        for (const chunk of chunks) n += d.push(chunk).length
        d.free()
        return n
      },
    ],
    [
      'ts',
      () => {
        const d = new DecoderTs()
        let n = 0
        for (const chunk of chunks) n += d.push(chunk).length
        return n
      },
    ],
    [
      'each',
      () => {
        const d = new FrameDecoder()
        let n = 0
        for (const chunk of chunks) n += d.push(chunk, onFrame)
        d.free()
        return n
      },
    ],
    [
      'tsEach',
      () => {
        const d = new DecoderTsEach()
        let n = 0
        for (const chunk of chunks) n += d.push(chunk, onFrame)
        return n
      },
    ],
  ]
  let note: string | undefined
  if ('module' in np && !coalesced) {
    // node-polycall has no stream decoder: processMessage takes one whole frame, validates the
    // header, slices the payload and checks the checksum, then dispatches to async handlers.
    // Timed here: that work without the dispatch, per frame.
    const h = new np.module.ProtocolHandler()
    const npDecode = (chunk: Buffer) => {
      const header = h.validateHeader(chunk.subarray(0, 16))
      const body = chunk.subarray(16)
      if (body.length !== header.payloadLength || h.calculateChecksum(body) !== header.checksum) throw new Error('node-polycall refused a frame')
      return header
    }
    deepStrictEqual(
      chunks.map((chunk) => {
        const header = npDecode(chunk)
        return [header.type, header.flags, header.sequence, header.checksum, chunk.subarray(16).toString('hex')].join(':')
      }),
      want,
    )
    tasks.push([
      'np',
      () => {
        let n = 0
        for (const chunk of chunks) n += npDecode(chunk).payloadLength
        return n
      },
    ])
  } else if ('module' in np) note = 'node-polycall has no stream decoder (one whole frame per call)'
  const ns = await measure(tasks)
  for (const k of Object.keys(ns)) ns[k]! /= frames.length
  const mode = coalesced ? 'coalesced (1 MiB chunks)' : 'one frame per chunk'
  return { cells: [`${size} B`, mode, fmt(frames.length / chunks.length, 0)], ns, ...(note ? { note } : {}) }
}

async function checksumRow(kind: string): Promise<RunResult> {
  if (kind === 'random' || kind === 'flat') {
    const data = kind === 'random' ? randomBytes(64 << 20) : Buffer.alloc(64 << 20, 7)
    if (checksum(data) !== checksumTs(data)) throw new Error('checksum mismatch')
    const ns = await measure([
      ['polycall', () => native.checksum(data)],
      ['ts', () => checksumTs(data)],
    ])
    for (const k of Object.keys(ns)) ns[k]! /= data.length
    return { cells: [kind === 'random' ? '64 MiB pseudo-random' : '64 MiB of one repeated byte'], ns }
  }
  const size = Number(kind)
  const data = randomBytes(size)
  if (native.checksum(data) !== checksumTs(data)) throw new Error('checksum mismatch')
  const reps = Math.max(1, Math.floor(262144 / size))
  const ns = await measure([
    [
      'polycall',
      () => {
        for (let i = 0; i < reps; i++) native.checksum(data)
      },
    ],
    [
      'ts',
      () => {
        for (let i = 0; i < reps; i++) checksumTs(data)
      },
    ],
  ])
  for (const k of Object.keys(ns)) ns[k]! /= reps * size
  return { cells: [`${size} B, native call vs TS loop`], ns }
}

async function runRow(spec: string): Promise<RunResult> {
  const [kind, arg, extra] = spec.split(':')
  if (kind === 'encode') return encodeRow(Number(arg))
  if (kind === 'decode') return decodeRow(Number(arg), extra === 'coalesced')
  return checksumRow(arg!)
}

const rowArg = process.argv.indexOf('--row')
if (rowArg > 0) {
  console.log(JSON.stringify(await runRow(process.argv[rowArg + 1]!)))
} else {
  if (npSkip) console.log(`node-polycall rows skipped: ${npSkip}`)
  const reps = repetitions()
  const encodeSpecs = SIZES.map((s) => `encode:${s}`)
  const decodeSpecs = SIZES.flatMap((s) => [`decode:${s}:coalesced`, `decode:${s}:single`])
  const checksumSpecs = ['random', 'flat', '256', '1024', '2048', '4096', '65536'].map((k) => `checksum:${k}`)
  const runs = runRowsInterleaved<RunResult>(fileURLToPath(import.meta.url), [...encodeSpecs, ...decodeSpecs, ...checksumSpecs], reps, quick ? ['--quick'] : [])

  /** Median and range of one side's figure, in `unit` per ns-figure scale. */
  const side = (spec: string, k: string, scale = 1, digits = 1) => fmtSpread(spreadOf(runs.get(spec)!.map((r) => (r.ns[k] ?? NaN) * scale)), digits)
  /** Median and range of `base / ours` over the runs (each run's own pair): above 1, ours is faster. */
  const ratio = (spec: string, ours: string, base: string, bold = true) =>
    fmtSpread(spreadOf(runs.get(spec)!.map((r) => (r.ns[base] ?? NaN) / (r.ns[ours] ?? NaN))), 2, 'x', bold)
  const cells = (spec: string) => runs.get(spec)![0]!.cells
  const npCell = (spec: string, k: string, ours: string) => {
    if (npSkip) return ['skipped', 'skipped']
    const note = runs.get(spec)![0]!.note
    if (note) return ['n/a', 'n/a']
    return [side(spec, k), ratio(spec, ours, k, false)]
  }
  const encodeRows = encodeSpecs.map((s) => [
    ...cells(s),
    side(s, 'polycall'),
    side(s, 'ts'),
    ratio(s, 'polycall', 'ts'),
    side(s, 'into'),
    ratio(s, 'into', 'ts', false),
    ...npCell(s, 'np', 'polycall'),
    side(s, 'forced'),
    ratio(s, 'forced', 'ts', false),
  ])
  const decodeRows = decodeSpecs.map((s) => [
    ...cells(s),
    side(s, 'polycall'),
    side(s, 'ts'),
    ratio(s, 'polycall', 'ts'),
    side(s, 'each'),
    side(s, 'tsEach'),
    ratio(s, 'each', 'tsEach'),
    ...npCell(s, 'np', 'each'),
  ])
  const mbs = 1e3 // bytes per ns -> MB/s
  const checksumRows = checksumSpecs.map((s) => {
    const mb = (k: string) => fmtSpread(spreadOf(runs.get(s)!.map((r) => mbs / r.ns[k]!)), 0)
    return [...cells(s), mb('polycall'), mb('ts'), ratio(s, 'polycall', 'ts', s === 'checksum:random' || s === 'checksum:flat')]
  })
  const npLine = npSkip
    ? `node-polycall columns: skipped (${npSkip}).`
    : 'node-polycall columns: its `ProtocolHandler` (`createMessage`; for decoding `validateHeader`, the payload slice and `calculateChecksum`, the work of `processMessage` before it dispatches), loaded from `POLYCALL_BENCH_NODE_POLYCALL`; its bytes and fields are asserted identical to ours first.'

  const md = `# Codec benchmark

\`npm run bench\` (benchmarks/codec.bench.ts). polycall's codec against a careful pure-TS codec
(benchmarks/pure-ts-codec.ts: the same validation, zero-copy payload views, a preallocated
assembly buffer, an unrolled checksum loop; for decoding both a Frame-array decoder and a
per-frame-callback decoder with no object per frame) and node-polycall's \`ProtocolHandler\`, on
the same pseudo-random payloads. Every row runs in its own Node process, ${reps} times, the runs of
all rows interleaved; inside a run the sides alternate (listed order, then reversed). Cells give
the **median** of the runs and their min-max; a ratio is taken inside each run (both sides of
that run) and then summarised the same way. Ratios above 1 mean polycall is faster. Outputs are
asserted identical before anything is timed.

${npLine} Set it to a node-polycall checkout to include them (the package is never a dependency).

${machine()}

## Encode, ns per frame

\`encodeFrame\` against \`encodeTs\`: the same argument checks on both sides (an object with an
integer type 1..6, flags 0..0xffff, sequence 0..2^32-1, a Uint8Array payload up to 1 MiB, flags
defaulting by type), both returning a new Buffer. Payloads up to ${JS_ENCODE_MAX} bytes take
polycall's TS fast path; larger ones call the Rust core. \`encodeFrameInto\` writes into one
caller-owned buffer (same checks, plus the target and offset). The last two columns force the
native call at every size, which is where the threshold comes from.

${table(['payload', 'polycall path', 'encodeFrame', 'pure TS', 'ratio', 'encodeFrameInto', 'ratio', 'node-polycall', 'encodeFrame / node-polycall', 'native call forced', 'ratio'], encodeRows)}

## Decode, ns per frame

\`push(chunk)\` returns \`Frame[]\` (one native call per chunk, zero-copy payload views); the
callback form \`push(chunk, onFrame)\` hands each frame's header fields as numbers and its payload
location to \`onFrame\`, with no object per frame. Chunks up to ${JS_DECODE_MAX} bytes are decoded in
TS. Each callback form is timed against the pure-JS callback decoder, the array form against the
pure-TS array decoder.

${table(['payload', 'chunking', 'frames/chunk', 'push() Frame[]', 'pure TS Frame[]', 'ratio', 'push(chunk, onFrame)', 'pure-JS callback', 'ratio', 'node-polycall', 'callback form / node-polycall'], decodeRows)}

## Checksum, MB/s

The public \`checksum()\` takes the TS loop below ${JS_CHECKSUM_MAX + 1} bytes and the native call
from there on. The native checksum runs eight exact chains at once from predicted segment starts
(crates/polycall-core/src/checksum.rs); inputs made of one repeated byte defeat the prediction and
fall back to the serial loop.

${table(['input', 'native', 'pure TS', 'ratio'], checksumRows)}
`
  console.log(`\n${md}\n${writeResult('codec.md', md)}`)
}
