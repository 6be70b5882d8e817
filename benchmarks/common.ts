/** Shared helpers of the benchmark suites: machine description, markdown tables, data. */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, platform, release, totalmem } from 'node:os'

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
