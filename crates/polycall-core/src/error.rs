//! Error identifiers of PROTOCOL.md §8.1 (decoder and session errors) plus the encoder's
//! argument errors. The identifiers returned by [`Error::code`] are public API: new variants
//! may be added, existing identifiers are never renamed.

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
}

impl Error {
    /// The stable identifier of this error (the names of PROTOCOL.md §8.1).
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
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
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
