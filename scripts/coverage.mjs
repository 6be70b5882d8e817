#!/usr/bin/env node
// npm run coverage: line and branch coverage of ts/ (c8 over the ava suite) and of
// crates/polycall-core (cargo-llvm-cov). Fails when either falls below 90% of lines.
// Writes coverage/ts (lcov + text) and coverage/rust (lcov), and prints a summary table.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync } from 'node:fs'

const MIN_LINES = Number(process.env.POLYCALL_MIN_LINES ?? 90)
const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { stdio: 'inherit', ...opts })
const capture = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8' })
mkdirSync('coverage', { recursive: true })

// ---- TypeScript: c8 reads V8 coverage through tsx's source maps (child processes included).
const c8 = run('npx', [
  'c8',
  '--include=ts/**',
  '--reports-dir=coverage/ts',
  '--reporter=lcov',
  '--reporter=json-summary',
  '--reporter=text-summary',
  'ava',
])
if (c8.status !== 0) {
  console.error('coverage: the ava suite failed under c8')
  process.exit(c8.status ?? 1)
}
const ts = JSON.parse(readFileSync('coverage/ts/coverage-summary.json', 'utf8')).total

// ---- Rust: cargo-llvm-cov; branch coverage needs a nightly toolchain, used when present.
if (capture('cargo', ['llvm-cov', '--version']).status !== 0) {
  console.error('coverage: cargo-llvm-cov is missing: cargo install cargo-llvm-cov --locked (and rustup component add llvm-tools)')
  process.exit(1)
}
const nightly = capture('rustup', ['run', 'nightly', 'rustc', '--version']).status === 0
const rustArgs = ['llvm-cov', '-p', 'polycall-core', '--json', '--summary-only', ...(nightly ? ['--branch'] : [])]
const rust = capture('cargo', nightly ? ['+nightly', ...rustArgs] : rustArgs)
if (rust.status !== 0) {
  process.stderr.write(rust.stderr)
  console.error('coverage: cargo llvm-cov failed')
  process.exit(rust.status ?? 1)
}
const totals = JSON.parse(rust.stdout).data[0].totals
run('cargo', [...(nightly ? ['+nightly'] : []), 'llvm-cov', 'report', '--lcov', '--output-path', 'coverage/rust/lcov.info'], {
  stdio: 'ignore',
})

const pct = (n) => `${n.toFixed(2)}%`
const rows = [
  ['ts/ (c8)', pct(ts.lines.pct), pct(ts.branches.pct), pct(ts.functions.pct)],
  [
    'polycall-core (cargo-llvm-cov)',
    pct(totals.lines.percent),
    nightly ? pct(totals.branches.percent) : 'n/a (needs nightly)',
    pct(totals.functions.percent),
  ],
]
console.log('\n| code | lines | branches | functions |\n| --- | --- | --- | --- |')
for (const r of rows) console.log(`| ${r.join(' | ')} |`)

const failures = []
if (ts.lines.pct < MIN_LINES) failures.push(`ts/ line coverage ${pct(ts.lines.pct)} is below ${MIN_LINES}%`)
if (totals.lines.percent < MIN_LINES) failures.push(`polycall-core line coverage ${pct(totals.lines.percent)} is below ${MIN_LINES}%`)
for (const f of failures) console.error(`coverage: ${f}`)
process.exit(failures.length ? 1 : 0)
