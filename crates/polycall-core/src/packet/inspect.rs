//! Field-by-field inspection of one frame for diagnostics tools (docs/protocol.md §1, §2, §7).
//! Unlike the decoder it never stops at the first problem: it reports every field as found,
//! the checksum as computed, and every rule the bytes break. A frame of a secure session
//! (ENCRYPTED with a checksum field of 0, docs/protocol-extensions.md, "Sealed frames") has
//! no checksum to break: its tag authenticates it, which takes the session's key to check.

use super::header::{HEADER_SIZE, MAX_PAYLOAD, MessageType, PROTOCOL_VERSION, flags};
use crate::checksum::checksum;
use crate::error::Error;

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection<'a> {
    /// Version byte.
    pub version: u8,
    /// Raw type byte.
    pub kind: u8,
    /// Flags field.
    pub flags: u16,
    /// Sequence field.
    pub sequence: u32,
    /// `payload_length` field.
    pub payload_length: u32,
    /// Checksum field.
    pub checksum: u32,
    /// Checksum of the payload bytes, when all of them are present.
    pub computed_checksum: Option<u32>,
    /// The payload bytes present (possibly fewer than announced).
    pub payload: &'a [u8],
    /// Bytes after the announced payload (the start of another frame, or garbage).
    pub trailing: usize,
    /// Every rule the bytes break, in header-then-payload order.
    pub problems: Vec<Error>,
}

/// Inspects `bytes` as one frame.
///
/// # Errors
/// `TRUNCATED_HEADER` when fewer than 16 bytes are given; everything else is reported in
/// [`Inspection::problems`].
pub fn inspect(bytes: &[u8]) -> Result<Inspection<'_>, Error> {
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_SIZE>() else {
        return Err(Error::TruncatedHeader {
            buffered: bytes.len(),
        });
    };
    let [v, t, f0, f1, s0, s1, s2, s3, l0, l1, l2, l3, c0, c1, c2, c3] = *head;
    let payload_length = u32::from_le_bytes([l0, l1, l2, l3]);
    let stated = u32::from_le_bytes([c0, c1, c2, c3]);
    let mut problems = Vec::new();
    if v != PROTOCOL_VERSION {
        problems.push(Error::VersionMismatch { found: v });
    }
    if let Err(e) = MessageType::try_from(t) {
        problems.push(e);
    }
    if payload_length > MAX_PAYLOAD {
        problems.push(Error::PayloadTooLarge {
            length: u64::from(payload_length),
            limit: MAX_PAYLOAD,
        });
    }
    let wanted = usize::try_from(payload_length).unwrap_or(usize::MAX);
    let (payload, trailing) = if rest.len() >= wanted {
        rest.split_at(wanted)
    } else {
        (rest, &[][..])
    };
    let computed_checksum = if payload.len() == wanted {
        Some(checksum(payload))
    } else {
        problems.push(Error::TruncatedPayload {
            expected: payload_length,
            received: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        });
        None
    };
    let flag_bits = u16::from_le_bytes([f0, f1]);
    let sealed = flag_bits & flags::ENCRYPTED != 0 && stated == 0;
    if let Some(actual) = computed_checksum
        && actual != stated
        && !sealed
    {
        problems.push(Error::ChecksumMismatch {
            expected: stated,
            actual,
        });
    }
    Ok(Inspection {
        version: v,
        kind: t,
        flags: flag_bits,
        sequence: u32::from_le_bytes([s0, s1, s2, s3]),
        payload_length,
        checksum: stated,
        computed_checksum,
        payload,
        trailing: trailing.len(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::encode_frame;

    #[test]
    fn good_frame_has_no_problems() {
        let f = encode_frame(MessageType::Command, 8, 3, b"hello").unwrap();
        let i = inspect(&f).unwrap();
        assert_eq!(
            (i.kind, i.flags, i.sequence, i.payload),
            (3, 8, 3, &b"hello"[..])
        );
        assert_eq!(i.computed_checksum, Some(i.checksum));
        assert!(i.problems.is_empty());
        assert_eq!(i.trailing, 0);
    }

    #[test]
    fn a_sealed_frame_has_no_checksum_to_break() {
        let mut f =
            encode_frame(MessageType::Command, flags::ENCRYPTED, 3, b"sealed bytes").unwrap();
        f[12..16].fill(0);
        let i = inspect(&f).unwrap();
        assert!(i.problems.is_empty());
        assert_ne!(i.computed_checksum, Some(0));
        // Without ENCRYPTED the zero field is a mismatch; so is a non-zero wrong one with it.
        f[2] = 0;
        assert_eq!(inspect(&f).unwrap().problems.len(), 1);
        f[2] = 1;
        f[12] = 1;
        assert_eq!(inspect(&f).unwrap().problems.len(), 1);
    }

    #[test]
    fn reports_every_problem() {
        let mut f = encode_frame(MessageType::Command, 8, 3, b"hello").unwrap();
        f[0] = 2;
        f[1] = 9;
        f[12] ^= 1;
        f.extend_from_slice(b"xx");
        let i = inspect(&f).unwrap();
        let codes: Vec<_> = i.problems.iter().map(Error::code).collect();
        assert_eq!(
            codes,
            [
                "VERSION_MISMATCH",
                "UNKNOWN_MESSAGE_TYPE",
                "CHECKSUM_MISMATCH"
            ]
        );
        assert_eq!(i.trailing, 2);
        let short = inspect(&f[..18]).unwrap();
        assert!(
            short
                .problems
                .iter()
                .any(|e| e.code() == "TRUNCATED_PAYLOAD")
        );
        assert_eq!(inspect(&f[..3]).unwrap_err().code(), "TRUNCATED_HEADER");
    }
}
