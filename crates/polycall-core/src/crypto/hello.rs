//! The secure hello: how a Noise handshake rides in the v1 handshake (docs/protocol-extensions.md,
//! "Secure sessions").
//!
//! Each handshake message travels in a frame the v1 handshake already has: message 1 in the
//! client's HANDSHAKE, message 2 in the server's RESPONSE to it, and XX's message 3 in a second
//! client HANDSHAKE. Each payload is the 12-byte extended hello (PROTOCOL.md §4: magic, version,
//! pad, capability flags, then a u32 limit of requests in flight) followed by a secure block:
//!
//! ```text
//! offset 12  u8      secure block version, 1
//! offset 13  u8      pattern: 1 IK, 2 NK, 3 XX
//! offset 14  u8      step: 1, 2 or 3 (the Noise message's number)
//! offset 15  u8      cipher: 0 ChaChaPoly, 1 AESGCM (the client's choice, repeated in every step)
//! offset 16  u16 LE  n, the Noise message's length (at most 1024)
//! offset 18  n       the Noise message
//! ```
//!
//! A reference peer reads at most the first 8 bytes and never sees the capability bit that
//! announces the block (`0x0008`), which polycall only sends in a long form. The Noise prologue
//! is the label `polycall secure session v1`, a NUL, and bytes 0..16 of the client's first
//! hello, so a relay that strips or alters a capability bit, the limit, the pattern, the cipher
//! or the version makes the handshake fail. The cipher is bound twice: it names the Noise protocol
//! (`Noise_IK_25519_AESGCM_BLAKE2s`), which is hashed before anything else, and it is a prologue
//! byte. The server's own fields are bound by repeating them inside
//! its encrypted handshake payload.

use super::noise::Pattern;
use super::primitives::Cipher;
use super::transport::RekeyPolicy;
use crate::error::{Error, Result};
use crate::packet::handshake::{self, EXTENDED_SIZE, Strictness};

/// The capability bit that offers (in a hello) or accepts (in a reply) a secure session.
pub const SECURE: u16 = 0x0008;
/// The capability bit of lz4 payload compression.
pub const COMPRESSION: u16 = 0x0010;
/// The capability bit of sealed batches: small frames of one write travel as one sealed frame
/// (docs/protocol-extensions.md, "Sealed batches"). Only meaningful with [`SECURE`].
pub const BATCHES: u16 = 0x0080;
/// The secure block's version.
pub const BLOCK_VERSION: u8 = 1;
/// Where the Noise message starts.
pub const MESSAGE_OFFSET: usize = EXTENDED_SIZE + 6;
/// The longest Noise message a secure hello may carry.
pub const MAX_NOISE_MESSAGE: usize = 1024;
/// The longest secure hello payload.
pub const MAX_HELLO: usize = MESSAGE_OFFSET + MAX_NOISE_MESSAGE;
/// The first bytes of the Noise prologue.
pub const PROLOGUE_LABEL: &[u8] = b"polycall secure session v1\0";

/// Length of the initiator's handshake payload (message 1).
pub const INITIATOR_PAYLOAD_LEN: usize = 13;
/// Length of the responder's handshake payload (message 2).
pub const RESPONDER_PAYLOAD_LEN: usize = 25;
/// The handshake payloads' version byte.
pub const PAYLOAD_VERSION: u8 = 1;

/// A parsed secure hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureHello<'a> {
    /// Bytes 0..12: the extended hello as sent.
    pub fields: [u8; EXTENDED_SIZE],
    /// The capability flags.
    pub flags: u16,
    /// The sender's limit of requests in flight (0: not stated).
    pub max_in_flight: u32,
    /// The pattern.
    pub pattern: Pattern,
    /// The cipher.
    pub cipher: Cipher,
    /// The Noise message's number, 1..=3.
    pub step: u8,
    /// The Noise message.
    pub message: &'a [u8],
}

fn failed(why: &str) -> Error {
    Error::HandshakeFailed(why.to_owned())
}

/// Builds a secure hello payload. `flags` gets [`SECURE`] added.
///
/// # Errors
/// `HANDSHAKE_FAILED` for a Noise message over [`MAX_NOISE_MESSAGE`].
pub fn build(
    flags: u16,
    max_in_flight: u32,
    pattern: Pattern,
    cipher: Cipher,
    step: u8,
    message: &[u8],
) -> Result<Vec<u8>> {
    let len = u16::try_from(message.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_NOISE_MESSAGE)
        .ok_or_else(|| failed("a Noise message longer than 1024 bytes"))?;
    let mut out = Vec::with_capacity(MESSAGE_OFFSET + message.len());
    out.extend_from_slice(&handshake::build_extended(flags | SECURE, max_in_flight));
    out.extend_from_slice(&[BLOCK_VERSION, pattern.id(), step, cipher.id()]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// Parses a handshake payload: `None` when it offers no secure session (a legacy hello, or a
/// long form without [`SECURE`]).
///
/// # Errors
/// `HANDSHAKE_PAYLOAD_TOO_SHORT` / `HANDSHAKE_BAD_MAGIC` as for any hello;
/// `HANDSHAKE_FAILED` when [`SECURE`] is set but the secure block is missing, of another
/// version, names no pattern or no cipher, or its length disagrees with the payload (or exceeds
/// 1024).
pub fn parse(payload: &[u8]) -> Result<Option<SecureHello<'_>>> {
    let h = handshake::parse(payload, Strictness::Lenient)?;
    if h.is_legacy() || h.flags & SECURE == 0 {
        return Ok(None);
    }
    if payload.len() > MAX_HELLO {
        return Err(failed("a secure hello longer than its limit"));
    }
    let Some((head, message)) = payload.split_first_chunk::<MESSAGE_OFFSET>() else {
        return Err(failed(
            "the secure bit is set but the secure block is missing",
        ));
    };
    let [f @ .., version, pattern, step, cipher, l0, l1] = *head;
    let fields: [u8; EXTENDED_SIZE] = f;
    if version != BLOCK_VERSION {
        return Err(failed("a secure block of an unknown version"));
    }
    let pattern = Pattern::from_id(pattern)
        .ok_or_else(|| failed("a secure block naming no known pattern"))?;
    if !(1..=3).contains(&step) {
        return Err(failed("a secure block with a bad step"));
    }
    let cipher =
        Cipher::from_id(cipher).ok_or_else(|| failed("a secure block naming no known cipher"))?;
    if usize::from(u16::from_le_bytes([l0, l1])) != message.len() {
        return Err(failed(
            "the Noise message length disagrees with the payload",
        ));
    }
    let [.., m0, m1, m2, m3] = fields;
    Ok(Some(SecureHello {
        fields,
        flags: h.flags,
        max_in_flight: u32::from_le_bytes([m0, m1, m2, m3]),
        pattern,
        cipher,
        step,
        message,
    }))
}

/// The Noise prologue for a client's first hello: the label and its bytes 0..16 (everything
/// but the Noise message and its length).
pub fn prologue(hello: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 16);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(hello.get(..16).unwrap_or(hello));
    p
}

fn write_policy(out: &mut Vec<u8>, policy: RekeyPolicy) {
    out.extend_from_slice(&policy.frames.to_le_bytes());
    out.extend_from_slice(&policy.bytes.to_le_bytes());
}

fn read_policy(bytes: &[u8]) -> Result<RekeyPolicy> {
    let Some((frames, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(failed(
            "a handshake payload too short for its rekey interval",
        ));
    };
    let Some(volume) = rest.first_chunk::<8>() else {
        return Err(failed(
            "a handshake payload too short for its rekey interval",
        ));
    };
    Ok(RekeyPolicy {
        frames: u32::from_le_bytes(*frames),
        bytes: u64::from_le_bytes(*volume),
    })
}

/// The initiator's handshake payload: version 1, then its sending direction's rekey interval
/// (u32 LE frames, u64 LE bytes).
pub fn initiator_payload(policy: RekeyPolicy) -> Vec<u8> {
    let mut out = Vec::with_capacity(INITIATOR_PAYLOAD_LEN);
    out.push(PAYLOAD_VERSION);
    write_policy(&mut out, policy);
    out
}

/// Reads an initiator's handshake payload (later versions may append fields; they are ignored).
///
/// # Errors
/// `HANDSHAKE_FAILED` for a short payload or another version.
pub fn parse_initiator_payload(payload: &[u8]) -> Result<RekeyPolicy> {
    match payload.split_first() {
        Some((&PAYLOAD_VERSION, rest)) => read_policy(rest),
        _ => Err(failed("an initiator payload of an unknown version")),
    }
}

/// The responder's handshake payload: version 1, its reply's 12 hello bytes (so the client can
/// tell they arrived unchanged), then its sending direction's rekey interval.
pub fn responder_payload(fields: &[u8; EXTENDED_SIZE], policy: RekeyPolicy) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONDER_PAYLOAD_LEN);
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(fields);
    write_policy(&mut out, policy);
    out
}

/// Reads a responder's handshake payload.
///
/// # Errors
/// `HANDSHAKE_FAILED` for a short payload or another version.
pub fn parse_responder_payload(payload: &[u8]) -> Result<([u8; EXTENDED_SIZE], RekeyPolicy)> {
    let Some((&PAYLOAD_VERSION, rest)) = payload.split_first() else {
        return Err(failed("a responder payload of an unknown version"));
    };
    let Some((fields, rest)) = rest.split_first_chunk::<EXTENDED_SIZE>() else {
        return Err(failed("a responder payload too short for its hello fields"));
    };
    Ok((*fields, read_policy(rest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = build(0x0001, 256, Pattern::Nk, Cipher::ChaChaPoly, 1, &[0xaa; 5]).unwrap();
        assert_eq!(
            p,
            [
                0x43, 0x4c, 0x50, 0x00, 1, 0, 0x09, 0, 0, 1, 0, 0, 1, 2, 1, 0, 5, 0, 0xaa, 0xaa,
                0xaa, 0xaa, 0xaa
            ]
        );
        let h = parse(&p).unwrap().unwrap();
        assert_eq!(
            (h.flags, h.max_in_flight, h.pattern, h.step),
            (0x0009, 256, Pattern::Nk, 1)
        );
        assert_eq!(h.message, &[0xaa; 5]);
        assert_eq!(h.cipher, Cipher::ChaChaPoly);
        let aes = build(0x0001, 256, Pattern::Nk, Cipher::AesGcm, 1, &[0xaa; 5]).unwrap();
        assert_eq!(aes[15], 1);
        assert_eq!(parse(&aes).unwrap().unwrap().cipher, Cipher::AesGcm);
        assert_eq!(&prologue(&p)[PROLOGUE_LABEL.len()..], &p[..16]);
        let legacy = handshake::parse(&p, Strictness::Strict).unwrap();
        assert_eq!(
            (legacy.flags, legacy.max_in_flight),
            (0x0009, Some(256)),
            "the v1 parser reads the same fields"
        );
    }

    #[test]
    fn non_secure_and_broken_blocks() {
        assert_eq!(parse(&handshake::build(0x0003)).unwrap(), None);
        assert_eq!(parse(&handshake::build_extended(0x0003, 9)).unwrap(), None);
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[0x43, 0x4c, 0x50, 0x00]).unwrap(), None);
        assert_eq!(
            parse(&[1, 2, 3]).unwrap_err().code(),
            "HANDSHAKE_PAYLOAD_TOO_SHORT"
        );
        let good = build(0, 0, Pattern::Xx, Cipher::ChaChaPoly, 1, &[1; 32]).unwrap();
        let mut cases = Vec::new();
        cases.push(handshake::build(SECURE).to_vec());
        for (at, value) in [
            (12, 2),
            (13, 0),
            (13, 4),
            (14, 0),
            (14, 4),
            (15, 2),
            (15, 0xff),
            (16, 31),
            (17, 1),
        ] {
            let mut c = good.clone();
            c[at] = value;
            cases.push(c);
        }
        let mut long = good.clone();
        long.push(0);
        cases.push(long);
        let mut huge = build(0, 0, Pattern::Xx, Cipher::ChaChaPoly, 1, &[]).unwrap();
        huge[16..18].copy_from_slice(&1025u16.to_le_bytes());
        huge.extend(vec![0; 1025]);
        cases.push(huge);
        for c in cases {
            assert_eq!(parse(&c).unwrap_err().code(), "HANDSHAKE_FAILED", "{c:?}");
        }
        assert!(build(0, 0, Pattern::Xx, Cipher::AesGcm, 1, &[0; 1025]).is_err());
    }

    #[test]
    fn payloads() {
        let policy = RekeyPolicy {
            frames: 7,
            bytes: 1 << 40,
        };
        assert_eq!(
            parse_initiator_payload(&initiator_payload(policy)).unwrap(),
            policy
        );
        let fields = handshake::build_extended(9, 4);
        assert_eq!(
            parse_responder_payload(&responder_payload(&fields, policy)).unwrap(),
            (fields, policy)
        );
        assert_eq!(initiator_payload(policy).len(), INITIATOR_PAYLOAD_LEN);
        assert_eq!(
            responder_payload(&fields, policy).len(),
            RESPONDER_PAYLOAD_LEN
        );
        for bad in [
            &[][..],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0],
        ] {
            assert!(parse_initiator_payload(bad).is_err());
            assert!(parse_responder_payload(bad).is_err());
        }
    }
}
