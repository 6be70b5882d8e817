/**
 * The client side of PCR1 (docs/protocol.md §P2-§P3, §P6): no handshake, REQUEST/RESPONSE for calls,
 * CONTROL/CONTROL_REPLY for control actions, and corr-0 CONTROL_REPLY as a connection-level
 * failure.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { PolyCallError } from '../core/errors.js'
import type { ClientProtocol } from '../client/protocol.js'
import { pcr1Wire } from '../network/wire.js'
import { SessionState } from '../state/session.js'
import { Pcr1Type } from './frame.js'
import { MAX_DEADLINE_MS, Pcr1Code, decodeOutcome, encodeControl, encodeRequest, splitOperation } from './messages.js'

/** The PCR1 client adapter. @internal */
export const pcr1ClientProtocol: ClientProtocol = {
  wire: pcr1Wire,

  async setup(conn, setup) {
    // PCR1 has no hello: the connection is ready as soon as it is open.
    conn.session.to(SessionState.Handshake)
    conn.session.to(SessionState.Auth)
    conn.session.to(SessionState.Ready)
    if (setup.sequenceStart !== undefined) conn.startSequence(setup.sequenceStart)
    return setup.maxInFlight
  },

  async authenticate() {
    throw new PolyCallError('ERR_POLYCALL_INVALID_ARGUMENT', 'PCR1 has no authentication step; pass authToken to control()')
  },

  encode(_conn, call, remaining) {
    if (call.kind === 'control') return { type: Pcr1Type.Control, payload: encodeControl(call.command, call.authToken) }
    const { service, operation } = splitOperation(call.command)
    const deadline = remaining === undefined ? MAX_DEADLINE_MS : Math.ceil(remaining)
    return { type: Pcr1Type.Request, payload: encodeRequest(service, operation, deadline, call.data) }
  },

  // A REQUEST is answered by a RESPONSE only, a CONTROL by a CONTROL_REPLY only (§2).
  isReply: (f, call) =>
    f.sequence !== 0 &&
    (call === undefined
      ? f.type === Pcr1Type.Response || f.type === Pcr1Type.ControlReply
      : f.type === (call.kind === 'control' ? Pcr1Type.ControlReply : Pcr1Type.Response)),

  deadlineCode: Pcr1Code.DEADLINE_EXCEEDED,

  outcome(_conn, f, call) {
    return decodeOutcome(f.payload, call.kind === 'control' ? 'data' : 'output')
  },

  notice(_conn, f) {
    if (f.type !== Pcr1Type.ControlReply || f.sequence !== 0) return undefined
    const outcome = decodeOutcome(f.payload, 'data')
    return outcome.ok ? undefined : new PolyCallError(outcome.code, outcome.message)
  },

  cancel() {
    // PCR1 has no cancellation: the runtime finishes the call and its reply is dropped.
  },
}
