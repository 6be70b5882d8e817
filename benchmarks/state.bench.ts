/**
 * State-machine benchmark: polycall's StateMachine (rules, history and counters in the Rust
 * core) against a plain-TS implementation of the same rules (benchmarks/plain-ts-state.ts) and,
 * where it applies, node-polycall's StateMachine, in the same run, outputs asserted identical
 * first. Every row runs in a fresh Node process, three times (`--reps N` for more), the
 * repetitions interleaved across the rows; inside a run the sides alternate (A B ... then ... B A).
 * Tables give the median and the min-max of the runs. node-polycall rows need
 * `POLYCALL_BENCH_NODE_POLYCALL` (the path of a node-polycall checkout) and are skipped, with the
 * reason printed, without it.
 * Run: npm run bench:state (add --quick for a short smoke run); with --write (not with --quick)
 * it updates benchmarks/results/state.md.
 */
import { deepStrictEqual, strictEqual } from 'node:assert'
import { fileURLToPath } from 'node:url'
import { Bench } from 'tinybench'
import { StateMachine, type StateMachineSnapshot } from '../ts/index.js'
import { native } from '../ts/native.js'
import { fmt, fmtSpread, loadNodePolycall, machine, repetitions, runRowsInterleaved, spreadOf, table, writeResult } from './common.js'
import { PlainStateMachine } from './plain-ts-state.js'

const quick = process.argv.includes('--quick')
const TIME = quick ? 60 : 300
const WARMUP = quick ? 20 : 100
/** Transitions per timed task call: even, so each batch ends where it started. */
const BATCH = 1000
/** The budget of the issue for one guard-less transition, in ns. */
const BUDGET_NS = 2000

/** What a row process prints: nanoseconds per unit of work for every side. */
interface RunResult {
  ns: Record<string, number>
  bytes?: number
  compact?: number
}

/** The part of node-polycall's StateMachine the rows use. */
interface NodePolycallState {
  lock(): void
  setMetadata(key: string, value: unknown): NodePolycallState
}
interface NodePolycallMachine {
  addState(name: string, options?: Record<string, unknown>): NodePolycallState
  getState(name: string): NodePolycallState
  addTransition(from: string, to: string, options?: Record<string, unknown>): unknown
  executeTransition(to: string): Promise<boolean>
  createSnapshot(): { currentState: string | null; states: unknown[]; history: { from: string; to: string }[] }
  restoreFromSnapshot(snapshot: unknown): Promise<unknown>
  getCurrentState(): { name: string } | null
  getHistory(): { from: string; to: string }[]
}
const np = loadNodePolycall<new (options?: Record<string, unknown>) => NodePolycallMachine>('StateMachine')
const npSkip = 'module' in np ? undefined : np.reason

/**
 * Times every task, in two rounds: the listed order, then reversed. Returns nanoseconds per call
 * of each task (the mean of the two rounds).
 */
async function measure(tasks: [string, () => unknown][]): Promise<Record<string, number>> {
  const sums: Record<string, number> = {}
  for (const round of [tasks, [...tasks].reverse()]) {
    const bench = new Bench({ time: TIME, iterations: 5, warmup: true, warmupTime: WARMUP, warmupIterations: 3 })
    // Declared, not detected: detection calls an async task once without awaiting it, which would
    // overlap that call with the first measured one.
    for (const [name, fn] of round) bench.add(name, fn, { async: fn.constructor.name === 'AsyncFunction' })
    await bench.run()
    for (const task of bench.tasks) {
      const r = task.result as { period?: number; error?: unknown }
      if (!r.period) throw new Error(`task ${task.name} did not complete`, { cause: r.error })
      sums[task.name] = (sums[task.name] ?? 0) + (r.period * 1e6) / 2
    }
  }
  return sums
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

async function transitionRow(guard: boolean): Promise<RunResult> {
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
  const tasks: [string, () => unknown][] = [
    ['polycall', async () => batch(sm)],
    ['ts', async () => batch(plain)],
  ]
  if ('module' in np) {
    // node-polycall's transitions always await a guard (a default one returning true), a before
    // and an after hook; `guard` here adds the same async guard as on the other sides.
    const m = new np.module({ maxHistoryLength: 100 })
    m.addState('A')
    m.addState('B')
    const options = guard ? { guard: async () => true } : {}
    m.addTransition('A', 'B', options)
    m.addTransition('B', 'A', options)
    const npBatch = async () => {
      for (let i = 0; i < BATCH; i++) await m.executeTransition(i & 1 ? 'A' : 'B')
    }
    await npBatch()
    strictEqual(m.getCurrentState()!.name, sm.current)
    deepStrictEqual(
      m.getHistory().map((h) => [h.from, h.to]),
      sm.history().map((h) => [h.from, h.to]),
    )
    tasks.push(['np', npBatch])
  }
  const ns = await measure(tasks)
  for (const k of Object.keys(ns)) ns[k]! /= BATCH
  return { ns }
}

/** The crossing alone: the addon's transition call without the TS wrapper or a promise. */
async function crossingRow(): Promise<RunResult> {
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
  // The call the wrapper makes: machine and target in the mailbox it shares with the addon, no
  // arguments, the clock read in the addon.
  const mailbox = (globalThis as { [k: symbol]: Float64Array | undefined })[Symbol.for('polycall.state.mailbox')]
  if (!mailbox) throw new Error('the state module did not register its transition mailbox')
  const direct = () => {
    for (let i = 0; i < BATCH; i++) {
      mailbox[0] = h
      mailbox[1] = i & 1 ? 0 : 1
      if (native.smStep() < 0) throw new Error('refused')
    }
  }
  const wrapped = () => {
    for (let i = 0; i < BATCH; i++) void raw.transition(i & 1 ? 'A' : 'B')
  }
  const ns = await measure([
    ['direct', direct],
    ['wrapped', wrapped],
  ])
  native.smFree(h)
  for (const k of Object.keys(ns)) ns[k]! /= BATCH
  return { ns }
}

const NAMES = Array.from({ length: 32 }, (_, i) => `S${String(i).padStart(2, '0')}`)

/** Builds the 32-state, 64-transition machine with 150 moves made (100 kept) and 4 states locked. */
async function build<M>(m: M, add: (m: M, name: string, i: number) => void, link: (m: M, from: string, to: string) => void, move: (m: M, to: string) => Promise<unknown>, lock: (m: M, name: string) => void): Promise<M> {
  for (const [i, n] of NAMES.entries()) add(m, n, i)
  for (let i = 0; i < 32; i++) {
    link(m, NAMES[i]!, NAMES[(i + 1) % 32]!)
    link(m, NAMES[i]!, NAMES[(i + 5) % 32]!)
  }
  for (let i = 0; i < 150; i++) await move(m, NAMES[(i + 1) % 32]!)
  for (const i of [3, 11, 19, 27]) lock(m, NAMES[i]!)
  return m
}

async function snapshotRow(): Promise<RunResult> {
  const sm = await build(
    new StateMachine(),
    (m, n, i) => m.addState(n, i % 8 === 0 ? { metadata: { owner: 'ops', shard: i } } : {}),
    (m, a, b) => m.addTransition(a, b),
    (m, to) => m.transition(to),
    (m, n) => m.lock(n),
  )
  const snap = sm.snapshot()
  // The plain implementation restores polycall's snapshot and writes the same text back.
  const plain = new PlainStateMachine()
  plain.restore(snap as unknown as Record<string, unknown>)
  strictEqual(JSON.stringify(plain.snapshot(snap.timestamp)), JSON.stringify(snap))
  const check = new StateMachine()
  await check.restore(plain.snapshot() as unknown as StateMachineSnapshot)
  strictEqual(check.current, sm.current)
  check.free()
  // The compact form restores to the same machine.
  const bytes = sm.snapshotBytes()
  const fromBytes = new StateMachine()
  await fromBytes.restore(bytes)
  const untimed = (x: StateMachineSnapshot) => JSON.stringify({ ...x, timestamp: 0, checksum: 0, states: x.states.map((e) => ({ ...e, snapshot: { ...e.snapshot, timestamp: 0 } })) })
  strictEqual(untimed(fromBytes.snapshot()), untimed(snap))
  fromBytes.free()
  // Each side restores into a new machine: restoring over one with locked states is refused.
  const tasks: [string, () => unknown][] = [
    [
      'polycall',
      async () => {
        const copy = new StateMachine()
        await copy.restore(sm.snapshot())
        copy.free()
      },
    ],
    [
      'bytes',
      async () => {
        const copy = new StateMachine()
        await copy.restore(sm.snapshotBytes())
        copy.free()
      },
    ],
    [
      'ts',
      () => {
        new PlainStateMachine().restore(plain.snapshot())
      },
    ],
  ]
  if ('module' in np) {
    // The same shape in node-polycall: metadata set through setMetadata, the same moves and locks.
    const Machine = np.module
    const m = await build(
      new Machine({ maxHistoryLength: 100 }),
      (m, n, i) => {
        const state = m.addState(n)
        if (i % 8 === 0) state.setMetadata('owner', 'ops').setMetadata('shard', i)
      },
      (m, a, b) => m.addTransition(a, b),
      (m, to) => m.executeTransition(to),
      (m, n) => m.getState(n).lock(),
    )
    const copy = new Machine()
    await copy.restoreFromSnapshot(m.createSnapshot())
    strictEqual(copy.getCurrentState()!.name, sm.current)
    deepStrictEqual(
      copy.getHistory().map((h) => [h.from, h.to]),
      sm.history().map((h) => [h.from, h.to]),
    )
    tasks.push([
      'np',
      async () => {
        await new Machine({ maxHistoryLength: 100 }).restoreFromSnapshot(m.createSnapshot())
      },
    ])
  }
  const ns = await measure(tasks)
  return { ns, bytes: JSON.stringify(snap).length, compact: bytes.length }
}
async function runRow(spec: string): Promise<RunResult> {
  if (spec === 'transition') return transitionRow(false)
  if (spec === 'guarded') return transitionRow(true)
  if (spec === 'crossing') return crossingRow()
  return snapshotRow()
}

const rowArg = process.argv.indexOf('--row')
if (rowArg > 0) {
  console.log(JSON.stringify(await runRow(process.argv[rowArg + 1]!)))
} else {
  if (npSkip) console.log(`node-polycall rows skipped: ${npSkip}`)
  const reps = repetitions()
  const runs = runRowsInterleaved<RunResult>(fileURLToPath(import.meta.url), ['transition', 'guarded', 'crossing', 'snapshot'], reps, quick ? ['--quick'] : [])
  const of = (spec: string, k: string, scale = 1) => spreadOf(runs.get(spec)!.map((r) => (r.ns[k] ?? NaN) * scale))
  const side = (spec: string, k: string, scale = 1, digits = 1) => fmtSpread(of(spec, k, scale), digits)
  /** Median and range of `base / ours` over the runs (each run's own pair): above 1, ours is faster. */
  const ratio = (spec: string, ours: string, base: string, bold = true) =>
    fmtSpread(spreadOf(runs.get(spec)!.map((r) => (r.ns[base] ?? NaN) / (r.ns[ours] ?? NaN))), 2, 'x', bold)
  const npCells = (spec: string, scale = 1) => (npSkip ? ['skipped', 'skipped'] : [side(spec, 'np', scale), ratio(spec, 'polycall', 'np')])
  const transitions = (['transition', 'guarded'] as const).map((spec) => [
    spec === 'guarded' ? 'transition with an async guard (`await`ed)' : 'guard-less transition (`await`ed)',
    side(spec, 'polycall'),
    side(spec, 'ts'),
    ratio(spec, 'polycall', 'ts'),
    ...npCells(spec),
  ])
  const crossing = [
    ['`StateMachine.transition()`, not awaited', side('crossing', 'wrapped')],
    ['the addon call alone (`smStep`: no arguments, the clock read in the addon)', side('crossing', 'direct')],
  ]
  const bytes = runs.get('snapshot')![0]!.bytes ?? 0
  const compact = runs.get('snapshot')![0]!.compact ?? 0
  const snapshot = [
    `snapshot() + restore(), 32 states, 64 transitions, 100 history entries (${fmt(bytes / 1024)} KiB JSON)`,
    side('snapshot', 'polycall', 1e-3),
    side('snapshot', 'ts', 1e-3),
    ratio('snapshot', 'polycall', 'ts'),
    ...npCells('snapshot', 1e-3),
  ]
  const snapshotBytes = [
    `snapshotBytes() + restore(bytes), the same machine (${fmt(compact / 1024)} KiB compact)`,
    side('snapshot', 'bytes', 1e-3),
    side('snapshot', 'ts', 1e-3),
    ratio('snapshot', 'bytes', 'ts'),
    ...(npSkip ? ['skipped', 'skipped'] : [side('snapshot', 'np', 1e-3), ratio('snapshot', 'bytes', 'np')]),
  ]
  const guardless = of('transition', 'polycall').median
  const verdict =
    guardless < BUDGET_NS
      ? `holds: ${fmt(guardless)} ns per guard-less transition (median), against a budget of ${BUDGET_NS} ns`
      : `is missed: ${fmt(guardless)} ns per guard-less transition (median), against a budget of ${BUDGET_NS} ns`
  const npLine = npSkip
    ? `node-polycall columns: skipped (${npSkip}).`
    : "node-polycall columns: its `StateMachine` (`executeTransition`, awaited; `createSnapshot` + `restoreFromSnapshot` into a new machine), loaded from `POLYCALL_BENCH_NODE_POLYCALL`, after its history and current state were asserted identical to polycall's."

  const md = `# State-machine benchmark

\`npm run bench:state\` (benchmarks/state.bench.ts). polycall's \`StateMachine\`, whose rules,
history, counters and checksums live in the Rust core, against a plain-TypeScript state machine
with the same rules, error codes and snapshot format (benchmarks/plain-ts-state.ts) and
node-polycall's \`StateMachine\`, in the same run. Every row runs in its own Node process, ${reps}
times, the runs of all rows interleaved; inside a run the sides alternate (listed order, then
reversed), after their outputs were asserted identical (same history; the same snapshot text).
Cells give the **median** of the runs and their min-max; a ratio is taken inside each run and
then summarised the same way. Ratios above 1 mean polycall is faster.

${npLine} Set it to a node-polycall checkout to include them (the package is never a dependency).

${machine()}

## Transitions, ns per transition

Two states, A and B, with transitions both ways; each timed call runs ${BATCH} transitions in a
row, each one \`await\`ed. No event listeners.

${table(['scenario', 'polycall', 'plain TS', 'ratio', 'node-polycall', 'polycall / node-polycall'], transitions)}

The budget of at most ${BUDGET_NS} ns for a guard-less transition ${verdict}.

A guard-less transition that finds the queue empty is one synchronous call into the addon: the
core checks the rules, switches, appends to the history and counts, and \`transition()\` returns an
already-settled promise. Nothing is cached in TypeScript: the core decides every transition. The
plain-TS machine does the same work in the same JavaScript process without a boundary to cross,
so the ratio is the price of keeping the core authoritative. Where that cost goes (ns per
transition):

${table(['measure', 'ns per transition'], crossing)}

The rest of an \`await\`ed transition is the promise and the microtask turn, which both sides pay.

A transition with a guard crosses twice: the core checks the rules before the guard runs (so a
guard never runs for a transition the core would refuse, as in node-polycall's order) and commits
after it, re-checking locks that may have changed while the guard awaited. Both sides also pay for
the guard's promise and the FIFO queue, so the boundary cost weighs less.

## Snapshot and restore, µs

${table(['scenario', 'polycall', 'plain TS', 'ratio', 'node-polycall', 'polycall / node-polycall'], [snapshot, snapshotBytes])}

polycall serialises in Rust and hands one JSON string across; restore takes one string back and
verifies the machine checksum, every state checksum, names, limits and references before it
changes anything. The compact form (\`snapshotBytes()\`) carries the same content under a CRC-32
and crosses once each way without JSON text; its restore makes the same checks (each state
checksum recomputed). The plain-TS column of that row is the plain machine's JSON round trip
again (it has no compact form). The plain-TS side builds objects and checks only the checksums. node-polycall's
snapshot is an object graph (no transitions, no machine checksum) and its restore checks each
state's checksum.
`
  console.log(`\n${md}\n${writeResult('state.md', md)}`)
}
