/**
 * State-machine benchmark: polycall's StateMachine (rules, history and counters in the Rust
 * core) against a plain-TS implementation of the same rules (benchmarks/plain-ts-state.ts), in
 * the same run, rotated order, outputs asserted identical first. Every row runs in a fresh Node
 * process. Run: npm run bench:state (add --quick for a short smoke run); with --write (not with
 * --quick) it updates benchmarks/results/state.md.
 */
import { deepStrictEqual, strictEqual } from 'node:assert'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Bench } from 'tinybench'
import { StateMachine, type StateMachineSnapshot } from '../ts/index.js'
import { native } from '../ts/native.js'
import { fmt, machine, table, writeResult } from './common.js'
import { PlainStateMachine } from './plain-ts-state.js'

const quick = process.argv.includes('--quick')
const TIME = quick ? 60 : 500
/** Transitions per timed task call: even, so each batch ends where it started. */
const BATCH = 1000
/** The budget of the issue for one guard-less transition, in ns. */
const BUDGET_NS = 2000

interface Pair {
  native: number // task calls per second
  ts: number
}

async function run(tasks: [string, () => unknown][]): Promise<Record<string, number>> {
  const bench = new Bench({ time: TIME, warmup: true, warmupTime: 100 })
  // Declared, not detected: detection calls an async task once without awaiting it, which would
  // overlap that call with the first measured one.
  for (const [name, fn] of tasks) bench.add(name, fn, { async: fn.constructor.name === 'AsyncFunction' })
  await bench.run()
  const out: Record<string, number> = {}
  for (const task of bench.tasks) {
    const r = task.result as { period?: number; error?: unknown }
    if (!r.period) throw new Error(`task ${task.name} did not complete`, { cause: r.error })
    out[task.name] = 1000 / r.period
  }
  return out
}

/** Runs both functions in alternating order (native first, then TS first) and averages. */
async function pair(nativeFn: () => unknown, tsFn: () => unknown): Promise<Pair> {
  const sums = { native: 0, ts: 0 }
  const rounds = [0, 1, 0, 1]
  for (const order of rounds) {
    const n: [string, () => unknown] = ['native', nativeFn]
    const t: [string, () => unknown] = ['ts', tsFn]
    const r = await run(order === 0 ? [n, t] : [t, n])
    sums.native += r['native']!
    sums.ts += r['ts']!
  }
  return { native: sums.native / rounds.length, ts: sums.ts / rounds.length }
}

function twoStates(guard: boolean): { sm: StateMachine; plain: PlainStateMachine } {
  const sm = new StateMachine()
  const plain = new PlainStateMachine()
  const options = guard ? { guard: async () => true } : {}
  for (const m of [sm, plain]) {
    m.addState('A')
    m.addState('B')
    m.addTransition('A', 'B', options)
    m.addTransition('B', 'A', options)
  }
  return { sm, plain }
}

type Row = (string | number)[]

async function transitionRow(guard: boolean): Promise<Row> {
  const { sm, plain } = twoStates(guard)
  const batch = async (m: { transition(to: string): Promise<unknown> }) => {
    for (let i = 0; i < BATCH; i++) await m.transition(i & 1 ? 'A' : 'B')
  }
  // Same outcome first: same current state and the same history of moves.
  await batch(sm)
  await batch(plain)
  strictEqual(sm.current, plain.current)
  deepStrictEqual(
    sm.history().map((h) => [h.from, h.to]),
    plain.history().map((h) => [h.from, h.to]),
  )
  const r = await pair(
    async () => batch(sm),
    async () => batch(plain),
  )
  const ns = (ops: number) => 1e9 / (ops * BATCH)
  const label = guard ? 'transition with an async guard (`await`ed)' : 'guard-less transition (`await`ed)'
  const perSecond = (ops: number) => fmt((ops * BATCH) / 1e6, 2)
  return [label, fmt(ns(r.native)), fmt(ns(r.ts)), perSecond(r.native), perSecond(r.ts), `**${fmt(r.native / r.ts, 2)}x**`]
}

/** The crossing alone: the addon's transition call without the TS wrapper or a promise. */
async function crossingRow(): Promise<Row> {
  const raw = new StateMachine()
  raw.addState('A')
  raw.addState('B')
  raw.addTransition('A', 'B')
  raw.addTransition('B', 'A')
  // The wrapper's handle is private; a second machine made through the addon stands in for it.
  const h = native.smNew(32, 64, 31, 100, false)
  native.smAddState(h, 'A', null, false, false, null, 0)
  native.smAddState(h, 'B', null, false, false, null, 0)
  native.smAddTransition(h, 0, 1)
  native.smAddTransition(h, 1, 0)
  const direct = () => {
    for (let i = 0; i < BATCH; i++) if (!native.smTransition(h, i & 1 ? 0 : 1, Date.now())) throw new Error('refused')
  }
  const wrapped = () => {
    for (let i = 0; i < BATCH; i++) void raw.transition(i & 1 ? 'A' : 'B')
  }
  let sums = { direct: 0, wrapped: 0 }
  for (const order of [0, 1, 0, 1]) {
    const d: [string, () => unknown] = ['direct', direct]
    const w: [string, () => unknown] = ['wrapped', wrapped]
    const r = await run(order === 0 ? [d, w] : [w, d])
    sums = { direct: sums.direct + r['direct']!, wrapped: sums.wrapped + r['wrapped']! }
  }
  native.smFree(h)
  const ns = (ops: number) => fmt(1e9 / ((ops / 4) * BATCH))
  return ['`StateMachine.transition()`, not awaited', ns(sums.wrapped), 'the addon call alone (`smTransition`, with `Date.now()`)', ns(sums.direct)]
}

async function snapshotRow(): Promise<Row> {
  const sm = new StateMachine()
  const names = Array.from({ length: 32 }, (_, i) => `S${String(i).padStart(2, '0')}`)
  for (const [i, n] of names.entries()) sm.addState(n, i % 8 === 0 ? { metadata: { owner: 'ops', shard: i } } : {})
  for (let i = 0; i < 32; i++) {
    sm.addTransition(names[i]!, names[(i + 1) % 32]!)
    sm.addTransition(names[i]!, names[(i + 5) % 32]!)
  }
  for (let i = 0; i < 150; i++) await sm.transition(names[(i + 1) % 32]!)
  for (const i of [3, 11, 19, 27]) sm.lock(names[i]!)
  const snap = sm.snapshot()
  // The plain implementation restores polycall's snapshot and writes the same text back.
  const plain = new PlainStateMachine()
  plain.restore(snap as unknown as Record<string, unknown>)
  strictEqual(JSON.stringify(plain.snapshot(snap.timestamp)), JSON.stringify(snap))
  const check = new StateMachine()
  await check.restore(plain.snapshot() as unknown as StateMachineSnapshot)
  strictEqual(check.current, sm.current)
  check.free()
  // Each side restores into a new machine: restoring over one with locked states is refused.
  const r = await pair(
    async () => {
      const copy = new StateMachine()
      await copy.restore(sm.snapshot())
      copy.free()
    },
    () => {
      new PlainStateMachine().restore(plain.snapshot())
    },
  )
  const bytes = JSON.stringify(snap).length
  const us = (ops: number) => fmt(1e6 / ops)
  return [`snapshot() + restore(), 32 states, 64 transitions, 100 history entries (${fmt(bytes / 1024)} KiB JSON)`, us(r.native), us(r.ts), fmt(r.native, 0), fmt(r.ts, 0), `**${fmt(r.native / r.ts, 2)}x**`]
}

async function runRow(spec: string): Promise<Row> {
  if (spec === 'transition') return transitionRow(false)
  if (spec === 'guarded') return transitionRow(true)
  if (spec === 'crossing') return crossingRow()
  return snapshotRow()
}

const rowArg = process.argv.indexOf('--row')
if (rowArg > 0) {
  console.log(JSON.stringify(await runRow(process.argv[rowArg + 1]!)))
} else {
  const self = fileURLToPath(import.meta.url)
  const exec = (spec: string): Row => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--row', spec, ...(quick ? ['--quick'] : [])], {
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    })
    const row = JSON.parse(out.trim().split('\n').at(-1)!) as Row
    console.log(`${spec.padEnd(12)} ${row.join(' | ')}`)
    return row
  }
  const transitions = [exec('transition'), exec('guarded')]
  const crossing = exec('crossing')
  const snapshot = exec('snapshot')
  const guardless = Number(String(transitions[0]![1]).replace(/,/g, ''))
  const verdict =
    guardless < BUDGET_NS
      ? `holds: ${transitions[0]![1]} ns per guard-less transition, against a budget of ${BUDGET_NS} ns`
      : `is missed: ${transitions[0]![1]} ns per guard-less transition, against a budget of ${BUDGET_NS} ns`

  const md = `# State-machine benchmark

\`npm run bench:state\` (benchmarks/state.bench.ts). polycall's \`StateMachine\`, whose rules,
history, counters and checksums live in the Rust core, against a plain-TypeScript state machine
with the same rules, error codes and snapshot format (benchmarks/plain-ts-state.ts), in the same
run. Each row runs in its own Node process; within it both sides run four times with the order
rotated, after their outputs were asserted identical (same history; the same snapshot text).
Ratios above 1 mean polycall is faster.

${machine()}

## Transitions

Two states, A and B, with transitions both ways; each timed call runs ${BATCH} transitions in a
row, each one \`await\`ed. No event listeners.

${table(['scenario', 'polycall ns/transition', 'plain TS ns/transition', 'polycall M/s', 'plain TS M/s', 'ratio'], transitions)}

The budget of at most ${BUDGET_NS} ns for a guard-less transition ${verdict}.

A guard-less transition that finds the queue empty is one synchronous call into the addon: the
core checks the rules, switches, appends to the history and counts, and \`transition()\` returns an
already-settled promise. Nothing is cached in TypeScript: the core decides every transition. The
plain-TS machine does the same work in the same JavaScript process without a boundary to cross,
so the ratio is the price of keeping the core authoritative. Where that cost goes:

${table(['measure', 'ns per transition'], [crossing.slice(0, 2), crossing.slice(2, 4)])}

The rest of an \`await\`ed transition is the promise and the microtask turn, which both sides pay.
The budget holds with a wide margin, so nothing is batched and no rule check is cached in
TypeScript.

A transition with a guard crosses twice: the core checks the rules before the guard runs (so a
guard never runs for a transition the core would refuse, as in node-polycall's order) and commits
after it, re-checking locks that may have changed while the guard awaited. Both sides also pay for
the guard's promise and the FIFO queue, so the boundary cost weighs less.

## Snapshot and restore

${table(['scenario', 'polycall µs', 'plain TS µs', 'polycall ops/s', 'plain TS ops/s', 'ratio'], [snapshot])}

polycall serialises in Rust and hands one JSON string across; restore takes one string back and
verifies the machine checksum, every state checksum, names, limits and references before it
changes anything. The plain-TS side builds objects and checks only the checksums.
`
  console.log(`\n${writeResult('state.md', md)}`)
}
