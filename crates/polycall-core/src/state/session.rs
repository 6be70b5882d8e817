//! The protocol session machine (docs/protocol.md §6): INIT → HANDSHAKE → AUTH → READY, then
//! ERROR and CLOSED, with the frame types each state accepts, per role.
//!
//! Besides the C table (INIT→HANDSHAKE, HANDSHAKE→AUTH, AUTH→READY, READY→ERROR|CLOSED,
//! ERROR→CLOSED), a session may fail (→ ERROR) or close (→ CLOSED) from any state before
//! CLOSED: a handshake can time out, and a peer can send garbage before it is ready. CLOSED is
//! terminal. The tables are bit masks so that the network layer can copy them once and check
//! every frame without calling in here.

use crate::error::{Error, Result};
use crate::packet::MessageType;

/// Session states, with the C library's enumeration values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SessionState {
    /// Nothing exchanged yet.
    Init = 0,
    /// HANDSHAKE sent (client) or being answered (server).
    Handshake = 1,
    /// Handshake complete, authentication in progress.
    Auth = 2,
    /// Commands flow.
    Ready = 3,
    /// A fatal error; only closing remains.
    Error = 4,
    /// Terminal.
    Closed = 5,
}

/// Every session state, by value.
pub const SESSION_STATES: [SessionState; 6] = [
    SessionState::Init,
    SessionState::Handshake,
    SessionState::Auth,
    SessionState::Ready,
    SessionState::Error,
    SessionState::Closed,
];

impl TryFrom<u8> for SessionState {
    type Error = Error;

    fn try_from(value: u8) -> Result<Self> {
        SESSION_STATES
            .get(usize::from(value))
            .copied()
            .ok_or_else(|| Error::InvalidState(format!("session state {value}")))
    }
}

/// Which side of a connection a session machine tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionRole {
    /// The side that connects and sends HANDSHAKE.
    Client,
    /// The side that accepts.
    Server,
}

const fn bit(state: SessionState) -> u8 {
    1 << state as u8
}

const fn frame(kind: MessageType) -> u8 {
    1 << kind as u8
}

use MessageType::{Auth, Command, Error as ErrorFrame, Handshake, Heartbeat, Response};
use SessionState as S;

/// Allowed next states of each state, as bit masks (`1 << state`), indexed by state.
pub const EDGES: [u8; 6] = [
    bit(S::Handshake) | bit(S::Error) | bit(S::Closed), // INIT
    bit(S::Auth) | bit(S::Error) | bit(S::Closed),      // HANDSHAKE
    bit(S::Ready) | bit(S::Error) | bit(S::Closed),     // AUTH
    bit(S::Error) | bit(S::Closed),                     // READY
    bit(S::Closed),                                     // ERROR
    0,                                                  // CLOSED
];

/// Received frame types a server accepts in each state (`1 << type`), indexed by state.
/// COMMAND is accepted once READY (servers need not demand AUTH, §6); HEARTBEAT until CLOSED.
pub const SERVER_ACCEPTS: [u8; 6] = [
    frame(Handshake) | frame(Heartbeat),             // INIT
    frame(Heartbeat),                                // HANDSHAKE (reply in progress)
    frame(Auth) | frame(Heartbeat),                  // AUTH
    frame(Auth) | frame(Command) | frame(Heartbeat), // READY
    frame(Heartbeat),                                // ERROR
    0,                                               // CLOSED
];

/// Received frame types a client accepts in each state (`1 << type`), indexed by state.
pub const CLIENT_ACCEPTS: [u8; 6] = [
    frame(Heartbeat),                                                          // INIT
    frame(Handshake) | frame(Response) | frame(ErrorFrame) | frame(Heartbeat), // HANDSHAKE
    frame(Auth) | frame(Response) | frame(ErrorFrame) | frame(Heartbeat),      // AUTH
    frame(Response) | frame(ErrorFrame) | frame(Heartbeat),                    // READY
    frame(Heartbeat),                                                          // ERROR
    0,                                                                         // CLOSED
];

/// The accepted-frame masks of `role`, indexed by state.
pub const fn accepts_table(role: SessionRole) -> &'static [u8; 6] {
    match role {
        SessionRole::Client => &CLIENT_ACCEPTS,
        SessionRole::Server => &SERVER_ACCEPTS,
    }
}

/// Whether `from -> to` is an edge of the session machine.
pub fn can_move(from: SessionState, to: SessionState) -> bool {
    EDGES.get(from as usize).is_some_and(|m| m & bit(to) != 0)
}

/// Whether a `role` session in `state` accepts a received frame of type `kind`.
pub fn accepts(role: SessionRole, state: SessionState, kind: MessageType) -> bool {
    accepts_table(role)
        .get(state as usize)
        .is_some_and(|m| m & frame(kind) != 0)
}

/// One connection's session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMachine {
    role: SessionRole,
    state: SessionState,
}

impl SessionMachine {
    /// A session in INIT.
    pub const fn new(role: SessionRole) -> Self {
        Self {
            role,
            state: SessionState::Init,
        }
    }

    /// The side this machine tracks.
    pub const fn role(&self) -> SessionRole {
        self.role
    }

    /// The current state.
    pub const fn state(&self) -> SessionState {
        self.state
    }

    /// Moves to `next` along an edge.
    ///
    /// # Errors
    /// `InvalidTransition` when there is no edge; the state is unchanged.
    pub fn to(&mut self, next: SessionState) -> Result<()> {
        if !can_move(self.state, next) {
            return Err(Error::InvalidTransition {
                from: format!("{:?}", self.state).to_uppercase(),
                to: format!("{next:?}").to_uppercase(),
            });
        }
        self.state = next;
        Ok(())
    }

    /// Whether a received frame of type `kind` is acceptable now.
    pub fn accepts(&self, kind: MessageType) -> bool {
        accepts(self.role, self.state, kind)
    }

    /// HANDSHAKE ≤ state < ERROR (the C library's *connected*).
    pub const fn connected(&self) -> bool {
        let s = self.state as u8;
        s >= SessionState::Handshake as u8 && s < SessionState::Error as u8
    }

    /// state = READY (the C library's *authenticated*).
    pub const fn ready(&self) -> bool {
        matches!(self.state, SessionState::Ready)
    }

    /// state = ERROR.
    pub const fn failed(&self) -> bool {
        matches!(self.state, SessionState::Error)
    }

    /// state = CLOSED.
    pub const fn closed(&self) -> bool {
        matches!(self.state, SessionState::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [MessageType; 6] = [Handshake, Auth, Command, Response, ErrorFrame, Heartbeat];

    #[test]
    fn values_are_the_c_enumeration() {
        let values: Vec<u8> = SESSION_STATES.iter().map(|s| *s as u8).collect();
        assert_eq!(values, [0, 1, 2, 3, 4, 5]);
        assert_eq!(SessionState::try_from(3).unwrap(), SessionState::Ready);
        assert_eq!(
            SessionState::try_from(6).unwrap_err().code(),
            "INVALID_STATE"
        );
    }

    #[test]
    fn edges_are_the_c_table_plus_fail_and_close() {
        let c_table = [
            (S::Init, S::Handshake),
            (S::Handshake, S::Auth),
            (S::Auth, S::Ready),
            (S::Ready, S::Error),
            (S::Ready, S::Closed),
            (S::Error, S::Closed),
        ];
        for from in SESSION_STATES {
            for to in SESSION_STATES {
                let expected = c_table.contains(&(from, to))
                    || (from != S::Closed && (to == S::Error || to == S::Closed) && from != to);
                assert_eq!(can_move(from, to), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn walk_and_observers() {
        let mut s = SessionMachine::new(SessionRole::Client);
        assert!(!s.connected());
        s.to(S::Handshake).unwrap();
        assert!(s.connected());
        s.to(S::Auth).unwrap();
        let e = s.to(S::Init).unwrap_err();
        assert_eq!((e.code(), e.errno()), ("INVALID_TRANSITION", Some(2)));
        assert_eq!(e.to_string(), "no transition from AUTH to INIT");
        assert_eq!(s.state(), S::Auth);
        s.to(S::Ready).unwrap();
        assert!(s.ready() && s.connected());
        s.to(S::Error).unwrap();
        assert!(s.failed() && !s.connected());
        s.to(S::Closed).unwrap();
        assert!(s.closed());
        for next in SESSION_STATES {
            assert!(s.to(next).is_err());
        }
    }

    #[test]
    fn heartbeat_everywhere_but_closed() {
        for role in [SessionRole::Client, SessionRole::Server] {
            for state in SESSION_STATES {
                assert_eq!(accepts(role, state, Heartbeat), state != S::Closed);
            }
            assert!(TYPES.iter().all(|t| !accepts(role, S::Closed, *t)));
        }
    }

    #[test]
    fn server_takes_commands_only_when_ready() {
        let server = SessionRole::Server;
        for state in SESSION_STATES {
            assert_eq!(accepts(server, state, Command), state == S::Ready);
        }
        assert!(accepts(server, S::Init, Handshake));
        assert!(!accepts(server, S::Handshake, Handshake));
        assert!(accepts(server, S::Auth, Auth));
        assert!(accepts(server, S::Ready, Auth));
        assert!(
            TYPES
                .iter()
                .all(|t| !accepts(server, S::Ready, *t) || *t != Response)
        );
    }

    #[test]
    fn client_tables() {
        let client = SessionRole::Client;
        assert_eq!(CLIENT_ACCEPTS[0], 1 << 6);
        assert!(accepts(client, S::Handshake, Handshake));
        assert!(accepts(client, S::Handshake, Response));
        assert!(accepts(client, S::Auth, Auth));
        assert!(!accepts(client, S::Ready, Command));
        assert!(!accepts(client, S::Ready, Auth));
        assert!(accepts(client, S::Ready, ErrorFrame));
    }
}
