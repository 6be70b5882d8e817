/** Shared helpers of the benchmark suites: machine description, markdown tables, data. */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { cpus, loadavg, platform, release, totalmem } from 'node:os'
import { resolve } from 'node:path'

export function machine(): string {
  let rustc = 'unknown'
  try {
    rustc = execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    // not needed to run the benchmark
  }
  const cpu = cpus()
  return [
    `- CPU: ${cpu[0]?.model ?? 'unknown'} (${cpu.length} logical cores)`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- OS: ${platform()} ${release()}`,
    `- Node: ${process.version}`,
    `- Rust: ${rustc}`,
    `- Date: ${new Date().toISOString().slice(0, 10)}`,
    `- Load average at the end of the run (1/5/15 min): ${loadavg().map((x) => x.toFixed(1)).join(' / ')}`,
  ].join('\n')
}

export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export function writeResult(name: string, markdown: string): string {
  // Committed figures change only on purpose: a plain run (or a --quick one) prints and keeps them.
  if (!process.argv.includes('--write')) return `benchmarks/results/${name} not written (pass --write to update it)`
  if (process.argv.includes('--quick')) return `benchmarks/results/${name} not written: a --quick run never is`
  const dir = new URL('./results/', import.meta.url)
  mkdirSync(dir, { recursive: true })
  const file = new URL(name, dir)
  writeFileSync(file, markdown)
  return `wrote ${file.pathname}`
}

/** Deterministic pseudo-random bytes (xorshift32), like real binary or compressed payloads. */
export function randomBytes(n: number, seed = 2463534242): Buffer {
  const out = Buffer.allocUnsafe(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

export const fmt = (n: number, digits = 1) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** The median of a series and its range. */
export interface Spread {
  median: number
  min: number
  max: number
}

/** Median (the mean of the middle two for an even count) and min-max of `xs`; NaN when empty. */
export function spreadOf(xs: number[]): Spread {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN }
  const mid = v.length >> 1
  return { median: v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2, min: v[0]!, max: v[v.length - 1]! }
}

/** `median (min-max)`, each with `digits` decimals; `bold` marks the median. */
export function fmtSpread(s: Spread, digits = 1, suffix = '', bold = false): string {
  if (!Number.isFinite(s.median)) return 'n/a'
  const m = `${fmt(s.median, digits)}${suffix}`
  return `${bold ? `**${m}**` : m} (${fmt(s.min, digits)}-${fmt(s.max, digits)})`
}

/** Repetitions of every row (`--reps N`, at least 3). */
export function repetitions(): number {
  const at = process.argv.indexOf('--reps')
  const n = at > 0 ? Number(process.argv[at + 1]) : 3
  return Number.isInteger(n) && n >= 3 ? n : 3
}

/**
 * Runs every row spec `reps` times, each run in a fresh Node process (`self --row spec`), the
 * repetitions interleaved (all rows once, then all rows again, ...) so that a slow spell of the
 * machine spreads over the rows instead of landing on one. A row process prints one JSON line
 * last; returns those parsed, per spec, in run order.
 */
export function runRowsInterleaved<T>(self: string, specs: string[], reps: number, extraArgs: string[] = []): Map<string, T[]> {
  const out = new Map<string, T[]>(specs.map((s) => [s, []]))
  for (let rep = 0; rep < reps; rep++) {
    for (const spec of specs) {
      const text = execFileSync(process.execPath, ['--import', 'tsx', self, '--row', spec, ...extraArgs], {
        encoding: 'utf8',
        maxBuffer: 1 << 20,
        env: process.env,
      })
      const result = JSON.parse(text.trim().split('\n').at(-1)!) as T
      out.get(spec)!.push(result)
      console.log(`run ${rep + 1}/${reps}  ${spec.padEnd(24)} ${JSON.stringify(result)}`)
    }
  }
  return out
}

/**
 * Loads a module of node-polycall (CommonJS) from the checkout named by the environment variable
 * `POLYCALL_BENCH_NODE_POLYCALL`: `src/modules/<name>.js`. node-polycall is never a dependency of
 * this package; without the variable or the file the rows that need it are skipped, and
 * `reason` says why.
 */
export function loadNodePolycall<T = unknown>(name: string): { module: T } | { reason: string } {
  const dir = process.env['POLYCALL_BENCH_NODE_POLYCALL']
  if (!dir) return { reason: 'POLYCALL_BENCH_NODE_POLYCALL is not set (the path of a node-polycall checkout)' }
  const file = resolve(dir, 'src', 'modules', `${name}.js`)
  if (!existsSync(file)) return { reason: `POLYCALL_BENCH_NODE_POLYCALL=${dir}: ${file} does not exist` }
  return { module: createRequire(import.meta.url)(file) as T }
}
