// The model-checked wire fuzzer (__test__/hostile/fuzz-engine.ts) for long runs:
//
//   npm run fuzz:wire -- [--frames N] [--seed S] [--protocol v1|pcr1|both] [--concurrency C]
//
// Starts a PolyCallServer per protocol on loopback, sends N frames (default 100000) in sessions
// of valid and mutated frames, checks every reply and close against the model, and prints what
// it did. A violation prints the seed that reproduces the run and exits 1.
import { fuzzWire, summary } from '../__test__/hostile/fuzz-engine.js'

const args = process.argv.slice(2)
const option = (name: string, fallback: string): string => {
  const at = args.indexOf(`--${name}`)
  return at >= 0 && args[at + 1] !== undefined ? args[at + 1]! : fallback
}
const frames = Number(option('frames', '100000'))
const seed = Number(option('seed', String((Math.random() * 0x1_0000_0000) >>> 0))) >>> 0
const concurrency = Number(option('concurrency', '8'))
const which = option('protocol', 'both')
if (!Number.isInteger(frames) || frames < 1 || !Number.isInteger(concurrency) || concurrency < 1 || !['v1', 'pcr1', 'both'].includes(which)) {
  console.error('usage: npm run fuzz:wire -- [--frames N] [--seed S] [--protocol v1|pcr1|both] [--concurrency C]')
  process.exit(2)
}
let failed = false
for (const protocol of which === 'both' ? (['v1', 'pcr1'] as const) : ([which] as ['v1' | 'pcr1'])) {
  const report = await fuzzWire({ protocol, frames, seed, concurrency })
  console.log(summary(report))
  if (report.violations.length > 0) {
    failed = true
    console.log(`reproduce: npm run fuzz:wire -- --protocol ${protocol} --frames ${frames} --seed ${seed} --concurrency ${concurrency}`)
  }
}
process.exit(failed ? 1 : 0)
