//! The HANDSHAKE payload (docs/protocol.md §4).
//!
//! Long form (8 bytes): magic `43 4c 50 00`, version `01`, a pad byte (sent as 0, ignored on
//! receipt), then a u16 LE flags field that no reference reads, which polycall uses for
//! capability bits. The short form is the magic alone; node-polycall clients send nothing.

use crate::error::{Error, Result};

/// `"PLC"` as a little-endian u32; on the wire `43 4c 50 00`.
pub const MAGIC: u32 = 0x0050_4C43;
/// Size of the long-form payload.
pub const LONG_FORM_SIZE: usize = 8;
/// Size of the long form followed by polycall's extension fields (see [`build_extended`]).
pub const EXTENDED_SIZE: usize = 12;

/// How strictly a received handshake payload is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// An empty payload is `HANDSHAKE_PAYLOAD_TOO_SHORT`.
    Strict,
    /// An empty payload is accepted as a legacy hello (the SHOULD-default for servers).
    Lenient,
}

/// Which shape of hello arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeForm {
    /// No payload at all (node-polycall clients); lenient mode only.
    Empty,
    /// At least the magic but fewer than 8 bytes (go-polycall sends exactly the magic).
    Short,
    /// The 8-byte long form, possibly followed by bytes this version ignores.
    Long,
}

/// A parsed hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The form the payload had.
    pub form: HandshakeForm,
    /// The version byte of the long form.
    pub version: Option<u8>,
    /// The flags field of the long form (capability bits); 0 otherwise.
    pub flags: u16,
    /// polycall extension: the sender's limit of requests in flight per connection, carried
    /// as a u32 LE at offset 8 of a long form that has capability bits.
    pub max_in_flight: Option<u32>,
}

impl Handshake {
    /// A peer that sent no long form, or a long form without capability bits, speaks the
    /// reference payload conventions (JSON, one frame per read).
    pub fn is_legacy(&self) -> bool {
        self.form != HandshakeForm::Long || self.flags == 0
    }
}

/// Builds the long-form payload with the given flags (capability bits) and a zero pad.
///
/// ```
/// use polycall_core::packet::handshake::build;
/// assert_eq!(build(0), [0x43, 0x4c, 0x50, 0x00, 0x01, 0x00, 0x00, 0x00]);
/// ```
pub fn build(flags: u16) -> [u8; LONG_FORM_SIZE] {
    let m = MAGIC.to_le_bytes();
    let f = flags.to_le_bytes();
    [m[0], m[1], m[2], m[3], 1, 0, f[0], f[1]]
}

/// Builds the long form followed by polycall's extension fields: offset 8, u32 LE, the limit of
/// requests in flight per connection. No reference reads past offset 7, so legacy peers
/// ignore it.
///
/// ```
/// use polycall_core::packet::handshake::{build_extended, parse, Strictness};
/// let h = parse(&build_extended(1, 256), Strictness::Strict).unwrap();
/// assert_eq!((h.flags, h.max_in_flight), (1, Some(256)));
/// ```
pub fn build_extended(flags: u16, max_in_flight: u32) -> [u8; EXTENDED_SIZE] {
    let mut out = [0u8; EXTENDED_SIZE];
    let (long, ext) = out.split_at_mut(LONG_FORM_SIZE);
    long.copy_from_slice(&build(flags));
    ext.copy_from_slice(&max_in_flight.to_le_bytes());
    out
}

/// Parses a received HANDSHAKE payload. Bytes after offset 7 are ignored, and so is the pad
/// byte at offset 5 (the C library leaks a stack byte there).
///
/// # Errors
/// `HANDSHAKE_PAYLOAD_TOO_SHORT` for 1 to 3 bytes (or 0 in strict mode),
/// `HANDSHAKE_BAD_MAGIC` when the first four bytes are not the magic.
pub fn parse(payload: &[u8], strictness: Strictness) -> Result<Handshake> {
    if payload.is_empty() && strictness == Strictness::Lenient {
        return Ok(Handshake {
            form: HandshakeForm::Empty,
            version: None,
            flags: 0,
            max_in_flight: None,
        });
    }
    let Some(&[a, b, c, d]) = payload.first_chunk::<4>() else {
        return Err(Error::HandshakePayloadTooShort {
            length: payload.len(),
        });
    };
    let magic = u32::from_le_bytes([a, b, c, d]);
    if magic != MAGIC {
        return Err(Error::HandshakeBadMagic { found: magic });
    }
    Ok(match payload.first_chunk::<LONG_FORM_SIZE>() {
        Some(&[_, _, _, _, version, _pad, f0, f1]) => {
            let flags = u16::from_le_bytes([f0, f1]);
            let max_in_flight = match payload.get(LONG_FORM_SIZE..EXTENDED_SIZE) {
                Some(&[a, b, c, d]) if flags != 0 => Some(u32::from_le_bytes([a, b, c, d])),
                _ => None,
            };
            Handshake {
                form: HandshakeForm::Long,
                version: Some(version),
                flags,
                max_in_flight,
            }
        }
        None => Handshake {
            form: HandshakeForm::Short,
            version: None,
            flags: 0,
            max_in_flight: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_short_empty() {
        let long = parse(&build(0x0003), Strictness::Strict).unwrap();
        assert_eq!(long.form, HandshakeForm::Long);
        assert_eq!(long.flags, 3);
        assert!(!long.is_legacy());
        assert!(parse(&build(0), Strictness::Strict).unwrap().is_legacy());
        let short = parse(&[0x43, 0x4c, 0x50, 0x00], Strictness::Strict).unwrap();
        assert_eq!(short.form, HandshakeForm::Short);
        assert!(short.is_legacy());
        assert_eq!(
            parse(&[], Strictness::Lenient).unwrap().form,
            HandshakeForm::Empty
        );
        assert_eq!(
            parse(&[], Strictness::Strict).unwrap_err().code(),
            "HANDSHAKE_PAYLOAD_TOO_SHORT"
        );
    }

    #[test]
    fn pad_and_trailing_bytes_are_ignored() {
        let mut p = build(0).to_vec();
        p[5] = 0xaa;
        p.extend([9, 9, 9]);
        let h = parse(&p, Strictness::Strict).unwrap();
        assert_eq!(
            (h.form, h.version, h.flags),
            (HandshakeForm::Long, Some(1), 0)
        );
    }

    #[test]
    fn bad_inputs() {
        for (p, code) in [
            (&[0x43, 0x4c, 0x50][..], "HANDSHAKE_PAYLOAD_TOO_SHORT"),
            (&[0x00, 0x50, 0x4c, 0x43][..], "HANDSHAKE_BAD_MAGIC"),
            (&[0x50, 0x4c, 0x43, 0x00][..], "HANDSHAKE_BAD_MAGIC"),
        ] {
            for s in [Strictness::Strict, Strictness::Lenient] {
                assert_eq!(parse(p, s).unwrap_err().code(), code);
            }
        }
    }
}
