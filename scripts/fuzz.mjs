#!/usr/bin/env node
// Runs the cargo-fuzz targets of crates/polycall-core/fuzz (docs/fuzzing.md).
//
//   npm run fuzz -- [--seconds N] [--target T]... [--sanitizer none|address] [--seeds-only] [--totals]
//
// Installs the nightly toolchain (rustup) and cargo-fuzz (cargo install --locked) when they are
// missing, writes seed inputs derived from crates/polycall-core/tests/vectors/protocol-vectors.json
// into each target's corpus directory, runs each target for N seconds (default 30), and prints
// the executions and execs/s libFuzzer reports. Every run is appended to
// crates/polycall-core/fuzz/target/fuzz-stats.jsonl; --totals sums that log per target.
// Exits non-zero when a target crashes or fails a property (the input is in fuzz/artifacts/).
import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const fuzzDir = join(root, 'crates/polycall-core/fuzz')
const statsFile = join(fuzzDir, 'target/fuzz-stats.jsonl')
export const TARGETS = ['frame_decoder', 'pcr1_decoder', 'handshake', 'snapshot', 'snapshot_bytes', 'secure_handshake', 'sealed_opener', 'lz4_payload']

function parseArgs(argv) {
  const out = { seconds: 30, targets: [], seedsOnly: false, totals: false, sanitizer: 'none' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const value = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value`)
      return v
    }
    if (a === '--seconds') out.seconds = Number(value())
    else if (a === '--target') out.targets.push(...value().split(','))
    else if (a === '--sanitizer') out.sanitizer = value()
    else if (a === '--seeds-only') out.seedsOnly = true
    else if (a === '--totals') out.totals = true
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run fuzz -- [--seconds N] [--target T]... [--sanitizer none|address] [--seeds-only] [--totals]')
      console.log(`targets: ${TARGETS.join(', ')}`)
      process.exit(0)
    } else throw new Error(`unknown argument ${a}`)
  }
  if (!Number.isInteger(out.seconds) || out.seconds < 1) throw new Error('--seconds must be a whole number of seconds ≥ 1')
  for (const t of out.targets) if (!TARGETS.includes(t)) throw new Error(`unknown target ${t} (have ${TARGETS.join(', ')})`)
  if (out.targets.length === 0) out.targets = [...TARGETS]
  return out
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...options })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`)
}

function works(cmd, args) {
  return spawnSync(cmd, args, { stdio: 'ignore', cwd: fuzzDir }).status === 0
}

function ensureTools() {
  if (!works('cargo', ['+nightly', '--version'])) {
    console.log('== installing the nightly toolchain (rustup toolchain install nightly --profile minimal)')
    run('rustup', ['toolchain', 'install', 'nightly', '--profile', 'minimal'])
  }
  if (!works('cargo', ['+nightly', 'fuzz', '--version'])) {
    console.log('== installing cargo-fuzz (cargo install cargo-fuzz --locked)')
    run('cargo', ['install', 'cargo-fuzz', '--locked'])
  }
}

// ---- seeds ---------------------------------------------------------------------------------

const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

/** Java's String.hashCode over UTF-16 units, unsigned: node-polycall's state checksum. */
function javaHash(text) {
  let h = 0
  for (let i = 0; i < text.length; i++) h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0
  return h >>> 0
}

/** A decoder-target input: control byte (cut count, low-limit bit), cuts, then the stream. */
function streamInput(stream, cuts = [], lowLimit) {
  const usable = cuts.filter((c) => c >= 1 && c <= 256).slice(0, 31)
  const control = usable.length | (lowLimit === undefined ? 0 : 0x20)
  const head = [control]
  if (lowLimit !== undefined) head.push(lowLimit)
  return Buffer.concat([Buffer.from(head), Buffer.from(usable.map((c) => c - 1)), stream])
}

function pcr1Frame(type, corr, payload, { magic = 'PCR1', flags = 0, reserved = 0, length } = {}) {
  const body = Buffer.from(payload)
  const h = Buffer.alloc(16)
  h.write(magic, 0, 'latin1')
  h[4] = type
  h[5] = flags
  h.writeUInt16BE(reserved, 6)
  h.writeUInt32BE(corr >>> 0, 8)
  h.writeUInt32BE(length ?? body.length, 12)
  return Buffer.concat([h, body])
}

function v1Seeds(v) {
  const out = {}
  // The 1 MiB vector carries only its header: as a seed it is a stream cut after the header.
  const frameBytes = (f) => hex(f.frame_hex ?? f.header_hex)
  const frames = v.frames.map(frameBytes)
  for (const f of v.frames) {
    const bytes = frameBytes(f)
    if (bytes.length > 4096) continue
    out[`frame-${f.name}`] = streamInput(bytes)
    out[`frame-${f.name}-split`] = streamInput(bytes, [1, 7, 16])
  }
  for (const f of v.invalid_frames) out[`invalid-${f.name}`] = streamInput(hex(f.bytes_hex))
  for (const s of v.streams) {
    // Chunked streams keep their chunk lengths as the cuts; fixed-size chunking becomes one cut.
    if (s.chunks_hex) {
      const chunks = s.chunks_hex.map(hex)
      out[`stream-${s.name}`] = streamInput(Buffer.concat(chunks), chunks.map((c) => c.length))
    } else out[`stream-${s.name}`] = streamInput(hex(s.stream_hex), [s.chunk_size])
  }
  const small = Buffer.concat(frames.filter((f) => f.length <= 256))
  out['all-small-frames'] = streamInput(small, [3, 16, 5, 64])
  out['all-small-frames-low-limit'] = streamInput(small, [], 4)
  out['handshake-then-garbage'] = streamInput(Buffer.concat([hex(v.handshake.long_form.frame_hex), Buffer.from('GET / HTTP/1.1\r\n\r\n')]))
  return out
}

function pcr1Seeds(v) {
  const out = {}
  const request = '{"service":"inventory","operation":"get","deadline_ms":2000,"input":{"item_id":"widget-a"}}'
  const response = '{"ok":true,"output":{"item_id":"widget-a","quantity":42,"in_stock":true}}'
  const ping = '{"action":"ping"}'
  const pong = '{"ok":true,"data":{"pong":true,"abi":1}}'
  const fatal = '{"ok":false,"error":{"code":"frame.invalid","message":"bad magic, type, reserved bits or length"}}'
  const exchange = [pcr1Frame(1, 7, request), pcr1Frame(2, 7, response), pcr1Frame(3, 21, ping), pcr1Frame(4, 21, pong), pcr1Frame(4, 0, fatal)]
  exchange.forEach((f, i) => (out[`spec-${i}`] = streamInput(f)))
  out['spec-exchange'] = streamInput(Buffer.concat(exchange), [5, 16, 1, 90])
  // The v1 vectors' payloads, carried in each PCR1 type.
  for (const f of v.frames) {
    if (f.payload_length > 512 || f.payload_hex === undefined) continue
    out[`payload-${f.name}`] = streamInput(pcr1Frame(1 + (f.type % 4), f.sequence, hex(f.payload_hex)))
  }
  out['bad-magic'] = streamInput(pcr1Frame(1, 1, ping, { magic: 'PCR2' }))
  out['v1-frame'] = streamInput(hex(v.frames[0].frame_hex))
  out['type-5'] = streamInput(pcr1Frame(5, 1, ping))
  out['flags'] = streamInput(pcr1Frame(1, 1, ping, { flags: 1 }))
  out['reserved'] = streamInput(pcr1Frame(1, 1, ping, { reserved: 0x100 }))
  out['too-large'] = streamInput(pcr1Frame(1, 1, '', { length: 1_048_577 }))
  out['truncated'] = streamInput(pcr1Frame(1, 9, request).subarray(0, 40))
  out['low-limit'] = streamInput(Buffer.concat(exchange), [], 8)
  return out
}

function handshakeSeeds(v) {
  const out = {}
  const h = v.handshake
  out['long'] = hex(h.long_form.payload_hex)
  out['long-garbage-pad'] = hex(h.long_form.variant_with_garbage_pad_hex)
  out['short'] = hex(h.short_form_payload_hex)
  for (const bad of h.invalid) out[`invalid-${bad.name}`] = hex(bad.payload_hex)
  for (const f of v.frames) if (f.type === 1) out[`frame-${f.name}`] = hex(f.payload_hex)
  // polycall's extended long form: capability bits and the in-flight limit.
  out['extended'] = Buffer.concat([hex(h.long_form.payload_hex).subarray(0, 6), Buffer.from([7, 0, 0, 1, 0, 0])])
  out['empty'] = Buffer.alloc(0)
  return out
}

/**
 * Machine snapshots built from the vectors' node-polycall states. Input layout of the snapshot
 * target: one mode byte (bit 0 reseal, bit 1 lock a live state, bit 2 legacy), then the text.
 */
function snapshotSeeds(v) {
  const out = {}
  const states = v.state_machine.js_state_checksum.filter((s) => s.json !== '{}').map((s) => ({ json: s.json, checksum: s.checksum, state: JSON.parse(s.json) }))
  const T = 1_700_000_000_000
  const entry = (s, extra = {}) => ({ name: s.state.name, snapshot: { timestamp: T, state: s.state, checksum: s.checksum }, ...extra })
  const named = new Set(states.map((s) => s.state.name))
  const plain = (name, transitions = []) => {
    const state = { name, isLocked: false, endpoint: `/${name.toLowerCase()}`, metadata: { createdAt: T, version: 1, lastModified: T }, transitions }
    return { json: JSON.stringify(state), checksum: javaHash(JSON.stringify(state)), state }
  }
  // Every state the vectors' transitions name, so the snapshot is consistent.
  const extra = []
  for (const s of states) for (const t of s.state.transitions) if (!named.has(t)) (named.add(t), extra.push(plain(t)))
  const all = [...states, ...extra]
  const first = all[0].state.name
  const edge = all.find((s) => s.state.transitions.length > 0)
  const history = edge ? [{ timestamp: T + 1, from: edge.state.name, to: edge.state.transitions[0] }] : []
  const legacy = { timestamp: T, currentState: history.at(-1)?.to ?? first, states: all.map((s) => entry(s)), history }
  const table = all.flatMap((s) => s.state.transitions.map((to) => ({ from: s.state.name, to })))
  const body = { format: 'polycall.state-machine/1', timestamp: T, currentState: legacy.currentState, states: all.map((s) => entry(s, { final: false })), transitions: table, history }
  const ours = { ...body, checksum: javaHash(JSON.stringify(body)) }
  const text = (o) => Buffer.from(JSON.stringify(o))
  const withMode = (mode, buf) => Buffer.concat([Buffer.from([mode]), buf])
  out['polycall'] = withMode(0, text(ours))
  out['polycall-onto-locked'] = withMode(2, text(ours))
  out['polycall-resealed'] = withMode(1, text(ours))
  out['node-polycall'] = withMode(0, text(legacy))
  out['node-polycall-legacy'] = withMode(4, text(legacy))
  out['node-polycall-legacy-resealed'] = withMode(5, text(legacy))
  out['node-polycall-empty-history'] = withMode(5, text({ ...legacy, currentState: first, history: [] }))
  out['stripped'] = withMode(4, text({ ...legacy, states: body.states }))
  for (const s of states) out[`state-${s.state.name}`] = withMode(0, text({ timestamp: T, state: s.state, checksum: s.checksum }))
  return out
}

export function seeds() {
  const v = JSON.parse(readFileSync(join(root, 'crates/polycall-core/tests/vectors/protocol-vectors.json'), 'utf8'))
  // The secure targets build their sessions and sealed frames themselves from the input, and
  // snapshot_bytes starts from a compact snapshot of a live machine (its mode bit 2): they
  // start from an empty corpus.
  return {
    frame_decoder: v1Seeds(v),
    pcr1_decoder: pcr1Seeds(v),
    handshake: handshakeSeeds(v),
    snapshot: snapshotSeeds(v),
    snapshot_bytes: {},
    secure_handshake: {},
    sealed_opener: {},
    lz4_payload: {},
  }
}

/** Writes the seeds into corpus/<target>/ (ignored by git); names are content hashes, so reruns add nothing. */
function writeSeeds(targets) {
  const all = seeds()
  for (const t of targets) {
    const dir = join(fuzzDir, 'corpus', t)
    mkdirSync(dir, { recursive: true })
    let added = 0
    for (const bytes of Object.values(all[t])) {
      const file = join(dir, `seed-${createHash('sha1').update(bytes).digest('hex')}`)
      if (!existsSync(file)) {
        writeFileSync(file, bytes)
        added++
      }
    }
    console.log(`== ${t}: ${Object.keys(all[t]).length} seeds (${added} new) in ${dir}`)
  }
}

// ---- running -------------------------------------------------------------------------------

function fuzz(target, seconds, sanitizer) {
  return new Promise((resolve) => {
    // No sanitizer by default: the core forbids unsafe code, so AddressSanitizer has nothing to
    // find there and would halve the executions. Debug assertions (overflow checks) stay on.
    const args = ['+nightly', 'fuzz', 'run', '--sanitizer', sanitizer, target, join('corpus', target), '--']
    args.push(`-max_total_time=${seconds}`, '-print_final_stats=1', '-rss_limit_mb=1024')
    console.log(`== cargo ${args.join(' ')}`)
    const started = Date.now()
    const child = spawn('cargo', args, { cwd: fuzzDir, stdio: ['ignore', 'inherit', 'pipe'] })
    let tail = ''
    child.stderr.on('data', (chunk) => {
      process.stderr.write(chunk)
      tail = (tail + chunk.toString('utf8')).slice(-64 * 1024)
    })
    child.on('close', (code, signal) => {
      const stat = (name) => {
        const m = new RegExp(`stat::${name}:\\s+(\\d+)`).exec(tail)
        return m ? Number(m[1]) : undefined
      }
      const executions = stat('number_of_executed_units')
      const execsPerSecond = stat('average_exec_per_sec')
      // libFuzzer exits 72 when interrupted (Ctrl-C): a stopped run, not a finding.
      const interrupted = /libFuzzer: run interrupted/.test(tail)
      const crashed = !interrupted && (code !== 0 || /SUMMARY: libFuzzer|panicked at|deadly signal/.test(tail))
      // libFuzzer's own clock starts after the build: report its figures, and the run's seconds
      // as executions over the rate it reports.
      const ran = executions && execsPerSecond ? Math.round(executions / execsPerSecond) : Math.round((Date.now() - started) / 1000)
      resolve({ target, seconds: ran, executions, execsPerSecond, peakRssMb: stat('peak_rss_mb'), crashed, interrupted, exit: code ?? signal })
    })
  })
}

function totals() {
  if (!existsSync(statsFile)) return console.log('no runs recorded yet')
  const sums = new Map()
  for (const line of readFileSync(statsFile, 'utf8').split('\n').filter(Boolean)) {
    const r = JSON.parse(line)
    const s = sums.get(r.target) ?? { runs: 0, seconds: 0, executions: 0, crashes: 0 }
    s.runs++
    s.seconds += r.seconds
    s.executions += r.executions ?? 0
    s.crashes += r.crashed ? 1 : 0
    sums.set(r.target, s)
  }
  console.log('| target | runs | seconds | executions | execs/s | crashes |\n| --- | --- | --- | --- | --- | --- |')
  for (const [t, s] of sums) {
    console.log(`| ${t} | ${s.runs} | ${s.seconds} | ${s.executions.toLocaleString('en-US')} | ${Math.round(s.executions / s.seconds).toLocaleString('en-US')} | ${s.crashes} |`)
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.totals) return totals()
  writeSeeds(opts.targets)
  if (opts.seedsOnly) return
  ensureTools()
  mkdirSync(dirname(statsFile), { recursive: true })
  const results = []
  for (const t of opts.targets) {
    const r = await fuzz(t, opts.seconds, opts.sanitizer)
    appendFileSync(statsFile, `${JSON.stringify({ ...r, at: new Date().toISOString() })}\n`)
    results.push(r)
  }
  console.log('\n| target | seconds | executions | execs/s | peak RSS MiB | outcome |\n| --- | --- | --- | --- | --- | --- |')
  for (const r of results) {
    const outcome = r.crashed ? `FAILED (exit ${r.exit}; see crates/polycall-core/fuzz/artifacts/${r.target}/)` : r.interrupted ? 'interrupted' : 'ok'
    console.log(`| ${r.target} | ${r.seconds} | ${r.executions?.toLocaleString('en-US') ?? '?'} | ${r.execsPerSecond?.toLocaleString('en-US') ?? '?'} | ${r.peakRssMb ?? '?'} | ${outcome} |`)
  }
  if (results.some((r) => r.crashed)) process.exit(1)
}

// Run as a script; imported (the seeds, say), do nothing.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e)
    process.exit(2)
  })
}
