/**
 * Codec benchmark: polycall's native-backed codec against a careful pure-TS codec
 * (benchmarks/pure-ts-codec.ts), same data, rotated run order, outputs asserted identical.
 * Every row runs in a fresh Node process so one row's JIT state cannot skew the next.
 * Run: npm run bench (add --quick for a short smoke run); with --write (not with --quick) it
 * updates benchmarks/results/codec.md.
 */
import { execFileSync } from 'node:child_process'
import { deepStrictEqual } from 'node:assert'
import { fileURLToPath } from 'node:url'
import { Bench } from 'tinybench'
import { FrameDecoder, checksum, encodeFrame, type Frame } from '../ts/index.js'
import { native } from '../ts/native.js'
import { JS_CHECKSUM_MAX, JS_ENCODE_MAX } from '../ts/protocol/fast-path.js'
import { fmt, machine, randomBytes, table, writeResult } from './common.js'
import { DecoderTs, checksumTs, encodeTs } from './pure-ts-codec.js'

const SIZES = [16, 256, 4096, 65536]
const quick = process.argv.includes('--quick')
const TIME = quick ? 60 : 500

interface Pair {
  native: number // ops/s
  ts: number
}

/** Runs both functions in alternating order (native first, then TS first) and averages. */
async function pair(nativeFn: () => unknown, tsFn: () => unknown): Promise<Pair> {
  const sums = { native: 0, ts: 0 }
  const rounds = [0, 1, 0, 1]
  for (const order of rounds) {
    const bench = new Bench({ time: TIME, warmup: true, warmupTime: 100 })
    if (order === 0) bench.add('native', nativeFn).add('ts', tsFn)
    else bench.add('ts', tsFn).add('native', nativeFn)
    await bench.run()
    for (const task of bench.tasks) {
      const r = task.result as { period?: number }
      if (!r.period) throw new Error(`task ${task.name} did not complete`)
      sums[task.name as 'native' | 'ts'] += 1000 / r.period
    }
  }
  return { native: sums.native / rounds.length, ts: sums.ts / rounds.length }
}

const frameKey = (f: Frame) => [f.type, f.flags, f.sequence, f.checksum, f.payload.toString('hex')].join(':')

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

type Row = (string | number)[]

async function encodeRow(size: number): Promise<Row> {
  const payload = randomBytes(size)
  const batch = Math.max(1, Math.floor(65536 / (size + 16)))
  const forcedNative = (seq: number) => {
    const out = Buffer.allocUnsafe(16 + payload.length)
    native.encodeInto(out, 3, 8, seq, payload)
    return out
  }
  deepStrictEqual(encodeFrame({ type: 3, flags: 8, sequence: 7, payload }), encodeTs({ type: 3, flags: 8, sequence: 7, payload }))
  deepStrictEqual(forcedNative(7), encodeTs({ type: 3, flags: 8, sequence: 7, payload }))
  const tsBatch = () => {
    for (let i = 0; i < batch; i++) encodeTs({ type: 3, flags: 8, sequence: i, payload })
  }
  const r = await pair(() => {
    for (let i = 0; i < batch; i++) encodeFrame({ type: 3, flags: 8, sequence: i, payload })
  }, tsBatch)
  const forced = await pair(() => {
    for (let i = 0; i < batch; i++) forcedNative(i)
  }, tsBatch)
  const ns = (ops: number) => fmt(1e9 / (ops * batch))
  const path = size <= JS_ENCODE_MAX ? 'TS fast path' : 'native'
  return [`${size} B`, path, ns(r.native), ns(r.ts), `**${fmt(r.native / r.ts, 2)}x**`, ns(forced.native), `${fmt(forced.native / forced.ts, 2)}x`]
}

async function decodeRow(size: number, coalesced: boolean): Promise<Row> {
  const payload = randomBytes(size)
  const count = size >= 65536 ? 64 : Math.ceil((4 * 65536) / (size + 16))
  const frames = Array.from({ length: count }, (_, i) => encodeFrame({ type: 3, flags: 8, sequence: i, payload }))
  const chunkBytes = size >= 65536 ? 1 << 20 : 65536
  const chunks = coalesced ? chunksOf(frames, chunkBytes) : frames
  const a: Frame[] = []
  const b: Frame[] = []
  const d1 = new FrameDecoder()
  const d2 = new DecoderTs()
  for (const c of chunks) {
    a.push(...d1.push(c))
    b.push(...d2.push(c))
  }
  deepStrictEqual(a.map(frameKey), b.map(frameKey))
  if (a.length !== frames.length) throw new Error('frame count')
  const r = await pair(
    () => {
      const d = new FrameDecoder()
      let n = 0
      for (const c of chunks) n += d.push(c).length
      d.free()
      return n
    },
    () => {
      const d = new DecoderTs()
      let n = 0
      for (const c of chunks) n += d.push(c).length
      return n
    },
  )
  const ns = (ops: number) => fmt(1e9 / (ops * frames.length))
  const mode = coalesced ? `coalesced (${chunkBytes >= 1 << 20 ? '1 MiB' : '64 KiB'} chunks)` : 'one frame per chunk'
  return [`${size} B`, mode, fmt(frames.length / chunks.length, 0), ns(r.native), ns(r.ts), `**${fmt(r.native / r.ts, 2)}x**`]
}

async function checksumRow(kind: string): Promise<Row> {
  if (kind === 'random' || kind === 'flat') {
    const data = kind === 'random' ? randomBytes(64 << 20) : Buffer.alloc(64 << 20, 7)
    if (checksum(data) !== checksumTs(data)) throw new Error('checksum mismatch')
    const r = await pair(
      () => native.checksum(data),
      () => checksumTs(data),
    )
    const mbs = (ops: number) => fmt((ops * data.length) / 1e6, 0)
    const label = kind === 'random' ? '64 MiB pseudo-random' : '64 MiB of one repeated byte'
    return [label, mbs(r.native), mbs(r.ts), `**${fmt(r.native / r.ts, 2)}x**`]
  }
  const size = Number(kind)
  const data = randomBytes(size)
  if (native.checksum(data) !== checksumTs(data)) throw new Error('checksum mismatch')
  const reps = Math.max(1, Math.floor(262144 / size))
  const r = await pair(
    () => {
      for (let i = 0; i < reps; i++) native.checksum(data)
    },
    () => {
      for (let i = 0; i < reps; i++) checksumTs(data)
    },
  )
  const mbs = (ops: number) => fmt((ops * reps * size) / 1e6, 0)
  return [`${size} B, native call vs TS loop`, mbs(r.native), mbs(r.ts), `${fmt(r.native / r.ts, 2)}x`]
}

async function runRow(spec: string): Promise<Row> {
  const [kind, arg, extra] = spec.split(':')
  if (kind === 'encode') return encodeRow(Number(arg))
  if (kind === 'decode') return decodeRow(Number(arg), extra === 'coalesced')
  return checksumRow(arg!)
}

const rowArg = process.argv.indexOf('--row')
if (rowArg > 0) {
  console.log(JSON.stringify(await runRow(process.argv[rowArg + 1]!)))
} else {
  const self = fileURLToPath(import.meta.url)
  const run = (spec: string): Row => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--row', spec, ...(quick ? ['--quick'] : [])], {
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    })
    const row = JSON.parse(out.trim().split('\n').at(-1)!) as Row
    console.log(`${spec.padEnd(24)} ${row.join(' | ')}`)
    return row
  }
  const encodeRows = SIZES.map((s) => run(`encode:${s}`))
  const decodeRows = SIZES.flatMap((s) => [run(`decode:${s}:coalesced`), run(`decode:${s}:single`)])
  const checksumRows = ['random', 'flat', '256', '1024', '2048', '4096', '65536'].map((k) => run(`checksum:${k}`))

  const md = `# Codec benchmark

\`npm run bench\` (benchmarks/codec.bench.ts). polycall's codec against a careful pure-TS codec
(benchmarks/pure-ts-codec.ts: the same validation, zero-copy payload views, a preallocated
assembly buffer, a 4x-unrolled checksum loop), on the same pseudo-random payloads. Each row runs
in its own Node process; within it both sides run four times with the order rotated, and the
outputs are asserted identical first. Ratios above 1 mean polycall is faster.

${machine()}

## Encode (\`encodeFrame\` vs pure TS), ns per frame

Payloads up to ${JS_ENCODE_MAX} bytes take polycall's TS fast path, because a native call costs
more than the work there; larger ones call the Rust core. The last two columns force the native
call at every size, which is where that threshold comes from.

${table(['payload', 'polycall path', 'polycall', 'pure TS', 'ratio', 'native call forced', 'forced ratio'], encodeRows)}

## Decode (\`FrameDecoder.push\` vs pure TS), ns per frame

One native call per pushed chunk; payloads are zero-copy Buffer views of the chunk.

${table(['payload', 'chunking', 'frames/chunk', 'polycall', 'pure TS', 'ratio'], decodeRows)}

## Checksum, MB/s

The public \`checksum()\` takes the TS loop below ${JS_CHECKSUM_MAX + 1} bytes and the native call
from there on. The native checksum runs eight exact chains at once from predicted segment starts
(crates/polycall-core/src/checksum.rs); inputs made of one repeated byte defeat the prediction and
fall back to the serial loop.

${table(['input', 'native', 'pure TS', 'ratio'], checksumRows)}
`
  console.log(`\n${writeResult('codec.md', md)}`)
}
