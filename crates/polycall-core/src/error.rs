//! Error identifiers of docs/protocol.md §8.1 (decoder and session errors), the state-machine
//! errors of §8.4 and §9, the secure-session errors of docs/security.md, and the encoder's
//! argument errors. The identifiers returned by
//! [`Error::code`] are public API: new variants may be added, existing identifiers are never
//! renamed. [`Error::errno`] gives the C library's `polycall_sm_status_t` value where one exists.

use crate::packet::HEADER_SIZE;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Every failure the wire codec can report. No variant is produced by a panic path: all input,
/// however malformed, ends in one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream ended with 1 to 15 header bytes buffered.
    #[error("stream ended after {buffered} of {HEADER_SIZE} header bytes")]
    TruncatedHeader {
        /// Header bytes that had arrived.
        buffered: usize,
    },
    /// The stream ended before the announced payload had fully arrived.
    #[error("stream ended after {received} of {expected} payload bytes")]
    TruncatedPayload {
        /// `payload_length` from the header.
        expected: u32,
        /// Payload bytes that had arrived.
        received: u32,
    },
    /// The version byte is not 1.
    #[error("version byte {found} is not the supported protocol version 1")]
    VersionMismatch {
        /// The version byte found.
        found: u8,
    },
    /// The message type is 0 or 7..=255.
    #[error("message type {found} is not one of 1..=6")]
    UnknownMessageType {
        /// The type byte found.
        found: u32,
    },
    /// `payload_length` is over the limit (1 048 576 bytes, or a lower configured limit).
    #[error("payload_length {length} exceeds the {limit}-byte limit")]
    PayloadTooLarge {
        /// The announced or supplied payload length.
        length: u64,
        /// The limit in force.
        limit: u32,
    },
    /// The checksum computed over the payload differs from the header field.
    #[error("checksum mismatch: header carries {expected:#010x}, payload sums to {actual:#010x}")]
    ChecksumMismatch {
        /// The checksum field of the header.
        expected: u32,
        /// The checksum of the payload as received.
        actual: u32,
    },
    /// A handshake payload of 1 to 3 bytes, or an empty one in strict mode.
    #[error("handshake payload of {length} bytes is shorter than the 4-byte magic")]
    HandshakePayloadTooShort {
        /// Payload length.
        length: usize,
    },
    /// The first four handshake bytes are not the magic `43 4c 50 00`.
    #[error("handshake magic {found:#010x} is not 0x00504c43 (\"PLC\" little-endian)")]
    HandshakeBadMagic {
        /// The little-endian u32 read from the first four bytes.
        found: u32,
    },
    /// An argument outside its domain (for example a flags value above `0xffff`).
    #[error("{0}")]
    InvalidArgument(String),
    /// PCR1: the first four header bytes are not `PCR1`.
    #[error("bad magic {found:02x?}: a PCR1 frame starts with 50 43 52 31")]
    Pcr1BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// PCR1: the type byte is not 1..=4.
    #[error("PCR1 frame type {found} is not one of 1..=4")]
    Pcr1UnknownType {
        /// The type byte found.
        found: u8,
    },
    /// PCR1: the flags byte or the reserved u16 is not zero.
    #[error("PCR1 flags {flags:#04x} and reserved {reserved:#06x} must be zero")]
    Pcr1ReservedBits {
        /// The flags byte.
        flags: u8,
        /// The reserved field.
        reserved: u16,
    },
    /// PCR1: the length field is over the limit (1 048 576 bytes, or a lower configured one).
    #[error("PCR1 length {length} exceeds the {limit}-byte limit")]
    Pcr1PayloadTooLarge {
        /// The announced or supplied length.
        length: u64,
        /// The limit in force.
        limit: u32,
    },
    /// PCR1: the stream ended inside a header.
    #[error("stream ended after {buffered} of 16 PCR1 header bytes")]
    Pcr1TruncatedHeader {
        /// Header bytes that had arrived.
        buffered: usize,
    },
    /// PCR1: the stream ended inside a payload.
    #[error("stream ended after {received} of {expected} PCR1 payload bytes")]
    Pcr1TruncatedPayload {
        /// The length field.
        expected: u32,
        /// Payload bytes that had arrived.
        received: u32,
    },
    /// A state the machine does not have (C `ERROR_INVALID_STATE`).
    #[error("no state {0:?}")]
    InvalidState(String),
    /// No transition between the two states, or none possible (C `ERROR_INVALID_TRANSITION`).
    #[error("no transition from {from} to {to}")]
    InvalidTransition {
        /// The source state (quoted), or `(none)` when the machine has no current state.
        from: String,
        /// The target state (quoted).
        to: String,
    },
    /// A self-transition while `allow_self_transitions` is off.
    #[error("self-transition of {0:?} is not allowed")]
    SelfTransition(String),
    /// A transition out of a final state.
    #[error("state {0:?} is final and cannot be left")]
    FinalState(String),
    /// Adding a state beyond the configured limit (C `ERROR_MAX_STATES_REACHED`).
    #[error("the machine already holds its limit of {limit} states")]
    MaxStatesReached {
        /// The limit in force.
        limit: usize,
    },
    /// Adding a transition beyond the configured limit (C `ERROR_MAX_TRANSITIONS_REACHED`).
    #[error("the machine already holds its limit of {limit} transitions")]
    MaxTransitionsReached {
        /// The limit in force.
        limit: usize,
    },
    /// A state name longer than the configured limit, in UTF-8 bytes.
    #[error("state name of {length} bytes exceeds the {limit}-byte limit")]
    StateNameTooLong {
        /// Name length in UTF-8 bytes.
        length: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Adding a state whose name is taken.
    #[error("state {0:?} already exists")]
    DuplicateState(String),
    /// Adding a transition that exists.
    #[error("a transition from {from:?} to {to:?} already exists")]
    DuplicateTransition {
        /// The source state.
        from: String,
        /// The target state.
        to: String,
    },
    /// The state is locked (C `ERROR_STATE_LOCKED`): a transition's source or target, a
    /// restore's target, or locking it again.
    #[error("state {0:?} is locked")]
    StateLocked(String),
    /// Unlocking a state that is not locked.
    #[error("state {0:?} is not locked")]
    StateNotLocked(String),
    /// A checksum does not match its content (C `ERROR_INTEGRITY_CHECK_FAILED`).
    #[error("integrity check failed: expected {expected:#010x}, computed {actual:#010x}")]
    IntegrityCheckFailed {
        /// The checksum stored or supplied.
        expected: u32,
        /// The checksum of the content.
        actual: u32,
    },
    /// A state snapshot of another version than the live state (C `ERROR_VERSION_MISMATCH`).
    #[error("snapshot of {state:?} is version {snapshot}, the live state is version {live}")]
    StateVersionMismatch {
        /// The state's name.
        state: String,
        /// Version in the snapshot.
        snapshot: u64,
        /// Version of the live state.
        live: u64,
    },
    /// A snapshot that is not well formed (shape, references, or a checksum of 0).
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// A secure handshake message failed: a wrong or unknown key, a man in the middle, an
    /// altered hello, a malformed or oversized message, or one out of order.
    #[error("secure handshake failed: {0}")]
    HandshakeFailed(String),
    /// The peer did not offer, or did not accept, a secure session where one is required.
    #[error("insecure peer: {0}")]
    InsecurePeer(String),
    /// A frame of an established secure session failed authentication: its header or payload
    /// was altered, or it was replayed, reordered, dropped before, or taken from another
    /// session, or it was not sealed at all.
    #[error("tampered frame: {0}")]
    Tampered(String),
    /// A compressed payload announces a decompressed size over the limit; refused before
    /// anything is decompressed.
    #[error("compressed payload announces {size} bytes, over the {limit}-byte limit")]
    DecompressionLimit {
        /// The announced decompressed size.
        size: u64,
        /// The limit in force.
        limit: u32,
    },
    /// A compressed payload is not a valid lz4 block of its announced size.
    #[error("compressed payload is malformed: {0}")]
    DecompressionFailed(String),
    /// Key bytes or key text that are not a valid key of the expected kind.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// An identity file that cannot be read, written or parsed.
    #[error("identity file: {0}")]
    IdentityFile(String),
    /// A snapshot signature that is missing, malformed, made by another key, or wrong.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The operating system's random number generator failed.
    #[error("no randomness available: {0}")]
    EntropyUnavailable(String),
}

impl Error {
    /// The stable identifier of this error (the names of docs/protocol.md §8.1).
    pub fn code(&self) -> &'static str {
        match self {
            Self::TruncatedHeader { .. } => "TRUNCATED_HEADER",
            Self::TruncatedPayload { .. } => "TRUNCATED_PAYLOAD",
            Self::VersionMismatch { .. } => "VERSION_MISMATCH",
            Self::UnknownMessageType { .. } => "UNKNOWN_MESSAGE_TYPE",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::ChecksumMismatch { .. } => "CHECKSUM_MISMATCH",
            Self::HandshakePayloadTooShort { .. } => "HANDSHAKE_PAYLOAD_TOO_SHORT",
            Self::HandshakeBadMagic { .. } => "HANDSHAKE_BAD_MAGIC",
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Pcr1BadMagic { .. } => "PCR1_BAD_MAGIC",
            Self::Pcr1UnknownType { .. } => "PCR1_UNKNOWN_TYPE",
            Self::Pcr1ReservedBits { .. } => "PCR1_RESERVED_BITS",
            Self::Pcr1PayloadTooLarge { .. } => "PCR1_PAYLOAD_TOO_LARGE",
            Self::Pcr1TruncatedHeader { .. } => "PCR1_TRUNCATED_HEADER",
            Self::Pcr1TruncatedPayload { .. } => "PCR1_TRUNCATED_PAYLOAD",
            Self::InvalidState(_) => "INVALID_STATE",
            Self::InvalidTransition { .. } => "INVALID_TRANSITION",
            Self::SelfTransition(_) => "SELF_TRANSITION",
            Self::FinalState(_) => "FINAL_STATE",
            Self::MaxStatesReached { .. } => "MAX_STATES_REACHED",
            Self::MaxTransitionsReached { .. } => "MAX_TRANSITIONS_REACHED",
            Self::StateNameTooLong { .. } => "STATE_NAME_TOO_LONG",
            Self::DuplicateState(_) => "DUPLICATE_STATE",
            Self::DuplicateTransition { .. } => "DUPLICATE_TRANSITION",
            Self::StateLocked(_) => "STATE_LOCKED",
            Self::StateNotLocked(_) => "STATE_NOT_LOCKED",
            Self::IntegrityCheckFailed { .. } => "INTEGRITY_CHECK_FAILED",
            Self::StateVersionMismatch { .. } => "STATE_VERSION_MISMATCH",
            Self::InvalidSnapshot(_) => "INVALID_SNAPSHOT",
            Self::HandshakeFailed(_) => "HANDSHAKE_FAILED",
            Self::InsecurePeer(_) => "INSECURE_PEER",
            Self::Tampered(_) => "TAMPERED",
            Self::DecompressionLimit { .. } => "DECOMPRESSION_LIMIT",
            Self::DecompressionFailed(_) => "DECOMPRESSION_FAILED",
            Self::InvalidKey(_) => "INVALID_KEY",
            Self::IdentityFile(_) => "IDENTITY_FILE",
            Self::BadSignature(_) => "BAD_SIGNATURE",
            Self::EntropyUnavailable(_) => "ENTROPY_UNAVAILABLE",
        }
    }

    /// The C library's `polycall_sm_status_t` value (docs/protocol.md §8.4) of a state-machine
    /// error, or `None` where the C library has no equivalent.
    pub fn errno(&self) -> Option<u8> {
        match self {
            Self::InvalidState(_) => Some(1),
            Self::InvalidTransition { .. } | Self::SelfTransition(_) | Self::FinalState(_) => {
                Some(2)
            }
            Self::MaxStatesReached { .. } => Some(3),
            Self::MaxTransitionsReached { .. } => Some(4),
            Self::IntegrityCheckFailed { .. } => Some(7),
            Self::StateLocked(_) => Some(8),
            Self::StateVersionMismatch { .. } => Some(9),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_spec_identifiers() {
        let cases = [
            (Error::TruncatedHeader { buffered: 3 }, "TRUNCATED_HEADER"),
            (
                Error::TruncatedPayload {
                    expected: 5,
                    received: 3,
                },
                "TRUNCATED_PAYLOAD",
            ),
            (Error::VersionMismatch { found: 2 }, "VERSION_MISMATCH"),
            (
                Error::UnknownMessageType { found: 7 },
                "UNKNOWN_MESSAGE_TYPE",
            ),
            (
                Error::PayloadTooLarge {
                    length: 1_048_577,
                    limit: 1_048_576,
                },
                "PAYLOAD_TOO_LARGE",
            ),
            (
                Error::ChecksumMismatch {
                    expected: 1,
                    actual: 0,
                },
                "CHECKSUM_MISMATCH",
            ),
            (
                Error::HandshakePayloadTooShort { length: 3 },
                "HANDSHAKE_PAYLOAD_TOO_SHORT",
            ),
            (Error::HandshakeBadMagic { found: 0 }, "HANDSHAKE_BAD_MAGIC"),
            (Error::InvalidArgument("x".into()), "INVALID_ARGUMENT"),
            (Error::HandshakeFailed("x".into()), "HANDSHAKE_FAILED"),
            (Error::InsecurePeer("x".into()), "INSECURE_PEER"),
            (Error::Tampered("x".into()), "TAMPERED"),
            (
                Error::DecompressionLimit {
                    size: 2_000_000,
                    limit: 1_048_576,
                },
                "DECOMPRESSION_LIMIT",
            ),
            (
                Error::DecompressionFailed("x".into()),
                "DECOMPRESSION_FAILED",
            ),
            (Error::InvalidKey("x".into()), "INVALID_KEY"),
            (Error::IdentityFile("x".into()), "IDENTITY_FILE"),
            (Error::BadSignature("x".into()), "BAD_SIGNATURE"),
            (Error::EntropyUnavailable("x".into()), "ENTROPY_UNAVAILABLE"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.errno(), None, "{code}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn state_errors_carry_the_c_status() {
        let s = || "S".to_owned();
        let cases = [
            (Error::InvalidState(s()), "INVALID_STATE", Some(1)),
            (
                Error::InvalidTransition { from: s(), to: s() },
                "INVALID_TRANSITION",
                Some(2),
            ),
            (Error::SelfTransition(s()), "SELF_TRANSITION", Some(2)),
            (Error::FinalState(s()), "FINAL_STATE", Some(2)),
            (
                Error::MaxStatesReached { limit: 32 },
                "MAX_STATES_REACHED",
                Some(3),
            ),
            (
                Error::MaxTransitionsReached { limit: 64 },
                "MAX_TRANSITIONS_REACHED",
                Some(4),
            ),
            (
                Error::StateNameTooLong {
                    length: 32,
                    limit: 31,
                },
                "STATE_NAME_TOO_LONG",
                None,
            ),
            (Error::DuplicateState(s()), "DUPLICATE_STATE", None),
            (
                Error::DuplicateTransition { from: s(), to: s() },
                "DUPLICATE_TRANSITION",
                None,
            ),
            (Error::StateLocked(s()), "STATE_LOCKED", Some(8)),
            (Error::StateNotLocked(s()), "STATE_NOT_LOCKED", None),
            (
                Error::IntegrityCheckFailed {
                    expected: 1,
                    actual: 2,
                },
                "INTEGRITY_CHECK_FAILED",
                Some(7),
            ),
            (
                Error::StateVersionMismatch {
                    state: s(),
                    snapshot: 1,
                    live: 2,
                },
                "STATE_VERSION_MISMATCH",
                Some(9),
            ),
            (Error::InvalidSnapshot(s()), "INVALID_SNAPSHOT", None),
        ];
        for (err, code, errno) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.errno(), errno, "{code}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn messages_name_the_numbers() {
        let e = Error::PayloadTooLarge {
            length: 1_048_577,
            limit: 1_048_576,
        };
        assert_eq!(
            e.to_string(),
            "payload_length 1048577 exceeds the 1048576-byte limit"
        );
    }
}
