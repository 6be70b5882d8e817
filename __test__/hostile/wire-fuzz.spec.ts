/**
 * The model-checked frame fuzzer (fuzz-engine.ts) against a real PolyCallServer over loopback,
 * for both wires: a few thousand valid and mutated frames in random chunkings, every reply and
 * close checked against the model, a control client served throughout. The seed is random per
 * run unless POLYCALL_WIRE_SEED is set; a failure names it, and `npm run fuzz:wire` reruns it.
 */
import test from 'ava'
import { BOUND_MS, fuzzWire, startFuzzServer, summary } from './fuzz-engine.js'

const FRAMES = Number(process.env['POLYCALL_WIRE_FRAMES'] ?? 3000)
const SEED = process.env['POLYCALL_WIRE_SEED'] === undefined ? (Math.random() * 0x1_0000_0000) >>> 0 : Number(process.env['POLYCALL_WIRE_SEED']) >>> 0

for (const protocol of ['v1', 'pcr1'] as const) {
  test(`${protocol}: every reply and close follows the model, and a control client is served throughout`, async (t) => {
    const target = await startFuzzServer(protocol)
    t.teardown(() => target.server.close({ timeout: 2000 }))
    const report = await fuzzWire({ protocol, frames: FRAMES, seed: SEED, target })
    t.log(summary(report))
    const rerun = `seed ${SEED}: rerun with npm run fuzz:wire -- --protocol ${protocol} --frames ${FRAMES} --seed ${SEED}`
    t.deepEqual(report.violations, [], rerun)
    t.true(report.frames >= FRAMES, rerun)
    // Every ending happened, and every connection the server closed went within a bound.
    for (const [ending, n] of Object.entries(report.endings)) t.true(n > 0, `${ending} endings: ${n} (${rerun})`)
    t.true(report.closeMs.max < BOUND_MS, `slowest close ${report.closeMs.max} ms (${rerun})`)
    t.true(report.control.calls > 0 && report.control.failures === 0, rerun)
    t.deepEqual(report.serverAfter, { connections: 0, inFlight: 0 }, rerun)
    // And the mutations were all tried.
    const kinds = Object.keys(report.kinds).join(' ')
    for (const kind of ['fatal (version)', 'fatal (type)', 'fatal (length)', 'fatal (magic)', 'fatal (reserved)', 'fatal (flags)', 'fatal (checksum)', 'handshake (bad-magic)', 'handshake (too-short)', 'garbage-command', 'malformed', 'client-reply', 'not allowed', 'big']) {
      const wanted = protocol === 'v1' ? !/magic\)|reserved|flags|malformed/.test(kind) : !/version|checksum|handshake|garbage|not allowed/.test(kind)
      if (wanted) t.true(kinds.includes(kind), `no ${kind} frame was sent (${rerun})`)
    }
  })
}
