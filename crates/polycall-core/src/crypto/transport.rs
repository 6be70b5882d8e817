//! Sealed frames (docs/protocol-extensions.md, "Sealed frames").
//!
//! After a secure handshake every frame in both directions is sealed: its payload is replaced
//! by the AEAD encryption of the payload followed by the 16-byte tag, under the direction's
//! Noise transport key and the direction's frame counter as nonce. The header keeps its v1
//! layout, and all 16 of its bytes are the associated data:
//!
//! ```text
//! offset 0   version 1, type, flags | ENCRYPTED (| COMPRESSED), sequence, payload_length
//!            (= body + 16)
//! offset 12  checksum: 0. The tag authenticates the frame; a v1 checksum over the sealed
//!            bytes would add no integrity and cost a pass over them on each side
//! offset 16  ciphertext of the body (the payload, or its compressed form), then the tag
//! ```
//!
//! Every header byte is authenticated, so any change to a frame is detected, a non-zero
//! checksum field included. The stream decoder of a sealed session ([`SealedV1`]) frames by
//! the length field and leaves all checking to the tag. The nonce is implicit: each side counts
//! the frames it sealed and opened, so a replayed, reordered or dropped frame, or one from
//! another session (another key), fails to open.
//!
//! Rekeying (Noise `Rekey()`, rev 34 §11.3) happens after a number of frames or of sealed
//! payload bytes, whichever comes first. Each side announces the interval of its own sending
//! direction inside its (authenticated) handshake payload, and the receiver applies the same
//! count to that direction, so both ends switch keys after the same frame.

use super::noise::CipherState;
use super::primitives::TAG_LEN;
use crate::error::{Error, Result};
use crate::packet::{FrameFormat, HEADER_SIZE, Header, MAX_PAYLOAD, MessageType, flags};

/// Bytes a sealed frame adds to its body: the tag.
pub const SEALED_OVERHEAD: usize = TAG_LEN;
/// The largest body a sealed frame can carry (its `payload_length` stays within the v1 limit).
pub const MAX_SEALED_BODY: usize = MAX_PAYLOAD as usize - TAG_LEN;
/// [`MAX_SEALED_BODY`] as the u32 of a length field.
const MAX_SEALED_BODY_U32: u32 = MAX_PAYLOAD - 16; // 16 = TAG_LEN

/// When a direction switches to a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Rekey after this many frames (0: never by count).
    pub frames: u32,
    /// Rekey once this many sealed payload bytes went through (0: never by volume).
    pub bytes: u64,
}

impl RekeyPolicy {
    /// The default: every 2^20 frames or 1 GiB, whichever comes first.
    pub const DEFAULT: Self = Self {
        frames: 1 << 20,
        bytes: 1 << 30,
    };
    /// Never rekey.
    pub const NEVER: Self = Self {
        frames: 0,
        bytes: 0,
    };
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One direction of an established session: its cipher state and rekey counters.
pub struct Direction {
    cipher: CipherState,
    policy: RekeyPolicy,
    frames: u64,
    bytes: u64,
    rekeys: u64,
}

impl core::fmt::Debug for Direction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Direction")
            .field("nonce", &self.cipher.nonce())
            .field("policy", &self.policy)
            .field("rekeys", &self.rekeys)
            .finish_non_exhaustive()
    }
}

/// The frame flag of a sealed batch (sessions that agreed on [`super::hello::BATCHES`]): its
/// sealed body is a run of v1 frames, each with its checksum field 0, none ENCRYPTED or a batch.
pub const BATCH: u16 = 0x0100;
/// The largest body of a sealed batch (its inner frames, headers included).
pub const BATCH_MAX_BODY: usize = 4096;
/// The most frames a sealed batch holds.
pub const BATCH_MAX_FRAMES: usize = 64;
/// [`BATCH_MAX_BODY`] plus the tag, as a length field.
const BATCH_MAX_WIRE: u32 = 4096 + 16; // BATCH_MAX_BODY + TAG_LEN

/// The v1 frame as a sealed session reads it: the same header rules, no payload checksum (the
/// checksum field of a sealed frame is 0 and authenticated with the rest of the header, and the
/// tag covers the payload). Only for streams whose every frame is opened. With `BATCHES` (a
/// session that agreed on batches), a frame flagged [`BATCH`] may be up to [`BATCH_MAX_BODY`]
/// plus the tag long, whatever the payload limit; any other frame is held to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<const BATCHES: bool>;

/// Sealed frames without batches.
pub type SealedV1 = Sealed<false>;
/// Sealed frames and sealed batches.
pub type SealedBatchesV1 = Sealed<true>;

impl<const BATCHES: bool> FrameFormat for Sealed<BATCHES> {
    type Header = Header;
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;

    fn decode_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Result<Header> {
        Header::decode(bytes, limit::<BATCHES>(bytes, max_payload))
    }
    fn parse_header(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> Option<Header> {
        Header::parse(bytes, limit::<BATCHES>(bytes, max_payload))
    }
    fn payload_length(header: &Header) -> u32 {
        header.payload_length
    }
    fn checksum(_: &Header) -> Option<u32> {
        None
    }
    fn truncated_header(buffered: usize) -> Error {
        Error::TruncatedHeader { buffered }
    }
    fn truncated_payload(expected: u32, received: u32) -> Error {
        Error::TruncatedPayload { expected, received }
    }
}

/// The length limit of the frame whose header is `bytes`.
#[inline]
fn limit<const BATCHES: bool>(bytes: &[u8; HEADER_SIZE], max_payload: u32) -> u32 {
    if BATCHES && u16::from_le_bytes([bytes[2], bytes[3]]) & BATCH != 0 {
        BATCH_MAX_WIRE
    } else {
        max_payload
    }
}

impl Direction {
    /// A direction using `cipher` (a Noise transport cipher state) and `policy`.
    pub fn new(cipher: CipherState, policy: RekeyPolicy) -> Self {
        Self {
            cipher,
            policy,
            frames: 0,
            bytes: 0,
            rekeys: 0,
        }
    }

    /// Frames sealed or opened so far (the next nonce).
    pub fn frames(&self) -> u64 {
        self.cipher.nonce()
    }

    /// Rekeys done so far.
    pub fn rekeys(&self) -> u64 {
        self.rekeys
    }

    fn account(&mut self, wire_len: usize) -> Result<()> {
        self.frames += 1;
        self.bytes += wire_len as u64;
        let by_count = self.policy.frames != 0 && self.frames >= u64::from(self.policy.frames);
        let by_volume = self.policy.bytes != 0 && self.bytes >= self.policy.bytes;
        if by_count || by_volume {
            self.cipher.rekey()?;
            self.frames = 0;
            self.bytes = 0;
            self.rekeys += 1;
        }
        Ok(())
    }

    /// Seals one frame into `out`, which must hold `16 + body.len() + 16` bytes; returns the
    /// bytes written. `flags` is sent with ENCRYPTED added.
    ///
    /// # Errors
    /// `PAYLOAD_TOO_LARGE` for a body over [`MAX_SEALED_BODY`], `INVALID_ARGUMENT` for a short
    /// `out`, `TAMPERED` when the nonces ran out.
    pub fn seal(
        &mut self,
        kind: MessageType,
        flags: u16,
        sequence: u32,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        if body.len() > MAX_SEALED_BODY {
            return Err(Error::PayloadTooLarge {
                length: body.len() as u64,
                limit: MAX_SEALED_BODY_U32,
            });
        }
        let wire_len = body.len() + TAG_LEN;
        let total = HEADER_SIZE + wire_len;
        let Some(frame) = out.get_mut(..total) else {
            return Err(Error::InvalidArgument(format!(
                "output buffer holds {} bytes, the sealed frame needs {total}",
                out.len()
            )));
        };
        let (_, room) = frame.split_at_mut(HEADER_SIZE);
        let (dst, _) = room.split_at_mut(body.len());
        dst.copy_from_slice(body);
        self.seal_frame(kind, flags, sequence, frame)
    }

    /// Seals one frame laid out in place: `frame` is 16 bytes of header (overwritten), the body,
    /// then 16 bytes for the tag. Returns `frame.len()`. `flags` is sent with ENCRYPTED added.
    ///
    /// # Errors
    /// `PAYLOAD_TOO_LARGE` for a body over [`MAX_SEALED_BODY`], `INVALID_ARGUMENT` for a frame
    /// shorter than a header and a tag, `TAMPERED` when the nonces ran out.
    pub fn seal_frame(
        &mut self,
        kind: MessageType,
        flags: u16,
        sequence: u32,
        frame: &mut [u8],
    ) -> Result<usize> {
        let total = frame.len();
        let Some(body_len) = total.checked_sub(HEADER_SIZE + TAG_LEN) else {
            return Err(Error::InvalidArgument(
                "a sealed frame needs room for its header and tag".into(),
            ));
        };
        if body_len > MAX_SEALED_BODY {
            return Err(Error::PayloadTooLarge {
                length: body_len as u64,
                limit: MAX_SEALED_BODY_U32,
            });
        }
        let wire_len = body_len + TAG_LEN;
        // body_len <= MAX_SEALED_BODY, so wire_len fits in u32.
        let header = Header {
            kind,
            flags: flags | flags::ENCRYPTED,
            sequence,
            payload_length: u32::try_from(wire_len).unwrap_or(MAX_PAYLOAD),
            checksum: 0,
        }
        .encode();
        let (head, rest) = frame.split_at_mut(HEADER_SIZE);
        let (sealed, tag_out) = rest.split_at_mut(body_len);
        let tag = self
            .cipher
            .seal_in_place(&header, sealed)?
            .ok_or_else(|| Error::InvalidArgument("a sealing direction without a key".into()))?;
        tag_out.copy_from_slice(&tag);
        head.copy_from_slice(&header);
        self.account(wire_len)?;
        Ok(total)
    }

    /// Opens one decoded frame in place: on success `payload[..n]` holds the body, where `n`
    /// is the returned length. `header` is the frame's header as received (its checksum field
    /// is part of what authenticates).
    ///
    /// # Errors
    /// `TAMPERED` for a frame without the ENCRYPTED flag, shorter than a tag, or that does not
    /// authenticate (altered, replayed, reordered, after a dropped frame, or from another
    /// session).
    pub fn open(&mut self, header: &Header, payload: &mut [u8]) -> Result<usize> {
        if header.flags & flags::ENCRYPTED == 0 {
            return Err(Error::Tampered(
                "a frame without the ENCRYPTED flag after the switch to sealed frames".into(),
            ));
        }
        let Some(body_len) = payload.len().checked_sub(TAG_LEN) else {
            return Err(Error::Tampered(
                "a sealed frame shorter than its tag".into(),
            ));
        };
        if self.cipher.open_in_place(&header.encode(), payload)? != Some(body_len) {
            return Err(Error::Tampered(format!(
                "frame {} of this direction does not authenticate: altered, replayed, reordered, \
                 after a dropped frame, or from another session",
                self.cipher.nonce()
            )));
        }
        self.account(payload.len())?;
        Ok(body_len)
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "test values are small by construction; a and b are the two ends"
)]
mod tests {
    use super::*;
    use crate::packet::{FrameDecoder, StreamDecoder};

    fn pair(policy: RekeyPolicy) -> (Direction, Direction) {
        (
            Direction::new(CipherState::with_key(&[9; 32]), policy),
            Direction::new(CipherState::with_key(&[9; 32]), policy),
        )
    }

    fn seal(d: &mut Direction, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0; 32 + body.len()];
        let n = d
            .seal(MessageType::Command, 8, seq, body, &mut out)
            .unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn open(d: &mut Direction, frame: &[u8]) -> Result<Vec<u8>> {
        let mut dec = StreamDecoder::<SealedV1>::new();
        let mut frames = Vec::new();
        dec.push(frame, &mut frames)?;
        let f = frames
            .pop()
            .ok_or_else(|| Error::InvalidArgument("no frame".into()))?;
        let mut payload = f.payload;
        let n = d.open(&f.header, &mut payload)?;
        payload.truncate(n);
        Ok(payload)
    }

    #[test]
    fn sealed_frames_are_v1_frames_and_open() {
        let (mut a, mut b) = pair(RekeyPolicy::DEFAULT);
        let f = seal(&mut a, 7, b"hello");
        assert_eq!(f[2] & 1, 1, "ENCRYPTED is set");
        assert_eq!(u32::from_le_bytes(f[8..12].try_into().unwrap()), 21);
        assert_eq!(&f[12..16], &[0; 4], "the checksum field is 0");
        assert_ne!(&f[16..21], b"hello");
        assert_eq!(open(&mut b, &f).unwrap(), b"hello");
        assert_eq!((a.frames(), b.frames()), (1, 1));
        // A plain v1 decoder frames it and finds the checksum field wrong.
        let mut plain = Vec::new();
        assert_eq!(
            FrameDecoder::new().push(&f, &mut plain).unwrap_err().code(),
            "CHECKSUM_MISMATCH"
        );
    }

    #[test]
    fn every_header_byte_is_authenticated() {
        for at in 0..HEADER_SIZE {
            let (mut a, mut b) = pair(RekeyPolicy::DEFAULT);
            let mut f = seal(&mut a, 7, b"hello");
            // Only changes the decoder lets through to the opener: the version byte must stay 1
            // and the type valid, and the length under the decoder's limit (the frame is cut or
            // padded to the new length).
            match at {
                0 | 11 => continue,
                1 => f[1] = 4,
                8..=10 => f[at] ^= 0x01,
                _ => f[at] ^= 0x80,
            }
            let len = u32::from_le_bytes(f[8..12].try_into().unwrap()) as usize;
            f.resize(HEADER_SIZE + len, 0);
            assert_eq!(
                open(&mut b, &f).unwrap_err().code(),
                "TAMPERED",
                "header byte {at}"
            );
        }
    }

    #[test]
    fn replay_reorder_and_plain_are_refused() {
        let (mut a, mut b) = pair(RekeyPolicy::DEFAULT);
        let f1 = seal(&mut a, 1, b"one");
        let f2 = seal(&mut a, 2, b"two");
        assert_eq!(open(&mut b, &f2).unwrap_err().code(), "TAMPERED");
        assert_eq!(open(&mut b, &f1).unwrap(), b"one");
        assert_eq!(open(&mut b, &f1).unwrap_err().code(), "TAMPERED");
        assert_eq!(open(&mut b, &f2).unwrap(), b"two");
        let plain = crate::encode_frame(MessageType::Command, 8, 3, b"x").unwrap();
        assert_eq!(open(&mut b, &plain).unwrap_err().code(), "TAMPERED");
        let short = crate::encode_frame(MessageType::Command, 9, 3, b"x").unwrap();
        assert_eq!(open(&mut b, &short).unwrap_err().code(), "TAMPERED");
    }

    #[test]
    fn rekey_points_agree() {
        let policy = RekeyPolicy {
            frames: 3,
            bytes: 100,
        };
        let (mut a, mut b) = pair(policy);
        for i in 0..20u32 {
            let body = vec![i as u8; (i as usize * 7) % 40];
            let f = seal(&mut a, i, &body);
            assert_eq!(open(&mut b, &f).unwrap(), body);
        }
        assert!(a.rekeys() >= 6);
        assert_eq!(a.rekeys(), b.rekeys());
        let (mut c, mut d) = pair(RekeyPolicy::NEVER);
        for i in 0..5 {
            let f = seal(&mut c, i, b"abc");
            open(&mut d, &f).unwrap();
        }
        assert_eq!(c.rekeys(), 0);
        assert!(format!("{c:?}").contains("nonce"));
    }

    #[test]
    fn bounds() {
        let (mut a, _) = pair(RekeyPolicy::DEFAULT);
        let big = vec![0; MAX_SEALED_BODY + 1];
        let mut out = vec![0; big.len() + 32];
        assert_eq!(
            a.seal(MessageType::Command, 0, 1, &big, &mut out)
                .unwrap_err()
                .code(),
            "PAYLOAD_TOO_LARGE"
        );
        let mut small = [0u8; 20];
        assert_eq!(
            a.seal(MessageType::Command, 0, 1, b"hello", &mut small)
                .unwrap_err()
                .code(),
            "INVALID_ARGUMENT"
        );
        assert_eq!(a.frames(), 0, "refused frames take no nonce");
    }
}
