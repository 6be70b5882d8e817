import test from 'ava'
import { ErrorCode, MessageType, SessionMachine, SessionState, type PolyCallError, type SessionRole } from '../ts/index.js'

const STATES = [SessionState.Init, SessionState.Handshake, SessionState.Auth, SessionState.Ready, SessionState.Error, SessionState.Closed]
const TYPES = [MessageType.Handshake, MessageType.Auth, MessageType.Command, MessageType.Response, MessageType.Error, MessageType.Heartbeat]
const { Init, Handshake, Auth, Ready, Error: Failed, Closed } = SessionState
const M = MessageType

/** Expected tables, written out by hand (docs/protocol.md §6 plus the fail/close edges). */
const EDGES: Record<SessionState, SessionState[]> = {
  [Init]: [Handshake, Failed, Closed],
  [Handshake]: [Auth, Failed, Closed],
  [Auth]: [Ready, Failed, Closed],
  [Ready]: [Failed, Closed],
  [Failed]: [Closed],
  [Closed]: [],
}
const ACCEPTS: Record<SessionRole, Record<SessionState, MessageType[]>> = {
  server: {
    [Init]: [M.Handshake, M.Heartbeat],
    [Handshake]: [M.Heartbeat],
    [Auth]: [M.Auth, M.Heartbeat],
    [Ready]: [M.Auth, M.Command, M.Heartbeat],
    [Failed]: [M.Heartbeat],
    [Closed]: [],
  },
  client: {
    [Init]: [M.Heartbeat],
    [Handshake]: [M.Handshake, M.Response, M.Error, M.Heartbeat],
    [Auth]: [M.Auth, M.Response, M.Error, M.Heartbeat],
    [Ready]: [M.Response, M.Error, M.Heartbeat],
    [Failed]: [M.Heartbeat],
    [Closed]: [],
  },
}

/** A machine driven to `state` along allowed edges. */
function at(role: SessionRole, state: SessionState): SessionMachine {
  const s = new SessionMachine(role)
  const path: Record<SessionState, SessionState[]> = {
    [Init]: [],
    [Handshake]: [Handshake],
    [Auth]: [Handshake, Auth],
    [Ready]: [Handshake, Auth, Ready],
    [Failed]: [Failed],
    [Closed]: [Closed],
  }
  for (const next of path[state]) s.to(next)
  return s
}

test('session states keep the C enumeration values', (t) => {
  t.deepEqual(STATES, [0, 1, 2, 3, 4, 5])
  const s = new SessionMachine('client')
  t.is(s.role, 'client')
  t.is(s.state, SessionState.Init)
  t.throws(() => new SessionMachine('peer' as SessionRole), { code: ErrorCode.INVALID_ARGUMENT })
})

test('every edge of the table, and only those, is allowed', (t) => {
  for (const from of STATES) {
    for (const to of STATES) {
      const s = at('server', from)
      if (EDGES[from].includes(to)) {
        s.to(to)
        t.is(s.state, to)
      } else {
        const err = t.throws(() => s.to(to)) as PolyCallError
        t.is(err.code, ErrorCode.INVALID_TRANSITION)
        t.is(err.errno, 2)
        t.is(s.state, from)
      }
    }
  }
})

test('accepted frames per role and state', (t) => {
  for (const role of ['server', 'client'] as const) {
    for (const state of STATES) {
      const s = at(role, state)
      for (const type of TYPES) t.is(s.accepts(type), ACCEPTS[role][state].includes(type), `${role} ${SessionState[state]} ${M[type]}`)
    }
  }
})

test('observers follow the C definitions', (t) => {
  const view = (s: SessionMachine) => [s.connected, s.ready, s.failed, s.closed]
  t.deepEqual(view(at('client', Init)), [false, false, false, false])
  t.deepEqual(view(at('client', Handshake)), [true, false, false, false])
  t.deepEqual(view(at('client', Auth)), [true, false, false, false])
  t.deepEqual(view(at('client', Ready)), [true, true, false, false])
  t.deepEqual(view(at('client', Failed)), [false, false, true, false])
  t.deepEqual(view(at('client', Closed)), [false, false, false, true])
})

test('a session can fail or close from any state before CLOSED', (t) => {
  for (const from of [Init, Handshake, Auth, Ready]) {
    const s = at('client', from)
    s.to(Failed)
    s.to(Closed)
    t.true(s.closed)
  }
  const s = at('server', Closed)
  for (const next of STATES) t.throws(() => s.to(next), { code: ErrorCode.INVALID_TRANSITION })
})
