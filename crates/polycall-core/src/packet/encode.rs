//! Frame encoding (docs/protocol.md §7, encoder rules).

use super::header::{HEADER_SIZE, Header, MAX_PAYLOAD, MessageType};
use crate::checksum::checksum;
use crate::error::{Error, Result};

fn header_for(kind: MessageType, flags: u16, sequence: u32, payload: &[u8]) -> Result<Header> {
    let len = payload.len();
    let payload_length = u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or(Error::PayloadTooLarge {
            length: len as u64,
            limit: MAX_PAYLOAD,
        })?;
    Ok(Header {
        kind,
        flags,
        sequence,
        payload_length,
        checksum: checksum(payload),
    })
}

/// Encodes one frame into a new vector: header then payload.
///
/// # Errors
/// `PAYLOAD_TOO_LARGE` when the payload exceeds 1 MiB.
pub fn encode_frame(
    kind: MessageType,
    flags: u16,
    sequence: u32,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let header = header_for(kind, flags, sequence, payload)?;
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Encodes one frame into `out`, which must be exactly `16 + payload.len()` bytes long.
/// Returns the header that was written.
///
/// # Errors
/// `PAYLOAD_TOO_LARGE`, or `INVALID_ARGUMENT` when `out` has the wrong length.
pub fn encode_into(
    out: &mut [u8],
    kind: MessageType,
    flags: u16,
    sequence: u32,
    payload: &[u8],
) -> Result<Header> {
    let header = header_for(kind, flags, sequence, payload)?;
    if out.len() != HEADER_SIZE + payload.len() {
        return Err(Error::InvalidArgument(format!(
            "output buffer holds {} bytes, the frame needs {}",
            out.len(),
            HEADER_SIZE + payload.len()
        )));
    }
    let (head, body) = out.split_at_mut(HEADER_SIZE);
    head.copy_from_slice(&header.encode());
    body.copy_from_slice(payload);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_spec_v4() {
        let payload = br#"{"command":"status","data":{}}"#;
        let frame = encode_frame(MessageType::Command, 0x0008, 3, payload).unwrap();
        assert_eq!(
            &frame[..16],
            &[
                1, 3, 8, 0, 3, 0, 0, 0, 0x1e, 0, 0, 0, 0xbb, 0x66, 0xe7, 0xad
            ]
        );
        assert_eq!(&frame[16..], payload);
        let mut out = vec![0; frame.len()];
        encode_into(&mut out, MessageType::Command, 8, 3, payload).unwrap();
        assert_eq!(out, frame);
    }

    #[test]
    fn rejects_oversize_and_bad_buffers() {
        let big = vec![0u8; MAX_PAYLOAD as usize + 1];
        assert_eq!(
            encode_frame(MessageType::Command, 0, 1, &big).map_err(|e| e.code()),
            Err("PAYLOAD_TOO_LARGE")
        );
        let max = vec![0u8; MAX_PAYLOAD as usize];
        assert!(encode_frame(MessageType::Command, 0, 1, &max).is_ok());
        let mut small = [0u8; 10];
        assert_eq!(
            encode_into(&mut small, MessageType::Command, 0, 1, b"x").map_err(|e| e.code()),
            Err("INVALID_ARGUMENT")
        );
    }
}
