/**
 * The C library's demo state machine (docs/protocol.md §9.1), driven through its transitions:
 * INIT, READY, RUNNING, PAUSED and the final ERROR, with `to_ready`, `to_running`, `to_paused`,
 * `pause_to_running` and `to_error`. Prints each step, the refusals (with their code and the C
 * library's errno), the history, the states' checksums and a snapshot, then restores the
 * snapshot into a second machine.
 *
 * Run: node --import tsx examples/state-machine.ts
 */
import { StateMachine, isPolyCallError } from '../ts/index.js'

using sm = new StateMachine({ maxHistory: 100 })
sm.on('transition', ({ from, to }) => console.log(`  ${from} -> ${to}`))

for (const name of ['INIT', 'READY', 'RUNNING', 'PAUSED']) sm.addState(name)
sm.addState('ERROR', { final: true, onEnter: ({ from }) => console.log(`  (entered ERROR from ${from})`) })

let workers = 0
sm.addTransition('INIT', 'READY') // to_ready
sm.addTransition('READY', 'RUNNING', { guard: async () => workers > 0 }) // to_running
sm.addTransition('RUNNING', 'PAUSED') // to_paused
sm.addTransition('PAUSED', 'RUNNING') // pause_to_running
sm.addTransition('RUNNING', 'ERROR') // to_error

async function attempt(to: string): Promise<void> {
  try {
    await sm.transition(to)
  } catch (err) {
    if (!isPolyCallError(err)) throw err
    console.log(`  refused ${sm.current} -> ${to}: ${err.code} (errno ${err.errno ?? '-'})`)
  }
}

console.log(`start in ${sm.current}`)
await attempt('READY')
await attempt('RUNNING') // the guard says no: no workers yet
workers = 4
await attempt('RUNNING')
await attempt('PAUSED')
sm.lock('RUNNING')
await attempt('RUNNING') // the target is locked
sm.unlock('RUNNING')
await attempt('RUNNING')
await attempt('READY') // no RUNNING -> READY transition
await attempt('ERROR')
await attempt('INIT') // ERROR is final

console.log('\nhistory:')
for (const { from, to, timestamp } of sm.history()) console.log(`  ${new Date(timestamp).toISOString()} ${from} -> ${to}`)

console.log('\nstates (node-polycall checksum, C checksum for the NULL-action LP64 layout):')
for (const state of sm.states()) {
  const d = state.diagnostics()
  const hex = (n: number) => n.toString(16).padStart(8, '0')
  console.log(
    `  ${state.name.padEnd(8)} ${state.endpoint.padEnd(9)} checksum ${hex(d.checksum)}  C ${hex(d.cChecksum)}  ` +
      `in ${d.transitionsIn} out ${d.transitionsOut} failed ${d.failedTransitions}${d.final ? '  final' : ''}`,
  )
}

const snapshot = sm.snapshot()
console.log('\nsnapshot:')
console.log(JSON.stringify(snapshot, null, 2))

using copy = new StateMachine()
const format = await copy.restore(JSON.parse(JSON.stringify(snapshot)))
console.log(`\nrestored a ${format} snapshot: current ${copy.current}, ${copy.transitions().length} transitions, ${copy.history().length} history entries`)
