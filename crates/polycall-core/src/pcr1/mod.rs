//! The PCR1 frame of `polycall_rpc` v1 (docs/protocol.md §P1): a 16-byte big-endian header (magic
//! `PCR1`, type, flags, reserved, corr, length) and `length` bytes of UTF-8 JSON. No checksum.
//! Every header rule is checked before a payload byte is stored; the streaming decoder is the
//! same one the v1 frame uses.

use crate::error::{Error, Result};
use crate::packet::{FrameFormat, HEADER_SIZE, StreamDecoder};

/// `PCR1` in ASCII.
pub const MAGIC: [u8; 4] = *b"PCR1";
/// Largest payload, inclusive.
pub const MAX_PAYLOAD: u32 = 1_048_576;

/// PCR1 frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Pcr1Type {
    /// Client → server call.
    Request = 1,
    /// Server → client reply, same corr.
    Response = 2,
    /// Client → server control action.
    Control = 3,
    /// Server → client control reply (corr 0: a connection-level notice).
    ControlReply = 4,
}

impl TryFrom<u8> for Pcr1Type {
    type Error = Error;

    fn try_from(value: u8) -> Result<Self> {
        Ok(match value {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Control,
            4 => Self::ControlReply,
            found => return Err(Error::Pcr1UnknownType { found }),
        })
    }
}

/// A validated PCR1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pcr1Header {
    /// Frame type.
    pub kind: Pcr1Type,
    /// Correlation number chosen by the caller and echoed in the reply.
    pub corr: u32,
    /// Payload bytes after the header.
    pub length: u32,
}

impl Pcr1Header {
    /// Parses and validates 16 header bytes: magic, type, zero flags and reserved, length.
    ///
    /// # Errors
    /// `PCR1_BAD_MAGIC`, `PCR1_UNKNOWN_TYPE`, `PCR1_RESERVED_BITS` or `PCR1_PAYLOAD_TOO_LARGE`.
    pub fn decode(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Self> {
        let [
            m0,
            m1,
            m2,
            m3,
            kind,
            flags,
            r0,
            r1,
            c0,
            c1,
            c2,
            c3,
            l0,
            l1,
            l2,
            l3,
        ] = *bytes;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(Error::Pcr1BadMagic {
                found: [m0, m1, m2, m3],
            });
        }
        let kind = Pcr1Type::try_from(kind)?;
        let reserved = u16::from_be_bytes([r0, r1]);
        if flags != 0 || reserved != 0 {
            return Err(Error::Pcr1ReservedBits { flags, reserved });
        }
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        if length > max_payload {
            return Err(Error::Pcr1PayloadTooLarge {
                length: u64::from(length),
                limit: max_payload,
            });
        }
        Ok(Self {
            kind,
            corr: u32::from_be_bytes([c0, c1, c2, c3]),
            length,
        })
    }

    /// Serialises the header, big-endian.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let [c0, c1, c2, c3] = self.corr.to_be_bytes();
        let [l0, l1, l2, l3] = self.length.to_be_bytes();
        let [m0, m1, m2, m3] = MAGIC;
        [
            m0,
            m1,
            m2,
            m3,
            self.kind as u8,
            0,
            0,
            0,
            c0,
            c1,
            c2,
            c3,
            l0,
            l1,
            l2,
            l3,
        ]
    }
}

/// Encodes one PCR1 frame: header then payload.
///
/// # Errors
/// `PCR1_PAYLOAD_TOO_LARGE` over 1 MiB.
pub fn encode_frame(kind: Pcr1Type, corr: u32, payload: &[u8]) -> Result<Vec<u8>> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or(Error::Pcr1PayloadTooLarge {
            length: payload.len() as u64,
            limit: MAX_PAYLOAD,
        })?;
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(&Pcr1Header { kind, corr, length }.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The PCR1 frame format for the shared streaming decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcr1;

impl FrameFormat for Pcr1 {
    type Header = Pcr1Header;
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;

    fn decode_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Pcr1Header> {
        Pcr1Header::decode(bytes, max_payload)
    }
    fn payload_length(header: &Pcr1Header) -> u32 {
        header.length
    }
    fn checksum(_: &Pcr1Header) -> Option<u32> {
        None
    }
    fn truncated_header(buffered: usize) -> Error {
        Error::Pcr1TruncatedHeader { buffered }
    }
    fn truncated_payload(expected: u32, received: u32) -> Error {
        Error::Pcr1TruncatedPayload { expected, received }
    }
}

/// Streaming PCR1 decoder.
pub type Pcr1Decoder = StreamDecoder<Pcr1>;

#[cfg(test)]
mod tests {
    use super::*;

    fn head(hex: &str) -> [u8; 16] {
        let v: Vec<u8> = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    #[test]
    fn spec_headers() {
        let h = Pcr1Header::decode(
            &head("50 43 52 31 01 00 00 00 00 00 00 07 00 00 00 5b"),
            MAX_PAYLOAD,
        )
        .unwrap();
        assert_eq!((h.kind, h.corr, h.length), (Pcr1Type::Request, 7, 0x5b));
        assert_eq!(
            h.encode(),
            head("50 43 52 31 01 00 00 00 00 00 00 07 00 00 00 5b")
        );
    }

    #[test]
    fn header_rules() {
        let code = |h: &str| {
            Pcr1Header::decode(&head(h), MAX_PAYLOAD)
                .unwrap_err()
                .code()
        };
        assert_eq!(
            code("50 43 52 32 01 00 00 00 00 00 00 07 00 00 00 5b"),
            "PCR1_BAD_MAGIC"
        );
        assert_eq!(
            code("50 43 52 31 05 00 00 00 00 00 00 07 00 00 00 5b"),
            "PCR1_UNKNOWN_TYPE"
        );
        assert_eq!(
            code("50 43 52 31 01 01 00 00 00 00 00 07 00 00 00 5b"),
            "PCR1_RESERVED_BITS"
        );
        assert_eq!(
            code("50 43 52 31 01 00 00 01 00 00 00 07 00 00 00 5b"),
            "PCR1_RESERVED_BITS"
        );
        assert_eq!(
            code("50 43 52 31 01 00 00 00 00 00 00 07 00 10 00 01"),
            "PCR1_PAYLOAD_TOO_LARGE"
        );
        assert!(
            Pcr1Header::decode(
                &head("50 43 52 31 01 00 00 00 00 00 00 07 00 10 00 00"),
                MAX_PAYLOAD
            )
            .is_ok()
        );
    }

    #[test]
    fn decoder_uses_pcr1_errors() {
        let mut d = Pcr1Decoder::new();
        let mut out = Vec::new();
        d.push(b"PCR1\x01\x00\x00\x00", &mut out).unwrap();
        assert_eq!(d.finish().unwrap_err().code(), "PCR1_TRUNCATED_HEADER");
        let mut d = Pcr1Decoder::new();
        let frame = encode_frame(Pcr1Type::Request, 1, b"{}").unwrap();
        d.push(&frame[..17], &mut out).unwrap();
        assert_eq!(d.finish().unwrap_err().code(), "PCR1_TRUNCATED_PAYLOAD");
        assert!(encode_frame(Pcr1Type::Request, 1, &vec![0; 1_048_577]).is_err());
    }
}
