//! Header layout and validation (docs/protocol.md §1, §3, §7 steps 1-4).

use crate::error::{Error, Result};

/// Size of the fixed header in bytes.
pub const HEADER_SIZE: usize = 16;
/// The only protocol version defined for this wire.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest payload a frame may announce, inclusive (docs/protocol.md §7).
pub const MAX_PAYLOAD: u32 = 1_048_576;

/// Flag bits of the header's `flags` field (docs/protocol.md §3.2). They are advisory: unknown
/// bits are carried through unchanged and never alter how a payload is read.
pub mod flags {
    /// No flag.
    pub const NONE: u16 = 0;
    /// Set on AUTH by the references; nothing is encrypted.
    pub const ENCRYPTED: u16 = 0x01;
    /// Never set by the references.
    pub const COMPRESSED: u16 = 0x02;
    /// Never set by the references.
    pub const URGENT: u16 = 0x04;
    /// Set on HANDSHAKE, AUTH and COMMAND by the references; no effect.
    pub const RELIABLE: u16 = 0x08;
}

/// Message type codes (docs/protocol.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Opening hello, §4.
    Handshake = 1,
    /// Credentials.
    Auth = 2,
    /// A request.
    Command = 3,
    /// A reply echoing the request's sequence.
    Response = 4,
    /// A failure reply or notice.
    Error = 5,
    /// Liveness probe.
    Heartbeat = 6,
}

impl MessageType {
    /// The flags value the references put on this type (§3.2).
    pub fn default_flags(self) -> u16 {
        match self {
            Self::Handshake | Self::Command => flags::RELIABLE,
            Self::Auth => flags::RELIABLE | flags::ENCRYPTED,
            Self::Response | Self::Error | Self::Heartbeat => flags::NONE,
        }
    }
}

impl TryFrom<u8> for MessageType {
    type Error = Error;

    fn try_from(value: u8) -> Result<Self> {
        Ok(match value {
            1 => Self::Handshake,
            2 => Self::Auth,
            3 => Self::Command,
            4 => Self::Response,
            5 => Self::Error,
            6 => Self::Heartbeat,
            other => {
                return Err(Error::UnknownMessageType {
                    found: u32::from(other),
                });
            }
        })
    }
}

impl TryFrom<u32> for MessageType {
    type Error = Error;

    fn try_from(value: u32) -> Result<Self> {
        u8::try_from(value)
            .map_err(|_| Error::UnknownMessageType { found: value })
            .and_then(Self::try_from)
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message type.
    pub kind: MessageType,
    /// Flag bits, passed through unchanged.
    pub flags: u16,
    /// Sequence / correlation number (§5).
    pub sequence: u32,
    /// Number of payload bytes after the header.
    pub payload_length: u32,
    /// Checksum of the payload (§2).
    pub checksum: u32,
}

impl Header {
    /// Parses and validates 16 header bytes in the order of §7: version, type, then length
    /// against `max_payload`. Nothing about the payload is looked at.
    ///
    /// # Errors
    /// `VERSION_MISMATCH`, `UNKNOWN_MESSAGE_TYPE` or `PAYLOAD_TOO_LARGE`.
    pub fn decode(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Self> {
        // Field by field from the array rather than destructured into a local copy: the
        // compiler then emits plain scalar loads, which keeps the decoder's per-frame loop free
        // of a dependency from one frame's header to the next.
        let version = bytes[0];
        if version != PROTOCOL_VERSION {
            return Err(Error::VersionMismatch { found: version });
        }
        let kind = MessageType::try_from(bytes[1])?;
        let payload_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if payload_length > max_payload {
            return Err(Error::PayloadTooLarge {
                length: u64::from(payload_length),
                limit: max_payload,
            });
        }
        Ok(Self {
            kind,
            flags: u16::from_le_bytes([bytes[2], bytes[3]]),
            sequence: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            payload_length,
            checksum: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        })
    }

    /// The header when [`Header::decode`] would accept it, `None` otherwise: the same checks
    /// without building an error.
    #[inline]
    pub fn parse(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Option<Self> {
        let kind = match bytes[1] {
            1 => MessageType::Handshake,
            2 => MessageType::Auth,
            3 => MessageType::Command,
            4 => MessageType::Response,
            5 => MessageType::Error,
            6 => MessageType::Heartbeat,
            _ => return None,
        };
        let payload_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if bytes[0] != PROTOCOL_VERSION || payload_length > max_payload {
            return None;
        }
        Some(Self {
            kind,
            flags: u16::from_le_bytes([bytes[2], bytes[3]]),
            sequence: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            payload_length,
            checksum: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        })
    }

    /// Serialises the header field by field, little-endian, whatever the host byte order.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let f = self.flags.to_le_bytes();
        let s = self.sequence.to_le_bytes();
        let l = self.payload_length.to_le_bytes();
        let c = self.checksum.to_le_bytes();
        [
            PROTOCOL_VERSION,
            self.kind as u8,
            f[0],
            f[1],
            s[0],
            s[1],
            s[2],
            s[3],
            l[0],
            l[1],
            l[2],
            l[3],
            c[0],
            c[1],
            c[2],
            c[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_exactly_what_decode_accepts() {
        // Every version and type byte, with lengths around two limits: the fast check and the
        // one that names the error must never disagree.
        let mut bytes = [0u8; HEADER_SIZE];
        let mut fill = 0u8;
        for b in bytes.iter_mut().skip(2) {
            fill = fill.wrapping_add(37);
            *b = fill;
        }
        for version in 0..=255u8 {
            for kind in 0..=255u8 {
                for (length, max) in [
                    (0u32, 0u32),
                    (5, 4),
                    (4, 4),
                    (1 << 20, 1 << 20),
                    (u32::MAX, 1 << 20),
                ] {
                    bytes[0] = version;
                    bytes[1] = kind;
                    bytes[8..12].copy_from_slice(&length.to_le_bytes());
                    assert_eq!(Header::parse(&bytes, max), Header::decode(&bytes, max).ok());
                }
            }
        }
    }

    #[test]
    fn roundtrip_and_field_order() {
        let h = Header {
            kind: MessageType::Auth,
            flags: 0x0009,
            sequence: 2,
            payload_length: 0x25,
            checksum: 0xe659_316d,
        };
        let bytes = h.encode();
        assert_eq!(
            bytes,
            [
                1, 2, 9, 0, 2, 0, 0, 0, 0x25, 0, 0, 0, 0x6d, 0x31, 0x59, 0xe6
            ]
        );
        assert_eq!(Header::decode(&bytes, MAX_PAYLOAD), Ok(h));
    }

    #[test]
    fn validation_order_is_version_type_length() {
        let mut b = [0u8; 16];
        b[0] = 2;
        b[1] = 9;
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Header::decode(&b, MAX_PAYLOAD).map_err(|e| e.code()),
            Err("VERSION_MISMATCH")
        );
        b[0] = 1;
        assert_eq!(
            Header::decode(&b, MAX_PAYLOAD).map_err(|e| e.code()),
            Err("UNKNOWN_MESSAGE_TYPE")
        );
        b[1] = 3;
        assert_eq!(
            Header::decode(&b, MAX_PAYLOAD).map_err(|e| e.code()),
            Err("PAYLOAD_TOO_LARGE")
        );
        b[8..12].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
        assert!(Header::decode(&b, MAX_PAYLOAD).is_ok());
        assert!(Header::decode(&b, 100).is_err());
    }

    #[test]
    fn message_type_conversions() {
        for t in 1u8..=6 {
            assert_eq!(MessageType::try_from(t).map(|m| m as u8), Ok(t));
        }
        assert!(MessageType::try_from(0u8).is_err());
        assert!(MessageType::try_from(7u8).is_err());
        assert!(MessageType::try_from(256u32).is_err());
        assert_eq!(MessageType::Auth.default_flags(), 0x0009);
        assert_eq!(MessageType::Command.default_flags(), 0x0008);
        assert_eq!(MessageType::Heartbeat.default_flags(), 0);
    }
}
