/**
 * The client side of PCR1 (docs/protocol.md §P2-§P3, §P6): no handshake but one extension offer
 * (docs/protocol-extensions.md, "PCR1 extensions"), REQUEST/RESPONSE for calls,
 * CONTROL/CONTROL_REPLY for control actions, and corr-0 CONTROL_REPLY as a connection-level
 * failure.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { PolyCallError } from '../core/errors.js'
import { extOf, type ClientProtocol } from '../client/protocol.js'
import { pcr1Wire } from '../network/wire.js'
import { SessionState } from '../state/session.js'
import { Pcr1Type } from './frame.js'
import {
  MAX_DEADLINE_MS,
  Pcr1Code,
  decodeOutcome,
  encodeControl,
  encodeExtensionOffer,
  encodeRequest,
  offerAccepted,
  splitOperation,
} from './messages.js'

/** The PCR1 client adapter. @internal */
export const pcr1ClientProtocol: ClientProtocol = {
  wire: pcr1Wire,

  async setup(conn, setup) {
    // PCR1 has no hello. A polycall client offers its extensions in one CONTROL
    // (docs/protocol-extensions.md, "PCR1 extensions") and waits for the answer, within the
    // client's bound on the whole setup; `legacy: true` skips it.
    if (setup.sequenceStart !== undefined) conn.startSequence(setup.sequenceStart)
    conn.session.to(SessionState.Handshake)
    if (!setup.legacyOnly) {
      // Any frame echoing the offer's corr answers it (an echo peer sends the CONTROL back), but
      // only a well-formed positive CONTROL_REPLY turns anything on: the C runtime's
      // `control.unknown`, or anything else, leaves the connection plain PCR1.
      const answer = await setup.exchange(conn, Pcr1Type.Control, encodeExtensionOffer(), () => true)
      conn.capabilities = answer.type === Pcr1Type.ControlReply ? offerAccepted(answer.payload) : 0
    }
    conn.session.to(SessionState.Auth)
    conn.session.to(SessionState.Ready)
    return setup.maxInFlight
  },

  async authenticate() {
    throw new PolyCallError('ERR_POLYCALL_INVALID_ARGUMENT', 'PCR1 has no authentication step; pass authToken to control()')
  },

  encode(conn, call, remaining) {
    if (call.kind === 'control') return { type: Pcr1Type.Control, payload: encodeControl(call.command, call.authToken) }
    const { service, operation } = splitOperation(call.command)
    const deadline = remaining === undefined ? MAX_DEADLINE_MS : Math.ceil(remaining)
    // Extension members only where the server accepted them: other peers get the plain REQUEST.
    const ext = conn.capabilities === 0 || (call.key === undefined && call.trace === undefined) ? undefined : extOf(conn, call)
    return { type: Pcr1Type.Request, payload: encodeRequest(service, operation, deadline, call.data, ext) }
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
