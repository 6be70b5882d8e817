/**
 * polycall's StateMachine against node-polycall's, in the same process: snapshot + restore of a
 * 32-state / 64-transition / 100-history machine into a new machine, and guard-less `await`ed
 * transitions. Both machines are built the same way (the same states, transitions, metadata,
 * locks and moves). Every case runs `--runs` times (default 5), the sides interleaved and their
 * order rotated each run; the table gives the median with the min-max over the runs, and the
 * load average before and after.
 *
 * node-polycall is loaded from the folder in `POLYCALL_BENCH_NODE_POLYCALL` (a checkout of node-polycall:
 * `src/modules/StateMachine.js`); without it the node-polycall rows are skipped, saying why.
 *
 * Run: `POLYCALL_BENCH_NODE_POLYCALL=../node-polycall node --import tsx benchmarks/state-vs-node-polycall.ts`
 * (`--quick` for a smoke run, `--runs N`, `--only snapshot|transition`, `--clock cpu|wall`; `--write`
 * writes benchmarks/results/state-vs-node-polycall.md, never from a `--quick` run). Profiling one case:
 * `--profile <case>` runs only that case's loop for a few seconds (combine with `--cpu-prof`).
 */
import { strictEqual } from 'node:assert'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { StateMachine, type StateMachineSnapshot } from '../ts/index.js'
import { fmt, machine, table, writeResult } from './common.js'

const argv = process.argv.slice(2)
const arg = (name: string): string | undefined => {
  const at = argv.indexOf(name)
  return at >= 0 ? argv[at + 1] : undefined
}
const quick = argv.includes('--quick')
const RUNS = Number(arg('--runs') ?? (quick ? 3 : 5))
/** Time per measurement, ms. */
const WINDOW = quick ? 150 : 600
const only = arg('--only')
const profile = arg('--profile')
const CPU_CLOCK = (arg('--clock') ?? 'cpu') === 'cpu'

// ---------------------------------------------------------------------------------------------
// node-polycall, from a local checkout

interface NodePolycallMachine {
  addState(name: string, options?: object): { setMetadata(k: string, v: unknown): void; lock(): void }
  addTransition(from: string, to: string, options?: object): unknown
  executeTransition(to: string): Promise<boolean>
  createSnapshot(): NodePolycallSnapshot
  restoreFromSnapshot(s: NodePolycallSnapshot): Promise<unknown>
  getState(name: string): { setMetadata(k: string, v: unknown): void; lock(): void }
  currentState: { name: string } | null
  history: unknown[]
  states: Map<string, unknown>
}
interface NodePolycallSnapshot {
  currentState: string | null
  states: unknown[]
  history: unknown[]
}
type NodePolycallCtor = new (options?: object) => NodePolycallMachine

function loadNodePolycall(): { ctor?: NodePolycallCtor; reason?: string } {
  const dir = process.env['POLYCALL_BENCH_NODE_POLYCALL']
  if (!dir) return { reason: 'POLYCALL_BENCH_NODE_POLYCALL is not set (a node-polycall checkout)' }
  const file = join(resolve(dir), 'src', 'modules', 'StateMachine.js')
  if (!existsSync(file)) return { reason: `no ${file}` }
  try {
    return { ctor: createRequire(import.meta.url)(file) as NodePolycallCtor }
  } catch (e) {
    return { reason: `${file} does not load: ${String(e)}` }
  }
}

// ---------------------------------------------------------------------------------------------
// The machine both sides build

const NAMES = Array.from({ length: 32 }, (_, i) => `S${String(i).padStart(2, '0')}`)
const MOVES = 150
const LOCKED = [3, 11, 19, 27]

interface Builder {
  addState(name: string): unknown
  addTransition(from: string, to: string): unknown
  setMetadata(name: string, key: string, value: unknown): void
  move(to: string): Promise<unknown>
  lock(name: string): void
}

/** 32 states, each with transitions to the next and to the fifth next (64), 150 moves (history 100), metadata on 4, 4 locked. */
async function build(b: Builder): Promise<void> {
  for (const n of NAMES) b.addState(n)
  for (const [i, n] of NAMES.entries()) {
    if (i % 8 === 0) {
      b.setMetadata(n, 'owner', 'ops')
      b.setMetadata(n, 'shard', i)
    }
  }
  for (let i = 0; i < 32; i++) {
    b.addTransition(NAMES[i]!, NAMES[(i + 1) % 32]!)
    b.addTransition(NAMES[i]!, NAMES[(i + 5) % 32]!)
  }
  for (let i = 0; i < MOVES; i++) await b.move(NAMES[(i + 1) % 32]!)
  for (const i of LOCKED) b.lock(NAMES[i]!)
}

async function ours(): Promise<StateMachine> {
  const sm = new StateMachine()
  await build({
    addState: (n) => sm.addState(n),
    addTransition: (f, t) => sm.addTransition(f, t),
    setMetadata: (n, k, v) => sm.setMetadata(n, k, v),
    move: (to) => sm.transition(to),
    lock: (n) => sm.lock(n),
  })
  return sm
}

async function theirs(Ctor: NodePolycallCtor): Promise<NodePolycallMachine> {
  const m = new Ctor()
  await build({
    addState: (n) => m.addState(n),
    addTransition: (f, t) => m.addTransition(f, t),
    setMetadata: (n, k, v) => m.getState(n).setMetadata(k, v),
    move: (to) => m.executeTransition(to),
    lock: (n) => m.getState(n).lock(),
  })
  return m
}

// ---------------------------------------------------------------------------------------------
// Measurement

type Task = () => unknown | Promise<unknown>

/**
 * Per-call time of `fn` in ns over one window, after it ran for a third of a window: wall time,
 * or with `--clock cpu` (the default) the process's CPU time (user + system, GC threads
 * included), which a shared machine's load disturbs far less than wall time.
 */
async function measure(fn: Task, inner: number): Promise<number> {
  const isAsync = fn.constructor.name === 'AsyncFunction'
  const loop = async (ms: number): Promise<[number, number]> => {
    let calls = 0
    const start = process.hrtime.bigint()
    const cpu0 = process.cpuUsage()
    const end = start + BigInt(ms * 1e6)
    let now = start
    while (now < end) {
      for (let i = 0; i < 16; i++) {
        if (isAsync) await fn()
        else fn()
      }
      calls += 16
      now = process.hrtime.bigint()
    }
    const cpu = process.cpuUsage(cpu0)
    return [calls, CPU_CLOCK ? (cpu.user + cpu.system) * 1000 : Number(now - start)]
  }
  await loop(WINDOW / 3)
  const [calls, ns] = await loop(WINDOW)
  return ns / (calls * inner)
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

interface Case {
  name: string
  inner: number
  fn: Task
}

/** Runs every case RUNS times, interleaved, the order rotated each run; per-call ns per run. */
async function compare(cases: Case[]): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  for (let r = 0; r < RUNS; r++) {
    const order = cases.map((_, i) => cases[(i + r) % cases.length]!)
    for (const c of order) out.get(c.name)!.push(await measure(c.fn, c.inner))
  }
  return out
}

const range = (xs: number[], unit: (n: number) => string) =>
  `${unit(median(xs))} (${unit(Math.min(...xs))}-${unit(Math.max(...xs))})`

/** Ratio of medians, with the range of the per-run ratios (runs pair up by index). */
function ratio(base: number[], ours: number[]): string {
  const per = base.map((b, i) => b / ours[i]!)
  return `**${fmt(median(base) / median(ours), 2)}x** (${fmt(Math.min(...per), 2)}-${fmt(Math.max(...per), 2)})`
}

// ---------------------------------------------------------------------------------------------

const np = loadNodePolycall()
const BATCH = 1000

/** A snapshot's text without the members that change with the time it was taken. */
function untimed(s: StateMachineSnapshot): string {
  const { timestamp: _t, checksum: _c, ...rest } = s
  return JSON.stringify({ ...rest, states: rest.states.map((x) => ({ ...x, snapshot: { ...x.snapshot, timestamp: 0 } })) })
}

async function snapshotCases(): Promise<Case[]> {
  const sm = await ours()
  const snap = sm.snapshot()
  const check = new StateMachine()
  await check.restore(snap)
  strictEqual(untimed(check.snapshot()), untimed(snap))
  check.free()
  const bytes = sm.snapshotBytes()
  const fromBytes = new StateMachine()
  await fromBytes.restore(bytes)
  strictEqual(untimed(fromBytes.snapshot()), untimed(snap))
  fromBytes.free()
  const cases: Case[] = [
    {
      name: 'polycall snapshot() + restore(object)',
      inner: 1,
      fn: async () => {
        const copy = new StateMachine()
        await copy.restore(sm.snapshot())
        copy.free()
      },
    },
    {
      name: 'polycall snapshotBytes() + restore(bytes)',
      inner: 1,
      fn: async () => {
        const copy = new StateMachine()
        await copy.restore(sm.snapshotBytes())
        copy.free()
      },
    },
    {
      name: 'polycall JSON.stringify(snapshot()) + restore(text)',
      inner: 1,
      fn: async () => {
        const copy = new StateMachine()
        await copy.restore(JSON.stringify(sm.snapshot()))
        copy.free()
      },
    },
  ]
  if (np.ctor) {
    const Ctor = np.ctor
    const m = await theirs(Ctor)
    const s = m.createSnapshot()
    strictEqual(s.states.length, 32)
    strictEqual(s.history.length, 100)
    strictEqual(s.currentState, sm.current)
    cases.push({
      name: 'node-polycall createSnapshot() + restoreFromSnapshot()',
      inner: 1,
      fn: async () => {
        await new Ctor().restoreFromSnapshot(m.createSnapshot())
      },
    })
  }
  return cases
}

async function transitionCases(): Promise<Case[]> {
  const sm = new StateMachine()
  for (const n of ['A', 'B']) sm.addState(n)
  sm.addTransition('A', 'B')
  sm.addTransition('B', 'A')
  const cases: Case[] = [
    {
      name: 'polycall transition()',
      inner: BATCH,
      fn: async () => {
        for (let i = 0; i < BATCH; i++) await sm.transition(i & 1 ? 'A' : 'B')
      },
    },
  ]
  if (np.ctor) {
    const m = new np.ctor()
    for (const n of ['A', 'B']) m.addState(n)
    m.addTransition('A', 'B')
    m.addTransition('B', 'A')
    cases.push({
      name: 'node-polycall executeTransition()',
      inner: BATCH,
      fn: async () => {
        for (let i = 0; i < BATCH; i++) await m.executeTransition(i & 1 ? 'A' : 'B')
      },
    })
  }
  return cases
}

const HEADER = `# polycall's StateMachine against node-polycall's

\`POLYCALL_BENCH_NODE_POLYCALL=<node-polycall checkout> node --import tsx benchmarks/state-vs-node-polycall.ts\`.
Both machines live in the same process and are built the same way: 32 states, each with
transitions to the next and the fifth next (64), metadata on 4 of them, 150 moves (so 100
history entries), 4 locked. Every case runs ${RUNS} times, the sides interleaved and their order
rotated each run; each figure is the median with the min-max over the runs, and each ratio the
ratio of the medians with the range of the per-run ratios (above 1: polycall is faster). Times
are ${CPU_CLOCK ? "the process's CPU time per call (user + system, GC threads included), which the load of a shared machine disturbs far less than wall time" : 'wall time per call'}.
`

const SNAPSHOT_NOTE = `
What each snapshot carries, so that the comparison is stated fairly: node-polycall's
\`createSnapshot()\` gives the time, the current state's name, each state's JSON with its
checksum, and a copy of the history; \`restoreFromSnapshot()\` checks each state's checksum,
rebuilds the states and takes the history array as it is (no transitions are restored, the
history is not checked). polycall's JSON snapshot carries the same members (node-polycall can
restore it) plus \`format\`, the transition table and a machine checksum over all of it, and
\`restore()\` checks the machine checksum, every state checksum, names, limits, references,
that the history is a walk ending in the current state, and that no live state is locked,
before it changes anything; the restored machine can transition at once. The compact form
(\`snapshotBytes()\`) carries the same content under a CRC-32 and is restored with the same
checks (each state checksum recomputed). Each polycall case also creates and frees the new
machine (node-polycall's case creates one too).
`

if (profile !== undefined) {
  const cases = [...(await snapshotCases()), ...(await transitionCases())]
  const c = cases.find((x) => x.name.includes(profile))
  if (!c) throw new Error(`no case matching ${profile}: ${cases.map((x) => x.name).join(', ')}`)
  const end = Date.now() + 4000
  let n = 0
  while (Date.now() < end) {
    await c.fn()
    n++
  }
  console.log(`${c.name}: ${n} calls, ${fmt((4000 * 1e6) / (n * c.inner))} ns each`)
} else {
  const load = loadavg().map((x) => x.toFixed(2))
  const sections: string[] = [HEADER, machine(), `- Load average before: ${load.join(' ')}`]
  if (!np.ctor) console.log(`node-polycall rows skipped: ${np.reason}`)
  const us = (ns: number) => fmt(ns / 1000)
  const ns1 = (ns: number) => fmt(ns)
  if (only === undefined || only === 'snapshot') {
    const cases = await snapshotCases()
    const r = await compare(cases)
    const base = r.get('node-polycall createSnapshot() + restoreFromSnapshot()')
    const rows = cases.map((c) => [c.name, range(r.get(c.name)!, us), base ? ratio(base, r.get(c.name)!) : '-'])
    sections.push(`\n### Snapshot + restore into a new machine\n\n${table(['case', 'µs per round trip, median (min-max)', 'vs node-polycall'], rows)}`)
  }
  if (only === undefined || only === 'transition') {
    const cases = await transitionCases()
    const r = await compare(cases)
    const base = r.get('node-polycall executeTransition()')
    const rows = cases.map((c) => [c.name, range(r.get(c.name)!, ns1), base ? ratio(base, r.get(c.name)!) : '-'])
    sections.push(`\n### Guard-less awaited transition\n\n${table(['case', 'ns per transition, median (min-max)', 'vs node-polycall'], rows)}`)
  }
  sections.push(
    `\n- Load average after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ${RUNS} runs of ${WINDOW} ms per case, ${CPU_CLOCK ? 'process CPU time' : 'wall time'} per call`,
  )
  sections.push(SNAPSHOT_NOTE)
  const md = `${sections.join('\n')}\n`
  console.log(md)
  console.log(writeResult('state-vs-node-polycall.md', md))
}
